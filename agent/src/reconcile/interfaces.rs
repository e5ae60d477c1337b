//! What the loop needs to know about pod interfaces.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;

use crate::node::Unresolved;
use crate::state::PodRef;

/// A pod's host-side interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInterface {
    /// Interface index in the agent's network namespace.
    pub ifindex: u32,
    /// Interface name.
    pub name: String,
}

/// Finds pod interfaces and tells when they may have changed (netlink in the
/// agent, a fixed table in tests).
pub trait Interfaces: Send {
    /// Resolves each pod's addresses to its host-side interface, or says why not.
    fn resolve(
        &mut self,
        pods: Vec<(PodRef, Vec<IpAddr>)>,
    ) -> impl Future<Output = BTreeMap<PodRef, Result<PodInterface, Unresolved>>> + Send;

    /// Resolves when links, routes or neighbours changed.
    fn changed(&mut self) -> impl Future<Output = ()> + Send;
}
