//! Test that verdicts follow rules for IPv4 and IPv6 x TCP, UDP, SCTP, ICMP,
//! port ranges at their edges, and the unconditional allows (node, self, ARP,
//! neighbour discovery).

use std::net::IpAddr;

use palisade_agent::policy::plan::L4Match;
use palisade_common::ids::IdentityId;
use palisade_common::verdict::{Direction, DropReason};
use palisade_tests::frames::{Frame, TcpFlags};

use crate::harness::*;

const TCP: u8 = 6;
const UDP: u8 = 17;
const SCTP: u8 = 132;

fn pod_like(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(_) => POD_V4.into(),
        IpAddr::V6(_) => POD_V6.into(),
    }
}

/// A frame from `peer` to the pod (its ingress).
pub fn to_pod(peer: IpAddr) -> Frame {
    Frame::ip(peer, pod_like(peer))
}

/// A frame from the pod to `peer` (its egress).
pub fn from_pod(peer: IpAddr) -> Frame {
    Frame::ip(pod_like(peer), peer)
}

fn peers() -> [IpAddr; 2] {
    [PEER_V4.into(), PEER_V6.into()]
}

fn others() -> [IpAddr; 2] {
    [OTHER_V4.into(), OTHER_V6.into()]
}

#[test]
fn ingress_tcp_port_rule_allows_only_that_peer_and_port() {
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
    for (peer, other) in peers().into_iter().zip(others()) {
        h.assert_pass(
            Direction::Ingress,
            &to_pod(peer).tcp(40000, 80, TcpFlags::SYN).build(),
            "peer to 80",
        );
        h.assert_drop(
            Direction::Ingress,
            &to_pod(peer).tcp(40001, 81, TcpFlags::SYN).build(),
            "peer to 81",
        );
        h.assert_drop(
            Direction::Ingress,
            &to_pod(other).tcp(40002, 80, TcpFlags::SYN).build(),
            "other peer to 80",
        );
        h.assert_drop(
            Direction::Ingress,
            &to_pod(peer).udp(40003, 80).build(),
            "udp to a tcp rule",
        );
    }
    assert_eq!(h.dropped(Direction::Ingress, DropReason::PolicyDenied), 6);
}

#[test]
fn udp_and_sctp_rules_match_their_protocol_only() {
    let mut h = Harness::new();
    h.apply(
        &PlanBuilder::new()
            .isolate(Direction::Ingress)
            .allow(
                Direction::Ingress,
                PEER_ID,
                L4Match::Ports {
                    protocol: UDP,
                    first: 53,
                    last: 53,
                },
                1,
            )
            .allow(
                Direction::Ingress,
                PEER_ID,
                L4Match::Ports {
                    protocol: SCTP,
                    first: 9000,
                    last: 9000,
                },
                2,
            )
            .build(),
    );
    for peer in peers() {
        h.assert_pass(
            Direction::Ingress,
            &to_pod(peer).udp(1000, 53).build(),
            "udp 53",
        );
        h.assert_drop(
            Direction::Ingress,
            &to_pod(peer).tcp(1001, 53, TcpFlags::SYN).build(),
            "tcp 53",
        );
        h.assert_pass(
            Direction::Ingress,
            &to_pod(peer).sctp(1002, 9000).build(),
            "sctp 9000",
        );
        h.assert_drop(
            Direction::Ingress,
            &to_pod(peer).sctp(1003, 9001).build(),
            "sctp 9001",
        );
        h.assert_drop(
            Direction::Ingress,
            &to_pod(peer).udp(1004, 9000).build(),
            "udp 9000",
        );
    }
}

#[test]
fn icmp_matches_only_rules_without_ports() {
    let mut h = Harness::new();
    h.apply(
        &PlanBuilder::new()
            .isolate(Direction::Ingress)
            .allow(
                Direction::Ingress,
                PEER_ID,
                L4Match::Ports {
                    protocol: TCP,
                    first: 1,
                    last: 65535,
                },
                1,
            )
            .allow(Direction::Ingress, OTHER_ID, L4Match::Any, 2)
            .build(),
    );
    h.assert_drop(
        Direction::Ingress,
        &to_pod(PEER_V4.into()).icmp_echo().build(),
        "icmp vs tcp range",
    );
    h.assert_drop(
        Direction::Ingress,
        &to_pod(PEER_V6.into()).icmpv6_echo().build(),
        "icmpv6 vs tcp range",
    );
    h.assert_pass(
        Direction::Ingress,
        &to_pod(OTHER_V4.into()).icmp_echo().build(),
        "icmp vs any",
    );
    h.assert_pass(
        Direction::Ingress,
        &to_pod(OTHER_V6.into()).icmpv6_echo().build(),
        "icmpv6 vs any",
    );
    h.assert_pass(
        Direction::Ingress,
        &to_pod(OTHER_V4.into()).proto(47).build(),
        "gre vs any",
    );
    h.assert_drop(
        Direction::Ingress,
        &to_pod(PEER_V4.into()).proto(47).build(),
        "gre vs tcp range",
    );
}

#[test]
fn protocol_rule_without_port_allows_every_port_of_that_protocol() {
    let mut h = Harness::new();
    h.apply(
        &PlanBuilder::new()
            .isolate(Direction::Egress)
            .allow(Direction::Egress, PEER_ID, L4Match::Protocol(UDP), 1)
            .build(),
    );
    for port in [1, 53, 65535] {
        h.assert_pass(
            Direction::Egress,
            &from_pod(PEER_V4.into()).udp(2000 + port % 7, port).build(),
            "udp any port",
        );
    }
    h.assert_drop(
        Direction::Egress,
        &from_pod(PEER_V4.into())
            .tcp(2000, 53, TcpFlags::SYN)
            .build(),
        "tcp",
    );
}

#[test]
fn port_range_allows_start_and_end_but_not_end_plus_one() {
    let mut h = Harness::new();
    h.apply(
        &PlanBuilder::new()
            .isolate(Direction::Egress)
            .allow(
                Direction::Egress,
                PEER_ID,
                L4Match::Ports {
                    protocol: TCP,
                    first: 1000,
                    last: 2035,
                },
                1,
            )
            .build(),
    );
    for peer in peers() {
        for (port, pass) in [
            (999, false),
            (1000, true),
            (1500, true),
            (2035, true),
            (2036, false),
        ] {
            let frame = from_pod(peer)
                .tcp(30000 + port, port, TcpFlags::SYN)
                .build();
            if pass {
                h.assert_pass(Direction::Egress, &frame, &format!("port {port}"));
            } else {
                h.assert_drop(Direction::Egress, &frame, &format!("port {port}"));
            }
        }
    }
}

#[test]
fn any_identity_rule_allows_unknown_addresses() {
    let mut h = Harness::new();
    h.apply(
        &PlanBuilder::new()
            .isolate(Direction::Egress)
            .allow(
                Direction::Egress,
                IdentityId::ANY,
                L4Match::Ports {
                    protocol: TCP,
                    first: 443,
                    last: 443,
                },
                1,
            )
            .build(),
    );
    let world: IpAddr = "192.0.2.9".parse().expect("addr");
    h.assert_pass(
        Direction::Egress,
        &from_pod(world).tcp(3000, 443, TcpFlags::SYN).build(),
        "world 443",
    );
    h.assert_drop(
        Direction::Egress,
        &from_pod(world).tcp(3001, 80, TcpFlags::SYN).build(),
        "world 80",
    );
}

#[test]
fn ipcache_longest_prefix_decides_the_identity() {
    let mut h = Harness::new();
    h.apply(
        &PlanBuilder::new()
            .isolate(Direction::Egress)
            .ipcache("192.168.0.0/16", IdentityId(30))
            .ipcache("192.168.1.0/24", IdentityId(31))
            .allow(Direction::Egress, IdentityId(30), L4Match::Any, 1)
            .build(),
    );
    let inside: IpAddr = "192.168.2.1".parse().expect("addr");
    let except: IpAddr = "192.168.1.1".parse().expect("addr");
    h.assert_pass(
        Direction::Egress,
        &from_pod(inside).udp(1, 2).build(),
        "in /16",
    );
    h.assert_drop(
        Direction::Egress,
        &from_pod(except).udp(1, 2).build(),
        "in the more specific /24",
    );
}

#[test]
fn non_isolated_direction_is_untouched() {
    let mut h = Harness::new();
    h.apply(&PlanBuilder::new().isolate(Direction::Ingress).build());
    h.assert_pass(
        Direction::Egress,
        &from_pod(OTHER_V4.into()).tcp(1, 2, TcpFlags::SYN).build(),
        "egress",
    );
    h.assert_drop(
        Direction::Ingress,
        &to_pod(OTHER_V4.into()).tcp(3, 4, TcpFlags::SYN).build(),
        "ingress",
    );
}

#[test]
fn node_traffic_and_self_traffic_are_always_allowed() {
    let mut h = Harness::new();
    h.apply(
        &PlanBuilder::new()
            .isolate(Direction::Ingress)
            .isolate(Direction::Egress)
            .build(),
    );
    h.assert_pass(
        Direction::Ingress,
        &to_pod(NODE_V4.into())
            .tcp(5000, 8080, TcpFlags::SYN)
            .build(),
        "kubelet probe",
    );
    h.assert_pass(
        Direction::Ingress,
        &to_pod(POD_V4.into()).udp(1, 2).build(),
        "self v4",
    );
    h.assert_pass(
        Direction::Egress,
        &from_pod(POD_V6.into()).udp(1, 2).build(),
        "self v6",
    );
    h.assert_drop(
        Direction::Egress,
        &from_pod(NODE_V4.into())
            .tcp(5001, 10250, TcpFlags::SYN)
            .build(),
        "pod to node is policed",
    );
}

#[test]
fn egress_to_the_node_follows_the_rules_for_its_identity() {
    let mut h = Harness::new();
    h.apply(
        &PlanBuilder::new()
            .isolate(Direction::Egress)
            .allow(
                Direction::Egress,
                NODE_ID,
                L4Match::Ports {
                    protocol: TCP,
                    first: 10250,
                    last: 10250,
                },
                1,
            )
            .build(),
    );
    h.assert_pass(
        Direction::Egress,
        &from_pod(NODE_V4.into())
            .tcp(1, 10250, TcpFlags::SYN)
            .build(),
        "allowed port",
    );
    h.assert_drop(
        Direction::Egress,
        &from_pod(NODE_V4.into()).tcp(2, 22, TcpFlags::SYN).build(),
        "other port",
    );
}

#[test]
fn arp_and_neighbour_discovery_pass_isolation() {
    let mut h = Harness::new();
    h.apply(
        &PlanBuilder::new()
            .isolate(Direction::Ingress)
            .isolate(Direction::Egress)
            .build(),
    );
    let arp = Frame::arp_request(POD_V4, std::net::Ipv4Addr::new(169, 254, 1, 1))
        .pad_to(60)
        .build();
    h.assert_pass(Direction::Ingress, &arp, "arp in");
    h.assert_pass(Direction::Egress, &arp, "arp out");
    // A neighbour solicitation: ICMPv6 type 135, hop limit 255.
    let ns = from_pod(PEER_V6.into())
        .ttl(255)
        .icmpv6(135, 0)
        .payload_bytes(&palisade_tests::frames::nd::solicit(PEER_V6, &[]))
        .build();
    h.assert_pass(Direction::Egress, &ns, "neighbour solicitation");
    // Control: the same isolation drops other ICMPv6 to that peer.
    h.assert_drop(
        Direction::Egress,
        &from_pod(PEER_V6.into()).icmpv6_echo().build(),
        "echo to the peer",
    );
    // Controls for ARP and neighbour discovery themselves: the same ARP
    // request out with another pod's address as sender, and the same
    // solicitation at hop limit 64 (not neighbour discovery, so policy).
    let forged = Frame::arp_request(PEER_V4, std::net::Ipv4Addr::new(169, 254, 1, 1))
        .pad_to(60)
        .build();
    h.assert_drop(Direction::Egress, &forged, "arp out claiming the peer");
    let low = from_pod(PEER_V6.into())
        .ttl(64)
        .icmpv6(135, 0)
        .payload_bytes(&palisade_tests::frames::nd::solicit(PEER_V6, &[]))
        .build();
    h.assert_drop(Direction::Egress, &low, "solicitation with hop limit 64");
}

#[test]
fn unknown_endpoint_is_dropped() {
    let h = Harness::new();
    h.assert_drop(
        Direction::Ingress,
        &to_pod(PEER_V4.into()).tcp(1, 80, TcpFlags::SYN).build(),
        "no endpoint entry",
    );
    assert_eq!(
        h.dropped(Direction::Ingress, DropReason::EndpointUnknown),
        1
    );
}

#[test]
fn multicast_listener_discovery_passes_isolation_only_towards_a_group() {
    let mut h = Harness::new();
    h.apply(
        &PlanBuilder::new()
            .isolate(Direction::Ingress)
            .isolate(Direction::Egress)
            .build(),
    );
    let icmp_at = 14 + 40;
    let link_local: std::net::Ipv6Addr = "fe80::1".parse().expect("addr");
    // Queries (130) come in from the router to all nodes; reports (131, 143)
    // and done (132) go out to their group or all MLDv2 routers.
    for (ty, group) in [
        (130, "ff02::1"),
        (131, "ff02::1:3"),
        (132, "ff02::2"),
        (143, "ff02::16"),
    ] {
        let group: std::net::Ipv6Addr = group.parse().expect("addr");
        for direction in [Direction::Ingress, Direction::Egress] {
            let (src, dst) = match direction {
                Direction::Ingress => (link_local, group),
                Direction::Egress => (POD_V6, group),
            };
            let mut mld = Frame::ipv6(src, dst).icmpv6_echo().build();
            mld[icmp_at] = ty;
            h.assert_pass(direction, &mld, &format!("MLD type {ty} {direction:?}"));
        }
        // The same message to a unicast pod address is plain ICMPv6.
        let mut unicast = to_pod(PEER_V6.into()).icmpv6_echo().build();
        unicast[icmp_at] = ty;
        h.assert_drop(
            Direction::Ingress,
            &unicast,
            &format!("type {ty} to a pod address"),
        );
    }
}
