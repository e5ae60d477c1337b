//! Cluster state: validated views of Kubernetes objects.
pub mod cluster;
pub mod journal;
pub mod model;
pub mod netpol;

pub use cluster::{ClusterState, K8sObject, ObjectKey};
pub use model::{AUDIT_MODE_ANNOTATION, Namespace, Node, Pod, Protocol, Service};
pub use netpol::NetworkPolicy;
