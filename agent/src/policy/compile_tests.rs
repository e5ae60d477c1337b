//! One test per semantic rule of the compiler (plan + lookup, cross-checked
//! against the reference evaluator where a flow is checked).

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use palisade_common::ids::{IdentityId, RuleId};

use super::Compiler;
use crate::policy::eval;
use crate::policy::fixtures::*;
use crate::policy::lookup::ipcache_lookup;
use crate::policy::plan::L4Match;
use crate::state::ClusterState;
use crate::state::{Direction, PodRef};

/// Checks a flow with the compiled plan and asserts the reference evaluator agrees.
fn check(c: &ClusterState, src: &str, dst: &str, protocol: u8, port: u16) -> bool {
    let by_plan = plan_allows(&plan_all(c), src, dst, protocol, port);
    let (s, d): (IpAddr, IpAddr) = (src.parse().expect("ip"), dst.parse().expect("ip"));
    assert_eq!(
        by_plan,
        eval::allowed(c, s, d, protocol, port),
        "plan and eval disagree on {src}->{dst} {protocol}/{port}"
    );
    by_plan
}

fn tcp_ok(c: &ClusterState, src: &str, dst: &str, port: u16) -> bool {
    check(c, src, dst, 6, port)
}

fn net(s: &str) -> IpNet {
    s.parse().expect("net")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn key(ns: &str, name: &str) -> PodRef {
    PodRef {
        namespace: ns.into(),
        name: name.into(),
    }
}

/// Two namespaces x, y with pods a (x), b (x), c (y).
fn xy() -> Vec<crate::source::K8sObject> {
    objs![
        namespace("x").label("ns", "x"),
        namespace("y").label("ns", "y"),
        pod("a")
            .ns("x")
            .label("pod", "a")
            .ip("10.0.0.1")
            .port("serve-80-tcp", 80, "TCP"),
        pod("b")
            .ns("x")
            .label("pod", "b")
            .ip("10.0.0.2")
            .port("serve-80-tcp", 80, "TCP"),
        pod("c")
            .ns("y")
            .label("pod", "b")
            .ip("10.0.1.3")
            .port("serve-81-tcp", 81, "TCP"),
    ]
}

fn with(
    mut base: Vec<crate::source::K8sObject>,
    more: Vec<crate::source::K8sObject>,
) -> ClusterState {
    base.extend(more);
    cluster(base)
}

#[test]
fn unselected_pods_are_not_isolated() {
    let c = with(
        xy(),
        objs![
            policy("x", "only-a")
                .select(labels(&[("pod", "a")]))
                .ingress_none()
        ],
    );
    let plan = plan_all(&c);
    assert!(!plan.endpoints[&key("x", "b")].ingress_isolated);
    assert!(tcp_ok(&c, "10.0.1.3", "10.0.0.2", 80));
    assert!(!tcp_ok(&c, "10.0.1.3", "10.0.0.1", 80));
}

#[test]
fn ingress_empty_list_isolates_and_allows_nothing() {
    let c = with(xy(), objs![policy("x", "deny").ingress_none()]);
    let plan = plan_all(&c);
    assert!(plan.endpoints[&key("x", "a")].ingress_isolated);
    assert!(!plan.endpoints[&key("x", "a")].egress_isolated);
    assert!(!tcp_ok(&c, "10.0.0.2", "10.0.0.1", 80));
    assert!(
        tcp_ok(&c, "10.0.0.1", "10.0.1.3", 81),
        "egress is not isolated"
    );
}

#[test]
fn absent_ingress_without_policy_types_still_isolates_ingress() {
    let c = with(xy(), objs![policy("x", "deny")]);
    assert!(plan_all(&c).endpoints[&key("x", "a")].ingress_isolated);
    assert!(!tcp_ok(&c, "10.0.1.3", "10.0.0.1", 80));
}

#[test]
fn policy_types_defaults_to_egress_only_when_egress_rules_exist() {
    let empty_egress = with(xy(), objs![policy("x", "p").egress_none()]);
    let ep = &plan_all(&empty_egress).endpoints[&key("x", "a")];
    assert!(
        ep.ingress_isolated && !ep.egress_isolated,
        "egress: [] has no rules, so no Egress type"
    );
    let with_rules = with(xy(), objs![policy("x", "p").egress(rule().port(tcp(81)))]);
    let ep = &plan_all(&with_rules).endpoints[&key("x", "a")];
    assert!(ep.ingress_isolated && ep.egress_isolated);
    assert!(tcp_ok(&with_rules, "10.0.0.1", "10.0.1.3", 81));
    assert!(!tcp_ok(&with_rules, "10.0.0.1", "10.0.1.3", 82));
}

#[test]
fn explicit_egress_type_isolates_egress_and_not_ingress() {
    let c = with(xy(), objs![policy("x", "p").types(&["Egress"])]);
    let ep = &plan_all(&c).endpoints[&key("x", "a")];
    assert!(!ep.ingress_isolated && ep.egress_isolated);
    assert!(!tcp_ok(&c, "10.0.0.1", "10.0.1.3", 81));
    assert!(tcp_ok(&c, "10.0.1.3", "10.0.0.1", 80));
}

#[test]
fn rules_of_a_direction_missing_from_policy_types_are_ignored() {
    let c = with(
        xy(),
        objs![
            policy("x", "p")
                .types(&["Egress"])
                .ingress(rule())
                .egress(rule().port(tcp(1)))
        ],
    );
    assert!(!tcp_ok(&c, "10.0.0.1", "10.0.1.3", 81));
    assert!(!plan_all(&c).endpoints[&key("x", "a")].ingress_isolated);
}

#[test]
fn allowed_traffic_is_the_union_of_all_applying_policies() {
    let c = with(
        xy(),
        objs![
            policy("x", "p1").ingress(rule().peer(pods(labels(&[("pod", "b")])))),
            policy("x", "p2").ingress(rule().peer(namespaces(labels(&[("ns", "y")])))),
        ],
    );
    assert!(tcp_ok(&c, "10.0.0.2", "10.0.0.1", 80));
    assert!(tcp_ok(&c, "10.0.1.3", "10.0.0.1", 80));
    assert_eq!(plan_all(&c).endpoints[&key("x", "a")].policies.len(), 2);
}

#[test]
fn pod_selector_alone_selects_only_the_policy_namespace() {
    let c = with(
        xy(),
        objs![
            policy("x", "p")
                .select(labels(&[("pod", "a")]))
                .ingress(rule().peer(pods(labels(&[("pod", "b")]))))
        ],
    );
    assert!(tcp_ok(&c, "10.0.0.2", "10.0.0.1", 80), "x/b matches");
    assert!(
        !tcp_ok(&c, "10.0.1.3", "10.0.0.1", 80),
        "y/c has pod=b but is in another namespace"
    );
}

#[test]
fn namespace_selector_alone_selects_all_pods_in_matching_namespaces() {
    let c = with(
        xy(),
        objs![policy("x", "p").ingress(rule().peer(namespaces(labels(&[("ns", "y")]))))],
    );
    assert!(tcp_ok(&c, "10.0.1.3", "10.0.0.1", 80));
    assert!(!tcp_ok(&c, "10.0.0.2", "10.0.0.1", 80));
    let all_ns = with(
        xy(),
        objs![policy("x", "p").ingress(rule().peer(namespaces(all())))],
    );
    assert!(tcp_ok(&all_ns, "10.0.0.2", "10.0.0.1", 80));
    assert!(
        !tcp_ok(&all_ns, "192.168.9.9", "10.0.0.1", 80),
        "non-pods are not in any namespace"
    );
}

#[test]
fn every_namespace_has_its_name_label_even_when_the_object_omits_it_or_is_missing() {
    let by_name = |name: &str| {
        rule().peer(namespaces(labels(&[(
            crate::state::model::NAMESPACE_NAME_LABEL,
            name,
        )])))
    };
    // x and y are declared without the label; z has no Namespace object.
    let c = with(
        xy(),
        objs![
            pod("d").ns("z").label("pod", "d").ip("10.0.2.4"),
            policy("x", "p").ingress(by_name("y")).ingress(by_name("z")),
        ],
    );
    assert!(tcp_ok(&c, "10.0.1.3", "10.0.0.1", 80));
    assert!(tcp_ok(&c, "10.0.2.4", "10.0.0.1", 80));
    assert!(!tcp_ok(&c, "10.0.0.2", "10.0.0.1", 80), "x is not y or z");

    // A label claiming another namespace's name is overridden, as the API
    // server does.
    let spoofed = with(
        objs![namespace("w").label(crate::state::model::NAMESPACE_NAME_LABEL, "y")],
        objs![
            pod("e").ns("w").ip("10.0.3.5"),
            pod("a").ns("x").label("pod", "a").ip("10.0.0.1"),
            policy("x", "p").ingress(by_name("y")),
        ],
    );
    assert!(!tcp_ok(&spoofed, "10.0.3.5", "10.0.0.1", 80));
}

#[test]
fn pod_and_namespace_selector_in_one_peer_are_anded() {
    let extra = objs![pod("d").ns("y").label("pod", "d").ip("10.0.1.4")];
    let mut base = xy();
    base.extend(extra);
    let c = with(
        base,
        objs![
            policy("x", "p")
                .ingress(rule().peer(pods_in(labels(&[("ns", "y")]), labels(&[("pod", "b")]))))
        ],
    );
    assert!(tcp_ok(&c, "10.0.1.3", "10.0.0.1", 80));
    assert!(
        !tcp_ok(&c, "10.0.1.4", "10.0.0.1", 80),
        "right namespace, wrong pod"
    );
    assert!(
        !tcp_ok(&c, "10.0.0.2", "10.0.0.1", 80),
        "right pod labels, wrong namespace"
    );
}

#[test]
fn separate_peers_are_ored() {
    let c = with(
        xy(),
        objs![
            policy("x", "p").ingress(
                rule()
                    .peer(namespaces(labels(&[("ns", "y")])))
                    .peer(pods(labels(&[("pod", "b")])))
            )
        ],
    );
    assert!(tcp_ok(&c, "10.0.1.3", "10.0.0.1", 80));
    assert!(tcp_ok(&c, "10.0.0.2", "10.0.0.1", 80));
}

#[test]
fn empty_or_omitted_peers_allow_every_peer_with_identity_any() {
    for r in [rule().port(tcp(80)), rule().no_peers().port(tcp(80))] {
        let c = with(xy(), objs![policy("x", "p").ingress(r)]);
        assert!(tcp_ok(&c, "203.0.113.7", "10.0.0.1", 80));
        let plan = plan_all(&c);
        assert!(plan.rules.keys().any(|k| k.identity == IdentityId::ANY));
    }
}

#[test]
fn empty_or_omitted_ports_allow_every_port_and_protocol() {
    for r in [
        rule().peer(pods(all())),
        rule().peer(pods(all())).no_ports(),
    ] {
        let c = with(xy(), objs![policy("x", "p").ingress(r)]);
        assert!(tcp_ok(&c, "10.0.0.2", "10.0.0.1", 9999));
        assert!(check(&c, "10.0.0.2", "10.0.0.1", 17, 53));
        assert!(check(&c, "10.0.0.2", "10.0.0.1", 1, 0), "ICMP too");
        assert!(plan_all(&c).rules.keys().all(|k| k.l4 == L4Match::Any));
    }
}

#[test]
fn port_with_only_protocol_allows_every_port_of_that_protocol() {
    let c = with(
        xy(),
        objs![policy("x", "p").ingress(rule().port(protocol_only("UDP")))],
    );
    assert!(check(&c, "10.0.0.2", "10.0.0.1", 17, 5353));
    assert!(!check(&c, "10.0.0.2", "10.0.0.1", 6, 5353));
    assert!(
        plan_all(&c)
            .rules
            .keys()
            .any(|k| k.l4 == L4Match::Protocol(17))
    );
}

#[test]
fn port_without_protocol_defaults_to_tcp() {
    let c = with(
        xy(),
        objs![policy("x", "p").ingress(rule().port(port_default_protocol(80)))],
    );
    assert!(check(&c, "10.0.0.2", "10.0.0.1", 6, 80));
    assert!(!check(&c, "10.0.0.2", "10.0.0.1", 17, 80));
}

#[test]
fn protocol_numbers_are_tcp_6_udp_17_sctp_132() {
    let c = with(
        xy(),
        objs![
            policy("x", "p").ingress(
                rule()
                    .port(port_of("TCP", 1))
                    .port(port_of("UDP", 2))
                    .port(port_of("SCTP", 3))
            )
        ],
    );
    let l4s: BTreeSet<L4Match> = plan_all(&c).rules.keys().map(|k| k.l4).collect();
    for (p, n) in [(6, 1), (17, 2), (132, 3)] {
        assert!(l4s.contains(&L4Match::Ports {
            protocol: p,
            first: n,
            last: n
        }));
        assert!(check(&c, "10.0.0.2", "10.0.0.1", p, n));
    }
}

#[test]
fn port_number_is_a_single_port_and_end_port_an_inclusive_range() {
    let c = with(
        xy(),
        objs![policy("x", "p").ingress(rule().port(tcp(80)).port(range(1000, 2000)))],
    );
    let l4s: BTreeSet<L4Match> = plan_all(&c).rules.keys().map(|k| k.l4).collect();
    assert!(l4s.contains(&L4Match::Ports {
        protocol: 6,
        first: 80,
        last: 80
    }));
    assert!(l4s.contains(&L4Match::Ports {
        protocol: 6,
        first: 1000,
        last: 2000
    }));
    assert!(tcp_ok(&c, "10.0.0.2", "10.0.0.1", 1000));
    assert!(tcp_ok(&c, "10.0.0.2", "10.0.0.1", 2000));
    assert!(!tcp_ok(&c, "10.0.0.2", "10.0.0.1", 2001));
    assert!(!tcp_ok(&c, "10.0.0.2", "10.0.0.1", 81));
}

#[test]
fn icmp_matches_only_rules_without_ports() {
    let c = with(
        xy(),
        objs![policy("x", "p").ingress(rule().port(protocol_only("TCP")))],
    );
    assert!(!check(&c, "10.0.0.2", "10.0.0.1", 1, 0));
}

#[test]
fn ip_block_with_except_excludes_the_hole() {
    let c = with(
        xy(),
        objs![
            policy("x", "p").ingress(rule().peer(ip_block("192.168.0.0/16", &["192.168.1.0/24"])))
        ],
    );
    assert!(tcp_ok(&c, "192.168.2.1", "10.0.0.1", 80));
    assert!(!tcp_ok(&c, "192.168.1.1", "10.0.0.1", 80));
    assert!(!tcp_ok(&c, "192.169.0.1", "10.0.0.1", 80));
    let plan = plan_all(&c);
    assert_eq!(
        plan.ipcache.get(&net("192.168.1.0/24")),
        Some(&IdentityId::WORLD)
    );
}

#[test]
fn ip_block_except_works_for_ipv6() {
    let c = with(
        objs![pod("a").ns("x").ip("10.0.0.1").ip("fd00::1")],
        objs![
            policy("x", "p").ingress(rule().peer(ip_block("2001:db8::/32", &["2001:db8:1::/48"])))
        ],
    );
    assert!(tcp_ok(&c, "2001:db8:2::1", "fd00::1", 80));
    assert!(!tcp_ok(&c, "2001:db8:1::1", "fd00::1", 80));
}

#[test]
fn ip_block_applies_to_pod_ips() {
    let c = with(
        xy(),
        objs![
            policy("x", "p")
                .select(labels(&[("pod", "a")]))
                .ingress(rule().peer(ip_block("10.0.1.0/24", &[])))
        ],
    );
    assert!(
        tcp_ok(&c, "10.0.1.3", "10.0.0.1", 80),
        "y/c's IP is in the block"
    );
    assert!(!tcp_ok(&c, "10.0.0.2", "10.0.0.1", 80));
}

#[test]
fn nested_ip_blocks_longest_prefix_decides_membership() {
    // Block A: 10.0.0.0/8 except 10.1.0.0/16; block B: 10.1.2.0/24 (inside A's hole).
    let c = with(
        xy(),
        objs![
            policy("x", "p")
                .select(labels(&[("pod", "a")]))
                .ingress(
                    rule()
                        .peer(ip_block("172.16.0.0/12", &["172.17.0.0/16"]))
                        .port(tcp(1))
                )
                .ingress(rule().peer(ip_block("172.17.2.0/24", &[])).port(tcp(2)))
        ],
    );
    assert!(tcp_ok(&c, "172.16.0.9", "10.0.0.1", 1));
    assert!(!tcp_ok(&c, "172.16.0.9", "10.0.0.1", 2));
    assert!(!tcp_ok(&c, "172.17.0.9", "10.0.0.1", 1), "in A's hole");
    assert!(tcp_ok(&c, "172.17.2.9", "10.0.0.1", 2), "in B");
    assert!(
        !tcp_ok(&c, "172.17.2.9", "10.0.0.1", 1),
        "B's prefix is still in A's hole"
    );
}

#[test]
fn addresses_with_the_same_answers_share_one_identity() {
    let c = with(
        xy(),
        objs![policy("x", "p").ingress(rule().peer(pods(labels(&[("pod", "b")]))))],
    );
    let plan = plan_all(&c);
    let id = |s| ipcache_lookup(&plan.ipcache, ip(s));
    // a and c answer "no" to the only question: WORLD like any stranger.
    assert_eq!(id("10.0.0.1"), IdentityId::WORLD);
    assert_eq!(id("10.0.1.3"), IdentityId::WORLD);
    assert!(id("10.0.0.2").0 >= IdentityId::FIRST_ALLOCATED);
    let two_b = with(
        xy(),
        objs![
            pod("b2").ns("x").label("pod", "b").ip("10.0.0.9"),
            policy("x", "p").ingress(rule().peer(pods(labels(&[("pod", "b")]))))
        ],
    );
    let plan = plan_all(&two_b);
    assert_eq!(
        ipcache_lookup(&plan.ipcache, ip("10.0.0.2")),
        ipcache_lookup(&plan.ipcache, ip("10.0.0.9"))
    );
    assert_eq!(plan.identities.len(), 1);
}

#[test]
fn except_outside_cidr_is_rejected_and_still_isolates() {
    let c = with(
        xy(),
        objs![
            policy("x", "p")
                .ingress(rule().peer(pods(all())))
                .ingress(rule().peer(ip_block("10.0.0.0/16", &["10.1.0.0/24"])))
        ],
    );
    let plan = plan_all(&c);
    assert_eq!(plan.rejections.len(), 1);
    assert_eq!(plan.rejections[0].object, "NetworkPolicy x/p");
    assert_eq!(
        plan.rejections[0].field,
        "spec.ingress[1].from[0].ipBlock.except[0]"
    );
    assert!(plan.endpoints[&key("x", "a")].ingress_isolated);
    assert!(
        !tcp_ok(&c, "10.0.0.2", "10.0.0.1", 80),
        "the valid rule contributes nothing either"
    );
}

#[test]
fn each_validation_failure_is_rejected_with_its_field() {
    let bad_port = |p| policy("x", "p").ingress(rule().port(p));
    let np = |end, port| k8s_openapi::api::networking::v1::NetworkPolicyPort {
        port,
        end_port: end,
        protocol: None,
    };
    let cases = vec![
        (
            policy("x", "p").ingress(rule().peer(ip_block("10.0.0.0/33", &[]))),
            "spec.ingress[0].from[0].ipBlock.cidr",
        ),
        (
            policy("x", "p").ingress(rule().peer(ip_block("10.0.0.0/8", &["fd00::/64"]))),
            "spec.ingress[0].from[0].ipBlock.except[0]",
        ),
        (
            policy("x", "p").ingress(rule().peer(ip_block("10.0.0.0/8", &["10.0.0.0/8"]))),
            "spec.ingress[0].from[0].ipBlock.except[0]",
        ),
        (bad_port(range(90, 80)), "spec.ingress[0].ports[0].endPort"),
        (
            bad_port(np(Some(90), Some(IntOrString::String("http".into())))),
            "spec.ingress[0].ports[0].endPort",
        ),
        (
            bad_port(np(Some(90), None)),
            "spec.ingress[0].ports[0].endPort",
        ),
        (
            bad_port(port_of("ICMP", 1)),
            "spec.ingress[0].ports[0].protocol",
        ),
        (bad_port(tcp(0)), "spec.ingress[0].ports[0].port"),
        (bad_port(tcp(65536)), "spec.ingress[0].ports[0].port"),
        (
            policy("x", "p").egress(rule().peer(pods(expr("k", "Near", &["1"])))),
            "spec.egress[0].to[0].podSelector.matchExpressions[0].operator",
        ),
        (
            policy("x", "p").ingress(rule().peer(namespaces(expr("k", "In", &[])))),
            "spec.ingress[0].from[0].namespaceSelector.matchExpressions[0].values",
        ),
        (
            policy("x", "p").ingress(rule().peer(pods(expr("k", "Exists", &["v"])))),
            "spec.ingress[0].from[0].podSelector.matchExpressions[0].values",
        ),
        (policy("x", "p").types(&["Sideways"]), "spec.policyTypes[0]"),
    ];
    for (p, field) in cases {
        let c = with(xy(), objs![p]);
        let plan = plan_all(&c);
        assert_eq!(plan.rejections.len(), 1, "{field}: {:?}", plan.rejections);
        assert_eq!(plan.rejections[0].field, field);
        assert!(
            plan.rules.is_empty(),
            "{field}: a rejected policy allows nothing"
        );
        assert!(
            plan.endpoints[&key("x", "a")].ingress_isolated
                || plan.endpoints[&key("x", "a")].egress_isolated
        );
    }
}

#[test]
fn invalid_pod_selector_fails_closed_for_the_whole_namespace() {
    let c = with(
        xy(),
        objs![
            policy("x", "p")
                .select(expr("pod", "NotIn", &[]))
                .ingress(rule())
        ],
    );
    let plan = plan_all(&c);
    assert!(
        plan.rejections[0]
            .reason
            .contains("every pod in namespace x")
    );
    assert!(
        plan.endpoints[&key("x", "a")].ingress_isolated
            && plan.endpoints[&key("x", "b")].ingress_isolated
    );
    assert!(!plan.endpoints[&key("y", "c")].ingress_isolated);
    assert!(!tcp_ok(&c, "10.0.1.3", "10.0.0.1", 80));
}

#[test]
fn terminated_pods_are_gone() {
    let c = with(
        xy(),
        objs![
            pod("old")
                .ns("x")
                .label("pod", "b")
                .ip("10.0.0.7")
                .phase("Succeeded"),
            policy("x", "p").ingress(rule().peer(pods(labels(&[("pod", "b")])))),
        ],
    );
    let plan = plan_all(&c);
    assert!(!plan.endpoints.contains_key(&key("x", "old")));
    assert!(!tcp_ok(&c, "10.0.0.7", "10.0.0.1", 80));
    assert_eq!(
        ipcache_lookup(&plan.ipcache, ip("10.0.0.7")),
        IdentityId::WORLD
    );
}

#[test]
fn pods_without_an_ip_are_not_endpoints_and_match_no_peer() {
    let c = with(
        xy(),
        objs![
            pod("pending").ns("x").label("pod", "b"),
            policy("x", "p").ingress(rule().peer(pods(all())))
        ],
    );
    let plan = plan_all(&c);
    assert!(!plan.endpoints.contains_key(&key("x", "pending")));
    assert_eq!(plan.ipcache.len(), 3, "only a, b, c have entries");
}

#[test]
fn host_network_pods_are_not_endpoints_and_match_only_ip_blocks() {
    let c = with(
        xy(),
        objs![
            pod("hn")
                .ns("x")
                .label("pod", "b")
                .ip("192.168.5.5")
                .host_network()
                .node("node-2"),
            policy("x", "p")
                .ingress(rule().peer(pods(labels(&[("pod", "b")]))).port(tcp(80)))
                .ingress(rule().peer(ip_block("192.168.5.0/24", &[])).port(tcp(81))),
        ],
    );
    let plan = plan_all(&c);
    assert!(!plan.endpoints.contains_key(&key("x", "hn")));
    assert!(!tcp_ok(&c, "192.168.5.5", "10.0.0.1", 80), "not a pod peer");
    assert!(
        tcp_ok(&c, "192.168.5.5", "10.0.0.1", 81),
        "matches the ipBlock"
    );
}

#[test]
fn local_node_addresses_and_host_network_pods_are_host() {
    let c = with(
        xy(),
        objs![
            node(
                "node-1",
                &[
                    ("InternalIP", "192.168.0.1"),
                    ("ExternalIP", "203.0.113.1"),
                    ("Hostname", "n1")
                ]
            ),
            node("node-2", &[("InternalIP", "192.168.0.2")]),
            pod("hn")
                .ns("x")
                .ip("192.168.0.50")
                .host_network()
                .node("node-1"),
            policy("x", "deny").ingress_none(),
        ],
    );
    let plan = Compiler::new().compile(&c, "node-1");
    for a in ["192.168.0.1", "203.0.113.1", "192.168.0.50"] {
        assert!(plan.host_addresses.contains(&ip(a)), "{a}");
        assert!(
            plan.ipcache.contains_key(&IpNet::from(ip(a))),
            "{a} has an exact entry"
        );
        assert!(plan_allows(&plan, a, "10.0.0.1", 6, 80));
    }
    assert_eq!(
        ipcache_lookup(&plan.ipcache, ip("192.168.0.2")),
        IdentityId::WORLD
    );
    assert!(!plan_allows(&plan, "192.168.0.2", "10.0.0.1", 6, 80));
}

#[test]
fn endpoints_are_only_the_running_pods_of_this_node() {
    let c = with(
        xy(),
        objs![
            pod("far").ns("x").ip("10.0.9.9").node("node-2"),
            pod("pending").ns("x").phase("Pending").ip("10.0.9.8")
        ],
    );
    let plan = Compiler::new().compile(&c, "node-1");
    let names: Vec<&str> = plan.endpoints.keys().map(|k| k.name.as_str()).collect();
    assert_eq!(
        names,
        ["a", "b", "pending", "c"],
        "far is on node-2; a pending pod with an IP is an endpoint"
    );
}

#[test]
fn audit_annotation_sets_audit_on_endpoints() {
    let c = with(
        xy(),
        objs![
            namespace("x").annotation(crate::state::AUDIT_MODE_ANNOTATION, "true"),
            namespace("y").annotation(crate::state::AUDIT_MODE_ANNOTATION, "false")
        ],
    );
    let plan = plan_all(&c);
    assert!(plan.endpoints[&key("x", "a")].audit);
    assert!(!plan.endpoints[&key("y", "c")].audit);
}

#[test]
fn identities_start_at_first_allocated_and_endpoint_and_rule_ids_at_one() {
    let c = with(
        xy(),
        objs![policy("x", "p").ingress(rule().peer(pods(labels(&[("pod", "b")]))))],
    );
    let plan = plan_all(&c);
    assert_eq!(
        plan.identities.keys().next(),
        Some(&IdentityId(IdentityId::FIRST_ALLOCATED))
    );
    assert_eq!(plan.endpoints.values().map(|e| e.id.0).min(), Some(1));
    assert_eq!(plan.rule_origins.keys().next(), Some(&RuleId(1)));
}

#[test]
fn stable_ids_survive_recompile() {
    let base = || {
        let mut v = xy();
        v.extend(objs![
            policy("x", "p").ingress(rule().peer(pods(labels(&[("pod", "b")])))),
            policy("y", "q").egress(rule().peer(ip_block("10.0.0.0/24", &[]))),
        ]);
        v
    };
    let mut compiler = Compiler::new();
    let first = compiler.compile_for(&cluster(base()), |_| true, &BTreeSet::new());
    // Add objects that sort before the existing ones: ids must not shift.
    let mut more = base();
    more.extend(objs![
        pod("0").ns("a").label("pod", "b").ip("10.0.2.1"),
        policy("a", "0").ingress(rule().peer(pods(labels(&[("zzz", "1")])))),
    ]);
    let second = compiler.compile_for(&cluster(more), |_| true, &BTreeSet::new());
    for (k, ep) in &first.endpoints {
        assert_eq!(second.endpoints[k].id, ep.id, "endpoint {k}");
    }
    for (id, origin) in first.rule_origins.iter() {
        assert_eq!(second.rule_origins.get(id), Some(origin));
    }
    for (net, id) in first.ipcache.iter() {
        assert_eq!(second.ipcache.get(net), Some(id), "{net}");
    }
    let third = compiler.compile_for(&cluster(base()), |_| true, &BTreeSet::new());
    assert_eq!(first, third);
}

#[test]
fn one_pod_label_change_touches_only_its_entries() {
    let objs_with = |label: &str| {
        let mut v = xy();
        v.extend(objs![
            pod("d").ns("x").label("pod", label).ip("10.0.0.4"),
            pod("e").ns("x").label("pod", "b").ip("10.0.0.5"),
            policy("x", "p")
                .select(labels(&[("pod", "a")]))
                .ingress(rule().peer(pods(labels(&[("pod", "b")])))),
        ]);
        cluster(v)
    };
    let mut compiler = Compiler::new();
    let before = compiler.compile_for(&objs_with("b"), |_| true, &BTreeSet::new());
    let after = compiler.compile_for(&objs_with("z"), |_| true, &BTreeSet::new());
    let changed: Vec<&IpNet> = before
        .ipcache
        .iter()
        .filter(|(k, v)| after.ipcache.get(*k) != Some(*v))
        .map(|(k, _)| k)
        .collect();
    assert_eq!(changed, vec![&net("10.0.0.4/32")]);
    assert_eq!(before.endpoints, after.endpoints);
    assert_eq!(
        before.rules, after.rules,
        "b and e still hold the identity the rule uses"
    );
    assert!(!plan_allows(&after, "10.0.0.4", "10.0.0.1", 6, 80));
}

#[test]
fn colliding_rule_keys_keep_the_lowest_rule_id() {
    let c = with(
        xy(),
        objs![
            policy("x", "p1")
                .select(labels(&[("pod", "a")]))
                .ingress(rule().port(tcp(80))),
            policy("x", "p2")
                .select(labels(&[("pod", "a")]))
                .ingress(rule().port(tcp(9)))
                .ingress(rule().port(tcp(80))),
        ],
    );
    let plan = plan_all(&c);
    let hits: Vec<&RuleId> = plan
        .rules
        .iter()
        .filter(|(k, _)| {
            k.l4 == L4Match::Ports {
                protocol: 6,
                first: 80,
                last: 80,
            }
        })
        .map(|(_, r)| r)
        .collect();
    assert_eq!(hits.len(), 1);
    let lowest = plan
        .rule_origins
        .iter()
        .filter(|(_, o)| {
            (o.policy.name.as_str(), o.index) == ("p1", 0)
                || (o.policy.name.as_str(), o.index) == ("p2", 1)
        })
        .map(|(id, _)| *id)
        .min();
    assert_eq!(Some(*hits[0]), lowest);
}

#[test]
fn named_port_resolves_against_the_local_pod_on_ingress() {
    let c = with(
        objs![
            pod("a")
                .ns("x")
                .label("pod", "a")
                .ip("10.0.0.1")
                .port("web", 8080, "TCP"),
            pod("b")
                .ns("x")
                .label("pod", "b")
                .ip("10.0.0.2")
                .port("web", 9090, "TCP"),
        ],
        objs![policy("x", "p").ingress(rule().port(named("web", "TCP")))],
    );
    assert!(tcp_ok(&c, "10.0.0.2", "10.0.0.1", 8080));
    assert!(!tcp_ok(&c, "10.0.0.2", "10.0.0.1", 9090));
    assert!(tcp_ok(&c, "10.0.0.1", "10.0.0.2", 9090));
}

#[test]
fn named_port_protocol_must_match() {
    let c = with(
        objs![pod("a").ns("x").ip("10.0.0.1").port("dns", 53, "UDP")],
        objs![policy("x", "p").ingress(rule().port(named("dns", "TCP")))],
    );
    assert!(!tcp_ok(&c, "10.0.0.2", "10.0.0.1", 53));
    assert!(!check(&c, "10.0.0.2", "10.0.0.1", 17, 53));
}

#[test]
fn named_port_resolves_per_egress_peer() {
    let c = with(
        objs![
            pod("client").ns("x").label("role", "client").ip("10.0.0.1"),
            pod("s1")
                .ns("x")
                .label("role", "server")
                .ip("10.0.0.2")
                .port("web", 8080, "TCP"),
            pod("s2")
                .ns("x")
                .label("role", "server")
                .ip("10.0.0.3")
                .port("web", 9090, "TCP"),
        ],
        objs![
            policy("x", "p")
                .select(labels(&[("role", "client")]))
                .types(&["Egress"])
                .egress(
                    rule()
                        .peer(pods(labels(&[("role", "server")])))
                        .port(named("web", "TCP"))
                )
        ],
    );
    assert!(tcp_ok(&c, "10.0.0.1", "10.0.0.2", 8080));
    assert!(!tcp_ok(&c, "10.0.0.1", "10.0.0.2", 9090));
    assert!(tcp_ok(&c, "10.0.0.1", "10.0.0.3", 9090));
    assert!(!tcp_ok(&c, "10.0.0.1", "10.0.0.3", 8080));
    let plan = plan_all(&c);
    assert_ne!(
        ipcache_lookup(&plan.ipcache, ip("10.0.0.2")),
        ipcache_lookup(&plan.ipcache, ip("10.0.0.3"))
    );
}

#[test]
fn unresolvable_named_port_allows_nothing() {
    let c = with(
        xy(),
        objs![policy("x", "p").ingress(rule().port(named("nope", "TCP")))],
    );
    assert!(plan_all(&c).rules.is_empty());
    assert!(!tcp_ok(&c, "10.0.0.2", "10.0.0.1", 80));
}

#[test]
fn named_port_with_ip_block_peer_allows_nothing_for_non_pod_addresses() {
    let c = with(
        xy(),
        objs![
            policy("x", "p")
                .select(labels(&[("pod", "a")]))
                .types(&["Egress"])
                .egress(
                    rule()
                        .peer(ip_block("0.0.0.0/0", &[]))
                        .port(named("serve-81-tcp", "TCP"))
                )
        ],
    );
    assert!(!tcp_ok(&c, "10.0.0.1", "198.51.100.1", 81));
    assert!(
        tcp_ok(&c, "10.0.0.1", "10.0.1.3", 81),
        "y/c is a pod in the block with that port name"
    );
}

fn service_world(ready_b: Option<bool>, allow_b: bool) -> ClusterState {
    let mut pol = policy("x", "p")
        .select(labels(&[("pod", "a")]))
        .types(&["Egress"])
        .egress(rule().peer(pods(labels(&[("pod", "s1")]))).port(tcp(8080)));
    if allow_b {
        pol = pol.egress(rule().peer(pods(labels(&[("pod", "s2")]))).port(tcp(8080)));
    }
    cluster(objs![
        pod("a").ns("x").label("pod", "a").ip("10.0.0.1"),
        pod("s1")
            .ns("x")
            .label("pod", "s1")
            .ip("10.0.0.2")
            .port("http", 8080, "TCP"),
        pod("s2")
            .ns("x")
            .label("pod", "s2")
            .ip("10.0.0.3")
            .port("http", 8080, "TCP"),
        service("x", "svc")
            .cluster_ip("10.96.0.10")
            .port("web", 80, IntOrString::Int(8080)),
        slice("x", "svc-1", "svc")
            .endpoint("10.0.0.2", Some(true), Some("s1"))
            .endpoint("10.0.0.3", ready_b, Some("s2")),
        pol,
    ])
}

#[test]
fn service_cluster_ip_is_allowed_when_every_ready_backend_is() {
    let c = service_world(None, true);
    assert!(tcp_ok(&c, "10.0.0.1", "10.96.0.10", 80));
    assert!(
        !tcp_ok(&c, "10.0.0.1", "10.96.0.10", 8080),
        "only on the service port"
    );
    let plan = plan_all(&c);
    let sid = ipcache_lookup(&plan.ipcache, ip("10.96.0.10"));
    assert!(sid.0 >= IdentityId::FIRST_ALLOCATED);
    assert!(
        plan.rules
            .keys()
            .any(|k| k.identity == sid && k.direction == Direction::Egress)
    );
}

#[test]
fn service_with_a_denied_backend_denies_the_cluster_ip() {
    assert!(!tcp_ok(
        &service_world(Some(true), false),
        "10.0.0.1",
        "10.96.0.10",
        80
    ));
    assert!(
        tcp_ok(
            &service_world(Some(false), false),
            "10.0.0.1",
            "10.96.0.10",
            80
        ),
        "unready backends do not count"
    );
}

#[test]
fn service_without_ready_backends_allows_nothing() {
    let c = cluster(objs![
        pod("a").ns("x").ip("10.0.0.1"),
        service("x", "svc")
            .cluster_ip("10.96.0.10")
            .port("web", 80, IntOrString::Int(8080)),
        slice("x", "svc-1", "svc").endpoint("10.0.0.2", Some(false), None),
        policy("x", "p")
            .types(&["Egress"])
            .egress(rule().port(tcp(8080))),
    ]);
    assert!(!tcp_ok(&c, "10.0.0.1", "10.96.0.10", 80));
}

#[test]
fn service_named_target_port_resolves_via_the_backend_pod() {
    let c = cluster(objs![
        pod("a").ns("x").label("pod", "a").ip("10.0.0.1"),
        pod("s1")
            .ns("x")
            .label("pod", "s1")
            .ip("10.0.0.2")
            .port("http", 8080, "TCP"),
        service("x", "svc").cluster_ip("10.96.0.10").port(
            "web",
            80,
            IntOrString::String("http".into())
        ),
        slice("x", "svc-1", "svc").endpoint("10.0.0.2", None, Some("s1")),
        policy("x", "p")
            .select(labels(&[("pod", "a")]))
            .types(&["Egress"])
            .egress(rule().port(tcp(8080))),
    ]);
    assert!(tcp_ok(&c, "10.0.0.1", "10.96.0.10", 80));
    let wrong = cluster(objs![
        pod("a").ns("x").label("pod", "a").ip("10.0.0.1"),
        pod("s1")
            .ns("x")
            .label("pod", "s1")
            .ip("10.0.0.2")
            .port("http", 8080, "TCP"),
        service("x", "svc").cluster_ip("10.96.0.10").port(
            "web",
            80,
            IntOrString::String("http".into())
        ),
        slice("x", "svc-1", "svc").endpoint("10.0.0.2", None, Some("s1")),
        policy("x", "p")
            .select(labels(&[("pod", "a")]))
            .types(&["Egress"])
            .egress(rule().port(tcp(9090))),
    ]);
    assert!(!tcp_ok(&wrong, "10.0.0.1", "10.96.0.10", 80));
}

#[test]
fn a_pod_always_reaches_itself() {
    let c = with(xy(), objs![policy("x", "p").types(&["Ingress", "Egress"])]);
    assert!(tcp_ok(&c, "10.0.0.1", "10.0.0.1", 80));
    assert!(!tcp_ok(&c, "10.0.0.1", "10.0.0.2", 80));
}

/// Pods of namespaces `gw` and `x` carrying `value` as their
/// allowed-source-prefixes annotation, compiled with `gw` listed.
fn source_prefix_plan(value: &str) -> crate::policy::plan::DatapathPlan {
    let annotation = crate::state::model::ALLOWED_SOURCE_PREFIXES_ANNOTATION;
    let c = cluster(objs![
        namespace("gw"),
        namespace("x"),
        pod("vpn")
            .ns("gw")
            .ip("10.0.0.1")
            .annotation(annotation, value),
        pod("sneaky")
            .ns("x")
            .ip("10.0.0.2")
            .annotation(annotation, value),
        pod("plain").ns("gw").ip("10.0.0.3"),
    ]);
    Compiler::new()
        .with_source_prefix_namespaces(BTreeSet::from(["gw".to_string()]))
        .compile_for(&c, |_| true, &BTreeSet::new())
}

#[test]
fn allowed_source_prefixes_are_honoured_only_in_listed_namespaces() {
    let plan = source_prefix_plan("192.168.7.0/24, fd77::/64");
    assert_eq!(
        plan.endpoints[&key("gw", "vpn")].source_prefixes,
        vec![net("192.168.7.0/24"), net("fd77::/64")]
    );
    assert!(
        plan.endpoints[&key("gw", "plain")]
            .source_prefixes
            .is_empty()
    );
    assert!(
        plan.endpoints[&key("x", "sneaky")]
            .source_prefixes
            .is_empty(),
        "an unlisted namespace's annotation widens nothing"
    );
    let reported: Vec<_> = plan
        .rejections
        .iter()
        .map(|r| (r.object.as_str(), r.reason.as_str()))
        .collect();
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert_eq!(reported[0].0, "Pod x/sneaky");
    assert!(
        reported[0].1.contains("ignored") && reported[0].1.contains("namespace x"),
        "{reported:?}"
    );
}

#[test]
fn a_malformed_allowed_source_prefixes_annotation_is_rejected_and_widens_nothing() {
    for bad in ["10.8.0.1/24", "not-a-cidr", "10.8.0.0/16,", "", "10.8.0.0"] {
        let plan = source_prefix_plan(bad);
        assert!(
            plan.endpoints[&key("gw", "vpn")].source_prefixes.is_empty(),
            "{bad:?} kept the pod to its own addresses"
        );
        let rejection = plan
            .rejections
            .iter()
            .find(|r| r.object == "Pod gw/vpn")
            .unwrap_or_else(|| panic!("{bad:?} was not reported: {:?}", plan.rejections));
        assert_eq!(
            rejection.field,
            "metadata.annotations[palisade.dev/allowed-source-prefixes]"
        );
        assert!(
            rejection.reason.contains(&format!("{bad:?}")),
            "{rejection}"
        );
    }
}
