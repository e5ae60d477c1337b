//! Cluster state: validated views of Kubernetes objects, and the vocabulary
//! (refs, labels, selectors, rejections) every later stage speaks.
pub mod cluster;
pub mod cnp;
pub mod journal;
pub mod model;
pub mod netpol;
pub mod refs;
pub mod selector;

pub use cluster::{ClusterState, ObjectKey};
pub use model::{AUDIT_MODE_ANNOTATION, Namespace, Node, Pod, Protocol, Service};
pub use netpol::NetworkPolicy;
pub use refs::{Direction, PodRef, PolicyRef, Rejection};
pub use selector::{Labels, Selector, SelectorError};
