//! Where ipcache entries come from.

use std::collections::BTreeMap;

use ipnet::IpNet;
use palisade_common::ids::IdentityId;

use crate::state::PodRef;

/// Where ipcache entries come from, lowest priority first.
#[derive(Debug, Default)]
pub(super) struct Layers {
    pub(super) blocks: BTreeMap<IpNet, IdentityId>,
    pub(super) services: BTreeMap<IpNet, IdentityId>,
    /// Addresses of Nodes (other than this one) that `nodes` atoms select.
    pub(super) nodes: BTreeMap<IpNet, IdentityId>,
    /// The pods claiming each address, sorted by pod (almost always one: a
    /// vector, since a map's node would cost ~0.5 KiB per address).
    pub(super) pods: BTreeMap<IpNet, Vec<(PodRef, IdentityId)>>,
    pub(super) host: BTreeMap<IpNet, IdentityId>,
}

impl Layers {
    pub(super) fn resolve(&self, net: &IpNet) -> Option<IdentityId> {
        self.host
            .get(net)
            .or_else(|| self.pods.get(net).and_then(|v| v.last()).map(|(_, id)| id))
            .or_else(|| self.nodes.get(net))
            .or_else(|| self.services.get(net))
            .or_else(|| self.blocks.get(net))
            .copied()
    }
}
