//! Test that a pod can send only as itself: IP sources, ARP senders and
//! neighbour discovery claims outside its own addresses (and allowed source
//! prefixes) are dropped as `source_spoofed` on its egress, whether or not a
//! policy isolates it, while its own traffic and the neighbour protocols it
//! needs keep passing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use palisade_agent::policy::plan::L4Match;
use palisade_common::ids::IdentityId;
use palisade_common::verdict::{Direction, DropReason};
use palisade_tests::frames::{Frame, Ipv6Ext, TcpFlags, nd};

use crate::harness::*;
use crate::protocols::{from_pod, to_pod};

const EGRESS: Direction = Direction::Egress;
const SPOOFED: DropReason = DropReason::SourceSpoofed;

/// The Ethernet source the frame builder uses: the pod's MAC.
fn pod_mac() -> [u8; 6] {
    Frame::ipv4(POD_V4, PEER_V4).src_mac()
}

/// The pod's link-local address (modified EUI-64 of its MAC).
fn pod_link_local() -> Ipv6Addr {
    nd::link_local(pod_mac())
}

/// A gateway's link-local address (the node's side of the veth).
const GATEWAY_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);

/// Every kind of IP packet a pod can send from `src` to `dst`.
fn every_kind(src: IpAddr, dst: IpAddr) -> Vec<(&'static str, Vec<u8>)> {
    let f = || Frame::ip(src, dst);
    let mut out = vec![
        ("tcp syn", f().tcp(40000, 80, TcpFlags::SYN).build()),
        ("tcp ack", f().tcp(40000, 80, TcpFlags::ACK).build()),
        ("udp", f().udp(40000, 53).build()),
        ("sctp", f().sctp(40000, 80).build()),
        (
            "first fragment",
            f().udp(40000, 53).fragment(0, true, 9).payload(64).build(),
        ),
        (
            "later fragment",
            f().udp(40000, 53).fragment(9, false, 9).payload(8).build(),
        ),
        ("other protocol", f().proto(47).build()),
    ];
    match src {
        IpAddr::V4(_) => {
            out.push(("icmp", f().icmp_echo().build()));
            out.push((
                "ipv4 options",
                f().ipv4_options(&[1, 1, 1, 1])
                    .tcp(40000, 80, TcpFlags::SYN)
                    .build(),
            ));
            out.push((
                "truncated tcp",
                f().tcp(40000, 80, TcpFlags::SYN)
                    .truncate_to(14 + 20 + 10)
                    .build(),
            ));
        }
        IpAddr::V6(_) => {
            out.push(("icmpv6", f().icmpv6_echo().build()));
            out.push((
                "extension headers",
                f().ipv6_ext_headers(&[Ipv6Ext::HopByHop, Ipv6Ext::DestinationOptions])
                    .tcp(40000, 80, TcpFlags::SYN)
                    .build(),
            ));
            out.push((
                "truncated tcp",
                f().tcp(40000, 80, TcpFlags::SYN)
                    .truncate_to(14 + 40 + 10)
                    .build(),
            ));
        }
    }
    out
}

#[test]
fn forged_sources_from_a_pod_no_policy_isolates_are_dropped_as_spoofed() {
    let mut h = Harness::new();
    h.apply(&PlanBuilder::new().build());
    let forged: [(IpAddr, IpAddr); 4] = [
        // Another pod's address, towards a third.
        (PEER_V4.into(), OTHER_V4.into()),
        (PEER_V6.into(), OTHER_V6.into()),
        // The other family's form of the pod's own address.
        (POD_V4.to_ipv6_mapped().into(), PEER_V6.into()),
        // The unspecified address.
        (Ipv6Addr::UNSPECIFIED.into(), PEER_V6.into()),
    ];
    let mut sent = 0;
    for (src, dst) in forged {
        for (what, frame) in every_kind(src, dst) {
            h.assert_drop(EGRESS, &frame, &format!("{what} from {src}"));
            sent += 1;
        }
    }
    assert_eq!(
        h.dropped(EGRESS, SPOOFED),
        sent,
        "every forgery counted as spoofed"
    );

    // Control: the same packets from the pod's own addresses pass.
    for (own, dst) in [
        (POD_V4.into(), PEER_V4.into()),
        (POD_V6.into(), PEER_V6.into()),
    ] {
        for (what, frame) in every_kind(own, dst) {
            if what.starts_with("truncated") {
                continue;
            }
            h.assert_pass(EGRESS, &frame, &format!("{what} from the pod's {own}"));
        }
    }
    assert_eq!(
        h.dropped(EGRESS, SPOOFED),
        sent,
        "own traffic is never spoofed"
    );
}

#[test]
fn a_forged_source_is_dropped_even_under_audit_and_when_the_policy_allows_its_flow() {
    let mut h = Harness::new();
    h.apply(
        &PlanBuilder::new()
            .isolate(EGRESS)
            .audit()
            .allow(EGRESS, IdentityId::ANY, L4Match::Any, 1)
            .build(),
    );
    let frame = Frame::ipv4(PEER_V4, OTHER_V4).udp(1, 53).build();
    h.assert_drop(EGRESS, &frame, "forged source under audit");
    assert_eq!(h.dropped(EGRESS, SPOOFED), 1);
    assert_eq!(h.audited(EGRESS, SPOOFED), 0, "spoofing is never audited");
    h.assert_pass(
        EGRESS,
        &from_pod(OTHER_V4.into()).udp(1, 53).build(),
        "own source",
    );
}

#[test]
fn established_flows_of_the_pod_do_not_carry_a_forged_source() {
    let mut h = Harness::new();
    h.apply(&PlanBuilder::new().build());
    for (own, peer, other) in [
        (
            IpAddr::from(POD_V4),
            IpAddr::from(PEER_V4),
            IpAddr::from(OTHER_V4),
        ),
        (POD_V6.into(), PEER_V6.into(), OTHER_V6.into()),
    ] {
        // The pod opens a flow; its next packets take the established path.
        h.assert_pass(
            EGRESS,
            &Frame::ip(own, peer).tcp(40000, 80, TcpFlags::SYN).build(),
            "syn",
        );
        h.assert_pass(
            EGRESS,
            &Frame::ip(own, peer).tcp(40000, 80, TcpFlags::ACK).build(),
            "ack",
        );
        // The same ports from a forged source find no entry: checked, dropped.
        h.assert_drop(
            EGRESS,
            &Frame::ip(other, peer).tcp(40000, 80, TcpFlags::ACK).build(),
            "forged source on an established flow's ports",
        );
        // A flow the pod receives is tracked at its own address only: what it
        // receives for another address never opens a way out for that one.
        h.assert_pass(
            Direction::Ingress,
            &Frame::ip(peer, other).udp(53, 5353).build(),
            "datagram for another address",
        );
        h.assert_drop(
            EGRESS,
            &Frame::ip(other, peer).udp(5353, 53).build(),
            "its 'reply' from that address",
        );
    }
    assert_eq!(h.dropped(EGRESS, SPOOFED), 4);
}

#[test]
fn a_pod_receives_nothing_from_its_missing_family_or_a_forged_self() {
    let mut h = Harness::new();
    h.apply(
        &PlanBuilder::new()
            .ipv4_only()
            .isolate(Direction::Ingress)
            .build(),
    );
    h.assert_drop(
        Direction::Ingress,
        &Frame::ipv6(Ipv6Addr::UNSPECIFIED, POD_V6)
            .udp(1, 53)
            .build(),
        "from :: to an IPv4-only pod",
    );
    h.assert_drop(
        Direction::Ingress,
        &Frame::ipv6(Ipv6Addr::UNSPECIFIED, POD_V6)
            .tcp(1, 80, TcpFlags::SYN)
            .build(),
        "tcp from :: to an IPv4-only pod",
    );
    assert_eq!(h.dropped(Direction::Ingress, DropReason::PolicyDenied), 2);
    // An IPv6 packet carrying the pod's IPv4 address (v4-mapped) is not the
    // pod, nor any IPv4 peer.
    let mapped = Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped();
    h.assert_drop(
        Direction::Ingress,
        &Frame::ipv6(mapped, POD_V6).udp(1, 53).build(),
        "v4-mapped self",
    );
    let mapped_peer = PEER_V4.to_ipv6_mapped();
    let mut h = Harness::new();
    h.apply(
        &PlanBuilder::new()
            .isolate(Direction::Ingress)
            .allow(Direction::Ingress, PEER_ID, L4Match::Any, 1)
            .build(),
    );
    h.assert_drop(
        Direction::Ingress,
        &Frame::ipv6(mapped_peer, POD_V6).udp(1, 53).build(),
        "v4-mapped form of an allowed IPv4 peer",
    );
    // Control: the peer itself, and the pod's own IPv4 address, get in.
    h.assert_pass(
        Direction::Ingress,
        &to_pod(PEER_V4.into()).udp(1, 53).build(),
        "the peer",
    );
    h.assert_pass(
        Direction::Ingress,
        &to_pod(PEER_V6.into()).udp(1, 53).build(),
        "the peer, IPv6",
    );
    h.assert_pass(
        Direction::Ingress,
        &Frame::ipv4(POD_V4, POD_V4).udp(1, 53).build(),
        "the pod itself (a hairpin through a Service)",
    );
}

#[test]
fn allowed_source_prefixes_widen_what_a_gateway_pod_may_send() {
    let mut h = Harness::new();
    h.apply(
        &PlanBuilder::new()
            .source_prefix("192.168.7.0/24")
            .source_prefix("fd77::/64")
            .build(),
    );
    for (src, dst) in [
        (
            IpAddr::from(Ipv4Addr::new(192, 168, 7, 9)),
            IpAddr::from(PEER_V4),
        ),
        ("fd77::9".parse().expect("addr"), PEER_V6.into()),
    ] {
        for (what, frame) in every_kind(src, dst) {
            if what.starts_with("truncated") {
                continue;
            }
            h.assert_pass(
                EGRESS,
                &frame,
                &format!("{what} from the gateway prefix {src}"),
            );
        }
    }
    h.assert_pass(
        EGRESS,
        &Frame::arp_request(Ipv4Addr::new(192, 168, 7, 1), Ipv4Addr::new(169, 254, 1, 1))
            .pad_to(60)
            .build(),
        "ARP for an address of its prefix",
    );
    // Outside the prefixes, and for a pod without them, still spoofed.
    h.assert_drop(
        EGRESS,
        &Frame::ipv4(Ipv4Addr::new(192, 168, 8, 1), PEER_V4)
            .udp(1, 53)
            .build(),
        "next /24",
    );
    h.assert_drop(
        EGRESS,
        &Frame::ip("fd77:0:0:1::9".parse().expect("addr"), PEER_V6.into())
            .udp(1, 53)
            .build(),
        "next /64",
    );
    let mut plain = Harness::new();
    plain.apply(&PlanBuilder::new().build());
    plain.assert_drop(
        EGRESS,
        &Frame::ipv4(Ipv4Addr::new(192, 168, 7, 9), PEER_V4)
            .udp(1, 53)
            .build(),
        "no prefixes",
    );
    // Removing the prefixes takes the permission back.
    h.apply(&PlanBuilder::new().build());
    h.assert_drop(
        EGRESS,
        &Frame::ipv4(Ipv4Addr::new(192, 168, 7, 9), PEER_V4)
            .udp(1, 53)
            .build(),
        "prefix removed",
    );
}

#[test]
fn arp_from_a_pod_may_claim_only_its_own_address() {
    let mut h = Harness::new();
    h.apply(
        &PlanBuilder::new()
            .isolate(Direction::Ingress)
            .isolate(EGRESS)
            .build(),
    );
    let gateway = Ipv4Addr::new(169, 254, 1, 1);
    let arp = |sender| Frame::arp_request(sender, gateway).pad_to(60).build();
    h.assert_pass(EGRESS, &arp(POD_V4), "asking for the gateway as itself");
    h.assert_pass(EGRESS, &arp(Ipv4Addr::UNSPECIFIED), "an address probe");
    h.assert_pass(
        Direction::Ingress,
        &arp(gateway),
        "the gateway's ARP reaching the pod",
    );
    h.assert_drop(EGRESS, &arp(PEER_V4), "claiming another pod's address");
    h.assert_drop(EGRESS, &arp(gateway), "claiming the gateway's address");
    assert_eq!(h.dropped(EGRESS, SPOOFED), 2);
    // ARP that is not Ethernet/IPv4 is malformed.
    let mut odd = arp(POD_V4);
    odd[14 + 3] = 0x06; // protocol type 0x0806
    h.assert_drop(EGRESS, &odd, "ARP for another protocol");
    assert_eq!(h.dropped(EGRESS, DropReason::Malformed), 1);
}

/// An ND frame from `src` to `dst`, hop limit 255, with `body`.
fn nd_frame(src: Ipv6Addr, dst: Ipv6Addr, ty: u8, body: Vec<u8>) -> Vec<u8> {
    Frame::ipv6(src, dst)
        .ttl(nd::HOP_LIMIT)
        .icmpv6(ty, 0)
        .payload_bytes(&body)
        .build()
}

#[test]
fn neighbour_discovery_from_a_pod_claims_only_its_own_addresses() {
    let mut h = Harness::new();
    h.apply(
        &PlanBuilder::new()
            .isolate(Direction::Ingress)
            .isolate(EGRESS)
            .build(),
    );
    let mac = pod_mac();
    let ll = pod_link_local();
    let slla = nd::lladdr(1, mac);
    let tlla = nd::lladdr(2, mac);
    let passes: Vec<(&str, Vec<u8>)> = vec![
        (
            "resolving the gateway from its link-local address",
            nd_frame(
                ll,
                nd::solicited_node(GATEWAY_LL),
                nd::NEIGHBOUR_SOLICIT,
                nd::solicit(GATEWAY_LL, &slla),
            ),
        ),
        (
            "resolving a neighbour from its own address",
            nd_frame(
                POD_V6,
                nd::solicited_node(PEER_V6),
                nd::NEIGHBOUR_SOLICIT,
                nd::solicit(PEER_V6, &slla),
            ),
        ),
        (
            "unicast reachability probe from its own address",
            nd_frame(
                POD_V6,
                PEER_V6,
                nd::NEIGHBOUR_SOLICIT,
                nd::solicit(PEER_V6, &slla),
            ),
        ),
        (
            "duplicate address detection of its address",
            nd_frame(
                Ipv6Addr::UNSPECIFIED,
                nd::solicited_node(POD_V6),
                nd::NEIGHBOUR_SOLICIT,
                nd::solicit(POD_V6, &[]),
            ),
        ),
        (
            "duplicate address detection of its link-local address",
            nd_frame(
                Ipv6Addr::UNSPECIFIED,
                nd::solicited_node(ll),
                nd::NEIGHBOUR_SOLICIT,
                nd::solicit(ll, &[]),
            ),
        ),
        (
            "advertising its address",
            nd_frame(
                POD_V6,
                GATEWAY_LL,
                nd::NEIGHBOUR_ADVERT,
                nd::advert(POD_V6, &tlla),
            ),
        ),
        (
            "advertising its link-local address",
            nd_frame(ll, GATEWAY_LL, nd::NEIGHBOUR_ADVERT, nd::advert(ll, &tlla)),
        ),
        (
            "router solicitation",
            nd_frame(
                ll,
                ALL_ROUTERS,
                nd::ROUTER_SOLICIT,
                nd::router_solicit(&slla),
            ),
        ),
    ];
    for (what, frame) in &passes {
        h.assert_pass(EGRESS, frame, what);
    }
    let other_mac = [0x02, 0, 0, 0, 0, 0x99];
    let drops: Vec<(&str, Vec<u8>)> = vec![
        (
            "advertising another pod's address",
            nd_frame(
                POD_V6,
                ALL_NODES,
                nd::NEIGHBOUR_ADVERT,
                nd::advert(PEER_V6, &tlla),
            ),
        ),
        (
            "advertising the gateway's address",
            nd_frame(
                ll,
                ALL_NODES,
                nd::NEIGHBOUR_ADVERT,
                nd::advert(GATEWAY_LL, &tlla),
            ),
        ),
        (
            "soliciting from the gateway's link-local address",
            nd_frame(
                GATEWAY_LL,
                nd::solicited_node(PEER_V6),
                nd::NEIGHBOUR_SOLICIT,
                nd::solicit(PEER_V6, &slla),
            ),
        ),
        (
            "soliciting from another pod's address",
            nd_frame(
                PEER_V6,
                nd::solicited_node(OTHER_V6),
                nd::NEIGHBOUR_SOLICIT,
                nd::solicit(OTHER_V6, &slla),
            ),
        ),
        (
            "binding its address to another MAC",
            nd_frame(
                POD_V6,
                GATEWAY_LL,
                nd::NEIGHBOUR_ADVERT,
                nd::advert(POD_V6, &nd::lladdr(2, other_mac)),
            ),
        ),
        (
            "soliciting with another MAC as its own",
            nd_frame(
                ll,
                nd::solicited_node(GATEWAY_LL),
                nd::NEIGHBOUR_SOLICIT,
                nd::solicit(GATEWAY_LL, &nd::lladdr(1, other_mac)),
            ),
        ),
        (
            "duplicate address detection of another pod's address",
            nd_frame(
                Ipv6Addr::UNSPECIFIED,
                nd::solicited_node(PEER_V6),
                nd::NEIGHBOUR_SOLICIT,
                nd::solicit(PEER_V6, &[]),
            ),
        ),
        (
            "router solicitation from ::",
            nd_frame(
                Ipv6Addr::UNSPECIFIED,
                ALL_ROUTERS,
                nd::ROUTER_SOLICIT,
                nd::router_solicit(&[]),
            ),
        ),
        (
            "link-local source to a global address",
            nd_frame(
                ll,
                PEER_V6,
                nd::NEIGHBOUR_SOLICIT,
                nd::solicit(PEER_V6, &slla),
            ),
        ),
        (
            "router advertisement",
            nd_frame(ll, ALL_NODES, nd::ROUTER_ADVERT, nd::router_advert(&slla)),
        ),
        (
            "redirect",
            nd_frame(ll, PEER_V6, nd::REDIRECT, nd::redirect(ll, OTHER_V6)),
        ),
    ];
    for (what, frame) in &drops {
        h.assert_drop(EGRESS, frame, what);
    }
    assert_eq!(h.dropped(EGRESS, SPOOFED), drops.len() as u64);
    // What the pod receives is not its claim: the gateway's advertisements
    // and solicitations reach it.
    h.assert_pass(
        Direction::Ingress,
        &nd_frame(
            GATEWAY_LL,
            ALL_NODES,
            nd::ROUTER_ADVERT,
            nd::router_advert(&[]),
        ),
        "the gateway's router advertisement",
    );
    h.assert_pass(
        Direction::Ingress,
        &nd_frame(
            GATEWAY_LL,
            nd::solicited_node(POD_V6),
            nd::NEIGHBOUR_SOLICIT,
            nd::solicit(POD_V6, &[]),
        ),
        "the gateway resolving the pod",
    );
}

#[test]
fn neighbour_messages_not_fit_for_neighbour_discovery_face_policy() {
    let mut h = Harness::new();
    h.apply(&PlanBuilder::new().isolate(Direction::Ingress).build());
    // Hop limit below 255: receivers drop it as ND, so it is plain ICMPv6.
    let low = Frame::ipv6(PEER_V6, POD_V6)
        .ttl(64)
        .icmpv6(nd::NEIGHBOUR_SOLICIT, 0)
        .payload_bytes(&nd::solicit(POD_V6, &[]))
        .build();
    h.assert_drop(Direction::Ingress, &low, "solicitation with hop limit 64");
    // Control: the same at hop limit 255 is neighbour discovery.
    h.assert_pass(
        Direction::Ingress,
        &nd_frame(
            PEER_V6,
            POD_V6,
            nd::NEIGHBOUR_SOLICIT,
            nd::solicit(POD_V6, &[]),
        ),
        "solicitation with hop limit 255",
    );
    assert_eq!(h.dropped(Direction::Ingress, DropReason::PolicyDenied), 1);
}

#[test]
fn a_failed_hand_over_of_a_control_frame_drops_it() {
    let mut h = Harness::new();
    h.apply(&PlanBuilder::new().build());
    let arp = Frame::arp_request(POD_V4, Ipv4Addr::new(169, 254, 1, 1))
        .pad_to(60)
        .build();
    h.assert_pass(EGRESS, &arp, "with the control program in place");
    let pin = palisade_agent::datapath::maps_dir(h.dp.bpffs()).join(palisade_common::maps::CONTROL);
    let data = aya::maps::MapData::from_pin(&pin).expect("open the pinned control slot");
    let mut control = aya::maps::ProgramArray::try_from(aya::maps::Map::ProgramArray(data))
        .expect("a program array");
    control
        .clear_index(&palisade_common::maps::CONTROL_PROGRAM_INDEX)
        .expect("clear the control slot");
    h.assert_drop(EGRESS, &arp, "without it: fail closed");
    assert_eq!(h.dropped(EGRESS, DropReason::Malformed), 1);
}
