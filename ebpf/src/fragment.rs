//! `FRAGMENTS`: first fragments that passed, so later ones may follow them.

use aya_ebpf::{macros::map, maps::LruHashMap};
use palisade_common::{
    fragment::{FRAGMENT_TIMEOUT_NS, FragKey, FragValue},
    maps::DEFAULT_FRAGMENTS_MAX,
};

use crate::parse::Packet;

#[map]
static FRAGMENTS: LruHashMap<FragKey, FragValue> = LruHashMap::pinned(DEFAULT_FRAGMENTS_MAX, 0);

#[inline(always)]
fn key(ifindex: u32, packet: &Packet, id: u32) -> FragKey {
    FragKey {
        ifindex,
        id,
        protocol: packet.protocol,
        _pad0: 0,
        _pad1: 0,
        src: packet.src,
        dst: packet.dst,
    }
}

/// Remembers that the first fragment of datagram `id` passed.
#[inline(always)]
pub fn remember_first(ifindex: u32, packet: &Packet, id: u32, now: u64) {
    let value = FragValue { first_seen_ns: now };
    // A failed insert only means later fragments are dropped: fail closed.
    let _ = FRAGMENTS.insert(&key(ifindex, packet, id), &value, 0);
}

/// Whether the first fragment of datagram `id` passed recently.
#[inline(always)]
pub fn first_passed(ifindex: u32, packet: &Packet, id: u32, now: u64) -> bool {
    // SAFETY: the value is read once into a copy.
    match unsafe { FRAGMENTS.get(&key(ifindex, packet, id)) } {
        Some(v) => now < v.first_seen_ns + FRAGMENT_TIMEOUT_NS,
        None => false,
    }
}
