//! Test that audit mode lets would-be drops pass, counted and reported as audited.

use palisade_common::verdict::{Direction, DropReason};
use palisade_tests::frames::TcpFlags;

use crate::harness::*;
use crate::protocols::to_pod;

#[test]
fn audit_passes_would_be_drops_and_counts_them() {
    let mut h = Harness::new();
    h.apply(
        &PlanBuilder::new()
            .isolate(Direction::Ingress)
            .audit()
            .build(),
    );
    h.assert_pass(
        Direction::Ingress,
        &to_pod(OTHER_V4.into()).tcp(1, 80, TcpFlags::SYN).build(),
        "audited",
    );
    assert_eq!(h.audited(Direction::Ingress, DropReason::PolicyDenied), 1);
    assert_eq!(h.dropped(Direction::Ingress, DropReason::PolicyDenied), 0);
    let events = crate::counters::drain_events(&mut h);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].audited, 1);
    assert_eq!(events[0].reason, DropReason::PolicyDenied as u32);

    // Drop control: the same plan and packet without audit is dropped.
    let mut enforced = Harness::new();
    enforced.apply(&PlanBuilder::new().isolate(Direction::Ingress).build());
    enforced.assert_drop(
        Direction::Ingress,
        &to_pod(OTHER_V4.into()).tcp(1, 80, TcpFlags::SYN).build(),
        "same packet, not audited",
    );
    assert_eq!(
        enforced.dropped(Direction::Ingress, DropReason::PolicyDenied),
        1
    );
    assert_eq!(
        enforced.audited(Direction::Ingress, DropReason::PolicyDenied),
        0
    );
}

#[test]
fn leaving_audit_mode_enforces_again() {
    let mut h = Harness::new();
    h.apply(
        &PlanBuilder::new()
            .isolate(Direction::Ingress)
            .audit()
            .build(),
    );
    h.assert_pass(
        Direction::Ingress,
        &to_pod(OTHER_V4.into()).tcp(1, 80, TcpFlags::SYN).build(),
        "audited",
    );
    h.apply(&PlanBuilder::new().isolate(Direction::Ingress).build());
    h.assert_drop(
        Direction::Ingress,
        &to_pod(OTHER_V4.into()).tcp(1, 80, TcpFlags::ACK).build(),
        "audited flow re-checked",
    );
    h.assert_drop(
        Direction::Ingress,
        &to_pod(OTHER_V4.into()).tcp(2, 80, TcpFlags::SYN).build(),
        "new flow",
    );
}
