//! Kernel state -> the ids it holds (pure), for a restarted agent to take
//! over (see [`crate::policy::adopt`]).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use palisade_common::addr::{Addr16, V4_MAPPED_PREFIX_BITS};
use palisade_common::ids::IdentityId;

use super::render::KernelState;
use crate::policy::adopt::PinnedIds;
use crate::state::PodRef;

/// The network of an `IPCACHE` key, the inverse of
/// [`super::render::prefix_key`]; `None` for a malformed prefix length.
pub fn prefix_net(len: u32, addr: &Addr16) -> Option<IpNet> {
    if len >= V4_MAPPED_PREFIX_BITS && addr.is_v4_mapped() {
        let bits = u8::try_from(len - V4_MAPPED_PREFIX_BITS).ok()?;
        IpNet::new(IpAddr::V4(Ipv4Addr::from(addr.v4_octets())), bits).ok()
    } else {
        let bits = u8::try_from(len).ok()?;
        IpNet::new(IpAddr::V6(Ipv6Addr::from(addr.0)), bits).ok()
    }
}

/// The ids `state` holds, with each endpoint's id given to the pod whose
/// interface (`interfaces`: pod -> ifindex, as resolved now) carries it.
pub fn pinned_ids(state: &KernelState, interfaces: &BTreeMap<PodRef, u32>) -> PinnedIds {
    let mut pinned = PinnedIds {
        endpoints: interfaces
            .iter()
            .filter_map(|(pod, ifindex)| Some((pod.clone(), state.endpoints.get(ifindex)?.id)))
            .collect(),
        identities: state
            .ipcache
            .iter()
            .filter_map(|((len, addr), value)| Some((prefix_net(*len, addr)?, value.identity)))
            .collect(),
        ..PinnedIds::default()
    };
    let allocated = |id: u32| id >= IdentityId::FIRST_ALLOCATED;
    pinned
        .endpoint_ids
        .extend(state.endpoints.values().map(|e| e.id.0));
    pinned.identity_ids.extend(
        state
            .ipcache
            .values()
            .map(|v| v.identity.0)
            .filter(|&id| allocated(id)),
    );
    for (_, key) in state.policy.keys() {
        pinned
            .endpoint_ids
            .insert(u32::from_be_bytes(key.endpoint_be));
        let identity = u32::from_be_bytes(key.identity_be);
        if allocated(identity) {
            pinned.identity_ids.insert(identity);
        }
    }
    pinned.endpoint_ids.extend(
        state
            .source_prefixes
            .keys()
            .map(|(_, k)| u32::from_be_bytes(k.endpoint_be)),
    );
    pinned
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::render::prefix_key;

    #[test]
    fn prefix_net_inverts_prefix_key() {
        for s in [
            "10.1.0.0/16",
            "0.0.0.0/0",
            "10.0.0.7/32",
            "fd00::/8",
            "::/0",
            "fd00::1/128",
        ] {
            let net: IpNet = s.parse().expect("valid cidr");
            let (len, addr) = prefix_key(&net);
            assert_eq!(prefix_net(len, &addr), Some(net), "{s}");
        }
        assert_eq!(prefix_net(200, &Addr16::UNSPECIFIED), None);
    }
}
