//! The tiered reading of one direction of a connection, straight from the
//! ClusterNetworkPolicy API reference: Admin tier, then NetworkPolicy, then
//! Baseline tier, then the default (allow).
//!
//! Within a tier, policies are taken in precedence order (priority, ties by
//! name) and their rules in list order; the first rule that matches decides:
//! `Accept` allows this direction (an egress Accept leaves the destination's
//! ingress to be judged on its own), `Deny` drops, `Pass` skips the rest of
//! the tier. A pod that any NetworkPolicy isolates in the direction is decided
//! by NetworkPolicy, and Baseline is not consulted for it. `Pass` in the
//! Baseline tier decides nothing, so the default follows.
//!
//! Not subject to ClusterNetworkPolicy, as for NetworkPolicy: a pod reaching
//! its own address (hairpin), and traffic from the pod's own node to it
//! (kubelet probes; Palisade's invariant, see DESIGN). Host-network pods are
//! never a subject, and are not pod peers (their addresses are the node's).

use std::net::IpAddr;

use crate::state::ClusterState;
use crate::state::Direction;
use crate::state::Protocol;
use crate::state::cnp::{Action, ClusterNetworkPolicy, Peer, Peers, PodSet, Port, Rule, Tier};
use crate::state::model::Pod;
use crate::state::selector::Labels;

/// One direction of a connection as the pod at this end sees it.
#[derive(Clone, Copy, Debug)]
pub struct Traffic<'a> {
    /// The pod whose policies apply.
    pub pod: &'a Pod,
    /// Ingress (to the pod) or egress (from it).
    pub direction: Direction,
    /// The other end: the source for ingress, the destination for egress.
    pub remote: IpAddr,
    /// IP protocol number.
    pub protocol: u8,
    /// Destination port (0 for protocols without ports).
    pub port: u16,
}

/// Who decided a direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decider<'a> {
    /// A ClusterNetworkPolicy rule (Accept or Deny).
    Rule {
        /// The policy.
        policy: &'a ClusterNetworkPolicy,
        /// Its rule.
        rule: &'a Rule,
    },
    /// The NetworkPolicies isolating the pod.
    NetworkPolicy,
    /// Nothing matched: allowed by default.
    Default,
    /// Not subject to policy (hairpin or the node's own traffic).
    Exempt,
}

/// The decision for one direction, with the `Pass` rules that led to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict<'a> {
    /// Whether the direction allows the traffic.
    pub allowed: bool,
    /// Who decided.
    pub decider: Decider<'a>,
    /// The `Pass` rules that skipped the rest of their tier on the way.
    pub passed: Vec<(&'a ClusterNetworkPolicy, &'a Rule)>,
}

/// The outcome of one tier.
enum TierOutcome<'a> {
    Decided(bool, &'a ClusterNetworkPolicy, &'a Rule),
    Passed(&'a ClusterNetworkPolicy, &'a Rule),
    NoMatch,
}

/// Reads one direction. `policies` are in precedence order (see
/// [`ClusterNetworkPolicy::precedence`]); `network_policy` says whether
/// NetworkPolicy isolates the pod in this direction and if so whether it
/// allows the traffic (`None`: not isolated).
pub fn verdict<'a>(
    cluster: &ClusterState,
    policies: &'a [ClusterNetworkPolicy],
    traffic: Traffic<'_>,
    network_policy: impl FnOnce() -> Option<bool>,
) -> Verdict<'a> {
    let exempt = traffic.pod.ips.contains(&traffic.remote)
        || (traffic.direction == Direction::Ingress
            && cluster.is_node_of(traffic.pod, traffic.remote));
    if exempt {
        return Verdict {
            allowed: true,
            decider: Decider::Exempt,
            passed: Vec::new(),
        };
    }
    let mut passed = Vec::new();
    let decided = |allowed, policy, rule, passed| Verdict {
        allowed,
        decider: Decider::Rule { policy, rule },
        passed,
    };
    match tier(cluster, policies, Tier::Admin, traffic) {
        TierOutcome::Decided(allowed, policy, rule) => {
            return decided(allowed, policy, rule, passed);
        }
        TierOutcome::Passed(policy, rule) => passed.push((policy, rule)),
        TierOutcome::NoMatch => {}
    }
    if let Some(allowed) = network_policy() {
        return Verdict {
            allowed,
            decider: Decider::NetworkPolicy,
            passed,
        };
    }
    match tier(cluster, policies, Tier::Baseline, traffic) {
        TierOutcome::Decided(allowed, policy, rule) => decided(allowed, policy, rule, passed),
        TierOutcome::Passed(policy, rule) => {
            passed.push((policy, rule));
            Verdict {
                allowed: true,
                decider: Decider::Default,
                passed,
            }
        }
        TierOutcome::NoMatch => Verdict {
            allowed: true,
            decider: Decider::Default,
            passed,
        },
    }
}

fn tier<'a>(
    cluster: &ClusterState,
    policies: &'a [ClusterNetworkPolicy],
    tier: Tier,
    traffic: Traffic<'_>,
) -> TierOutcome<'a> {
    for policy in policies.iter().filter(|p| p.tier == tier) {
        if !selects(cluster, &policy.subject, traffic.pod) {
            continue;
        }
        for rule in policy.rules(traffic.direction) {
            if !rule_matches(cluster, rule, traffic) {
                continue;
            }
            return match rule.action {
                Action::Accept => TierOutcome::Decided(true, policy, rule),
                Action::Deny => TierOutcome::Decided(false, policy, rule),
                Action::Pass => TierOutcome::Passed(policy, rule),
            };
        }
    }
    TierOutcome::NoMatch
}

/// Whether `set` holds `pod` (host-network pods are never held).
pub fn selects(cluster: &ClusterState, set: &PodSet, pod: &Pod) -> bool {
    selects_in(set, &cluster.namespace_labels(&pod.namespace), pod)
}

/// [`selects`], given the labels of `pod`'s namespace.
pub fn selects_in(set: &PodSet, namespace_labels: &Labels, pod: &Pod) -> bool {
    !pod.host_network && set.namespaces.matches(namespace_labels) && set.pods.matches(&pod.labels)
}

fn rule_matches(cluster: &ClusterState, rule: &Rule, traffic: Traffic<'_>) -> bool {
    let remote_pod = cluster
        .endpoint_pod_by_ip(traffic.remote)
        .filter(|p| !p.host_network);
    let peer_matches = match &rule.peers {
        Peers::All => true,
        Peers::Listed(peers) => peers.iter().any(|peer| match peer {
            Peer::Pods(set) => remote_pod.is_some_and(|p| selects(cluster, set, p)),
            Peer::Networks(nets) => nets.iter().any(|n| n.contains(&traffic.remote)),
            Peer::Nodes(selector) => cluster
                .nodes()
                .any(|n| selector.matches(&n.labels) && n.addresses.contains(&traffic.remote)),
        }),
    };
    if !peer_matches {
        return false;
    }
    let Some(ports) = &rule.ports else {
        return true;
    };
    // Named ports are the destination pod's: the subject for ingress, the
    // remote pod for egress (never a node or a network).
    let destination = match traffic.direction {
        Direction::Ingress => Some(traffic.pod),
        Direction::Egress => remote_pod,
    };
    ports.iter().any(|port| match port {
        Port::Range {
            protocol,
            first,
            last,
        } => protocol.number() == traffic.protocol && (*first..=*last).contains(&traffic.port),
        Port::Named(name) => {
            destination
                .zip(Protocol::from_number(traffic.protocol))
                .and_then(|(pod, protocol)| pod.named_port(name, protocol))
                == Some(traffic.port)
        }
    })
}

#[cfg(test)]
#[path = "tiers_tests.rs"]
mod tests;
