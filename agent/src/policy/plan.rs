//! The compiler's output: a plain value that can be diffed, printed, serialised
//! and evaluated without a kernel. `sync` turns it into map writes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use palisade_common::ids::{EndpointId, IdentityId, RuleId};
use serde::{Deserialize, Serialize};

/// Everything the datapath of one node needs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatapathPlan {
    /// Allocated identities and what they stand for (for `explain` and status).
    pub identities: BTreeMap<IdentityId, IdentityInfo>,
    /// Remote prefix -> identity. Addresses under no prefix are WORLD.
    #[serde(with = "as_pairs")]
    pub ipcache: BTreeMap<IpNet, IdentityId>,
    /// This node's own addresses (each also has an exact ipcache entry, with
    /// its ipBlock membership): connections from them to a pod are always
    /// allowed; connections to them are policed like any address.
    #[serde(default)]
    pub host_addresses: BTreeSet<IpAddr>,
    /// Local endpoints (pods of this node that have an IP), by pod.
    #[serde(with = "as_pairs")]
    pub endpoints: BTreeMap<PodRef, EndpointPlan>,
    /// Allow entries. When several rules produce the same key, the lowest rule id wins.
    #[serde(with = "as_pairs")]
    pub rules: BTreeMap<RuleKey, RuleId>,
    /// Rule id -> where it comes from, for metrics and explain.
    pub rule_origins: BTreeMap<RuleId, RuleOrigin>,
    /// Policies (or parts of them) that failed validation: they still isolate the
    /// pods they select, but contribute no allow.
    pub rejections: Vec<Rejection>,
}

/// A pod, by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PodRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl fmt::Display for PodRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A NetworkPolicy, by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PolicyRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What an identity stands for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityInfo {
    /// Human-readable description of the peers/ipBlocks the identity satisfies.
    pub description: String,
}

/// One local endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointPlan {
    /// Stable id keying its rules.
    pub id: EndpointId,
    /// The pod's IPv4 address, if any.
    pub ipv4: Option<Ipv4Addr>,
    /// The pod's IPv6 address, if any.
    pub ipv6: Option<Ipv6Addr>,
    /// Some policy selecting the pod has Ingress in its policyTypes.
    pub ingress_isolated: bool,
    /// Some policy selecting the pod has Egress in its policyTypes.
    pub egress_isolated: bool,
    /// The pod's namespace is in audit mode: would-be drops pass and are reported.
    pub audit: bool,
    /// Policies that select the pod (sorted), for status and flow events.
    pub policies: Vec<PolicyRef>,
}

/// Direction from the pod's point of view (re-exported for convenience).
pub use palisade_common::verdict::Direction;

/// The L4 part of an allow entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum L4Match {
    /// Every protocol and port (a rule with no `ports`).
    Any,
    /// Every port of one IP protocol (a port entry with only `protocol`).
    Protocol(u8),
    /// Ports `first..=last` of one protocol (`port`, or `port`..`endPort`).
    Ports {
        /// IP protocol number (6 TCP, 17 UDP, 132 SCTP).
        protocol: u8,
        /// First port, inclusive.
        first: u16,
        /// Last port, inclusive.
        last: u16,
    },
}

/// One allow entry: `endpoint` may exchange traffic in `direction` with peers of
/// `identity` ([`IdentityId::ANY`] = every peer) matching `l4`. The port is the
/// destination port of the connection's first packet (the server's port).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RuleKey {
    /// Local endpoint.
    pub endpoint: EndpointId,
    /// Direction from the endpoint's view.
    pub direction: Direction,
    /// Remote identity, or ANY.
    pub identity: IdentityId,
    /// Protocol and ports.
    pub l4: L4Match,
}

/// Where a rule id comes from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RuleOrigin {
    /// The policy.
    pub policy: PolicyRef,
    /// Ingress or egress rule list.
    pub direction: Direction,
    /// Index of the rule in `spec.ingress` / `spec.egress`.
    pub index: u32,
}

/// A validation failure: the object, the field path and why.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Rejection {
    /// E.g. `NetworkPolicy x/deny-all`.
    pub object: String,
    /// E.g. `spec.ingress[0].from[1].ipBlock.except[0]`.
    pub field: String,
    /// E.g. `10.1.0.0/16 is not inside cidr 10.0.0.0/16`.
    pub reason: String,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.object, self.field, self.reason)
    }
}

/// Serialises a map with structured keys as a list of `[key, value]` pairs
/// (JSON object keys must be strings).
mod as_pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        map: &BTreeMap<K, V>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(map.iter())
    }

    pub fn deserialize<'de, K, V, D>(deserializer: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(deserializer)?
            .into_iter()
            .collect())
    }
}
