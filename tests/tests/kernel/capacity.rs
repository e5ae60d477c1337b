//! Test that a full map fails closed: the plan is reported incomplete and the
//! isolated endpoint denies everything but node and self traffic.

use palisade_agent::datapath::Capacities;
use palisade_agent::policy::plan::{DatapathPlan, L4Match};
use palisade_common::verdict::{Direction, DropReason};
use palisade_tests::frames::TcpFlags;

use crate::harness::*;
use crate::protocols::to_pod;

/// An ingress-isolated endpoint allowing `PEER_ID` each TCP port of `ports`
/// (the port as rule id), `spacing` apart.
fn allow_ports(ports: std::ops::RangeInclusive<u16>, spacing: u16) -> DatapathPlan {
    let mut plan = PlanBuilder::new().isolate(Direction::Ingress);
    for port in ports {
        plan = plan.allow(
            Direction::Ingress,
            PEER_ID,
            L4Match::Ports {
                protocol: 6,
                first: port * spacing,
                last: port * spacing,
            },
            u32::from(port),
        );
    }
    plan.build()
}

#[test]
fn full_policy_map_fails_closed_and_is_reported() {
    let mut h = Harness::with_capacities(Capacities {
        policy: 4,
        ..Capacities::default()
    });
    let report = h.apply(&allow_ports(1..=10, 100));
    assert!(!report.complete(), "map full must be reported");
    assert!(
        report.map_full.iter().any(|e| e.map == "POLICY"),
        "{:?}",
        report.map_full
    );
    // Port 100 made it into the map, but the endpoint fails closed.
    h.assert_drop(
        Direction::Ingress,
        &to_pod(PEER_V4.into()).tcp(1, 100, TcpFlags::SYN).build(),
        "allowed port under fail-closed",
    );
    assert_eq!(h.dropped(Direction::Ingress, DropReason::FailClosed), 1);
    h.assert_pass(
        Direction::Ingress,
        &to_pod(NODE_V4.into()).tcp(2, 100, TcpFlags::SYN).build(),
        "node traffic still passes",
    );
}

#[test]
fn fail_closed_lifts_when_the_plan_fits_again() {
    let mut h = Harness::with_capacities(Capacities {
        policy: 4,
        ..Capacities::default()
    });
    assert!(!h.apply(&allow_ports(1..=10, 1)).complete());
    let report = h.apply(&allow_ports(1..=1, 1));
    assert!(report.complete(), "{:?}", report.map_full);
    h.assert_pass(
        Direction::Ingress,
        &to_pod(PEER_V4.into()).tcp(9, 1, TcpFlags::SYN).build(),
        "allowed after recovery",
    );
    // Drop control: a port only the big plan allowed is now denied by
    // policy, not by fail-closed.
    h.assert_drop(
        Direction::Ingress,
        &to_pod(PEER_V4.into()).tcp(9, 2, TcpFlags::SYN).build(),
        "port of the big plan only",
    );
    assert_eq!(h.dropped(Direction::Ingress, DropReason::PolicyDenied), 1);
    assert_eq!(h.dropped(Direction::Ingress, DropReason::FailClosed), 0);
}

/// The syncer writes runs of puts and deletes in one batch syscall each: what
/// it records as written must be what the kernel holds, after a batch that
/// landed whole and after one the full map stopped part way.
#[test]
fn batched_writes_land_exactly_as_recorded_also_when_the_map_fills_mid_batch() {
    let mut h = Harness::with_capacities(Capacities {
        policy: 40,
        ..Capacities::default()
    });
    let plan = |ports| allow_ports(ports, 1);
    let read_back = |h: &Harness| h.dp.maps.read_state().expect("read the maps").0;

    let report = h.apply(&plan(1..=30));
    assert!(report.complete(), "{:?}", report.map_full);
    assert_eq!(read_back(&h).policy.len(), 30);
    assert_eq!(&read_back(&h), h.syncer.current());

    // 31-60 go in before 1-30 go out: the batch of puts stops at the 40th
    // entry, and the deletes after it still land (fail-closed).
    let report = h.apply(&plan(31..=60));
    assert!(!report.complete());
    assert_eq!(report.map_full.len(), 20, "{:?}", report.map_full);
    assert_eq!(read_back(&h).policy.len(), 10, "31-40 only");
    assert_eq!(&read_back(&h), h.syncer.current());
    h.assert_drop(
        Direction::Ingress,
        &to_pod(PEER_V4.into()).tcp(1, 31, TcpFlags::SYN).build(),
        "a port of the new plan while it fails closed",
    );

    // A plan that fits again: the deletes of the run land too.
    let report = h.apply(&plan(55..=60));
    assert!(report.complete(), "{:?}", report.map_full);
    assert_eq!(read_back(&h).policy.len(), 6);
    assert_eq!(&read_back(&h), h.syncer.current());
    h.assert_pass(
        Direction::Ingress,
        &to_pod(PEER_V4.into()).tcp(2, 55, TcpFlags::SYN).build(),
        "a port of the plan that fits",
    );
    h.assert_drop(
        Direction::Ingress,
        &to_pod(PEER_V4.into()).tcp(3, 54, TcpFlags::SYN).build(),
        "a port no plan allows now",
    );
}

/// A run longer than one batch goes in several, in order: all of it lands,
/// and all of it goes again.
#[test]
fn runs_longer_than_one_batch_land_whole() {
    let mut h = Harness::new();
    let report = h.apply(&allow_ports(1..=10_000, 1));
    assert!(report.complete(), "{:?}", report.map_full);
    let held = h.dp.maps.read_state().expect("read the maps").0;
    assert_eq!(held.policy.len(), h.syncer.current().policy.len());
    assert!(held.policy.len() >= 10_000, "{}", held.policy.len());
    assert_eq!(&held, h.syncer.current());
    h.assert_pass(
        Direction::Ingress,
        &to_pod(PEER_V4.into()).tcp(1, 9_999, TcpFlags::SYN).build(),
        "a port of the last batch",
    );
    let report = h.apply(&allow_ports(1..=1, 1));
    assert!(report.complete(), "{:?}", report.map_full);
    assert_eq!(
        &h.dp.maps.read_state().expect("read the maps").0,
        h.syncer.current()
    );
    h.assert_drop(
        Direction::Ingress,
        &to_pod(PEER_V4.into()).tcp(2, 9_999, TcpFlags::SYN).build(),
        "a port whose entry went in a later batch of deletes",
    );
}
