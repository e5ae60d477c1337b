//! Random Kubernetes objects for the property tests: labels, label
//! selectors (some invalid), ClusterNetworkPolicy objects (some invalid)
//! and Nodes; and the runner's configuration. Below every property test
//! file, so none of them imports another's generators.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

use super::fixtures::*;
use crate::source::cnp as api;

pub(super) fn label_strategy() -> impl Strategy<Value = Vec<(&'static str, &'static str)>> {
    proptest::collection::vec(
        (
            prop::sample::select(vec!["app", "tier"]),
            prop::sample::select(vec!["x", "y", "z"]),
        ),
        0..3,
    )
}

pub(super) fn selector_strategy() -> impl Strategy<Value = LabelSelector> {
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
    // `{}` written with its fields absent, or present and empty.
    let empty = prop_oneof![
        Just(LabelSelector::default()),
        Just(LabelSelector {
            match_labels: Some(BTreeMap::new()),
            match_expressions: Some(Vec::new()),
        }),
    ];
    prop_oneof![1 => empty, 3 => random]
}

pub(super) fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(0x5a11_5ade),
        ..Config::default()
    }
}

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
        .prop_map(|(name, tier, priority, subject, ingress, egress)| {
            cnp_object(name, tier, priority, subject, ingress, egress)
        })
}

/// A ClusterNetworkPolicy object with this name and spec.
pub(super) fn cnp_object(
    name: &str,
    tier: &str,
    priority: i32,
    subject: api::Subject,
    ingress: Option<Vec<api::IngressRule>>,
    egress: Option<Vec<api::EgressRule>>,
) -> CnpObject {
    CnpObject {
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
    }
}
