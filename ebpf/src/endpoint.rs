//! `ENDPOINTS`: the local pod behind an interface.

use aya_ebpf::{macros::map, maps::HashMap};
use palisade_common::{
    endpoint::{EndpointInfo, IfIndex},
    ids::IdentityId,
    maps::DEFAULT_ENDPOINTS_MAX,
    verdict::{Direction, DropReason},
};

use crate::{
    parse::Packet,
    verdict::{self, DenyInfo},
};

#[map]
static ENDPOINTS: HashMap<IfIndex, EndpointInfo> = HashMap::pinned(DEFAULT_ENDPOINTS_MAX, 0);

/// The endpoint behind `ifindex`, copied out of the map.
#[inline(always)]
pub fn lookup(ifindex: u32) -> Option<EndpointInfo> {
    // SAFETY: the value is copied out immediately; a concurrent update by the
    // agent yields either the old or the new endpoint (both are valid).
    unsafe { ENDPOINTS.get(&IfIndex(ifindex)).copied() }
}

/// The endpoint behind the interface, or the verdict for an interface that
/// carries the programs but has no endpoint entry: drop (fail closed).
#[inline(always)]
pub fn lookup_or_deny(
    ifindex: u32,
    direction: Direction,
    bytes: u32,
    packet: &Packet,
) -> Result<EndpointInfo, i32> {
    match lookup(ifindex) {
        Some(ep) => Ok(ep),
        None => Err(verdict::deny(
            direction,
            DropReason::EndpointUnknown,
            false,
            bytes,
            &DenyInfo::new(ifindex, 0, packet, IdentityId::WORLD),
        )),
    }
}
