//! Test that deny entries (ClusterNetworkPolicy's Deny rules) decide where
//! they are the most specific entry of the first lookup that finds one:
//! an identity's deny shadows ANY's allow, a longer allow inside a deny
//! passes, carved-out port ranges hold at their boundaries; that a deny
//! entry cuts established flows it now covers, leaves the replies of allowed
//! flows alone, and is credited with its hits.

use std::net::IpAddr;

use palisade_agent::policy::plan::L4Match;
use palisade_common::ids::{IdentityId, RuleId};
use palisade_common::verdict::{Direction, DropReason};
use palisade_tests::frames::{Frame, TcpFlags};

use crate::harness::*;
use crate::protocols::{from_pod, to_pod};

const TCP: u8 = 6;
const UDP: u8 = 17;

fn ports(protocol: u8, first: u16, last: u16) -> L4Match {
    L4Match::Ports {
        protocol,
        first,
        last,
    }
}

fn peers() -> [IpAddr; 2] {
    [PEER_V4.into(), PEER_V6.into()]
}

fn others() -> [IpAddr; 2] {
    [OTHER_V4.into(), OTHER_V6.into()]
}

/// A new flow's first packet to `port` of the server, in `direction`.
fn first_packet(
    direction: Direction,
    peer: IpAddr,
    protocol: u8,
    sport: u16,
    port: u16,
) -> Vec<u8> {
    let frame: Frame = match direction {
        Direction::Ingress => to_pod(peer),
        Direction::Egress => from_pod(peer),
    };
    match protocol {
        TCP => frame.tcp(sport, port, TcpFlags::SYN).build(),
        _ => frame.udp(sport, port).build(),
    }
}

#[test]
fn an_identity_deny_shadows_an_any_allow() {
    let mut h = Harness::new();
    h.apply(
        &PlanBuilder::new()
            .isolate(Direction::Ingress)
            .allow(Direction::Ingress, IdentityId::ANY, L4Match::Any, 1)
            .deny(Direction::Ingress, PEER_ID, L4Match::Protocol(TCP), 2)
            .build(),
    );
    for peer in peers() {
        h.assert_drop(
            Direction::Ingress,
            &to_pod(peer).tcp(1000, 80, TcpFlags::SYN).build(),
            "the peer's TCP: its identity's deny",
        );
        // The identity has no UDP entry: ANY's allow decides.
        h.assert_pass(
            Direction::Ingress,
            &to_pod(peer).udp(1000, 53).build(),
            "the peer's UDP",
        );
    }
    for other in others() {
        h.assert_pass(
            Direction::Ingress,
            &to_pod(other).tcp(1000, 80, TcpFlags::SYN).build(),
            "another identity's TCP: ANY's allow",
        );
    }
    assert_eq!(h.dropped(Direction::Ingress, DropReason::PolicyDenied), 2);
    assert_eq!(h.forwarded(Direction::Ingress), 4);
}

#[test]
fn a_longer_allow_inside_a_deny_passes_and_the_rest_of_the_deny_holds() {
    let mut h = Harness::new();
    h.apply(
        &PlanBuilder::new()
            .isolate(Direction::Egress)
            .allow(Direction::Egress, IdentityId::ANY, L4Match::Any, 1)
            .deny(Direction::Egress, PEER_ID, L4Match::Protocol(TCP), 2)
            .allow(Direction::Egress, PEER_ID, ports(TCP, 8080, 8080), 3)
            .build(),
    );
    for peer in peers() {
        h.assert_pass(
            Direction::Egress,
            &from_pod(peer).tcp(40000, 8080, TcpFlags::SYN).build(),
            "8080: the allow inside the deny",
        );
        for port in [8079, 8081, 80] {
            h.assert_drop(
                Direction::Egress,
                &from_pod(peer).tcp(40000, port, TcpFlags::SYN).build(),
                &format!("{port}: the deny around it"),
            );
        }
    }
    assert_eq!(h.dropped(Direction::Egress, DropReason::PolicyDenied), 6);
}

#[test]
fn a_deny_range_carved_out_of_an_allow_range_holds_at_every_boundary() {
    let mut b = PlanBuilder::new()
        .isolate(Direction::Ingress)
        .isolate(Direction::Egress);
    for direction in Direction::ALL {
        for protocol in [TCP, UDP] {
            b = b
                .allow(direction, IdentityId::ANY, ports(protocol, 1000, 2000), 1)
                .deny(direction, IdentityId::ANY, ports(protocol, 1500, 1600), 2);
        }
    }
    let mut h = Harness::new();
    h.apply(&b.build());
    let expected = [
        (999, false),
        (1000, true),
        (1499, true),
        (1500, false),
        (1600, false),
        (1601, true),
        (2000, true),
        (2001, false),
    ];
    let mut sport = 30000;
    for direction in Direction::ALL {
        for protocol in [TCP, UDP] {
            for peer in peers() {
                for (port, passes) in expected {
                    sport += 1;
                    let frame = first_packet(direction, peer, protocol, sport, port);
                    let what = format!("{direction:?} protocol {protocol} to {peer} port {port}");
                    if passes {
                        h.assert_pass(direction, &frame, &what);
                    } else {
                        h.assert_drop(direction, &frame, &what);
                    }
                }
            }
        }
    }
    for direction in Direction::ALL {
        // 2 protocols x 2 families x 4 denied ports.
        assert_eq!(h.dropped(direction, DropReason::PolicyDenied), 16);
        assert_eq!(h.forwarded(direction), 16);
    }
}

#[test]
fn an_established_flow_is_cut_both_ways_when_a_deny_entry_now_covers_it() {
    let allow_out_80 = || {
        PlanBuilder::new()
            .isolate(Direction::Ingress)
            .isolate(Direction::Egress)
            .allow(Direction::Egress, IdentityId::ANY, ports(TCP, 80, 80), 1)
    };
    for (peer, other) in peers().into_iter().zip(others()) {
        let mut h = Harness::new();
        h.apply(&allow_out_80().build());
        // Three connections: two to the peer, one to the other address.
        for (to, sport) in [(peer, 40000), (peer, 40001), (other, 40002)] {
            h.assert_pass(
                Direction::Egress,
                &from_pod(to).tcp(sport, 80, TcpFlags::SYN).build(),
                "syn out",
            );
            h.assert_pass(
                Direction::Ingress,
                &to_pod(to)
                    .tcp(80, sport, TcpFlags::SYN | TcpFlags::ACK)
                    .build(),
                "syn-ack in",
            );
        }
        // The peer's identity now denies TCP, shadowing ANY's allow.
        h.apply(
            &allow_out_80()
                .deny(Direction::Egress, PEER_ID, L4Match::Protocol(TCP), 2)
                .build(),
        );
        let reply = |sport| to_pod(peer).tcp(80, sport, TcpFlags::ACK).build();
        let data = |sport| from_pod(peer).tcp(sport, 80, TcpFlags::ACK).build();
        // First packet after the change a reply, then the other way ...
        h.assert_drop(Direction::Ingress, &reply(40000), "reply, first after");
        h.assert_drop(Direction::Egress, &data(40000), "data after the cut");
        // ... and first a data segment, then a reply.
        h.assert_drop(Direction::Egress, &data(40001), "data, first after");
        h.assert_drop(Direction::Ingress, &reply(40001), "reply after the cut");
        assert_eq!(h.dropped(Direction::Ingress, DropReason::PolicyRevoked), 1);
        assert_eq!(h.dropped(Direction::Egress, DropReason::PolicyRevoked), 1);
        // Pass control: the connection the deny does not cover goes on.
        h.assert_pass(
            Direction::Ingress,
            &to_pod(other).tcp(80, 40002, TcpFlags::ACK).build(),
            "the other connection's reply",
        );
        h.assert_pass(
            Direction::Egress,
            &from_pod(other).tcp(40002, 80, TcpFlags::ACK).build(),
            "the other connection's data",
        );
    }
}

#[test]
fn an_inbound_flow_is_cut_when_an_ingress_deny_now_covers_it() {
    let allow_in = || {
        PlanBuilder::new().isolate(Direction::Ingress).allow(
            Direction::Ingress,
            PEER_ID,
            L4Match::Protocol(UDP),
            1,
        )
    };
    let mut h = Harness::new();
    h.apply(&allow_in().build());
    let query = to_pod(PEER_V6.into()).udp(5000, 53).build();
    let answer = from_pod(PEER_V6.into()).udp(53, 5000).build();
    h.assert_pass(Direction::Ingress, &query, "query in");
    h.assert_pass(Direction::Egress, &answer, "answer out");
    h.apply(
        &allow_in()
            .deny(Direction::Ingress, PEER_ID, ports(UDP, 53, 53), 2)
            .build(),
    );
    h.assert_drop(Direction::Ingress, &query, "query after the deny");
    h.assert_drop(Direction::Ingress, &query, "still denied");
    assert_eq!(h.dropped(Direction::Ingress, DropReason::PolicyRevoked), 1);
    assert_eq!(h.dropped(Direction::Ingress, DropReason::PolicyDenied), 1);
    // Pass control: another port of the allowed protocol.
    h.assert_pass(
        Direction::Ingress,
        &to_pod(PEER_V6.into()).udp(5000, 54).build(),
        "port 54",
    );
}

#[test]
fn replies_of_an_allowed_flow_pass_while_a_deny_covers_their_direction() {
    let plan = |extra_rule| {
        PlanBuilder::new()
            .isolate(Direction::Ingress)
            .isolate(Direction::Egress)
            .allow(Direction::Egress, PEER_ID, ports(TCP, 80, 80), 1)
            // New inbound TCP from anyone is denied by rule 2.
            .deny(
                Direction::Ingress,
                IdentityId::ANY,
                L4Match::Protocol(TCP),
                2,
            )
            .allow(
                Direction::Ingress,
                OTHER_ID,
                L4Match::Protocol(UDP),
                extra_rule,
            )
            .build()
    };
    for peer in peers() {
        let mut h = Harness::new();
        h.apply(&plan(3));
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
        // A new revision re-checks the flow as it was opened: still allowed.
        h.apply(&plan(4));
        h.assert_pass(
            Direction::Ingress,
            &to_pod(peer).tcp(80, 40000, TcpFlags::ACK).build(),
            "reply after a new revision",
        );
        h.assert_pass(
            Direction::Egress,
            &from_pod(peer).tcp(40000, 80, TcpFlags::ACK).build(),
            "data after a new revision",
        );
        // Drop control: an inbound connection from the same peer.
        h.assert_drop(
            Direction::Ingress,
            &to_pod(peer).tcp(80, 40001, TcpFlags::SYN).build(),
            "unsolicited syn",
        );
        assert_eq!(h.dropped(Direction::Ingress, DropReason::PolicyDenied), 1);
        assert_eq!(h.dropped(Direction::Ingress, DropReason::PolicyRevoked), 0);
    }
}

#[test]
fn deny_rule_hits_are_counted_in_rule_counters() {
    let mut h = Harness::new();
    h.apply(
        &PlanBuilder::new()
            .isolate(Direction::Ingress)
            .allow(Direction::Ingress, IdentityId::ANY, L4Match::Any, 1)
            .deny(Direction::Ingress, PEER_ID, ports(TCP, 22, 22), 9)
            .deny(Direction::Ingress, PEER_ID, ports(TCP, 23, 23), 0)
            .build(),
    );
    let frame = |sport, port| {
        to_pod(PEER_V4.into())
            .tcp(sport, port, TcpFlags::SYN)
            .payload(100)
            .build()
    };
    let len = frame(1, 22).len() as u64;
    for sport in 1..=3 {
        h.assert_drop(Direction::Ingress, &frame(sport, 22), "22: rule 9 denies");
    }
    h.assert_drop(Direction::Ingress, &frame(4, 23), "23: a deny of no rule");
    h.assert_pass(Direction::Ingress, &frame(5, 80), "80: rule 1 allows");
    let counter = |rule| h.dp.maps.rule_counter(RuleId(rule)).expect("counter");
    let c9 = counter(9);
    assert_eq!((c9.packets, c9.bytes), (3, 3 * len));
    assert_eq!(counter(1).packets, 1);
    assert_eq!(counter(0).packets, 0, "a deny of no rule credits no slot");
    assert_eq!(h.dropped(Direction::Ingress, DropReason::PolicyDenied), 4);
}
