//! Test that the programs' clock (jiffies anchored to CLOCK_MONOTONIC_COARSE,
//! `CLOCK`) reads the coarse clock, comes from its map once anchored, falls
//! back to the helper when not, and ages entries stamped by a build that
//! called the helper exactly as before.

use aya::maps::{Array, Map, MapData};
use palisade_agent::datapath::{coarse_tick_ns, maps_dir};
use palisade_common::clock::{CLOCK_INDEX, ClockBase};
use palisade_common::conntrack::{
    CT_FLAG_CLOSING, CT_FLAG_ORIGIN_EGRESS, CtKeyV4, CtValue, TIMEOUT_TCP_CLOSING_NS,
};
use palisade_common::ids::RuleId;
use palisade_common::maps;
use palisade_common::verdict::Direction;
use palisade_tests::frames::TcpFlags;

use crate::harness::*;
use crate::protocols::{from_pod, to_pod};

const HOUR_NS: u64 = 3_600_000_000_000;

fn coarse_ns() -> u64 {
    // SAFETY: `ts` is a valid, writable timespec.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: as above; CLOCK_MONOTONIC_COARSE always exists on Linux.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) },
        0
    );
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn clock_map(h: &Harness) -> Array<MapData, ClockBase> {
    let pin = maps_dir(h.dp.bpffs()).join(maps::CLOCK);
    let data = MapData::from_pin(&pin).expect("open the pinned CLOCK");
    Array::try_from(Map::Array(data)).expect("CLOCK as an array of ClockBase")
}

fn flow(local_port: u16) -> CtKeyV4 {
    CtKeyV4::new(
        TEST_IFINDEX,
        6,
        POD_V4.octets(),
        PEER_V4.octets(),
        local_port,
        80,
    )
}

/// Opens a flow from the pod on `local_port` and returns its entry's
/// timestamp, with the coarse clock read just before and just after.
#[track_caller]
fn stamp(h: &Harness, local_port: u16) -> (u64, u64, u64) {
    let before = coarse_ns();
    h.assert_pass(
        Direction::Egress,
        &from_pod(PEER_V4.into())
            .tcp(local_port, 80, TcpFlags::SYN)
            .build(),
        "syn out",
    );
    let after = coarse_ns();
    let entry =
        h.dp.maps
            .conntrack_v4
            .get(&flow(local_port), 0)
            .expect("the SYN opened an entry");
    (before, entry.last_seen_ns, after)
}

/// Whether `stamp` is the coarse clock between `before` and `after`, give or
/// take two jiffies (the derived clock and the coarse one tick at slightly
/// different instants).
fn on_the_coarse_clock((before, stamp, after): (u64, u64, u64), tick: u64) -> bool {
    before.saturating_sub(2 * tick) <= stamp && stamp <= after + 2 * tick
}

#[test]
fn a_loaded_datapath_stamps_flows_with_the_coarse_clock_derived_from_jiffies() {
    let mut h = Harness::new();
    h.apply(&PlanBuilder::new().build());
    let tick = coarse_tick_ns().expect("clock_getres");
    let base = clock_map(&h).get(&CLOCK_INDEX, 0).expect("read CLOCK");
    assert_eq!(base.tick_ns, tick);
    assert_ne!(base.offset_ns, 0, "anchored");
    let s = stamp(&h, 40000);
    assert!(on_the_coarse_clock(s, tick), "{s:?}, tick {tick}");
}

#[test]
fn the_programs_read_the_clock_map_and_fall_back_to_the_helper_without_it() {
    let mut h = Harness::new();
    h.apply(&PlanBuilder::new().build());
    let tick = coarse_tick_ns().expect("clock_getres");
    let mut clock = clock_map(&h);
    let base = clock.get(&CLOCK_INDEX, 0).expect("read CLOCK");

    // An anchor an hour off shows in the stamps: they come from the map.
    let ahead = ClockBase {
        offset_ns: base.offset_ns.wrapping_add(HOUR_NS),
        ..base
    };
    clock.set(CLOCK_INDEX, ahead, 0).expect("write CLOCK");
    let (before, stamp_ahead, after) = stamp(&h, 40001);
    assert!(
        on_the_coarse_clock((before + HOUR_NS, stamp_ahead, after + HOUR_NS), tick),
        "{stamp_ahead} not an hour after {before}..{after}"
    );

    // A load (an agent restart) anchors it again.
    let reloaded = Harness::reload(&h);
    let s = stamp(&reloaded, 40002);
    assert!(on_the_coarse_clock(s, tick), "re-anchored: {s:?}");
    drop(reloaded);

    // Not anchored: the helper's coarse clock, no stamp from a half-set map.
    for unanchored in [
        ClockBase::default(),
        ClockBase {
            offset_ns: 0,
            ..base
        },
    ] {
        clock.set(CLOCK_INDEX, unanchored, 0).expect("write CLOCK");
        let s = stamp(&h, 40003);
        assert!(on_the_coarse_clock(s, tick), "{unanchored:?}: {s:?}");
    }
}

#[test]
fn entries_stamped_with_the_coarse_clock_by_an_earlier_build_keep_their_age() {
    let mut h = Harness::new();
    // Only conntrack lets the reply in.
    h.apply(&PlanBuilder::new().isolate(Direction::Ingress).build());
    let revision = h.dp.maps.revision().expect("revision");
    let reply = to_pod(PEER_V4.into())
        .tcp(80, 40000, TcpFlags::SYN | TcpFlags::ACK)
        .build();
    // Closing entries: their 10 s timeout lets "expired" be a time after boot
    // even on a VM that booted seconds ago.
    let entry = |last_seen_ns| CtValue {
        last_seen_ns,
        revision,
        rule: RuleId::NONE,
        flags: CT_FLAG_ORIGIN_EGRESS | CT_FLAG_CLOSING,
        _pad: 0,
    };
    // What a build that called `bpf_ktime_get_coarse_ns` wrote: fresh...
    h.dp.maps
        .conntrack_v4
        .insert(flow(40000), entry(coarse_ns()), 0)
        .expect("write a fresh entry");
    h.assert_pass(Direction::Ingress, &reply, "reply of a fresh entry");
    // ... and past its timeout.
    let expired = coarse_ns()
        .checked_sub(TIMEOUT_TCP_CLOSING_NS + 1_000_000_000)
        .expect("up for longer than the closing timeout");
    h.dp.maps
        .conntrack_v4
        .insert(flow(40000), entry(expired), 0)
        .expect("write an expired entry");
    h.assert_drop(Direction::Ingress, &reply, "reply of an expired entry");
}
