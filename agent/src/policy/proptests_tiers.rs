//! Property tests with ClusterNetworkPolicies: over random clusters mixing
//! them (as API objects, some invalid) with NetworkPolicies, Services and
//! Nodes, looking the compiled plan up (every pod local) agrees in both
//! directions with [`eval::direction_allows`], whose ClusterNetworkPolicy
//! part is the tiered reading of [`super::tiers`], written from the API
//! reference. (The incremental property test of [`super::proptests`] mixes
//! ClusterNetworkPolicy changes into its steps.)

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use proptest::prelude::*;

use super::compile::Compiler;
use super::eval;
use super::fixtures::*;
use super::lookup::{Flow, evaluate};
use super::proptests::{addresses, cluster_strategy};
use super::strategies::{cnp_strategy, config, label_strategy, node_object};
use crate::source::K8sObject;
use crate::state::Direction;

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
