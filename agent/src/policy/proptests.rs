//! Property tests: over random clusters and flows, looking the compiled plan
//! up (every pod local) agrees with the reference evaluator in both directions.
//!
//! The run is reproducible: fixed seed, no failure persistence files.

use std::collections::BTreeSet;
use std::net::IpAddr;

use k8s_openapi::api::networking::v1 as net;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

use super::compile::Compiler;
use super::eval;
use super::fixtures::*;
use super::lookup::{Flow, evaluate};
use super::plan::Direction;
use crate::state::{ClusterState, K8sObject};

const NAMESPACES: [&str; 3] = ["ns0", "ns1", "ns2"];

fn label_strategy() -> impl Strategy<Value = Vec<(&'static str, &'static str)>> {
    proptest::collection::vec(
        (
            prop::sample::select(vec!["app", "tier"]),
            prop::sample::select(vec!["x", "y", "z"]),
        ),
        0..3,
    )
}

fn selector_strategy() -> impl Strategy<Value = LabelSelector> {
    let expr = (
        prop::sample::select(vec!["app", "tier", "team"]),
        prop::sample::select(vec!["In", "NotIn", "Exists", "DoesNotExist"]),
        proptest::collection::vec(prop::sample::select(vec!["x", "y", "z"]), 0..3),
    )
        .prop_map(|(k, op, vs)| {
            // Mostly valid value counts; sometimes invalid ones (rejections).
            let vs = match op {
                "Exists" | "DoesNotExist" if vs.len() < 2 => Vec::new(),
                "In" | "NotIn" if vs.is_empty() && k == "team" => vec!["x"],
                _ => vs,
            };
            LabelSelectorRequirement {
                key: k.into(),
                operator: op.into(),
                values: (!vs.is_empty()).then(|| vs.iter().map(|v| v.to_string()).collect()),
            }
        });
    let random = (
        proptest::collection::vec(
            (
                prop::sample::select(vec!["app", "tier"]),
                prop::sample::select(vec!["x", "y", "z"]),
            ),
            0..2,
        ),
        proptest::collection::vec(expr, 0..2),
    )
        .prop_map(|(ml, ex)| LabelSelector {
            match_labels: (!ml.is_empty()).then(|| {
                ml.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            }),
            match_expressions: (!ex.is_empty()).then_some(ex),
        });
    prop_oneof![1 => Just(LabelSelector::default()), 3 => random]
}

fn peer_strategy() -> impl Strategy<Value = net::NetworkPolicyPeer> {
    let cidrs = vec![
        "10.0.0.0/24",
        "10.0.0.0/29",
        "10.0.0.0/30",
        "10.0.0.4/30",
        "0.0.0.0/0",
        "fd00::/120",
        "10.0.0.2/32",
    ];
    let excepts = vec![
        "10.0.0.2/31",
        "10.0.0.5/32",
        "10.0.0.3/32",
        "fd00::4/126",
        "10.0.0.128/25",
    ];
    prop_oneof![
        selector_strategy().prop_map(pods),
        selector_strategy().prop_map(namespaces),
        (selector_strategy(), selector_strategy()).prop_map(|(n, p)| pods_in(n, p)),
        (
            prop::sample::select(cidrs),
            proptest::collection::vec(prop::sample::select(excepts), 0..2)
        )
            .prop_map(|(c, e)| {
                // Mostly valid: keep the excepts strictly inside the cidr; the
                // 10.0.0.0/24 blocks keep any (sometimes invalid) except.
                let cidr: ipnet::IpNet = c.parse().expect("cidr");
                let e: Vec<&str> = e
                    .into_iter()
                    .filter(|x| {
                        c == "10.0.0.0/24"
                            || x.parse::<ipnet::IpNet>().is_ok_and(|n| {
                                cidr.contains(&n) && n.prefix_len() > cidr.prefix_len()
                            })
                    })
                    .collect();
                ip_block(c, &e)
            }),
    ]
}

fn port_strategy() -> impl Strategy<Value = net::NetworkPolicyPort> {
    prop_oneof![
        3 => Just(tcp(80)),
        1 => Just(port_of("UDP", 53)),
        2 => Just(range(80, 81)),
        1 => Just(range(81, 80)),
        3 => Just(named("web", "TCP")),
        1 => Just(named("dns", "UDP")),
        1 => Just(protocol_only("UDP")),
        1 => Just(port_default_protocol(81)),
    ]
}

fn rule_strategy() -> impl Strategy<Value = RuleB> {
    (
        prop_oneof![
            Just(None),
            Just(Some(Vec::new())),
            proptest::collection::vec(peer_strategy(), 1..3).prop_map(Some)
        ],
        prop_oneof![
            Just(None),
            Just(Some(Vec::new())),
            proptest::collection::vec(port_strategy(), 1..3).prop_map(Some)
        ],
    )
        .prop_map(|(peers, ports)| {
            let mut r = rule();
            match peers {
                None => {}
                Some(v) if v.is_empty() => r = r.no_peers(),
                Some(v) => {
                    for p in v {
                        r = r.peer(p);
                    }
                }
            }
            match ports {
                None => {}
                Some(v) if v.is_empty() => r = r.no_ports(),
                Some(v) => {
                    for p in v {
                        r = r.port(p);
                    }
                }
            }
            r
        })
}

fn rules_strategy() -> impl Strategy<Value = Option<Vec<RuleB>>> {
    prop_oneof![
        Just(None),
        Just(Some(Vec::new())),
        proptest::collection::vec(rule_strategy(), 1..3).prop_map(Some)
    ]
}

fn policy_strategy() -> impl Strategy<Value = PolicyB> {
    let types = prop::sample::select(vec![
        None,
        Some(vec!["Ingress"]),
        Some(vec!["Egress"]),
        Some(vec!["Ingress", "Egress"]),
    ]);
    (
        0..NAMESPACES.len(),
        selector_strategy(),
        types,
        rules_strategy(),
        rules_strategy(),
        0..1000u32,
    )
        .prop_map(|(ns, sel, types, ingress, egress, n)| {
            let mut p = policy(NAMESPACES[ns], &format!("p{n}")).select(sel);
            if let Some(t) = types {
                p = p.types(&t);
            }
            match ingress {
                None => {}
                Some(v) if v.is_empty() => p = p.ingress_none(),
                Some(v) => {
                    for r in v {
                        p = p.ingress(r);
                    }
                }
            }
            match egress {
                None => {}
                Some(v) if v.is_empty() => p = p.egress_none(),
                Some(v) => {
                    for r in v {
                        p = p.egress(r);
                    }
                }
            }
            p
        })
}

/// Pod i gets 10.0.0.(i+1) and, sometimes, fd00::(i+1).
/// A random pod: namespace index, labels, has IPv6, "web" port, "dns" port.
type PodSpec = (
    usize,
    Vec<(&'static str, &'static str)>,
    bool,
    Option<u16>,
    Option<u16>,
);

fn pod_strategy() -> impl Strategy<Value = PodSpec> {
    (
        0..NAMESPACES.len(),
        label_strategy(),
        any::<bool>(),
        prop::option::of(prop::sample::select(vec![80u16, 81])),
        prop::option::of(Just(53u16)),
    )
}

fn cluster_strategy() -> impl Strategy<Value = (Vec<K8sObject>, usize)> {
    (
        proptest::collection::vec(label_strategy(), NAMESPACES.len()),
        proptest::collection::vec(pod_strategy(), 1..8),
        proptest::collection::vec(policy_strategy(), 0..5),
    )
        .prop_map(|(ns_labels, pods_spec, policies)| {
            let mut objs: Vec<K8sObject> = Vec::new();
            for (i, labels) in ns_labels.iter().enumerate() {
                let mut n = namespace(NAMESPACES[i]).label("team", ["x", "y", "z"][i]);
                for (k, v) in labels {
                    n = n.label(k, v);
                }
                objs.push(n.into());
            }
            let n_pods = pods_spec.len();
            for (i, (ns, labels, v6, web, dns)) in pods_spec.into_iter().enumerate() {
                let mut p = pod(&format!("pod{i}"))
                    .ns(NAMESPACES[ns])
                    .ip(&format!("10.0.0.{}", i + 1));
                if v6 {
                    p = p.ip(&format!("fd00::{}", i + 1));
                }
                for (k, v) in labels {
                    p = p.label(k, v);
                }
                if let Some(w) = web {
                    p = p.port("web", i32::from(w), "TCP");
                }
                if let Some(d) = dns {
                    p = p.port("dns", i32::from(d), "UDP");
                }
                objs.push(p.into());
            }
            for p in policies {
                objs.push(p.into());
            }
            (objs, n_pods)
        })
}

fn addresses(n_pods: usize) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = (1..=n_pods)
        .map(|i| format!("10.0.0.{i}").parse().expect("ip"))
        .collect();
    v.extend((1..=n_pods).map(|i| format!("fd00::{i}").parse::<IpAddr>().expect("ip")));
    for extra in [
        "10.0.0.200",
        "10.0.0.5",
        "10.0.0.3",
        "192.168.1.1",
        "fd00::99",
        "2001:db8::1",
    ] {
        v.push(extra.parse().expect("ip"));
    }
    v
}

/// For every flow, both ends: lookup over the plan == eval.
fn agree(c: &ClusterState, flows: &[(IpAddr, IpAddr, u8, u16)]) -> Result<(), TestCaseError> {
    let plan = Compiler::new().compile_for(c, |_| true, &BTreeSet::new());
    for &(src, dst, protocol, port) in flows {
        if src.is_ipv4() != dst.is_ipv4() {
            continue;
        }
        let flow = Flow {
            src,
            dst,
            protocol,
            dst_port: port,
        };
        for (local, d, remote) in [
            (src, Direction::Egress, dst),
            (dst, Direction::Ingress, src),
        ] {
            let Some(pod) = c.endpoint_pod_by_ip(local) else {
                continue;
            };
            let ep = &plan.endpoints[&pod.pod_ref()];
            let by_plan = evaluate(&plan, ep, d, &flow).allowed;
            let by_eval = eval::direction_allows(c, pod, d, remote, protocol, port);
            prop_assert_eq!(
                by_plan,
                by_eval,
                "{:?} at {} for {:?}",
                d,
                pod.pod_ref(),
                flow
            );
        }
    }
    Ok(())
}

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(0x5a11_5ade),
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn plan_lookup_agrees_with_the_reference_evaluator(
        (objs, n_pods) in cluster_strategy(),
        picks in proptest::collection::vec((0..64usize, 0..64usize, prop::sample::select(vec![6u8, 6, 17, 1, 132]), prop::sample::select(vec![53u16, 80, 81, 82])), 40),
    ) {
        let c = cluster(objs);
        let addrs = addresses(n_pods);
        let flows: Vec<_> = picks.iter().map(|(s, d, p, port)| (addrs[s % addrs.len()], addrs[d % addrs.len()], *p, *port)).collect();
        agree(&c, &flows)?;
    }
}

proptest! {
    #![proptest_config(config(500))]

    #[test]
    fn recompiling_with_the_same_compiler_is_stable((objs, _n) in cluster_strategy()) {
        let c = cluster(objs);
        let mut compiler = Compiler::new();
        let a = compiler.compile_for(&c, |_| true, &BTreeSet::new());
        let b = compiler.compile_for(&c, |_| true, &BTreeSet::new());
        prop_assert_eq!(a, b);
    }
}
