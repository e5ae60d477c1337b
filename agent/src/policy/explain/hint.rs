//! What a person can change to allow a denied flow, by who denied it.

use super::{DecidedBy, TierWalk};
use crate::policy::lookup::Flow;
use crate::state::ClusterState;
use crate::state::model::{Pod, Protocol};
use crate::state::{Direction, PolicyRef};

/// The hint for a direction the datapath denies; `walk` is the tiered
/// reading of it.
pub(super) fn hint(
    cluster: &ClusterState,
    pod: &Pod,
    d: Direction,
    flow: &Flow,
    remote: &Pod,
    isolating: &[PolicyRef],
    walk: &TierWalk,
) -> String {
    if walk.allowed {
        return "the compiled plan denies what the tiered reading allows: a Palisade bug, please \
                report it with this output"
            .into();
    }
    match &walk.decided_by {
        DecidedBy::ClusterRule(r) if r.tier == "admin" => format!(
            "denied by rule {} of the Admin tier ClusterNetworkPolicy {} (priority {}): no \
             NetworkPolicy can allow it; change that rule, or match this traffic first with an \
             Accept or Pass rule (earlier in the policy, or in an Admin policy with a lower \
             priority number)",
            r.rule, r.policy, r.priority
        ),
        DecidedBy::ClusterRule(r) => format!(
            "denied by rule {} of the Baseline tier ClusterNetworkPolicy {} (priority {}); a \
             NetworkPolicy isolating {} in this direction would decide instead: {}",
            r.rule,
            r.policy,
            r.priority,
            pod.pod_ref(),
            network_policy(cluster, pod, d, flow, remote, &[])
        ),
        _ => network_policy(cluster, pod, d, flow, remote, isolating),
    }
}

/// What to change in NetworkPolicy: the isolating policies' problems, then
/// the rule to add.
fn network_policy(
    cluster: &ClusterState,
    pod: &Pod,
    d: Direction,
    flow: &Flow,
    remote: &Pod,
    isolating: &[PolicyRef],
) -> String {
    let (rules, peer_field) = match d {
        Direction::Ingress => ("ingress", "from"),
        Direction::Egress => ("egress", "to"),
    };
    let mut lines = Vec::new();
    for r in isolating {
        let Some(p) = cluster.policy(r) else { continue };
        if !p.rejections.is_empty() {
            lines.push(format!(
                "policy {r} was rejected ({} problem(s)) and allows nothing until fixed",
                p.rejections.len()
            ));
        } else if p.allowing_rules(d).is_empty() {
            lines.push(format!(
                "policy {r} has no {rules} rules: it only isolates {}",
                pod.pod_ref()
            ));
        } else {
            lines.push(format!(
                "none of the {} {rules} rule(s) of policy {r} matches",
                p.allowing_rules(d).len()
            ));
        }
    }
    let labels: Vec<String> = remote
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let l4 = match Protocol::from_number(flow.protocol) {
        Some(p) => format!("{p}/{}", flow.dst_port),
        None => format!(
            "IP protocol {} (only a rule without ports can allow it)",
            flow.protocol
        ),
    };
    lines.push(format!(
        "to allow it, add to a policy selecting {} an {rules} rule with {peer_field}: podSelector {{{}}}{} and ports {l4}",
        pod.pod_ref(),
        labels.join(","),
        if remote.namespace == pod.namespace {
            String::new()
        } else {
            format!(" with a namespaceSelector matching namespace {}", remote.namespace)
        },
    ));
    lines.join("; ")
}
