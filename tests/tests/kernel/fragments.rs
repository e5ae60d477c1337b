//! Test that non-first fragments follow the verdict of their first fragment
//! and never bypass policy.

use palisade_agent::policy::plan::L4Match;
use palisade_common::verdict::{Direction, DropReason};
use palisade_tests::frames::TcpFlags;

use crate::harness::*;
use crate::protocols::to_pod;

fn plan() -> palisade_agent::policy::plan::DatapathPlan {
    PlanBuilder::new()
        .isolate(Direction::Ingress)
        .allow(
            Direction::Ingress,
            PEER_ID,
            L4Match::Ports {
                protocol: 17,
                first: 53,
                last: 53,
            },
            1,
        )
        .build()
}

#[test]
fn later_fragments_of_an_allowed_datagram_pass() {
    for peer in [PEER_V4.into(), PEER_V6.into()] {
        let mut h = Harness::new();
        h.apply(&plan());
        h.assert_pass(
            Direction::Ingress,
            &to_pod(peer)
                .udp(1000, 53)
                .fragment(0, true, 77)
                .payload(64)
                .build(),
            "first",
        );
        h.assert_pass(
            Direction::Ingress,
            &to_pod(peer)
                .udp(1000, 53)
                .fragment(9, true, 77)
                .payload(64)
                .build(),
            "middle",
        );
        h.assert_pass(
            Direction::Ingress,
            &to_pod(peer)
                .udp(1000, 53)
                .fragment(18, false, 77)
                .payload(8)
                .build(),
            "last",
        );
        // Drop control: the same datagram shape under another id, whose first
        // fragment is denied (port 54): its later fragments are dropped.
        h.assert_drop(
            Direction::Ingress,
            &to_pod(peer)
                .udp(1000, 54)
                .fragment(0, true, 78)
                .payload(64)
                .build(),
            "first of a denied datagram",
        );
        h.assert_drop(
            Direction::Ingress,
            &to_pod(peer)
                .udp(1000, 53)
                .fragment(9, true, 78)
                .payload(64)
                .build(),
            "middle of a denied datagram",
        );
        h.assert_drop(
            Direction::Ingress,
            &to_pod(peer)
                .udp(1000, 53)
                .fragment(18, false, 78)
                .payload(8)
                .build(),
            "last of a denied datagram",
        );
    }
}

#[test]
fn later_fragments_without_their_first_are_dropped() {
    for peer in [PEER_V4.into(), PEER_V6.into()] {
        let mut h = Harness::new();
        h.apply(&plan());
        // The "ports" bytes of a later fragment are payload: looking like port
        // 53 must not let it through.
        h.assert_drop(
            Direction::Ingress,
            &to_pod(peer)
                .udp(1000, 53)
                .fragment(9, false, 78)
                .payload(8)
                .build(),
            "orphan",
        );
        assert_eq!(
            h.dropped(Direction::Ingress, DropReason::FragmentUnknown),
            1
        );
    }
}

#[test]
fn later_fragments_of_a_denied_datagram_are_dropped() {
    let mut h = Harness::new();
    h.apply(&plan());
    h.assert_drop(
        Direction::Ingress,
        &to_pod(PEER_V4.into())
            .udp(1000, 54)
            .fragment(0, true, 79)
            .payload(64)
            .build(),
        "first, denied",
    );
    h.assert_drop(
        Direction::Ingress,
        &to_pod(PEER_V4.into())
            .udp(1000, 53)
            .fragment(9, false, 79)
            .payload(8)
            .build(),
        "later",
    );
}

#[test]
fn fragment_verdicts_are_per_datagram_id() {
    let mut h = Harness::new();
    h.apply(&plan());
    h.assert_pass(
        Direction::Ingress,
        &to_pod(PEER_V4.into())
            .udp(1000, 53)
            .fragment(0, true, 80)
            .payload(64)
            .build(),
        "first of 80",
    );
    h.assert_drop(
        Direction::Ingress,
        &to_pod(PEER_V4.into())
            .tcp(1, 2, TcpFlags::NONE)
            .fragment(9, false, 81)
            .payload(8)
            .build(),
        "later of 81",
    );
}
