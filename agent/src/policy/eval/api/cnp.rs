//! ClusterNetworkPolicy (`policy.networking.k8s.io/v1alpha2`, network-policy-api
//! v0.2.0) read straight from the objects: the API reference and its CRD's
//! schema and CEL rules, without `state::cnp`'s parsing.
//!
//! Per direction: the Admin tier, then NetworkPolicy, then the Baseline tier,
//! then allow. In a tier, policies go by `priority` (lower first, equal ones
//! by name) and rules in list order; the first rule that matches decides:
//! `Accept` allows this direction, `Deny` drops, `Pass` skips the rest of the
//! tier (in the Baseline tier, to the default). A pod that NetworkPolicy
//! isolates in the direction is decided there, and Baseline is not read.
//!
//! An object the CRD refuses (a manifest, version skew) fails closed, as
//! the reference asks for a peer with no field set and as the agent
//! documents for the rest:
//! - an ill-formed rule (past 25 rules, a name over 100 characters, 0 or
//!   over 25 peers, a bad `protocols` entry, a named port beside
//!   networks/nodes/domainNames peers) matches nothing if `Accept` and
//!   denies all traffic if `Deny`, `Pass` or an unknown action;
//! - an unreadable peer (not exactly one field, a bad selector or CIDR)
//!   makes an `Accept` rule match no traffic (its other peers included) and
//!   a `Deny` or `Pass` rule deny all traffic;
//! - an unreadable subject, tier or priority: the policy covers every pod
//!   (if the subject is unreadable), in the Admin tier (if the tier is) at
//!   priority 0 (if the priority is); its `Accept` rules match nothing and
//!   its `Pass` rules deny.
//!
//! `domainNames` peers match nothing; in a `Deny` or `Pass` rule (the
//! reference supports them only in `Accept` rules) the rule is ill-formed.
//! Named ports are the destination
//! pod's container port of that name and the traffic's protocol (never a
//! node's); a `nodes` peer matches the selected Nodes' InternalIP and
//! ExternalIP addresses; `networks` match any address, pods' too.

use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::{Objects, key, named_port, node_ips, selector_matches, selector_valid};
use crate::source::cnp as api;
use crate::state::Direction;

/// The CRD's `maxItems` for rules, peers, CIDRs and protocol entries.
const MAX_ITEMS: usize = 25;

/// One direction of a connection, from the pod at this end.
#[derive(Clone, Copy, Debug)]
pub struct Traffic<'a> {
    /// The pod whose policies apply (an endpoint).
    pub pod: &'a core::Pod,
    /// Ingress (to the pod) or egress (from it).
    pub direction: Direction,
    /// The source for ingress, the destination for egress.
    pub remote: IpAddr,
    /// IP protocol number.
    pub protocol: u8,
    /// Destination port.
    pub port: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Tier {
    Admin,
    Baseline,
}

/// What a matching rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Accept,
    Deny,
    Pass,
}

/// A policy as placed for evaluation.
struct Placed<'a> {
    tier: Tier,
    priority: i32,
    name: &'a str,
    /// Its subject, tier or priority is unreadable.
    degraded: bool,
    spec: &'a api::ClusterNetworkPolicySpec,
}

/// The direction's decision: `network_policy` is NetworkPolicy's answer
/// (`None` when it does not isolate the pod in this direction).
pub fn verdict(
    objects: &Objects,
    traffic: Traffic<'_>,
    network_policy: impl FnOnce() -> Option<bool>,
) -> bool {
    let placed = placed(objects);
    match tier(objects, &placed, Tier::Admin, traffic) {
        Some(Action::Accept) => return true,
        Some(Action::Deny) => return false,
        Some(Action::Pass) | None => {}
    }
    if let Some(allowed) = network_policy() {
        return allowed;
    }
    tier(objects, &placed, Tier::Baseline, traffic) != Some(Action::Deny)
}

/// Every policy, in evaluation order.
fn placed(objects: &Objects) -> Vec<Placed<'_>> {
    let mut placed: Vec<Placed<'_>> = objects
        .cluster_policies
        .values()
        .map(|c| {
            let spec = &c.spec;
            let tier = match spec.tier.as_str() {
                "Admin" => Some(Tier::Admin),
                "Baseline" => Some(Tier::Baseline),
                _ => None,
            };
            let priority = (0..=1000).contains(&spec.priority).then_some(spec.priority);
            Placed {
                tier: tier.unwrap_or(Tier::Admin),
                priority: priority.unwrap_or(0),
                name: c.metadata.name.as_deref().unwrap_or_default(),
                degraded: tier.is_none() || priority.is_none() || !subject_valid(&spec.subject),
                spec,
            }
        })
        .collect();
    placed.sort_by(|a, b| (a.tier, a.priority, a.name).cmp(&(b.tier, b.priority, b.name)));
    placed
}

/// The action of the first matching rule of `tier` (`None`: none matched).
fn tier(
    objects: &Objects,
    placed: &[Placed<'_>],
    tier: Tier,
    traffic: Traffic<'_>,
) -> Option<Action> {
    for policy in placed.iter().filter(|p| p.tier == tier) {
        if !subject_selects(objects, &policy.spec.subject, traffic.pod) {
            continue;
        }
        for (index, rule) in rules(policy.spec, traffic.direction).enumerate() {
            if let Some(action) = rule_action(objects, policy.degraded, index, &rule, traffic) {
                return Some(action);
            }
        }
    }
    None
}

/// A rule of either direction.
struct Rule<'a> {
    name: Option<&'a str>,
    action: &'a str,
    peers: Vec<Peer<'a>>,
    protocols: Option<&'a [api::Protocol]>,
}

/// A peer of either direction.
#[derive(Clone, Copy)]
enum Peer<'a> {
    Ingress(&'a api::IngressPeer),
    Egress(&'a api::EgressPeer),
}

fn rules(
    spec: &api::ClusterNetworkPolicySpec,
    direction: Direction,
) -> Box<dyn Iterator<Item = Rule<'_>> + '_> {
    match direction {
        Direction::Ingress => Box::new(spec.ingress.iter().flatten().map(|r| Rule {
            name: r.name.as_deref(),
            action: &r.action,
            peers: r.from.iter().map(Peer::Ingress).collect(),
            protocols: r.protocols.as_deref(),
        })),
        Direction::Egress => Box::new(spec.egress.iter().flatten().map(|r| Rule {
            name: r.name.as_deref(),
            action: &r.action,
            peers: r.to.iter().map(Peer::Egress).collect(),
            protocols: r.protocols.as_deref(),
        })),
    }
}

/// What rule number `index` of a policy (`degraded` or not) does with the
/// traffic: `None` when it does not match.
fn rule_action(
    objects: &Objects,
    degraded: bool,
    index: usize,
    rule: &Rule<'_>,
    traffic: Traffic<'_>,
) -> Option<Action> {
    let action = match rule.action {
        "Accept" => Action::Accept,
        "Deny" => Action::Deny,
        "Pass" => Action::Pass,
        // Unknown: deny all.
        _ => return Some(Action::Deny),
    };
    let well_formed = index < MAX_ITEMS
        && rule.name.is_none_or(|n| n.chars().count() <= 100)
        && (1..=MAX_ITEMS).contains(&rule.peers.len())
        && rule.protocols.is_none_or(protocols_valid)
        && !(rule.protocols.is_some_and(has_named_port)
            && rule.peers.iter().any(|p| names_addresses(*p)))
        // The reference: "DomainNames is only supported for Accept rules".
        && (action == Action::Accept || !rule.peers.iter().any(|p| names_domains(*p)));
    let reads: Vec<Option<bool>> = rule
        .peers
        .iter()
        .map(|p| peer_matches(objects, *p, traffic))
        .collect();
    let on_match = match action {
        // The reference: "treat the rule as matching no traffic".
        Action::Accept if degraded || !well_formed || reads.contains(&None) => return None,
        Action::Accept => Action::Accept,
        _ if !well_formed || reads.contains(&None) => return Some(Action::Deny),
        // A degraded policy's Pass rules deny.
        _ if degraded => Action::Deny,
        other => other,
    };
    let peer_ok = reads.contains(&Some(true));
    let ports_ok = rule
        .protocols
        .is_none_or(|ps| ps.iter().any(|p| protocol_matches(objects, p, traffic)));
    (peer_ok && ports_ok).then_some(on_match)
}

/// Whether a peer matches the remote end: `None` when it is unreadable.
/// `domainNames` peers match nothing.
fn peer_matches(objects: &Objects, peer: Peer<'_>, traffic: Traffic<'_>) -> Option<bool> {
    let (namespaces, pods) = match peer {
        Peer::Ingress(p) => (&p.namespaces, &p.pods),
        Peer::Egress(p) => (&p.namespaces, &p.pods),
    };
    let egress = match peer {
        Peer::Egress(p) => Some(p),
        Peer::Ingress(_) => None,
    };
    let set = [
        namespaces.is_some(),
        pods.is_some(),
        egress.is_some_and(|e| e.networks.is_some()),
        egress.is_some_and(|e| e.nodes.is_some()),
        egress.is_some_and(|e| e.domain_names.is_some()),
    ];
    if set.iter().filter(|s| **s).count() != 1 {
        return None;
    }
    let remote_pod = objects.endpoint(traffic.remote);
    if let Some(sel) = namespaces {
        return selector_valid(sel).then(|| {
            remote_pod.is_some_and(|rp| {
                selector_matches(sel, &objects.namespace_labels(&key(&rp.metadata).0))
            })
        });
    }
    if let Some(pods) = pods {
        return pods_valid(pods).then(|| remote_pod.is_some_and(|rp| pods_hold(objects, pods, rp)));
    }
    let Some(egress) = egress else {
        return Some(false);
    };
    if let Some(cidrs) = &egress.networks {
        // The CRD: 1-25 entries, each a CIDR of at most 43 characters.
        let nets: Option<Vec<IpNet>> = cidrs
            .iter()
            .map(|c| c.parse().ok().filter(|_| c.len() <= 43))
            .collect();
        let nets = nets.filter(|n| (1..=MAX_ITEMS).contains(&n.len()))?;
        return Some(nets.iter().any(|n| n.contains(&traffic.remote)));
    }
    if let Some(sel) = &egress.nodes {
        return selector_valid(sel).then(|| {
            objects.nodes.values().any(|n| {
                selector_matches(sel, &n.metadata.labels.clone().unwrap_or_default())
                    && node_ips(n).contains(&traffic.remote)
            })
        });
    }
    // domainNames: 1-25 names of the CRD's pattern, matching nothing.
    let names = egress.domain_names.as_deref().unwrap_or_default();
    ((1..=MAX_ITEMS).contains(&names.len()) && names.iter().all(|n| domain_name_valid(n)))
        .then_some(false)
}

/// The CRD's pattern for a domain name, `^(\*\.)?([a-zA-z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.)+[a-zA-z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.?$`:
/// an optional `*.`, two or more labels, an optional final dot. (`A-z`, as
/// the CRD writes it, also admits `[\]^_` and a backtick first in a label.)
fn domain_name_valid(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    let name = name.strip_suffix('.').unwrap_or(name);
    let label_valid = |label: &str| {
        let chars: Vec<char> = label.chars().collect();
        let first_ok = |c: char| c.is_ascii_digit() || ('A'..='z').contains(&c);
        let inner_ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        match chars.as_slice() {
            [] => false,
            [first] => first_ok(*first),
            [first, inner @ .., last] => {
                first_ok(*first)
                    && inner.iter().all(|c| inner_ok(*c))
                    && last.is_ascii_alphanumeric()
            }
        }
    };
    let labels: Vec<&str> = name.split('.').collect();
    labels.len() >= 2 && labels.iter().all(|l| label_valid(l))
}

/// Whether a peer names addresses (the CEL rule against named ports).
fn names_addresses(peer: Peer<'_>) -> bool {
    matches!(peer, Peer::Egress(e) if e.networks.is_some() || e.nodes.is_some() || e.domain_names.is_some())
}

/// Whether a peer names domains.
fn names_domains(peer: Peer<'_>) -> bool {
    matches!(peer, Peer::Egress(e) if e.domain_names.is_some())
}

fn has_named_port(protocols: &[api::Protocol]) -> bool {
    protocols.iter().any(|p| p.destination_named_port.is_some())
}

/// 1-25 entries, each exactly one of tcp, udp, sctp (with a port number
/// 1-65535 or a range `start < end`) or a non-empty destinationNamedPort.
fn protocols_valid(protocols: &[api::Protocol]) -> bool {
    let port_valid = |p: &api::ProtocolPort| {
        let in_range = |n: i32| (1..=65535).contains(&n);
        match p.destination_port.as_ref().map(|d| (d.number, d.range)) {
            Some((Some(n), None)) => in_range(n),
            Some((None, Some(r))) => in_range(r.start) && in_range(r.end) && r.start < r.end,
            _ => false,
        }
    };
    (1..=MAX_ITEMS).contains(&protocols.len())
        && protocols.iter().all(|p| {
            let ports = [&p.tcp, &p.udp, &p.sctp];
            let set = ports.iter().filter(|x| x.is_some()).count()
                + usize::from(p.destination_named_port.is_some());
            set == 1
                && ports.iter().copied().flatten().all(port_valid)
                && p.destination_named_port
                    .as_ref()
                    .is_none_or(|n| !n.is_empty())
        })
}

/// Whether a (valid) protocol entry matches the traffic.
fn protocol_matches(objects: &Objects, p: &api::Protocol, traffic: Traffic<'_>) -> bool {
    if let Some(name) = &p.destination_named_port {
        // The destination pod's: the subject for ingress, the remote
        // endpoint for egress (never a node or a network).
        let destination = match traffic.direction {
            Direction::Ingress => Some(traffic.pod),
            Direction::Egress => objects.endpoint(traffic.remote),
        };
        return destination
            .and_then(|pod| named_port(pod, name, traffic.protocol))
            .is_some_and(|n| n == i32::from(traffic.port));
    }
    let port = i32::from(traffic.port);
    [(6, &p.tcp), (17, &p.udp), (132, &p.sctp)]
        .into_iter()
        .filter(|(number, _)| *number == traffic.protocol)
        .filter_map(|(_, spec)| spec.as_ref()?.destination_port.as_ref())
        .any(|d| match (d.number, d.range) {
            (Some(n), _) => n == port,
            (None, Some(r)) => (r.start..=r.end).contains(&port),
            (None, None) => false,
        })
}

/// Exactly one of `namespaces` or `pods`, with valid selectors.
fn subject_valid(subject: &api::Subject) -> bool {
    match (&subject.namespaces, &subject.pods) {
        (Some(sel), None) => selector_valid(sel),
        (None, Some(pods)) => pods_valid(pods),
        _ => false,
    }
}

/// Whether the subject covers `pod` (an unreadable one covers every pod;
/// host-network pods never).
fn subject_selects(objects: &Objects, subject: &api::Subject, pod: &core::Pod) -> bool {
    let host_network = pod.spec.as_ref().and_then(|s| s.host_network) == Some(true);
    if host_network {
        return false;
    }
    match (&subject.namespaces, &subject.pods) {
        (Some(sel), None) if selector_valid(sel) => {
            selector_matches(sel, &objects.namespace_labels(&key(&pod.metadata).0))
        }
        (None, Some(pods)) if pods_valid(pods) => pods_hold(objects, pods, pod),
        _ => true,
    }
}

fn pods_valid(pods: &api::NamespacedPods) -> bool {
    pods.namespace_selector.as_ref().is_none_or(selector_valid)
        && selector_valid(&pods.pod_selector)
}

/// Whether `pod` is in a namespace the selector picks (absent: every one)
/// and has labels the pod selector picks.
fn pods_hold(objects: &Objects, pods: &api::NamespacedPods, pod: &core::Pod) -> bool {
    let everything = LabelSelector::default();
    let ns = pods.namespace_selector.as_ref().unwrap_or(&everything);
    selector_matches(ns, &objects.namespace_labels(&key(&pod.metadata).0))
        && selector_matches(
            &pods.pod_selector,
            &pod.metadata.labels.clone().unwrap_or_default(),
        )
}
