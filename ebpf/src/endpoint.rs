//! `ENDPOINTS`: the local pod behind an interface.

use aya_ebpf::{macros::map, maps::HashMap};
use palisade_common::{endpoint::EndpointInfo, maps::DEFAULT_ENDPOINTS_MAX};

#[map]
static ENDPOINTS: HashMap<u32, EndpointInfo> = HashMap::pinned(DEFAULT_ENDPOINTS_MAX, 0);

/// The endpoint behind `ifindex`, copied out of the map.
#[inline(always)]
pub fn lookup(ifindex: u32) -> Option<EndpointInfo> {
    // SAFETY: the value is copied out immediately; a concurrent update by the
    // agent yields either the old or the new endpoint (both are valid).
    unsafe { ENDPOINTS.get(&ifindex).copied() }
}
