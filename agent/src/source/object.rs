//! The raw API objects a source hands on, before any validation.

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1::EndpointSlice as K8sEndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy as K8sNetworkPolicy;

/// Any object the agent reads, as received from the API server or a file.
#[derive(Clone, Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "short-lived event payloads; boxing would complicate every producer (fn(K) -> K8sObject)"
)]
pub enum K8sObject {
    /// A Namespace.
    Namespace(core::Namespace),
    /// A Pod.
    Pod(core::Pod),
    /// A NetworkPolicy.
    NetworkPolicy(K8sNetworkPolicy),
    /// A Node.
    Node(core::Node),
    /// A Service.
    Service(core::Service),
    /// An EndpointSlice.
    EndpointSlice(K8sEndpointSlice),
    /// A ClusterNetworkPolicy.
    ClusterNetworkPolicy(super::cnp::ClusterNetworkPolicy),
}
