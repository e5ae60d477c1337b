//! ClusterNetworkPolicy (`policy.networking.k8s.io/v1alpha2`) as truth
//! tables, written from the network-policy-api reference: the Admin tier
//! decides before NetworkPolicy, which decides before the Baseline tier, which
//! decides before the default (allow); within a tier policies go by priority
//! (lower first, ties by name), rules by list order, and the first match
//! decides (`Accept`, `Deny`, or `Pass` to skip the rest of the tier).
//!
//! The scenarios are those of the upstream conformance suite (combined
//! ingress and egress rules, rule order, priorities, the Admin/NetworkPolicy/
//! Baseline integration, pod and namespace selectors, inline CIDRs, node
//! peers, port ranges, named ports) expressed over x/y/z a/b/c.

mod changes;
mod nodes;
mod outside;
mod overlaps;
mod peers;
mod ports;
mod tiers;

use std::time::SystemTime;

use crate::fixture::*;

/// A ClusterNetworkPolicy manifest; `spec` (subject, ingress, egress) is YAML at column 0.
pub fn cnp(name: &str, tier: &str, priority: u16, spec: &str) -> String {
    let mut out = format!(
        "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata:\n  name: {name}\nspec:\n  tier: {tier}\n  priority: {priority}\n"
    );
    for line in spec.lines() {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Manifests as one multi-document file.
pub fn documents(docs: &[String]) -> String {
    docs.join("---\n")
}

/// Every (protocol, port) the pods serve, over IPv4.
pub const ALL_V4: [(Proto, u16, Family); 6] = [
    (Tcp, 80, V4),
    (Tcp, 81, V4),
    (Udp, 80, V4),
    (Udp, 81, V4),
    (Sctp, 80, V4),
    (Sctp, 81, V4),
];

/// One case per (protocol, port, family) of `on`, each table from `table`.
pub fn cases(
    on: &[(Proto, u16, Family)],
    mut table: impl FnMut(Proto, u16, Family) -> Reachability,
) -> Vec<Case> {
    on.iter()
        .map(|&(proto, port, family)| Case::new(proto, port, family, &table(proto, port, family)))
        .collect()
}

/// Sets node `i`'s labels and waits until every agent applied that.
pub fn label_node(fx: &mut Fixture, i: usize, labels: &[(&str, &str)]) {
    let since = SystemTime::now();
    fx.cluster.set_node_labels(i, labels).expect("relabel node");
    fx.wait_applied(since);
}
