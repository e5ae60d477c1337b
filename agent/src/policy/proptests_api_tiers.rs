//! Property tests of ClusterNetworkPolicy parsing and compiling against the
//! raw-object reading: over random clusters mixing NetworkPolicies and
//! ClusterNetworkPolicies (as API objects, some invalid, some with
//! `domainNames` peers) with Nodes, the whole path (objects -> state ->
//! compile -> plan lookup, every pod local) agrees in both directions with
//! [`eval::api`], which reads the objects themselves and shares nothing with
//! `state::cnp` or [`super::tiers`].
//!
//! Services are left out: the API reading does not read them.

use std::collections::BTreeSet;
use std::net::IpAddr;

use proptest::prelude::*;

use super::compile::Compiler;
use super::eval;
use super::fixtures::*;
use super::lookup::{Flow, evaluate};
use super::proptests::addresses;
use super::proptests_tiers::tiered_cluster_strategy;
use super::strategies::{
    CnpObject, cnp_object, config, egress_peer, ingress_peer, rule_name, subject,
};
use crate::source::K8sObject;
use crate::source::cnp as api;
use crate::state::cnp::Action;
use crate::state::{Direction, PodRef};

/// The node every fixture pod runs on.
const OWN_NODE: &str = "node-1";

/// `protocols` the CRD accepts (absent sometimes), but now and then one
/// just past its bounds: a range of one port, port 0 or 65536.
fn valid_protocols() -> impl Strategy<Value = Option<Vec<api::Protocol>>> {
    let port = |number, range| api::ProtocolPort {
        destination_port: Some(api::Port { number, range }),
    };
    let one = prop_oneof![
        2 => Just(api::Protocol { tcp: Some(port(Some(80), None)), ..Default::default() }),
        1 => Just(api::Protocol {
            tcp: Some(port(None, Some(api::PortRange { start: 81, end: 82 }))),
            ..Default::default()
        }),
        1 => Just(api::Protocol { udp: Some(port(Some(53), None)), ..Default::default() }),
        1 => Just(api::Protocol { sctp: Some(port(Some(80), None)), ..Default::default() }),
        3 => prop::sample::select(vec!["web", "web", "dns"]).prop_map(|n| api::Protocol {
            destination_named_port: Some(n.into()),
            ..Default::default()
        }),
        1 => prop::sample::select(vec![(None, Some((80, 80))), (Some(0), None), (Some(65536), None), (None, Some((80, 65536)))])
            .prop_map(move |(number, range)| api::Protocol {
                tcp: Some(port(number, range.map(|(start, end)| api::PortRange { start, end }))),
                ..Default::default()
            }),
    ];
    proptest::option::weighted(0.6, proptest::collection::vec(one, 1..3))
}

fn well_formed_action() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["Accept", "Deny", "Pass", "Pass"]).prop_map(String::from)
}

/// A ClusterNetworkPolicy the CRD accepts but for its selectors (sometimes
/// invalid) and the port bounds of [`valid_protocols`]: it makes more of
/// the Pass rules and named ports that decide than
/// [`super::strategies::cnp_strategy`]'s, most of whose rules are
/// rejected.
fn well_formed_cnp_strategy() -> impl Strategy<Value = CnpObject> {
    let ingress = (
        rule_name(),
        well_formed_action(),
        proptest::collection::vec(
            ingress_peer().prop_filter("one field", |p| p.namespaces.is_some() != p.pods.is_some()),
            1..3,
        ),
        valid_protocols(),
    )
        .prop_map(|(name, action, from, protocols)| api::IngressRule {
            name,
            action,
            from,
            protocols,
        });
    let egress = (
        rule_name(),
        well_formed_action(),
        proptest::collection::vec(
            egress_peer().prop_filter("readable", |p| {
                p != &api::EgressPeer::default()
                    && !p
                        .networks
                        .iter()
                        .flatten()
                        .any(|c| c.parse::<ipnet::IpNet>().is_err())
            }),
            1..3,
        ),
        valid_protocols(),
    )
        .prop_map(|(name, action, mut to, mut protocols)| {
            // The CEL rule: named ports only with pod peers.
            let named = protocols
                .iter()
                .flatten()
                .any(|p| p.destination_named_port.is_some());
            let pod_peer = |p: &api::EgressPeer| p.namespaces.is_some() || p.pods.is_some();
            if named && to.iter().any(pod_peer) {
                to.retain(pod_peer);
            } else if named {
                protocols = None;
            }
            api::EgressRule {
                name,
                action,
                to,
                protocols,
            }
        });
    (
        prop::sample::select(vec!["w0", "w1", "w2"]),
        prop::sample::select(vec!["Admin", "Baseline"]),
        0..3i32,
        subject().prop_filter("one field", |s| s.namespaces.is_some() != s.pods.is_some()),
        proptest::option::of(proptest::collection::vec(ingress, 1..3)),
        proptest::option::of(proptest::collection::vec(egress, 1..3)),
    )
        .prop_map(|(name, tier, priority, subject, ingress, egress)| {
            cnp_object(name, tier, priority, subject, ingress, egress)
        })
}

/// A tiered cluster (its ClusterNetworkPolicies from [`super::strategies::cnp_strategy`] and
/// [`well_formed_cnp_strategy`]) without Services, and its number of pods;
/// sometimes one of the two Nodes is the pods' own, sometimes one has an
/// ExternalIP.
fn cluster_strategy() -> impl Strategy<Value = (Vec<K8sObject>, usize)> {
    (
        tiered_cluster_strategy(),
        proptest::collection::vec(proptest::bool::weighted(0.3), 5),
        proptest::collection::vec(well_formed_cnp_strategy(), 1..4),
        proptest::option::of(0..2usize),
        any::<bool>(),
    )
        .prop_map(|((objs, n_pods), keep, well_formed, own, external)| {
            // Most of cnp_strategy's policies deny all traffic somewhere
            // (an invalid Deny or Pass rule): keep few, so that the rules
            // after them decide too.
            let mut kept = keep.into_iter().cycle();
            let objs = objs
                .into_iter()
                .filter(|o| match o {
                    K8sObject::Service(_) | K8sObject::EndpointSlice(_) => false,
                    K8sObject::ClusterNetworkPolicy(_) => kept.next().unwrap_or(true),
                    _ => true,
                })
                .map(|o| match o {
                    K8sObject::Node(mut n) => {
                        let index = usize::from(n.metadata.name.as_deref() == Some("node1"));
                        if own == Some(index) {
                            n.metadata.name = Some(OWN_NODE.into());
                        }
                        if external && index == 0 {
                            // Its address an ExternalIP, and an InternalIP
                            // of the other family.
                            let status = n.status.get_or_insert_with(Default::default);
                            let addresses = status.addresses.get_or_insert_with(Vec::new);
                            addresses
                                .iter_mut()
                                .for_each(|a| a.type_ = "ExternalIP".into());
                            addresses.push(k8s_openapi::api::core::v1::NodeAddress {
                                type_: "InternalIP".into(),
                                address: "fd00::99".into(),
                            });
                        }
                        K8sObject::Node(n)
                    }
                    other => other,
                })
                .chain(well_formed.into_iter().map(K8sObject::ClusterNetworkPolicy))
                .collect();
            (objs, n_pods)
        })
}

type Pick = (usize, usize, u8, u16);

fn picks() -> impl Strategy<Value = Vec<Pick>> {
    proptest::collection::vec(
        (
            0..64usize,
            0..64usize,
            prop::sample::select(vec![6u8, 6, 17, 1, 132]),
            prop::sample::select(vec![53u16, 80, 81, 82]),
        ),
        40,
    )
}

fn ref_of(p: &k8s_openapi::api::core::v1::Pod) -> PodRef {
    PodRef {
        namespace: p.metadata.namespace.clone().unwrap_or_default(),
        name: p.metadata.name.clone().unwrap_or_default(),
    }
}

/// The flows of `picks` over the cluster's addresses (pods' IPv4 ones
/// three times as often, so that pod to pod flows are common), one family
/// each.
fn flows(n_pods: usize, picks: &[Pick]) -> Vec<(IpAddr, IpAddr, u8, u16)> {
    let mut addrs = addresses(n_pods);
    let pods_v4: Vec<IpAddr> = addrs.iter().take(n_pods).copied().collect();
    addrs.extend(pods_v4.iter().chain(&pods_v4));
    picks
        .iter()
        .map(|(s, d, p, port)| (addrs[s % addrs.len()], addrs[d % addrs.len()], *p, *port))
        .filter(|(s, d, _, _)| s.is_ipv4() == d.is_ipv4())
        .collect()
}

/// The objects applied as the agent applies them and compiled with the
/// pods' node's addresses as the host's; for every flow and end, lookup
/// over the plan == the reading of the objects.
pub(super) fn agree(
    objs: &[K8sObject],
    flows: &[(IpAddr, IpAddr, u8, u16)],
) -> Result<(), TestCaseError> {
    let read = eval::api::Objects::new(objs);
    let c = cluster(objs.to_vec());
    let host = read.node_addresses(OWN_NODE);
    let plan = Compiler::new().compile_for(&c, |_| true, &host);
    let endpoints: BTreeSet<PodRef> = read.endpoints().map(ref_of).collect();
    prop_assert_eq!(
        plan.endpoints.keys().cloned().collect::<BTreeSet<_>>(),
        endpoints,
        "endpoints"
    );
    for &(src, dst, protocol, dst_port) in flows {
        let flow = Flow {
            src,
            dst,
            protocol,
            dst_port,
        };
        for (local, d, remote) in [
            (src, Direction::Egress, dst),
            (dst, Direction::Ingress, src),
        ] {
            let Some(pod) = read.endpoint(local) else {
                continue;
            };
            let by_plan = evaluate(&plan, &plan.endpoints[&ref_of(pod)], d, &flow).allowed;
            let by_reading = read.direction_allows(pod, d, remote, protocol, dst_port);
            prop_assert_eq!(
                by_plan,
                by_reading,
                "{:?} at {} for {:?}",
                d,
                ref_of(pod),
                flow
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(600))]

    #[test]
    fn plan_lookup_agrees_with_the_api_reading_of_cluster_network_policies(
        (objs, n_pods) in cluster_strategy(),
        picks in picks(),
    ) {
        agree(&objs, &flows(n_pods, &picks))?;
    }
}

#[test]
fn the_api_tiered_strategy_makes_denies_passes_mixed_verdicts_and_invalid_objects() {
    // The property above checks the tiers only if its clusters have all of
    // these, and the reading answers both ways for pods a policy covers.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::new(config(1));
    let (mut denies, mut passes, mut rejected, mut unsupported, mut own_node) = (0, 0, 0, 0, 0);
    let (mut allowed, mut dropped) = (0, 0);
    for _ in 0..200 {
        let (objs, n_pods) = cluster_strategy()
            .new_tree(&mut runner)
            .expect("tree")
            .current();
        let flows = flows(
            n_pods,
            &picks().new_tree(&mut runner).expect("tree").current(),
        );
        let read = eval::api::Objects::new(&objs);
        let c = cluster(objs);
        let host = read.node_addresses(OWN_NODE);
        own_node += usize::from(!host.is_empty());
        denies += Compiler::new()
            .compile_for(&c, |_| true, &host)
            .denies
            .len();
        for p in c.cluster_policies() {
            passes += [Direction::Ingress, Direction::Egress]
                .iter()
                .flat_map(|d| p.rules(*d))
                .filter(|r| r.action == Action::Pass)
                .count();
            rejected += usize::from(p.rejections.len() > p.unsupported.len());
            unsupported += usize::from(!p.unsupported.is_empty());
        }
        for (src, dst, protocol, port) in flows {
            if let Some(pod) = read.endpoint(src) {
                let verdict = read.direction_allows(pod, Direction::Egress, dst, protocol, port);
                *if verdict { &mut allowed } else { &mut dropped } += 1;
            }
        }
    }
    assert!(denies > 100, "{denies} deny entries over 200 clusters");
    assert!(passes > 50, "{passes} Pass rules");
    assert!(rejected > 50, "{rejected} policies with rejections");
    // In Accept rules only: in Deny and Pass rules they are rejections.
    assert!(unsupported > 5, "{unsupported} policies with domainNames");
    assert!(own_node > 50, "{own_node} clusters with the pods' own Node");
    assert!(
        allowed > 500 && dropped > 500,
        "{allowed} allowed, {dropped} dropped egress directions"
    );
}
