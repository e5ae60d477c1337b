//! Property tests with ClusterNetworkPolicies: over random clusters mixing
//! them (as API objects, some invalid) with NetworkPolicies, Services and
//! Nodes, looking the compiled plan up (every pod local) agrees in both
//! directions with [`eval::direction_allows`], whose ClusterNetworkPolicy
//! part is the tiered reading of [`super::tiers`], written from the API
//! reference. (The incremental property test of [`super::proptests`] mixes
//! ClusterNetworkPolicy changes into its steps.)

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use proptest::prelude::*;

use super::compile::Compiler;
use super::eval;
use super::fixtures::*;
use super::lookup::{Flow, evaluate};
use super::proptests::{addresses, cluster_strategy, config, label_strategy, selector_strategy};
use crate::source::K8sObject;
use crate::source::cnp as api;
use crate::state::Direction;

/// A ClusterNetworkPolicy as the API serves it.
pub(super) type CnpObject = api::ClusterNetworkPolicy;

/// Node `n` (two exist) with `labels`; its address is one the flows use.
pub(super) fn node_object(n: usize, labels: &[(&str, &str)]) -> core::Node {
    let address = ["192.168.1.1", "10.0.0.200"][n % 2];
    let mut node = node(&format!("node{n}"), &[("InternalIP", address)]);
    node.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    node
}

pub(super) fn namespaced_pods() -> impl Strategy<Value = api::NamespacedPods> {
    (
        proptest::option::of(selector_strategy()),
        selector_strategy(),
    )
        .prop_map(|(ns, pods)| api::NamespacedPods {
            namespace_selector: ns,
            pod_selector: pods,
        })
}

pub(super) fn subject() -> impl Strategy<Value = api::Subject> {
    prop_oneof![
        3 => selector_strategy().prop_map(|s| api::Subject {
            namespaces: Some(s),
            pods: None,
        }),
        3 => namespaced_pods().prop_map(|p| api::Subject {
            namespaces: None,
            pods: Some(p),
        }),
        // Invalid: both, or neither.
        1 => Just(api::Subject::default()),
    ]
}

fn protocols() -> impl Strategy<Value = Option<Vec<api::Protocol>>> {
    let number = |n: i32| api::ProtocolPort {
        destination_port: Some(api::Port {
            number: Some(n),
            range: None,
        }),
    };
    let range = |start: i32, end: i32| api::ProtocolPort {
        destination_port: Some(api::Port {
            number: None,
            range: Some(api::PortRange { start, end }),
        }),
    };
    let one = prop_oneof![
        3 => Just(api::Protocol { tcp: Some(number(80)), ..Default::default() }),
        2 => Just(api::Protocol { tcp: Some(range(80, 81)), ..Default::default() }),
        2 => Just(api::Protocol { udp: Some(number(53)), ..Default::default() }),
        1 => Just(api::Protocol { sctp: Some(number(80)), ..Default::default() }),
        2 => prop::sample::select(vec!["web", "dns"]).prop_map(|n| api::Protocol {
            destination_named_port: Some(n.into()),
            ..Default::default()
        }),
        // Invalid: a range the wrong way round, or no port.
        1 => Just(api::Protocol { tcp: Some(range(81, 80)), ..Default::default() }),
        1 => Just(api::Protocol { tcp: Some(api::ProtocolPort::default()), ..Default::default() }),
    ];
    proptest::option::weighted(0.6, proptest::collection::vec(one, 1..3))
}

fn action() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just("Accept".to_string()),
        4 => Just("Deny".to_string()),
        3 => Just("Pass".to_string()),
        1 => Just("Allow".to_string()),
    ]
}

pub(super) fn ingress_peer() -> impl Strategy<Value = api::IngressPeer> {
    prop_oneof![
        3 => selector_strategy().prop_map(|s| api::IngressPeer { namespaces: Some(s), pods: None }),
        3 => namespaced_pods().prop_map(|p| api::IngressPeer { namespaces: None, pods: Some(p) }),
        1 => Just(api::IngressPeer::default()),
    ]
}

pub(super) fn egress_peer() -> impl Strategy<Value = api::EgressPeer> {
    let cidrs = vec![
        "10.0.0.0/24",
        "10.0.0.0/30",
        "10.0.0.4/30",
        "0.0.0.0/0",
        "fd00::/120",
        "10.0.0.2/32",
        "192.168.0.0/16",
        "10.96.0.0/24",
        "not-a-cidr",
    ];
    let node_selector = prop_oneof![
        Just(LabelSelector::default()),
        Just(labels(&[("zone", "a")])),
        Just(labels(&[("zone", "b")])),
    ];
    prop_oneof![
        3 => selector_strategy().prop_map(|s| api::EgressPeer { namespaces: Some(s), ..Default::default() }),
        3 => namespaced_pods().prop_map(|p| api::EgressPeer { pods: Some(p), ..Default::default() }),
        3 => proptest::collection::vec(prop::sample::select(cidrs), 1..3).prop_map(|c| api::EgressPeer {
            networks: Some(c.into_iter().map(String::from).collect()),
            ..Default::default()
        }),
        2 => node_selector.prop_map(|s| api::EgressPeer { nodes: Some(s), ..Default::default() }),
        1 => Just(api::EgressPeer {
            domain_names: Some(vec!["example.com".into()]),
            ..Default::default()
        }),
        1 => Just(api::EgressPeer::default()),
    ]
}

pub(super) fn rule_name() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(prop::sample::select(vec!["a", "b"]).prop_map(String::from))
}

pub(super) fn cnp_strategy() -> impl Strategy<Value = CnpObject> {
    let ingress = (
        rule_name(),
        action(),
        proptest::collection::vec(ingress_peer(), 0..3),
        protocols(),
    )
        .prop_map(|(name, action, from, protocols)| api::IngressRule {
            name,
            action,
            from,
            protocols,
        });
    let egress = (
        rule_name(),
        action(),
        proptest::collection::vec(egress_peer(), 0..3),
        protocols(),
    )
        .prop_map(|(name, action, to, protocols)| api::EgressRule {
            name,
            action,
            to,
            protocols,
        });
    (
        prop::sample::select(vec!["c0", "c1", "c2", "c3", "c4"]),
        prop_oneof![
            5 => Just("Admin"),
            5 => Just("Baseline"),
            1 => Just("Middle"),
        ],
        prop_oneof![10 => 0..3i32, 1 => Just(1001)],
        subject(),
        proptest::option::of(proptest::collection::vec(ingress, 0..3)),
        proptest::option::of(proptest::collection::vec(egress, 0..3)),
    )
        .prop_map(
            |(name, tier, priority, subject, ingress, egress)| CnpObject {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    ..Default::default()
                },
                spec: api::ClusterNetworkPolicySpec {
                    tier: tier.into(),
                    priority,
                    subject,
                    ingress,
                    egress,
                },
                status: None,
            },
        )
}

/// A cluster of NetworkPolicies and ClusterNetworkPolicies, two Nodes and
/// sometimes a Service, and its number of pods.
pub(super) fn tiered_cluster_strategy() -> impl Strategy<Value = (Vec<K8sObject>, usize)> {
    (
        cluster_strategy(),
        proptest::collection::vec(cnp_strategy(), 1..5),
        proptest::collection::vec(label_strategy(), 2),
        proptest::option::of(proptest::collection::vec(0..8usize, 1..3)),
    )
        .prop_map(|((mut objs, n_pods), cnps, node_labels, backends)| {
            for (n, labels) in node_labels.iter().enumerate() {
                let mut labels = labels.clone();
                labels.push(("zone", ["a", "b"][n]));
                objs.push(node_object(n, &labels).into());
            }
            if let Some(backends) = backends {
                let svc = service("ns0", "svc0").cluster_ip("10.96.0.1").port(
                    "web",
                    80,
                    IntOrString::Int(80),
                );
                let mut slice = slice("ns0", "svc0-a", "svc0").port("web", 80);
                for b in backends {
                    slice = slice.endpoint(&format!("10.0.0.{}", b + 1), None, None);
                }
                objs.push(svc.into());
                objs.push(K8sObject::EndpointSlice(slice.0));
            }
            objs.extend(cnps.into_iter().map(K8sObject::ClusterNetworkPolicy));
            (objs, n_pods)
        })
}

proptest! {
    #![proptest_config(config(1500))]

    #[test]
    fn plan_lookup_agrees_with_the_tiered_reading(
        (objs, n_pods) in tiered_cluster_strategy(),
        picks in proptest::collection::vec((0..64usize, 0..64usize, prop::sample::select(vec![6u8, 6, 17, 1, 132]), prop::sample::select(vec![53u16, 80, 81, 82])), 40),
    ) {
        let c = cluster(objs);
        // Every pod is on this node (the fixtures' default), so its
        // addresses and its host-network pods' are the node's.
        let host = c.node_addresses("node-1");
        let plan = Compiler::new().compile_for(&c, |_| true, &host);
        let mut addrs = addresses(n_pods);
        addrs.push("10.96.0.1".parse().expect("ip"));
        for (s, d, protocol, port) in picks {
            let (src, dst) = (addrs[s % addrs.len()], addrs[d % addrs.len()]);
            if src.is_ipv4() != dst.is_ipv4() {
                continue;
            }
            let flow = Flow { src, dst, protocol, dst_port: port };
            for (local, d, remote) in [(src, Direction::Egress, dst), (dst, Direction::Ingress, src)] {
                let Some(pod) = c.endpoint_pod_by_ip(local) else { continue };
                let ep = &plan.endpoints[&pod.pod_ref()];
                let by_plan = evaluate(&plan, ep, d, &flow).allowed;
                let by_reading = eval::direction_allows(&c, pod, d, remote, protocol, port);
                prop_assert_eq!(by_plan, by_reading, "{:?} at {} for {:?}", d, pod.pod_ref(), flow);
            }
        }
    }
}

#[test]
fn the_tiered_strategy_makes_denies_and_mixed_verdicts() {
    // The property above must see deny entries and both verdicts, or it
    // checks nothing about the tiers.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::new(config(1));
    let (mut denies, mut endpoints) = (0, 0);
    for _ in 0..200 {
        let (objs, _) = tiered_cluster_strategy()
            .new_tree(&mut runner)
            .expect("tree")
            .current();
        let plan = Compiler::new().compile_for(&cluster(objs), |_| true, &BTreeSet::new());
        denies += plan.denies.len();
        endpoints += plan.endpoints.len();
    }
    assert!(denies > 100, "{denies} deny entries over 200 clusters");
    assert!(endpoints > 200);
}
