//! NetworkPolicy, parsed and validated once.
//!
//! Validation follows the networking.k8s.io/v1 reference. A policy with any
//! invalid field keeps isolating the pods it selects in its policyTypes but
//! contributes no allow ([`NetworkPolicy::rules`] is `None`); every problem is
//! recorded as a [`Rejection`]. If the podSelector itself is invalid the policy
//! fails closed by selecting every pod of its namespace.

use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::networking::v1 as net;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};

use super::model::{ModelError, Protocol, port_number};
use super::refs::{Direction, PolicyRef, Rejection};
use super::selector::{Selector, SelectorError};

/// Which directions a policy isolates (`spec.policyTypes`, after defaulting).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyTypes {
    /// Ingress is listed (or defaulted).
    pub ingress: bool,
    /// Egress is listed (or defaulted).
    pub egress: bool,
}

impl PolicyTypes {
    /// Whether `direction` is one of the types.
    pub fn has(&self, direction: Direction) -> bool {
        match direction {
            Direction::Ingress => self.ingress,
            Direction::Egress => self.egress,
        }
    }
}

/// Which namespaces a pod peer looks in.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum NamespaceScope {
    /// Only the policy's own namespace (no namespaceSelector).
    Own(String),
    /// Every namespace matching the selector.
    Selected(Selector),
}

/// A peer selecting pods: `podSelector` within `namespaceSelector` (ANDed).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PodPeer {
    /// Namespaces.
    pub namespaces: NamespaceScope,
    /// Pods within them (everything when podSelector is absent).
    pub pods: Selector,
}

/// An `ipBlock` peer.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IpBlock {
    /// The block (host bits cleared).
    pub cidr: IpNet,
    /// Sub-blocks excluded from it (each strictly inside `cidr`), sorted.
    pub except: Vec<IpNet>,
}

impl IpBlock {
    /// Whether `ip` is in the block and in none of its exceptions.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.cidr.contains(&ip) && !self.except.iter().any(|e| e.contains(&ip))
    }
}

/// One entry of `from` / `to`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Peer {
    /// Pods by selectors.
    Pods(PodPeer),
    /// Addresses by CIDR.
    IpBlock(IpBlock),
}

/// The port part of a port entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PortRef {
    /// `port` (first == last) or `port`..=`endPort`.
    Range {
        /// First port.
        first: u16,
        /// Last port (>= first).
        last: u16,
    },
    /// A container port name.
    Named(String),
}

/// One entry of `ports`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortSpec {
    /// Protocol (defaults to TCP).
    pub protocol: Protocol,
    /// Port; `None` = every port of the protocol.
    pub port: Option<PortRef>,
}

/// One ingress or egress rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// `from`/`to`; `None` when empty or omitted (every peer).
    pub peers: Option<Vec<Peer>>,
    /// `ports`; `None` when empty or omitted (every port and protocol).
    pub ports: Option<Vec<PortSpec>>,
}

/// The rules of a valid policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRules {
    /// `spec.ingress` (empty when absent).
    pub ingress: Vec<Rule>,
    /// `spec.egress` (empty when absent).
    pub egress: Vec<Rule>,
}

impl PolicyRules {
    /// The rules of one direction.
    pub fn of(&self, direction: Direction) -> &[Rule] {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

/// A parsed NetworkPolicy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkPolicy {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Pods it applies to, within its namespace.
    pub pod_selector: Selector,
    /// Directions it isolates.
    pub policy_types: PolicyTypes,
    /// Its rules; `None` when the policy was rejected (it allows nothing).
    pub rules: Option<PolicyRules>,
    /// Validation failures.
    pub rejections: Vec<Rejection>,
}

impl NetworkPolicy {
    /// Its key.
    pub fn policy_ref(&self) -> PolicyRef {
        PolicyRef {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    /// Whether the policy selects pods of namespace `ns` with these labels.
    pub fn selects(&self, ns: &str, labels: &crate::state::selector::Labels) -> bool {
        self.namespace == ns && self.pod_selector.matches(labels)
    }

    /// The rules of `direction` that can allow traffic (empty if rejected or
    /// the direction is not in policyTypes).
    pub fn allowing_rules(&self, direction: Direction) -> &[Rule] {
        match &self.rules {
            Some(r) if self.policy_types.has(direction) => r.of(direction),
            _ => &[],
        }
    }

    /// Parses and validates a k8s NetworkPolicy.
    pub fn from_k8s(np: &net::NetworkPolicy) -> Result<Self, ModelError> {
        let name = np.metadata.name.clone().ok_or(ModelError::MissingName {
            kind: "NetworkPolicy",
        })?;
        let namespace =
            np.metadata
                .namespace
                .clone()
                .ok_or_else(|| ModelError::MissingNamespace {
                    kind: "NetworkPolicy",
                    name: name.clone(),
                })?;
        let mut v = Validator {
            object: format!("NetworkPolicy {namespace}/{name}"),
            rejections: Vec::new(),
        };
        let default_spec = net::NetworkPolicySpec::default();
        let spec = np.spec.as_ref().unwrap_or(&default_spec);

        let pod_selector = match spec.pod_selector.as_ref().map(Selector::parse).transpose() {
            Ok(s) => s.unwrap_or_default(),
            Err(e) => {
                v.reject(
                    format!("spec.podSelector.{}", e.field()),
                    format!("{e}; failing closed: the policy is treated as selecting every pod in namespace {namespace}"),
                );
                Selector::everything()
            }
        };
        let policy_types = v.policy_types(spec);
        let ingress: Vec<Rule> = spec
            .ingress
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, r)| {
                v.rule(
                    &namespace,
                    &format!("spec.ingress[{i}]"),
                    "from",
                    r.from.as_deref(),
                    r.ports.as_deref(),
                )
            })
            .collect();
        let egress: Vec<Rule> = spec
            .egress
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, r)| {
                v.rule(
                    &namespace,
                    &format!("spec.egress[{i}]"),
                    "to",
                    r.to.as_deref(),
                    r.ports.as_deref(),
                )
            })
            .collect();
        let rules = v
            .rejections
            .is_empty()
            .then_some(PolicyRules { ingress, egress });
        Ok(NetworkPolicy {
            namespace,
            name,
            pod_selector,
            policy_types,
            rules,
            rejections: v.rejections,
        })
    }
}

/// Collects rejections while parsing one policy.
struct Validator {
    object: String,
    rejections: Vec<Rejection>,
}

impl Validator {
    fn reject(&mut self, field: String, reason: String) {
        self.rejections.push(Rejection {
            object: self.object.clone(),
            field,
            reason,
        });
    }

    /// `spec.policyTypes` with the API's defaulting: Ingress always, plus
    /// Egress when the policy has egress rules.
    fn policy_types(&mut self, spec: &net::NetworkPolicySpec) -> PolicyTypes {
        let listed = spec.policy_types.as_deref().unwrap_or_default();
        if listed.is_empty() {
            let has_egress = spec.egress.as_ref().is_some_and(|e| !e.is_empty());
            return PolicyTypes {
                ingress: true,
                egress: has_egress,
            };
        }
        let mut types = PolicyTypes {
            ingress: false,
            egress: false,
        };
        for (i, t) in listed.iter().enumerate() {
            match t.as_str() {
                "Ingress" => types.ingress = true,
                "Egress" => types.egress = true,
                other => {
                    self.reject(
                        format!("spec.policyTypes[{i}]"),
                        format!("unknown policy type {other:?} (expected Ingress or Egress); failing closed: the policy isolates both directions"),
                    );
                    types = PolicyTypes {
                        ingress: true,
                        egress: true,
                    };
                }
            }
        }
        types
    }

    fn rule(
        &mut self,
        namespace: &str,
        path: &str,
        peers_field: &str,
        peers: Option<&[net::NetworkPolicyPeer]>,
        ports: Option<&[net::NetworkPolicyPort]>,
    ) -> Rule {
        let peers = peers.filter(|p| !p.is_empty()).map(|ps| {
            ps.iter()
                .enumerate()
                .filter_map(|(j, p)| self.peer(namespace, &format!("{path}.{peers_field}[{j}]"), p))
                .collect()
        });
        let ports = ports.filter(|p| !p.is_empty()).map(|ps| {
            ps.iter()
                .enumerate()
                .filter_map(|(j, p)| self.port(&format!("{path}.ports[{j}]"), p))
                .collect()
        });
        Rule { peers, ports }
    }

    fn selector(
        &mut self,
        field: String,
        s: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    ) -> Option<Selector> {
        match Selector::parse(s) {
            Ok(s) => Some(s),
            Err(e) => {
                self.reject_selector(field, &e);
                None
            }
        }
    }

    fn reject_selector(&mut self, field: String, e: &SelectorError) {
        self.reject(format!("{field}.{}", e.field()), e.to_string());
    }

    fn peer(&mut self, namespace: &str, path: &str, p: &net::NetworkPolicyPeer) -> Option<Peer> {
        match (&p.ip_block, &p.namespace_selector, &p.pod_selector) {
            (Some(b), None, None) => self
                .ip_block(&format!("{path}.ipBlock"), b)
                .map(Peer::IpBlock),
            (Some(_), _, _) => {
                self.reject(
                    path.to_string(),
                    "ipBlock may not be combined with podSelector or namespaceSelector".into(),
                );
                None
            }
            (None, None, None) => {
                self.reject(
                    path.to_string(),
                    "must specify a peer (podSelector, namespaceSelector or ipBlock)".into(),
                );
                None
            }
            (None, ns, pods) => {
                let namespaces = match ns {
                    None => NamespaceScope::Own(namespace.to_string()),
                    Some(s) => NamespaceScope::Selected(
                        self.selector(format!("{path}.namespaceSelector"), s)?,
                    ),
                };
                let pods = match pods {
                    None => Selector::everything(),
                    Some(s) => self.selector(format!("{path}.podSelector"), s)?,
                };
                Some(Peer::Pods(PodPeer { namespaces, pods }))
            }
        }
    }

    fn ip_block(&mut self, path: &str, b: &net::IPBlock) -> Option<IpBlock> {
        let cidr = match b.cidr.parse::<IpNet>() {
            Ok(c) => c.trunc(),
            Err(_) => {
                self.reject(
                    format!("{path}.cidr"),
                    format!("{:?} is not a valid CIDR", b.cidr),
                );
                return None;
            }
        };
        let mut except = Vec::new();
        let mut ok = true;
        for (k, e) in b.except.iter().flatten().enumerate() {
            let field = format!("{path}.except[{k}]");
            match e.parse::<IpNet>() {
                Err(_) => {
                    self.reject(field, format!("{e:?} is not a valid CIDR"));
                    ok = false;
                }
                Ok(e) => {
                    let e = e.trunc();
                    let same_family = matches!(
                        (cidr, e),
                        (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_))
                    );
                    if !same_family {
                        self.reject(
                            field,
                            format!("{e} is not of the same address family as cidr {cidr}"),
                        );
                        ok = false;
                    } else if !(cidr.contains(&e) && e.prefix_len() > cidr.prefix_len()) {
                        self.reject(field, format!("{e} is not strictly inside cidr {cidr}"));
                        ok = false;
                    } else {
                        except.push(e);
                    }
                }
            }
        }
        except.sort();
        except.dedup();
        ok.then_some(IpBlock { cidr, except })
    }

    fn port(&mut self, path: &str, p: &net::NetworkPolicyPort) -> Option<PortSpec> {
        let Some(protocol) = Protocol::parse(p.protocol.as_deref()) else {
            self.reject(
                format!("{path}.protocol"),
                format!(
                    "unknown protocol {:?} (expected TCP, UDP or SCTP)",
                    p.protocol.as_deref().unwrap_or_default()
                ),
            );
            return None;
        };
        let port = match (&p.port, p.end_port) {
            (None, None) => None,
            (None, Some(_)) => {
                self.reject(format!("{path}.endPort"), "endPort requires port".into());
                return None;
            }
            (Some(IntOrString::String(name)), end) => {
                if let Ok(n) = name.parse::<i32>() {
                    // A numeric string is a number in the API's eyes.
                    return self.numbered(path, protocol, n, end);
                }
                if end.is_some() {
                    self.reject(
                        format!("{path}.endPort"),
                        "endPort cannot be used with a named port".into(),
                    );
                    return None;
                }
                if name.is_empty() {
                    self.reject(format!("{path}.port"), "port name must not be empty".into());
                    return None;
                }
                Some(PortRef::Named(name.clone()))
            }
            (Some(IntOrString::Int(n)), end) => return self.numbered(path, protocol, *n, end),
        };
        Some(PortSpec { protocol, port })
    }

    fn numbered(
        &mut self,
        path: &str,
        protocol: Protocol,
        n: i32,
        end: Option<i32>,
    ) -> Option<PortSpec> {
        let Some(first) = port_number(n) else {
            self.reject(
                format!("{path}.port"),
                format!("{n} is not a valid port number (1-65535)"),
            );
            return None;
        };
        let last = match end {
            None => first,
            Some(e) => match port_number(e) {
                None => {
                    self.reject(
                        format!("{path}.endPort"),
                        format!("{e} is not a valid port number (1-65535)"),
                    );
                    return None;
                }
                Some(e) if e < first => {
                    self.reject(
                        format!("{path}.endPort"),
                        format!("endPort {e} is less than port {first}"),
                    );
                    return None;
                }
                Some(e) => e,
            },
        };
        Some(PortSpec {
            protocol,
            port: Some(PortRef::Range { first, last }),
        })
    }
}
