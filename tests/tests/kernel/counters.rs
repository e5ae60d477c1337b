//! Test that every allowed packet is credited to its rule (packets and bytes),
//! every drop to its reason, and that denials produce rate-limited events.

use palisade_agent::policy::plan::L4Match;
use palisade_common::event::FlowEvent;
use palisade_common::ids::RuleId;
use palisade_common::maps::{EVENTS_BURST, EVENTS_PER_SEC_PER_CPU};
use palisade_common::stats::StatIndex;
use palisade_common::verdict::{Direction, DropReason};
use palisade_tests::frames::TcpFlags;

use crate::harness::*;
use crate::protocols::to_pod;

pub fn drain_events(h: &mut Harness) -> Vec<FlowEvent> {
    h.dp.maps.drain_events()
}

#[test]
fn rule_counters_count_packets_and_bytes_of_new_flows() {
    let mut h = Harness::new();
    h.apply(
        &PlanBuilder::new()
            .isolate(Direction::Ingress)
            .allow(
                Direction::Ingress,
                PEER_ID,
                L4Match::Ports {
                    protocol: 6,
                    first: 80,
                    last: 80,
                },
                5,
            )
            .allow(
                Direction::Ingress,
                PEER_ID,
                L4Match::Ports {
                    protocol: 6,
                    first: 443,
                    last: 443,
                },
                6,
            )
            .build(),
    );
    let frame = |sport| {
        to_pod(PEER_V4.into())
            .tcp(sport, 80, TcpFlags::SYN)
            .payload(100)
            .build()
    };
    let len = frame(1).len() as u64;
    for sport in 1..=3 {
        h.assert_pass(Direction::Ingress, &frame(sport), "80");
    }
    let c = h.dp.maps.rule_counter(RuleId(5)).expect("counter");
    assert_eq!((c.packets, c.bytes), (3, 3 * len));
    assert_eq!(
        h.dp.maps.rule_counter(RuleId(6)).expect("counter").packets,
        0
    );
    assert_eq!(h.forwarded(Direction::Ingress), 3);
    // Drop control: the same segment to a port no rule allows is dropped,
    // credited to no rule and not counted as forwarded.
    let denied = to_pod(PEER_V4.into())
        .tcp(4, 81, TcpFlags::SYN)
        .payload(100)
        .build();
    h.assert_drop(Direction::Ingress, &denied, "81");
    assert_eq!(h.dropped(Direction::Ingress, DropReason::PolicyDenied), 1);
    let c = h.dp.maps.rule_counter(RuleId(5)).expect("counter");
    assert_eq!((c.packets, c.bytes), (3, 3 * len));
    assert_eq!(h.forwarded(Direction::Ingress), 3);
}

#[test]
fn denied_packets_emit_events_with_the_flow() {
    let mut h = Harness::new();
    h.apply(&PlanBuilder::new().isolate(Direction::Ingress).build());
    h.assert_drop(
        Direction::Ingress,
        &to_pod(OTHER_V4.into()).udp(4444, 53).build(),
        "denied",
    );
    let events = drain_events(&mut h);
    assert_eq!(events.len(), 1);
    let e = events[0];
    assert_eq!(e.direction, Direction::Ingress as u8);
    assert_eq!(e.reason, DropReason::PolicyDenied as u32);
    assert_eq!(e.protocol, 17);
    assert_eq!((e.src_port, e.dst_port), (4444, 53));
    assert_eq!(
        e.src,
        palisade_common::addr::Addr16::from_v4(OTHER_V4.octets())
    );
    assert_eq!(e.remote_identity, OTHER_ID.0);
    assert_eq!(e.endpoint, EP.0);
    assert_eq!(e.audited, 0);
}

#[test]
fn events_are_rate_limited_and_the_excess_is_counted() {
    let mut h = Harness::new();
    h.apply(&PlanBuilder::new().isolate(Direction::Ingress).build());
    let sent = EVENTS_BURST + 50;
    let frame = to_pod(OTHER_V4.into()).udp(4444, 53).build();
    // One run of `sent` repetitions happens on one CPU, normally within
    // microseconds; if the run is preempted the bucket refills meanwhile, by
    // at most the rate times the wall time around it.
    let started = std::time::Instant::now();
    let out =
        h.dp.test_run(Direction::Ingress, &frame, sent as u32)
            .expect("test run");
    let refill =
        (started.elapsed().as_micros() as u64).div_ceil(1000) * EVENTS_PER_SEC_PER_CPU / 1000;
    assert_eq!(out.verdict, palisade_common::verdict::TC_ACT_SHOT);
    let events = drain_events(&mut h).len() as u64;
    let lost =
        h.dp.maps
            .stat(StatIndex::EventsLost, Direction::Ingress)
            .expect("stat")
            .packets;
    assert_eq!(
        events + lost,
        sent,
        "every denial is either reported or counted as lost"
    );
    assert!(
        events <= EVENTS_BURST + 1 + refill,
        "{events} events exceed the burst (+{refill} refilled while running)"
    );
    assert!(lost + 1 + refill >= 50, "{lost} lost");
    assert_eq!(
        h.dropped(Direction::Ingress, DropReason::PolicyDenied),
        sent
    );
}
