//! A userspace reading of what the programs should do with a new flow, over
//! the same map entries the kernel holds (`KernelState`), written from the
//! specification (README's threat model, NetworkPolicy) rather than from the
//! programs. The differential test checks the kernel against it.

use palisade_agent::sync::KernelState;
use palisade_common::addr::Addr16;
use palisade_common::endpoint::{
    EndpointInfo, FLAG_AUDIT, FLAG_EGRESS_ISOLATED, FLAG_FAIL_CLOSED, FLAG_INGRESS_ISOLATED,
};
use palisade_common::ids::IdentityId;
use palisade_common::ipcache::IPCACHE_FLAG_HOST;
use palisade_common::policy::PolicyKey;
use palisade_common::source::SOURCE_PREFIX_ENDPOINT_BITS;
use palisade_common::verdict::Direction;

/// A packet of a new flow, from the endpoint's point of view.
#[derive(Clone, Copy, Debug)]
pub struct ModelPacket {
    pub direction: Direction,
    /// An IPv4 packet (both addresses v4-mapped) rather than IPv6.
    pub ipv4: bool,
    /// The pod-side address: the source of what the pod sends, the
    /// destination of what it receives.
    pub local: Addr16,
    pub remote: Addr16,
    pub protocol: u8,
    pub dst_port: u16,
}

fn prefix_matches(data: &[u8], key: &[u8], prefix_len: u32) -> bool {
    let full = (prefix_len / 8) as usize;
    if data[..full] != key[..full] {
        return false;
    }
    let rest = prefix_len % 8;
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    data[full] & mask == key[full] & mask
}

fn policy_bytes(k: &PolicyKey) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[0..4].copy_from_slice(&k.endpoint_be);
    b[4..8].copy_from_slice(&k.identity_be);
    b[8] = k.direction;
    b[9] = k.protocol;
    b[10..12].copy_from_slice(&k.port_be);
    b
}

/// (identity, is one of the node's addresses), by longest prefix.
fn identity_of(state: &KernelState, remote: &Addr16) -> (IdentityId, bool) {
    state
        .ipcache
        .iter()
        .filter(|((len, addr), _)| prefix_matches(&remote.0, &addr.0, *len))
        .max_by_key(|((len, _), _)| *len)
        .map(|(_, v)| (v.identity, v.flags & IPCACHE_FLAG_HOST != 0))
        .unwrap_or((IdentityId::WORLD, false))
}

/// What the most specific entry matching `key` says: `Some(true)` denies,
/// `Some(false)` allows, `None` when no entry matches.
fn policy_entry(state: &KernelState, key: &PolicyKey) -> Option<bool> {
    let want = policy_bytes(key);
    state
        .policy
        .iter()
        .filter(|((len, k), _)| prefix_matches(&want, &policy_bytes(k), *len))
        .max_by_key(|((len, _), _)| *len)
        .map(|(_, v)| v.denies())
}

/// The pod's address of the packet's family, if it has one.
fn own_address(ep: &EndpointInfo, ipv4: bool) -> Option<Addr16> {
    let addr = if ipv4 { ep.ipv4 } else { ep.ipv6 };
    (addr != Addr16::default()).then_some(addr)
}

/// Whether the pod may send from `addr`: its own address of the packet's
/// family, or one under its allowed source prefixes.
fn may_send_from(state: &KernelState, ep: &EndpointInfo, addr: &Addr16, ipv4: bool) -> bool {
    if own_address(ep, ipv4) == Some(*addr) {
        return true;
    }
    state.source_prefixes.keys().any(|(len, key)| {
        key.endpoint_be == ep.id.0.to_be_bytes()
            && len
                .checked_sub(SOURCE_PREFIX_ENDPOINT_BITS)
                .is_some_and(|bits| prefix_matches(&addr.0, &key.addr.0, bits))
    })
}

/// Whether the kernel should let the packet pass.
pub fn passes(state: &KernelState, ifindex: u32, p: &ModelPacket) -> bool {
    let Some(ep) = state.endpoints.get(&ifindex) else {
        return false;
    };
    // A pod sends only as itself, whatever its policies and audit mode say.
    if p.direction == Direction::Egress && !may_send_from(state, ep, &p.local, p.ipv4) {
        return false;
    }
    let isolated = ep.flags
        & match p.direction {
            Direction::Ingress => FLAG_INGRESS_ISOLATED,
            Direction::Egress => FLAG_EGRESS_ISOLATED,
        }
        != 0;
    let audit = ep.flags & FLAG_AUDIT != 0;
    // An IPv6 packet with a v4-mapped address is malformed: it has no
    // identity, IPv4's or otherwise.
    if !p.ipv4 && (p.local.is_v4_mapped() || p.remote.is_v4_mapped()) {
        return !isolated || audit;
    }
    // A pod may always reach itself (its own address of the same family).
    if !isolated || own_address(ep, p.ipv4) == Some(p.remote) {
        return true;
    }
    let (identity, from_node) = identity_of(state, &p.remote);
    if p.direction == Direction::Ingress && from_node {
        return true;
    }
    if ep.flags & FLAG_FAIL_CLOSED != 0 {
        return audit;
    }
    let port = if matches!(p.protocol, 6 | 17 | 132) {
        p.dst_port
    } else {
        0
    };
    // The remote's identity first; ANY only when it has no entry at all.
    let decision = [identity, IdentityId::ANY].iter().find_map(|id| {
        policy_entry(
            state,
            &PolicyKey::new(ep.id, *id, p.direction, p.protocol, port),
        )
    });
    decision == Some(false) || audit
}
