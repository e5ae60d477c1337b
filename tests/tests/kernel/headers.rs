//! Test that IP options and IPv6 extension headers are skipped to reach the
//! ports, and that truncated headers are dropped (as malformed) only when the
//! pod is isolated.

use palisade_agent::policy::plan::L4Match;
use palisade_common::verdict::{Direction, DropReason};
use palisade_tests::frames::{Ipv6Ext, TcpFlags};

use crate::harness::*;
use crate::protocols::{from_pod, to_pod};

fn plan_allowing_tcp_80() -> palisade_agent::policy::plan::DatapathPlan {
    PlanBuilder::new()
        .isolate(Direction::Ingress)
        .allow(
            Direction::Ingress,
            PEER_ID,
            L4Match::Ports {
                protocol: 6,
                first: 80,
                last: 80,
            },
            1,
        )
        .build()
}

#[test]
fn ipv4_options_are_skipped_to_reach_the_ports() {
    let mut h = Harness::new();
    h.apply(&plan_allowing_tcp_80());
    // Eight bytes of NOP options and an end-of-options: IHL 7.
    let opts = [1u8, 1, 1, 1, 1, 1, 1, 0];
    h.assert_pass(
        Direction::Ingress,
        &to_pod(PEER_V4.into())
            .ipv4_options(&opts)
            .tcp(1, 80, TcpFlags::SYN)
            .build(),
        "80 with options",
    );
    h.assert_drop(
        Direction::Ingress,
        &to_pod(PEER_V4.into())
            .ipv4_options(&opts)
            .tcp(2, 81, TcpFlags::SYN)
            .build(),
        "81 with options",
    );
}

#[test]
fn ipv6_extension_headers_are_skipped_to_reach_the_ports() {
    let mut h = Harness::new();
    h.apply(&plan_allowing_tcp_80());
    let chain = [
        Ipv6Ext::HopByHop,
        Ipv6Ext::Routing,
        Ipv6Ext::DestinationOptions,
    ];
    h.assert_pass(
        Direction::Ingress,
        &to_pod(PEER_V6.into())
            .ipv6_ext_headers(&chain)
            .tcp(1, 80, TcpFlags::SYN)
            .build(),
        "80 behind ext headers",
    );
    h.assert_drop(
        Direction::Ingress,
        &to_pod(PEER_V6.into())
            .ipv6_ext_headers(&chain)
            .tcp(2, 81, TcpFlags::SYN)
            .build(),
        "81 behind ext headers",
    );
}

#[test]
fn truncated_l4_header_is_dropped_as_malformed_when_isolated() {
    let mut h = Harness::new();
    h.apply(&plan_allowing_tcp_80());
    // IPv4 header complete, TCP header cut after 10 bytes.
    let frame = to_pod(PEER_V4.into())
        .tcp(1, 80, TcpFlags::SYN)
        .truncate_to(14 + 20 + 10)
        .pad_to(0)
        .build();
    h.assert_drop(Direction::Ingress, &frame, "truncated tcp");
    let v6 = to_pod(PEER_V6.into())
        .udp(1, 80)
        .truncate_to(14 + 40 + 4)
        .build();
    h.assert_drop(Direction::Ingress, &v6, "truncated udp over ipv6");
    assert_eq!(h.dropped(Direction::Ingress, DropReason::Malformed), 2);
}

#[test]
fn truncated_header_passes_when_not_isolated() {
    let mut h = Harness::new();
    h.apply(&PlanBuilder::new().isolate(Direction::Egress).build());
    let frame = to_pod(PEER_V4.into())
        .tcp(1, 80, TcpFlags::SYN)
        .truncate_to(14 + 20 + 10)
        .build();
    h.assert_pass(Direction::Ingress, &frame, "ingress is not isolated");
    // Drop control: the same truncated segment in the isolated direction.
    let out = from_pod(PEER_V4.into())
        .tcp(80, 1, TcpFlags::SYN)
        .truncate_to(14 + 20 + 10)
        .pad_to(0)
        .build();
    h.assert_drop(Direction::Egress, &out, "egress is isolated");
    assert_eq!(h.dropped(Direction::Egress, DropReason::Malformed), 1);
}

#[test]
fn bad_ihl_is_malformed() {
    let mut h = Harness::new();
    h.apply(&plan_allowing_tcp_80());
    let mut frame = to_pod(PEER_V4.into()).tcp(1, 80, TcpFlags::SYN).build();
    frame[14] = 0x44; // IHL 4 (16 bytes): invalid
    h.assert_drop(Direction::Ingress, &frame, "ihl 4");
    assert_eq!(h.dropped(Direction::Ingress, DropReason::Malformed), 1);
}
