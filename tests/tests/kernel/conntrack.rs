//! Test that replies and established flows take the conntrack path, and that a
//! policy change re-checks established flows: still-allowed ones continue,
//! revoked ones are cut.

use palisade_agent::policy::plan::L4Match;
use palisade_common::verdict::{Direction, DropReason};
use palisade_tests::frames::TcpFlags;

use crate::harness::*;
use crate::protocols::{from_pod, to_pod};

const TCP: u8 = 6;

fn egress_only_to_peer_80() -> PlanBuilder {
    PlanBuilder::new()
        .isolate(Direction::Ingress)
        .isolate(Direction::Egress)
        .allow(
            Direction::Egress,
            PEER_ID,
            L4Match::Ports {
                protocol: TCP,
                first: 80,
                last: 80,
            },
            1,
        )
}

#[test]
fn replies_of_an_allowed_connection_pass_into_an_ingress_isolated_pod() {
    for peer in [PEER_V4.into(), PEER_V6.into()] {
        let mut h = Harness::new();
        h.apply(&egress_only_to_peer_80().build());
        h.assert_pass(
            Direction::Egress,
            &from_pod(peer).tcp(40000, 80, TcpFlags::SYN).build(),
            "syn out",
        );
        h.assert_pass(
            Direction::Ingress,
            &to_pod(peer)
                .tcp(80, 40000, TcpFlags::SYN | TcpFlags::ACK)
                .build(),
            "syn-ack in",
        );
        h.assert_pass(
            Direction::Egress,
            &from_pod(peer).tcp(40000, 80, TcpFlags::ACK).build(),
            "ack out",
        );
        // Same peer and ports reversed but a different client port: a new
        // inbound connection, which ingress policy denies.
        h.assert_drop(
            Direction::Ingress,
            &to_pod(peer).tcp(80, 40001, TcpFlags::SYN).build(),
            "unsolicited",
        );
    }
}

#[test]
fn udp_and_icmp_replies_are_tracked() {
    let mut h = Harness::new();
    h.apply(
        &PlanBuilder::new()
            .isolate(Direction::Ingress)
            .isolate(Direction::Egress)
            .allow(Direction::Egress, PEER_ID, L4Match::Any, 1)
            .build(),
    );
    h.assert_pass(
        Direction::Egress,
        &from_pod(PEER_V4.into()).udp(5000, 53).build(),
        "query",
    );
    h.assert_pass(
        Direction::Ingress,
        &to_pod(PEER_V4.into()).udp(53, 5000).build(),
        "answer",
    );
    h.assert_pass(
        Direction::Egress,
        &from_pod(PEER_V6.into()).icmpv6_echo().build(),
        "echo request",
    );
    let mut reply = to_pod(PEER_V6.into()).icmpv6_echo().build();
    reply[14 + 40] = 129; // echo reply, same identifier
    h.assert_pass(Direction::Ingress, &reply, "echo reply");
}

#[test]
fn established_flow_survives_an_unrelated_policy_change() {
    let mut h = Harness::new();
    h.apply(&egress_only_to_peer_80().build());
    h.assert_pass(
        Direction::Egress,
        &from_pod(PEER_V4.into())
            .tcp(40000, 80, TcpFlags::SYN)
            .build(),
        "syn",
    );
    let report = h.apply(
        &egress_only_to_peer_80()
            .allow(Direction::Ingress, OTHER_ID, L4Match::Any, 2)
            .build(),
    );
    assert!(report.writes > 0, "the change reached the kernel");
    h.assert_pass(
        Direction::Ingress,
        &to_pod(PEER_V4.into()).tcp(80, 40000, TcpFlags::ACK).build(),
        "reply after change",
    );
    h.assert_pass(
        Direction::Egress,
        &from_pod(PEER_V4.into())
            .tcp(40000, 80, TcpFlags::ACK)
            .build(),
        "data after change",
    );
    assert_eq!(h.dropped(Direction::Ingress, DropReason::PolicyRevoked), 0);
}

#[test]
fn established_flow_is_cut_when_its_allow_is_removed() {
    let mut h = Harness::new();
    h.apply(&egress_only_to_peer_80().build());
    h.assert_pass(
        Direction::Egress,
        &from_pod(PEER_V4.into())
            .tcp(40000, 80, TcpFlags::SYN)
            .build(),
        "syn",
    );
    h.assert_pass(
        Direction::Ingress,
        &to_pod(PEER_V4.into())
            .tcp(80, 40000, TcpFlags::SYN | TcpFlags::ACK)
            .build(),
        "syn-ack",
    );
    h.apply(
        &PlanBuilder::new()
            .isolate(Direction::Ingress)
            .isolate(Direction::Egress)
            .build(),
    );
    h.assert_drop(
        Direction::Ingress,
        &to_pod(PEER_V4.into()).tcp(80, 40000, TcpFlags::ACK).build(),
        "reply after revoke",
    );
    h.assert_drop(
        Direction::Egress,
        &from_pod(PEER_V4.into())
            .tcp(40000, 80, TcpFlags::ACK)
            .build(),
        "data after revoke",
    );
    assert_eq!(h.dropped(Direction::Ingress, DropReason::PolicyRevoked), 1);
}

#[test]
fn the_other_side_of_a_revoked_connection_cannot_reopen_it() {
    let mut h = Harness::new();
    h.apply(
        &PlanBuilder::new()
            .isolate(Direction::Ingress)
            .allow(
                Direction::Ingress,
                PEER_ID,
                L4Match::Ports {
                    protocol: TCP,
                    first: 80,
                    last: 80,
                },
                1,
            )
            .build(),
    );
    h.assert_pass(
        Direction::Ingress,
        &to_pod(PEER_V4.into()).tcp(40000, 80, TcpFlags::SYN).build(),
        "syn in",
    );
    h.apply(&PlanBuilder::new().isolate(Direction::Ingress).build());
    h.assert_drop(
        Direction::Ingress,
        &to_pod(PEER_V4.into()).tcp(40000, 80, TcpFlags::ACK).build(),
        "revoked",
    );
    // The pod (not egress-isolated) still sends its side of the stream ...
    h.assert_pass(
        Direction::Egress,
        &from_pod(PEER_V4.into())
            .tcp(80, 40000, TcpFlags::ACK)
            .build(),
        "server ack out",
    );
    // ... which must not turn the peer's packets into allowed "replies".
    h.assert_drop(
        Direction::Ingress,
        &to_pod(PEER_V4.into()).tcp(40000, 80, TcpFlags::ACK).build(),
        "still revoked",
    );
}

#[test]
fn isolating_a_pod_cuts_flows_its_new_policy_does_not_allow() {
    let mut h = Harness::new();
    h.apply(&PlanBuilder::new().build());
    h.assert_pass(
        Direction::Ingress,
        &to_pod(OTHER_V4.into()).tcp(1234, 22, TcpFlags::SYN).build(),
        "open pod",
    );
    h.apply(&PlanBuilder::new().isolate(Direction::Ingress).build());
    h.assert_drop(
        Direction::Ingress,
        &to_pod(OTHER_V4.into()).tcp(1234, 22, TcpFlags::ACK).build(),
        "after isolation",
    );
}
