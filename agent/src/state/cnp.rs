//! ClusterNetworkPolicy, parsed and validated once.
//!
//! Validation follows the v1alpha2 CRD (its schema and CEL rules), which the
//! API server enforces too; a manifest file, an older API server or a newer
//! CRD can still hand the agent an object it would refuse. Every problem is a
//! [`Rejection`] naming the object and field, and the policy then fails
//! closed, as the API reference asks for peers it cannot read:
//!
//! - an invalid `Accept` rule matches no traffic, and so does one with an
//!   invalid peer (the API reference: "treat the rule as matching no
//!   traffic"), whatever its other peers;
//! - an invalid `Deny` or `Pass` rule (a bad peer, port, action or limit)
//!   becomes "deny all traffic" for the policy's subject in that direction;
//! - an invalid subject, tier or priority leaves the policy *degraded*: it
//!   applies to every pod, in the Admin tier at priority 0 (where unreadable),
//!   its `Accept` rules match nothing and its `Pass` rules deny.
//!
//! `domainNames` peers are not supported: they match nothing, and the policy
//! carries a rejection saying so (status, log and metric), never silence.
//! One the CRD refuses (no names, more than 25, one not of its pattern) is
//! an unreadable peer like any other, and so is one in a `Deny` or `Pass`
//! rule (the API reference supports them only in `Accept` rules): matching
//! nothing there would let through what the rule was written to stop.

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::{Deserialize, Serialize};

use crate::source::cnp as api;

use super::model::{ModelError, Protocol};
use super::refs::{Direction, Rejection};
use super::selector::Selector;

/// The CRD's limit on rules per direction, peers per rule, CIDRs per peer and
/// protocol entries per rule.
pub const MAX_ITEMS: usize = 25;
/// The CRD's limit on a rule name.
pub const MAX_RULE_NAME: usize = 100;
/// The CRD's `maxLength` of a `networks` entry.
pub const MAX_CIDR_LENGTH: usize = 43;
/// The highest priority value.
pub const MAX_PRIORITY: i32 = 1000;

/// The tier a policy sits in; Admin is evaluated before NetworkPolicy,
/// Baseline after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Tier {
    /// Before NetworkPolicy; its decisions are final.
    Admin,
    /// After NetworkPolicy, for pods NetworkPolicy does not isolate.
    Baseline,
}

/// What a matching rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Action {
    /// Allowed (the destination's ingress rules still apply to egress).
    Accept,
    /// Dropped.
    Deny,
    /// The rest of this tier is skipped.
    Pass,
}

/// Pods by their namespace's labels and their own (host-network pods never).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PodSet {
    /// Namespaces (everything when absent or empty).
    pub namespaces: Selector,
    /// Pods within them.
    pub pods: Selector,
}

impl PodSet {
    /// Every pod of every namespace.
    pub fn everything() -> PodSet {
        PodSet {
            namespaces: Selector::everything(),
            pods: Selector::everything(),
        }
    }
}

/// One readable peer of a rule.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Peer {
    /// `namespaces` (every pod in them) or `pods`.
    Pods(PodSet),
    /// `networks`: addresses by CIDR, cluster-internal ones included.
    Networks(Vec<IpNet>),
    /// `nodes`: the addresses of the selected Nodes.
    Nodes(Selector),
}

/// Which traffic a rule's peers cover.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Peers {
    /// Any of these (none: the rule matches nothing).
    Listed(Vec<Peer>),
    /// Every address: a Deny or Pass rule that failed closed.
    All,
}

/// One entry of `protocols`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Port {
    /// A protocol's destination ports `first..=last`.
    Range {
        /// TCP, UDP or SCTP.
        protocol: Protocol,
        /// First port.
        first: u16,
        /// Last port (>= first).
        last: u16,
    },
    /// The destination pod's container port of this name (never a node's).
    Named(String),
}

/// One rule, as it is enforced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// Its position in `spec.ingress` / `spec.egress`.
    pub index: usize,
    /// Its `name`, when given.
    pub name: Option<String>,
    /// What it does when it matches.
    pub action: Action,
    /// The remote side it matches.
    pub peers: Peers,
    /// `None`: all traffic.
    pub ports: Option<Vec<Port>>,
}

impl Rule {
    /// Its name for metrics, the flow log and explain: `name`, or the index.
    pub fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.index.to_string())
    }

    /// Deny all traffic: what a Deny or Pass rule becomes when unreadable.
    fn deny_all(index: usize, name: Option<String>) -> Rule {
        Rule {
            index,
            name,
            action: Action::Deny,
            peers: Peers::All,
            ports: None,
        }
    }
}

/// A parsed ClusterNetworkPolicy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNetworkPolicy {
    /// Name (cluster-scoped).
    pub name: String,
    /// Tier.
    pub tier: Tier,
    /// 0-1000, lower first; ties broken by name.
    pub priority: u16,
    /// The pods it applies to.
    pub subject: PodSet,
    /// Ingress rules in precedence order (rules that match nothing dropped).
    pub ingress: Vec<Rule>,
    /// Egress rules in precedence order.
    pub egress: Vec<Rule>,
    /// Validation failures and unsupported parts.
    pub rejections: Vec<Rejection>,
    /// Which of [`ClusterNetworkPolicy::rejections`] are unsupported parts
    /// (valid, but matching nothing) rather than validation failures.
    #[serde(default)]
    pub unsupported: Vec<UnsupportedField>,
}

/// A part of the API Palisade reads but does not enforce: it matches nothing,
/// and the policy is reported as partly unsupported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unsupported {
    /// A `domainNames` egress peer (experimental channel).
    DomainNames,
}

impl Unsupported {
    /// Every part, for metrics exported at 0.
    pub const ALL: [Unsupported; 1] = [Unsupported::DomainNames];

    /// Metric label value.
    pub fn as_label(self) -> &'static str {
        match self {
            Unsupported::DomainNames => "domain_names",
        }
    }
}

/// Where a policy uses an unsupported part; the rejection with the same
/// `field` says so in words.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnsupportedField {
    /// E.g. `spec.egress[0].to[1].domainNames`.
    pub field: String,
    /// Which part.
    pub part: Unsupported,
}

impl ClusterNetworkPolicy {
    /// Where it is evaluated: tier, then priority, then name.
    pub fn precedence(&self) -> (Tier, u16, &str) {
        (self.tier, self.priority, &self.name)
    }

    /// The rules of one direction.
    pub fn rules(&self, direction: Direction) -> &[Rule] {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    /// Parses and validates an API object.
    pub fn from_k8s(cnp: &api::ClusterNetworkPolicy) -> Result<Self, ModelError> {
        let name = cnp.metadata.name.clone().ok_or(ModelError::MissingName {
            kind: "ClusterNetworkPolicy",
        })?;
        let mut v = Validator {
            object: format!("ClusterNetworkPolicy {name}"),
            rejections: Vec::new(),
            unsupported: Vec::new(),
            degraded: false,
        };
        let spec = &cnp.spec;
        let tier = v.tier(&spec.tier);
        let priority = v.priority(spec.priority);
        let subject = v.subject(&spec.subject);
        let ingress = v.rules(
            "spec.ingress",
            spec.ingress.iter().flatten().map(|r| RuleView {
                name: r.name.as_deref(),
                action: &r.action,
                peers: r.from.iter().map(PeerView::Ingress).collect(),
                peers_field: "from",
                protocols: r.protocols.as_deref(),
            }),
        );
        let egress = v.rules(
            "spec.egress",
            spec.egress.iter().flatten().map(|r| RuleView {
                name: r.name.as_deref(),
                action: &r.action,
                peers: r.to.iter().map(PeerView::Egress).collect(),
                peers_field: "to",
                protocols: r.protocols.as_deref(),
            }),
        );
        let mut policy = ClusterNetworkPolicy {
            name,
            tier,
            priority,
            subject,
            ingress,
            egress,
            rejections: v.rejections,
            unsupported: v.unsupported,
        };
        if v.degraded {
            for rules in [&mut policy.ingress, &mut policy.egress] {
                rules.retain(|r| r.action != Action::Accept);
                for rule in rules.iter_mut() {
                    rule.action = Action::Deny;
                }
            }
        }
        Ok(policy)
    }
}

/// A rule of either direction, for the one validation path.
struct RuleView<'a> {
    name: Option<&'a str>,
    action: &'a str,
    peers: Vec<PeerView<'a>>,
    peers_field: &'static str,
    protocols: Option<&'a [api::Protocol]>,
}

enum PeerView<'a> {
    Ingress(&'a api::IngressPeer),
    Egress(&'a api::EgressPeer),
}

impl PeerView<'_> {
    /// The fields set, by name, with what each holds.
    fn fields(&self) -> Vec<(&'static str, PeerField<'_>)> {
        let (namespaces, pods) = match self {
            PeerView::Ingress(p) => (&p.namespaces, &p.pods),
            PeerView::Egress(p) => (&p.namespaces, &p.pods),
        };
        let mut fields = Vec::new();
        if let Some(s) = namespaces {
            fields.push(("namespaces", PeerField::Namespaces(s)));
        }
        if let Some(p) = pods {
            fields.push(("pods", PeerField::Pods(p)));
        }
        if let PeerView::Egress(p) = self {
            if let Some(n) = &p.networks {
                fields.push(("networks", PeerField::Networks(n)));
            }
            if let Some(s) = &p.nodes {
                fields.push(("nodes", PeerField::Nodes(s)));
            }
            if let Some(d) = &p.domain_names {
                fields.push(("domainNames", PeerField::DomainNames(d)));
            }
        }
        fields
    }
}

enum PeerField<'a> {
    Namespaces(&'a LabelSelector),
    Pods(&'a api::NamespacedPods),
    Networks(&'a [String]),
    Nodes(&'a LabelSelector),
    DomainNames(&'a [String]),
}

/// What reading one peer gave.
enum PeerRead {
    Peer(Peer),
    /// Readable but matching nothing (an unsupported `domainNames`).
    Nothing,
    /// Unreadable (rejected).
    Invalid,
}

/// Collects rejections while parsing one policy.
struct Validator {
    object: String,
    rejections: Vec<Rejection>,
    unsupported: Vec<UnsupportedField>,
    /// The subject, tier or priority could not be read.
    degraded: bool,
}

impl Validator {
    fn reject(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.rejections.push(Rejection {
            object: self.object.clone(),
            field: field.into(),
            reason: reason.into(),
        });
    }

    /// Reports an unsupported part at `field` (a rejection marked as such).
    fn unsupported(&mut self, field: String, part: Unsupported, reason: String) {
        self.unsupported.push(UnsupportedField {
            field: field.clone(),
            part,
        });
        self.reject(field, reason);
    }

    fn tier(&mut self, tier: &str) -> Tier {
        match tier {
            "Admin" => Tier::Admin,
            "Baseline" => Tier::Baseline,
            other => {
                self.reject(
                    "spec.tier",
                    format!("unknown tier {other:?} (expected Admin or Baseline); failing closed: evaluated in the Admin tier, its Accept rules match nothing and its Pass rules deny"),
                );
                self.degraded = true;
                Tier::Admin
            }
        }
    }

    fn priority(&mut self, priority: i32) -> u16 {
        match u16::try_from(priority) {
            Ok(p) if priority <= MAX_PRIORITY => p,
            _ => {
                self.reject(
                    "spec.priority",
                    format!("{priority} is outside 0-{MAX_PRIORITY}; failing closed: evaluated at priority 0, its Accept rules match nothing and its Pass rules deny"),
                );
                self.degraded = true;
                0
            }
        }
    }

    fn subject(&mut self, subject: &api::Subject) -> PodSet {
        const CLOSED: &str = "failing closed: the policy applies to every pod, its Accept rules match nothing and its Pass rules deny";
        let read = match (&subject.namespaces, &subject.pods) {
            (Some(namespaces), None) => {
                self.selector("spec.subject.namespaces", namespaces)
                    .map(|namespaces| PodSet {
                        namespaces,
                        pods: Selector::everything(),
                    })
            }
            (None, Some(pods)) => self.pods("spec.subject.pods", pods),
            (None, None) => {
                self.reject(
                    "spec.subject",
                    format!("exactly one of namespaces or pods must be set, none is; {CLOSED}"),
                );
                None
            }
            (Some(_), Some(_)) => {
                self.reject(
                    "spec.subject",
                    format!("exactly one of namespaces or pods must be set, both are; {CLOSED}"),
                );
                None
            }
        };
        read.unwrap_or_else(|| {
            self.degraded = true;
            PodSet::everything()
        })
    }

    fn selector(&mut self, field: &str, selector: &LabelSelector) -> Option<Selector> {
        match Selector::parse(selector) {
            Ok(s) => Some(s),
            Err(e) => {
                self.reject(format!("{field}.{}", e.field()), e.to_string());
                None
            }
        }
    }

    fn pods(&mut self, field: &str, pods: &api::NamespacedPods) -> Option<PodSet> {
        let namespaces = match &pods.namespace_selector {
            Some(s) => self.selector(&format!("{field}.namespaceSelector"), s),
            None => Some(Selector::everything()),
        };
        let selected = self.selector(&format!("{field}.podSelector"), &pods.pod_selector);
        Some(PodSet {
            namespaces: namespaces?,
            pods: selected?,
        })
    }

    fn rules<'a>(&mut self, field: &str, rules: impl Iterator<Item = RuleView<'a>>) -> Vec<Rule> {
        let mut out = Vec::new();
        for (index, view) in rules.enumerate() {
            let path = format!("{field}[{index}]");
            if index == MAX_ITEMS {
                self.reject(
                    field,
                    format!("more than {MAX_ITEMS} rules; failing closed: the rules past the limit are read as invalid"),
                );
            }
            if let Some(rule) = self.rule(&path, index, view, index >= MAX_ITEMS) {
                out.push(rule);
            }
        }
        out
    }

    /// A rule as enforced, or `None` when it matches nothing.
    fn rule(
        &mut self,
        path: &str,
        index: usize,
        view: RuleView<'_>,
        over_limit: bool,
    ) -> Option<Rule> {
        let mut valid = !over_limit;
        let name = view.name.map(str::to_string);
        if name
            .as_ref()
            .is_some_and(|n| n.chars().count() > MAX_RULE_NAME)
        {
            self.reject(
                format!("{path}.name"),
                format!("longer than {MAX_RULE_NAME} characters"),
            );
            valid = false;
        }
        let action = match view.action {
            "Accept" => Some(Action::Accept),
            "Deny" => Some(Action::Deny),
            "Pass" => Some(Action::Pass),
            other => {
                self.reject(
                    format!("{path}.action"),
                    format!("unknown action {other:?} (expected Accept, Deny or Pass); failing closed: the rule denies all traffic"),
                );
                None
            }
        };
        let peers_path = format!("{path}.{}", view.peers_field);
        if view.peers.is_empty() {
            self.reject(&peers_path, "at least one peer is required");
            valid = false;
        } else if view.peers.len() > MAX_ITEMS {
            self.reject(&peers_path, format!("more than {MAX_ITEMS} peers"));
            valid = false;
        }
        // An unreadable peer makes an Accept rule match no traffic and a
        // Deny or Pass rule deny everything.
        let mut peers = Vec::new();
        let mut peers_valid = true;
        for (j, peer) in view.peers.iter().enumerate() {
            match self.peer(&format!("{peers_path}[{j}]"), peer, action) {
                PeerRead::Peer(p) => peers.push(p),
                PeerRead::Nothing => {}
                PeerRead::Invalid => peers_valid = false,
            }
        }
        let ports = view.protocols.map(|protocols| {
            if protocols.is_empty() || protocols.len() > MAX_ITEMS {
                self.reject(
                    format!("{path}.protocols"),
                    format!("must hold 1-{MAX_ITEMS} entries, holds {}", protocols.len()),
                );
                valid = false;
            }
            protocols
                .iter()
                .enumerate()
                .filter_map(|(k, p)| {
                    let port = self.protocol(&format!("{path}.protocols[{k}]"), p);
                    valid &= port.is_some();
                    port
                })
                .collect::<Vec<Port>>()
        });
        let named = ports.iter().flatten().any(|p| matches!(p, Port::Named(_)));
        let address_peers = view.peers.iter().any(|p| {
            matches!(p, PeerView::Egress(e) if e.networks.is_some() || e.nodes.is_some() || e.domain_names.is_some())
        });
        if named && address_peers {
            self.reject(
                format!("{path}.protocols"),
                "destinationNamedPort cannot be used with networks, nodes or domainNames peers",
            );
            valid = false;
        }
        match action {
            None => Some(Rule::deny_all(index, name)),
            Some(Action::Accept) if !valid || !peers_valid => None,
            Some(Action::Accept) if peers.is_empty() => None,
            Some(Action::Accept) => Some(Rule {
                index,
                name,
                action: Action::Accept,
                peers: Peers::Listed(peers),
                ports,
            }),
            Some(_) if !valid || !peers_valid => Some(Rule::deny_all(index, name)),
            Some(action) => Some(Rule {
                index,
                name,
                action,
                peers: Peers::Listed(peers),
                ports,
            }),
        }
    }

    fn peer(&mut self, path: &str, peer: &PeerView<'_>, action: Option<Action>) -> PeerRead {
        let fields = peer.fields();
        let closed = match action {
            Some(Action::Accept) => "failing closed: the rule matches no traffic",
            _ => "failing closed: the rule denies all traffic",
        };
        let [(field, value)] = fields.as_slice() else {
            let reason = if fields.is_empty() {
                format!("no peer field this agent knows is set (a newer CRD?); {closed}")
            } else {
                let names: Vec<&str> = fields.iter().map(|(n, _)| *n).collect();
                format!(
                    "exactly one peer field may be set, {} are ({}); {closed}",
                    names.len(),
                    names.join(", ")
                )
            };
            self.reject(path, reason);
            return PeerRead::Invalid;
        };
        let path = format!("{path}.{field}");
        match value {
            PeerField::Namespaces(s) => {
                self.selector(&path, s)
                    .map_or(PeerRead::Invalid, |namespaces| {
                        PeerRead::Peer(Peer::Pods(PodSet {
                            namespaces,
                            pods: Selector::everything(),
                        }))
                    })
            }
            PeerField::Pods(p) => self
                .pods(&path, p)
                .map_or(PeerRead::Invalid, |set| PeerRead::Peer(Peer::Pods(set))),
            PeerField::Nodes(s) => self
                .selector(&path, s)
                .map_or(PeerRead::Invalid, |s| PeerRead::Peer(Peer::Nodes(s))),
            PeerField::Networks(cidrs) => self.networks(&path, cidrs),
            PeerField::DomainNames(names) => {
                if names.is_empty() || names.len() > MAX_ITEMS {
                    self.reject(
                        &path,
                        format!(
                            "must hold 1-{MAX_ITEMS} domain names, holds {}; {closed}",
                            names.len()
                        ),
                    );
                    return PeerRead::Invalid;
                }
                if let Some((k, bad)) = names.iter().enumerate().find(|(_, n)| !is_domain_name(n)) {
                    self.reject(
                        format!("{path}[{k}]"),
                        format!(
                            "{bad:?} is not a domain name (optionally `*.`-prefixed); {closed}"
                        ),
                    );
                    return PeerRead::Invalid;
                }
                if action != Some(Action::Accept) {
                    // The API reference: "DomainNames is only supported for
                    // Accept rules".
                    self.reject(
                        &path,
                        format!("domainNames peers are only allowed in Accept rules; {closed}"),
                    );
                    return PeerRead::Invalid;
                }
                self.unsupported(
                    path,
                    Unsupported::DomainNames,
                    format!(
                        "domainNames peers ({}) are not supported by Palisade: this peer matches nothing",
                        names.join(", ")
                    ),
                );
                PeerRead::Nothing
            }
        }
    }

    fn networks(&mut self, path: &str, cidrs: &[String]) -> PeerRead {
        if cidrs.is_empty() || cidrs.len() > MAX_ITEMS {
            self.reject(
                path,
                format!("must hold 1-{MAX_ITEMS} CIDRs, holds {}", cidrs.len()),
            );
            return PeerRead::Invalid;
        }
        let mut nets = Vec::new();
        for (k, cidr) in cidrs.iter().enumerate() {
            match cidr.parse::<IpNet>() {
                Ok(_) if cidr.len() > MAX_CIDR_LENGTH => {
                    self.reject(
                        format!("{path}[{k}]"),
                        format!("{cidr:?} is longer than {MAX_CIDR_LENGTH} characters"),
                    );
                    return PeerRead::Invalid;
                }
                Ok(net) => nets.push(net.trunc()),
                Err(_) => {
                    self.reject(
                        format!("{path}[{k}]"),
                        format!("{cidr:?} is not a valid CIDR"),
                    );
                    return PeerRead::Invalid;
                }
            }
        }
        nets.sort();
        nets.dedup();
        PeerRead::Peer(Peer::Networks(nets))
    }

    fn protocol(&mut self, path: &str, p: &api::Protocol) -> Option<Port> {
        let mut set = Vec::new();
        for (name, protocol, port) in [
            ("tcp", Protocol::Tcp, &p.tcp),
            ("udp", Protocol::Udp, &p.udp),
            ("sctp", Protocol::Sctp, &p.sctp),
        ] {
            if let Some(port) = port {
                set.push((name, Some((protocol, port))));
            }
        }
        if p.destination_named_port.is_some() {
            set.push(("destinationNamedPort", None));
        }
        let [(field, value)] = set.as_slice() else {
            self.reject(
                path,
                format!(
                    "exactly one of tcp, udp, sctp or destinationNamedPort must be set, {} are",
                    set.len()
                ),
            );
            return None;
        };
        let path = format!("{path}.{field}");
        let Some((protocol, port)) = value else {
            let name = p.destination_named_port.clone().unwrap_or_default();
            if name.is_empty() {
                self.reject(path, "empty port name");
                return None;
            }
            return Some(Port::Named(name));
        };
        let Some(destination) = &port.destination_port else {
            self.reject(path, "destinationPort is required");
            return None;
        };
        let path = format!("{path}.destinationPort");
        let in_range = |n: i32| u16::try_from(n).ok().filter(|p| *p != 0);
        match (destination.number, destination.range) {
            (Some(n), None) => match in_range(n) {
                Some(n) => Some(Port::Range {
                    protocol: *protocol,
                    first: n,
                    last: n,
                }),
                None => {
                    self.reject(format!("{path}.number"), format!("{n} is outside 1-65535"));
                    None
                }
            },
            (None, Some(range)) => match (in_range(range.start), in_range(range.end)) {
                (Some(first), Some(last)) if first < last => Some(Port::Range {
                    protocol: *protocol,
                    first,
                    last,
                }),
                (Some(_), Some(_)) => {
                    self.reject(
                        format!("{path}.range"),
                        format!("start {} must be less than end {}", range.start, range.end),
                    );
                    None
                }
                _ => {
                    self.reject(
                        format!("{path}.range"),
                        format!("{}-{} is outside 1-65535", range.start, range.end),
                    );
                    None
                }
            },
            _ => {
                self.reject(path, "exactly one of number or range must be set");
                None
            }
        }
    }
}

/// The CRD's pattern for `domainNames` entries:
/// `^(\*\.)?([a-zA-z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.)+[a-zA-z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.?$`
/// (its `A-z` admits the ASCII punctuation between `Z` and `a` first in a
/// label, so this does too: the API server accepts those names).
fn is_domain_name(name: &str) -> bool {
    let body = name.strip_prefix("*.").unwrap_or(name);
    let body = body.strip_suffix('.').unwrap_or(body);
    let mut labels = 0;
    for label in body.split('.') {
        labels += 1;
        let bytes = label.as_bytes();
        let Some((&first, rest)) = bytes.split_first() else {
            return false;
        };
        if !(first.is_ascii_digit() || (b'A'..=b'z').contains(&first)) {
            return false;
        }
        if let Some((&last, inner)) = rest.split_last()
            && (!last.is_ascii_alphanumeric()
                || !inner
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_'))
        {
            return false;
        }
    }
    labels >= 2
}

#[cfg(test)]
#[path = "cnp_tests.rs"]
mod tests;
