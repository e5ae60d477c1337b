//! Test that replies and established flows take the conntrack path, and that a
//! policy change re-checks established flows: still-allowed ones continue,
//! revoked ones are cut.

use palisade_agent::datapath::Capacities;
use palisade_agent::datapath::view::KernelView;
use palisade_agent::policy::plan::L4Match;
use palisade_agent::sync::render::addr16;
use palisade_common::conntrack::{CT_FLAG_ORIGIN_EGRESS, CtKeyV4, CtValue};
use palisade_common::ids::Revision;
use palisade_common::maps;
use palisade_common::stats::StatIndex;
use palisade_common::verdict::{Direction, DropReason};
use palisade_tests::frames::{Ipv6Ext, TcpFlags};

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

/// A harness where the pod, isolated both ways and allowed out to the peer's
/// TCP port 80, has opened a connection to `peer` (40000 -> 80).
fn connected_to_peer_80(peer: std::net::IpAddr) -> Harness {
    let mut h = Harness::new();
    h.apply(&egress_only_to_peer_80().build());
    h.assert_pass(
        Direction::Egress,
        &from_pod(peer).tcp(40000, 80, TcpFlags::SYN).build(),
        "syn out",
    );
    h
}

#[test]
fn replies_of_an_allowed_connection_pass_into_an_ingress_isolated_pod() {
    for peer in [PEER_V4.into(), PEER_V6.into()] {
        let h = connected_to_peer_80(peer);
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
    // Drop controls: the same answers for exchanges the pod never opened.
    h.assert_drop(
        Direction::Ingress,
        &to_pod(PEER_V4.into()).udp(53, 5001).build(),
        "answer to a port that sent no query",
    );
    let mut stray = reply.clone();
    stray[14 + 40 + 4] = 0x43; // identifier 0x4334: no such request
    h.assert_drop(Direction::Ingress, &stray, "echo reply to no request");
}

#[test]
fn established_flow_survives_an_unrelated_policy_change() {
    let mut h = connected_to_peer_80(PEER_V4.into());
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
    // Drop control: after the same change, a "reply" of a connection that
    // was never opened is still denied.
    h.assert_drop(
        Direction::Ingress,
        &to_pod(PEER_V4.into()).tcp(80, 40001, TcpFlags::ACK).build(),
        "reply of a flow never opened",
    );
}

#[test]
fn established_flow_is_cut_when_its_allow_is_removed() {
    let mut h = connected_to_peer_80(PEER_V4.into());
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

#[test]
fn ipv4_flows_are_tracked_in_the_v4_map_and_ipv6_flows_in_the_v6_map() {
    let h = connected_to_peer_80(PEER_V4.into());
    let v4: Vec<_> =
        h.dp.maps
            .conntrack_v4
            .iter()
            .collect::<Result<_, _>>()
            .expect("read CONNTRACK_V4");
    assert_eq!(v4.len(), 1, "{v4:?}");
    let (key, value) = v4[0];
    assert_eq!(
        key,
        CtKeyV4 {
            ifindex: TEST_IFINDEX,
            protocol: TCP,
            _pad0: 0,
            _pad1: 0,
            local_port_be: 40000u16.to_be_bytes(),
            remote_port_be: 80u16.to_be_bytes(),
            local: POD_V4.octets(),
            remote: PEER_V4.octets(),
        }
    );
    assert_ne!(value.flags & CT_FLAG_ORIGIN_EGRESS, 0);
    assert_eq!(
        h.dp.maps.conntrack_v6.keys().count(),
        0,
        "v4 flow in v6 map"
    );
    h.assert_pass(
        Direction::Ingress,
        &to_pod(PEER_V4.into())
            .tcp(80, 40000, TcpFlags::SYN | TcpFlags::ACK)
            .build(),
        "syn-ack in v4",
    );

    h.assert_pass(
        Direction::Egress,
        &from_pod(PEER_V6.into())
            .tcp(40000, 80, TcpFlags::SYN)
            .build(),
        "syn out v6",
    );
    let v6: Vec<_> =
        h.dp.maps
            .conntrack_v6
            .iter()
            .collect::<Result<_, _>>()
            .expect("read CONNTRACK");
    assert_eq!(v6.len(), 1, "{v6:?}");
    assert_eq!(v6[0].0.local, addr16(POD_V6.into()));
    assert_eq!(v6[0].0.remote, addr16(PEER_V6.into()));
    assert_eq!(v6[0].0.to_v4(), None);
    h.assert_pass(
        Direction::Ingress,
        &to_pod(PEER_V6.into())
            .tcp(80, 40000, TcpFlags::SYN | TcpFlags::ACK)
            .build(),
        "syn-ack in v6",
    );
    assert_eq!(h.dp.maps.conntrack_v4.keys().count(), 1);
    assert_eq!(h.dp.maps.conntrack_len(), 2, "both families counted");

    let view = KernelView::open(&h.dp.bpffs().join("maps")).expect("open pinned maps");
    let entries = |map: &str| {
        view.pressure()
            .iter()
            .find(|p| p.map == map)
            .map(|p| p.entries)
    };
    assert_eq!(entries(maps::CONNTRACK_V4), Some(1));
    assert_eq!(entries(maps::CONNTRACK), Some(1));
    // Drop controls: in either family, the syn-ack of a flow never opened.
    for peer in [PEER_V4.into(), PEER_V6.into()] {
        h.assert_drop(
            Direction::Ingress,
            &to_pod(peer)
                .tcp(80, 40001, TcpFlags::SYN | TcpFlags::ACK)
                .build(),
            &format!("syn-ack of a flow never opened, {peer}"),
        );
    }
}

#[test]
fn a_revoked_ipv6_flow_is_cut_like_an_ipv4_one() {
    let mut h = connected_to_peer_80(PEER_V6.into());
    h.apply(
        &PlanBuilder::new()
            .isolate(Direction::Ingress)
            .isolate(Direction::Egress)
            .build(),
    );
    h.assert_drop(
        Direction::Ingress,
        &to_pod(PEER_V6.into())
            .tcp(80, 40000, TcpFlags::SYN | TcpFlags::ACK)
            .build(),
        "reply after revoke",
    );
    assert_eq!(h.dropped(Direction::Ingress, DropReason::PolicyRevoked), 1);
    assert_eq!(h.dp.maps.conntrack_len(), 0, "the revoked entry is removed");
}

#[test]
fn a_full_v4_conntrack_still_passes_allowed_packets_and_leaves_v6_alone() {
    const CAPACITY: u32 = 4;
    const FLOWS: u16 = 64;
    let mut h = Harness::with_capacities(Capacities {
        conntrack_v4: CAPACITY,
        ..Capacities::default()
    });
    h.apply(&egress_only_to_peer_80().build());
    // An IPv6 flow opened before the IPv4 map fills up.
    h.assert_pass(
        Direction::Egress,
        &from_pod(PEER_V6.into())
            .tcp(40000, 80, TcpFlags::SYN)
            .build(),
        "syn v6",
    );
    for port in 0..FLOWS {
        h.assert_pass(
            Direction::Egress,
            &from_pod(PEER_V4.into())
                .tcp(40000 + port, 80, TcpFlags::SYN)
                .build(),
            "allowed syn while conntrack is full",
        );
    }
    assert_eq!(
        h.forwarded(Direction::Egress),
        u64::from(FLOWS) + 1,
        "every IPv4 SYN and the IPv6 one"
    );
    let tracked = h.dp.maps.conntrack_v4.keys().count();
    assert!(tracked <= CAPACITY as usize, "{tracked} entries");
    assert_eq!(
        h.dp.maps.conntrack_v6.keys().count(),
        1,
        "the IPv4 flood evicts nothing from the IPv6 map"
    );
    // The most recent flow is tracked (LRU evicted an older one), or its
    // insert failed and was counted: never a silent loss.
    let last = FLOWS - 1;
    let failed =
        h.dp.maps
            .stat(StatIndex::CtInsertFailed, Direction::Egress)
            .expect("stats")
            .packets;
    let reply = to_pod(PEER_V4.into())
        .tcp(80, 40000 + last, TcpFlags::SYN | TcpFlags::ACK)
        .build();
    if failed == 0 {
        h.assert_pass(Direction::Ingress, &reply, "reply of the newest flow");
    }
    // The IPv6 flow is still tracked.
    h.assert_pass(
        Direction::Ingress,
        &to_pod(PEER_V6.into())
            .tcp(80, 40000, TcpFlags::SYN | TcpFlags::ACK)
            .build(),
        "reply v6",
    );
    // Drop controls: replies of flows never opened, in either family.
    for peer in [PEER_V4.into(), PEER_V6.into()] {
        h.assert_drop(
            Direction::Ingress,
            &to_pod(peer)
                .tcp(80, 39999, TcpFlags::SYN | TcpFlags::ACK)
                .build(),
            &format!("reply of a flow never opened, {peer}"),
        );
    }
}

#[test]
fn an_upgrade_from_the_shared_conntrack_map_keeps_ipv4_flows() {
    let mut old = connected_to_peer_80(PEER_V4.into());
    // Turn that into what a build from before the split by family left
    // behind: the flow in `CONNTRACK` under its v4-mapped key, and no
    // `CONNTRACK_V4` pin.
    let (key, value) = old
        .dp
        .maps
        .conntrack_v4
        .iter()
        .next()
        .expect("one entry")
        .expect("read CONNTRACK_V4");
    old.dp.maps.conntrack_v4.remove(&key).expect("remove");
    old.dp
        .maps
        .conntrack_v6
        .insert(key.to_v6(), value, 0)
        .expect("write the legacy entry");
    let maps_dir = old.dp.bpffs().join("maps");
    std::fs::remove_file(maps_dir.join(maps::CONNTRACK_V4)).expect("unpin CONNTRACK_V4");

    let mut new = Harness::reload(&old);
    let moved = new.dp.maps.conntrack_v4.get(&key, 0).expect("moved over");
    assert_eq!(moved, value);
    new.assert_pass(
        Direction::Ingress,
        &to_pod(PEER_V4.into())
            .tcp(80, 40000, TcpFlags::SYN | TcpFlags::ACK)
            .build(),
        "reply of the flow tracked before the upgrade",
    );

    // Until the links carry the new programs, the old ones keep tracking
    // IPv4 flows in `CONNTRACK`; the last carry-over picks those up too, and
    // leaves the entries the new programs wrote since alone.
    let late = CtKeyV4 {
        local_port_be: 40001u16.to_be_bytes(),
        ..key
    };
    new.dp
        .maps
        .conntrack_v6
        .insert(late.to_v6(), value, 0)
        .expect("a flow the old programs tracked after the load");
    let stale = CtValue {
        revision: Revision(value.revision.0.wrapping_sub(1)),
        ..value
    };
    new.dp
        .maps
        .conntrack_v6
        .insert(key.to_v6(), stale, 0)
        .expect("an older copy of the moved flow");
    let current = new.dp.maps.conntrack_v4.get(&key, 0).expect("moved over");
    new.dp.finish_conntrack_upgrade();
    assert_eq!(
        new.dp.maps.conntrack_v4.get(&key, 0).expect("still there"),
        current,
        "an entry already in CONNTRACK_V4 is not overwritten"
    );
    new.assert_pass(
        Direction::Ingress,
        &to_pod(PEER_V4.into())
            .tcp(80, 40001, TcpFlags::SYN | TcpFlags::ACK)
            .build(),
        "reply of a flow the old programs tracked after the new agent loaded",
    );
    // Drop control: a reply of a flow neither program ever tracked.
    new.assert_drop(
        Direction::Ingress,
        &to_pod(PEER_V4.into())
            .tcp(80, 40002, TcpFlags::SYN | TcpFlags::ACK)
            .build(),
        "reply of a flow never tracked",
    );
}

/// A frame to or from the pod, plain or with IPv4 options / IPv6 extension
/// headers in front of its transport header.
fn framed(to: bool, peer: std::net::IpAddr, extended: bool) -> palisade_tests::frames::Frame {
    let frame = if to { to_pod(peer) } else { from_pod(peer) };
    match (extended, peer.is_ipv4()) {
        (false, _) => frame,
        (true, true) => frame.ipv4_options(&[1, 1, 1, 0]),
        (true, false) => frame.ipv6_ext_headers(&[Ipv6Ext::HopByHop, Ipv6Ext::DestinationOptions]),
    }
}

/// Plain TCP and UDP packets of established flows take a shorter path than
/// packets with IPv4 options or IPv6 extension headers. Both must find the
/// entry the other opened: a flow opened by either kind of packet passes
/// replies of the other kind into the ingress-isolated pod, over both
/// families, TCP and UDP.
#[test]
fn plain_and_extended_headers_share_one_conntrack_entry() {
    let mut h = Harness::new();
    h.apply(
        &egress_only_to_peer_80()
            .allow(
                Direction::Egress,
                PEER_ID,
                L4Match::Ports {
                    protocol: 17,
                    first: 53,
                    last: 53,
                },
                2,
            )
            .build(),
    );
    let mut client_port = 41000;
    for peer in [PEER_V4.into(), PEER_V6.into()] {
        for (opened_extended, reply_extended) in
            [(false, true), (true, false), (true, true), (false, false)]
        {
            client_port += 1;
            let what =
                format!("{peer} opened extended={opened_extended} reply extended={reply_extended}");
            h.assert_pass(
                Direction::Egress,
                &framed(false, peer, opened_extended)
                    .tcp(client_port, 80, TcpFlags::SYN)
                    .build(),
                &format!("syn out, {what}"),
            );
            h.assert_pass(
                Direction::Ingress,
                &framed(true, peer, reply_extended)
                    .tcp(80, client_port, TcpFlags::SYN | TcpFlags::ACK)
                    .build(),
                &format!("syn-ack in, {what}"),
            );
            h.assert_pass(
                Direction::Egress,
                &framed(false, peer, !reply_extended)
                    .tcp(client_port, 80, TcpFlags::ACK)
                    .build(),
                &format!("ack out, {what}"),
            );
            h.assert_pass(
                Direction::Egress,
                &framed(false, peer, opened_extended)
                    .udp(client_port, 53)
                    .build(),
                &format!("udp out, {what}"),
            );
            h.assert_pass(
                Direction::Ingress,
                &framed(true, peer, reply_extended)
                    .udp(53, client_port)
                    .build(),
                &format!("udp reply in, {what}"),
            );
            // The same ports from the peer's side, unsolicited: denied by
            // either path.
            h.assert_drop(
                Direction::Ingress,
                &framed(true, peer, reply_extended)
                    .udp(54, client_port)
                    .build(),
                &format!("unsolicited udp in, {what}"),
            );
        }
    }
}

/// A TCP segment of an established flow whose data offset is below five words
/// is malformed whichever path reads it: dropped in an isolated direction.
#[test]
fn malformed_tcp_segment_of_an_established_flow_is_dropped() {
    for peer in [PEER_V4.into(), PEER_V6.into()] {
        let h = connected_to_peer_80(peer);
        let mut bad = to_pod(peer)
            .tcp(80, 40000, TcpFlags::SYN | TcpFlags::ACK)
            .build();
        let l4 = 14 + if peer.is_ipv4() { 20 } else { 40 };
        bad[l4 + 12] = 4 << 4;
        h.assert_drop(Direction::Ingress, &bad, "data offset 4");
        assert_eq!(
            h.dropped(Direction::Ingress, DropReason::Malformed),
            1,
            "{peer}"
        );
    }
}
