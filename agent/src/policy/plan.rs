//! The compiler's output: a plain value that can be diffed, printed, serialised
//! and evaluated without a kernel. `sync` turns it into map writes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::IpNet;
use palisade_common::ids::{EndpointId, IdentityId, RuleId};
use palisade_common::policy::{PREFIX_ANY_PORT, PREFIX_ANY_PROTOCOL};
use serde::{Deserialize, Serialize};

use crate::state::cnp::{Action, Tier};
use crate::state::{Direction, PodRef, PolicyRef, Rejection};

mod entries;
pub use entries::{EntryPart, PartKey, PlanEntries};

/// Everything the datapath of one node needs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatapathPlan {
    /// Allocated identities and what they stand for (for `explain` and
    /// status). Shared with the compiler while they stay the same.
    pub identities: Arc<BTreeMap<IdentityId, IdentityInfo>>,
    /// Remote prefix -> identity. Addresses under no prefix are WORLD.
    /// Shared with the compiler while it stays the same.
    #[serde(with = "arc_pairs")]
    pub ipcache: Arc<BTreeMap<IpNet, IdentityId>>,
    /// This node's own addresses (each also has an exact ipcache entry, with
    /// its ipBlock membership): connections from them to a pod are always
    /// allowed; connections to them are policed like any address.
    #[serde(default)]
    pub host_addresses: BTreeSet<IpAddr>,
    /// Local endpoints (pods of this node that have an IP), by pod.
    #[serde(with = "as_pairs")]
    pub endpoints: BTreeMap<PodRef, EndpointPlan>,
    /// Allow entries. When several rules produce the same key, the lowest rule id wins.
    pub rules: PlanEntries,
    /// Deny entries, each with the rule credited with the drop
    /// ([`RuleId::NONE`]: no rule; what NetworkPolicy's isolation leaves
    /// denied where a broader entry would allow). The most specific entry of
    /// `rules` and `denies` together decides (see [`super::lookup`]); the
    /// compiler never puts one key in both, and where two entries land on one
    /// kernel key the deny wins. Only ClusterNetworkPolicy makes them.
    #[serde(default)]
    pub denies: PlanEntries,
    /// Rule id -> where it comes from, for metrics and explain.
    /// Shared with the compiler while its policies stay the same.
    pub rule_origins: Arc<BTreeMap<RuleId, RuleOrigin>>,
    /// Policies (or parts of them) that failed validation: they still isolate the
    /// pods they select, but contribute no allow.
    pub rejections: Vec<Rejection>,
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
    /// The policy map decides the pod's ingress: some NetworkPolicy selecting
    /// it has Ingress in its policyTypes, or a ClusterNetworkPolicy with
    /// ingress rules applies to it.
    pub ingress_isolated: bool,
    /// The same for egress.
    pub egress_isolated: bool,
    /// The pod's namespace is in audit mode: would-be drops pass and are reported.
    pub audit: bool,
    /// Prefixes the pod may send from besides its own addresses (its
    /// `palisade.dev/allowed-source-prefixes`, honoured in the namespaces the
    /// agent is configured to allow it in).
    #[serde(default)]
    pub source_prefixes: Vec<IpNet>,
    /// Policies that select the pod (sorted), for status and flow events.
    pub policies: Vec<PolicyRef>,
}

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

impl L4Match {
    /// The kernel's LPM entries for this match, as (prefix length, protocol,
    /// port): one for `Any` and `Protocol`, the minimal aligned-block cover
    /// for a port range (see `palisade_common::policy`). The sync layer
    /// writes exactly these; `lookup` derives its specificity from them.
    pub fn lpm_entries(self) -> Vec<(u32, u8, u16)> {
        match self {
            L4Match::Any => vec![(PREFIX_ANY_PROTOCOL, 0, 0)],
            L4Match::Protocol(p) => vec![(PREFIX_ANY_PORT, p, 0)],
            L4Match::Ports {
                protocol,
                first,
                last,
            } => port_range_prefixes(first, last)
                .into_iter()
                .map(|(port, bits)| (PREFIX_ANY_PORT + bits, protocol, port))
                .collect(),
        }
    }
}

/// The minimal list of `(port, prefix bits)` blocks covering `first..=last`,
/// each block being the ports sharing the top `prefix bits` of 16 with `port`.
fn port_range_prefixes(first: u16, last: u16) -> Vec<(u16, u32)> {
    let mut out = Vec::new();
    if first > last {
        return out;
    }
    let mut lo = u32::from(first);
    let hi = u32::from(last);
    while lo <= hi {
        // Largest aligned block starting at `lo` that stays within `hi`.
        let mut size = if lo == 0 {
            1 << 16
        } else {
            1u32 << lo.trailing_zeros()
        };
        while lo + size - 1 > hi {
            size >>= 1;
        }
        out.push((lo as u16, 16 - size.trailing_zeros()));
        lo += size;
    }
    out
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
    /// The policy (a ClusterNetworkPolicy's has an empty namespace).
    pub policy: PolicyRef,
    /// Ingress or egress rule list.
    pub direction: Direction,
    /// Index of the rule in `spec.ingress` / `spec.egress`.
    pub index: u32,
    /// Set for a ClusterNetworkPolicy rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterRuleOrigin>,
}

/// What a ClusterNetworkPolicy rule adds to its origin.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClusterRuleOrigin {
    /// Admin or Baseline.
    pub tier: Tier,
    /// The rule's action (a `Pass` rule never lands in an entry: it only
    /// shows in explain).
    pub action: Action,
    /// The rule's `name`, when it has one.
    pub name: Option<String>,
}

impl RuleOrigin {
    /// The origin of a NetworkPolicy rule.
    pub fn network_policy(policy: PolicyRef, direction: Direction, index: u32) -> RuleOrigin {
        RuleOrigin {
            policy,
            direction,
            index,
            cluster: None,
        }
    }

    /// Metric label `tier`: `admin`, `network_policy` or `baseline`.
    pub fn tier_label(&self) -> &'static str {
        match self.cluster.as_ref().map(|c| c.tier) {
            None => "network_policy",
            Some(Tier::Admin) => "admin",
            Some(Tier::Baseline) => "baseline",
        }
    }

    /// Metric label `rule`: a ClusterNetworkPolicy rule's `name`, else its index.
    pub fn rule_label(&self) -> String {
        match self.cluster.as_ref().and_then(|c| c.name.clone()) {
            Some(name) => name,
            None => self.index.to_string(),
        }
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

/// [`as_pairs`] behind an `Arc`.
mod arc_pairs {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        map: &Arc<BTreeMap<K, V>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        super::as_pairs::serialize(map, serializer)
    }

    pub fn deserialize<'de, K, V, D>(deserializer: D) -> Result<Arc<BTreeMap<K, V>>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        super::as_pairs::deserialize(deserializer).map(Arc::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covered(blocks: &[(u16, u32)]) -> Vec<u32> {
        let mut ports: Vec<u32> = blocks
            .iter()
            .flat_map(|&(port, bits)| {
                let size = 1u32 << (16 - bits);
                (u32::from(port)..u32::from(port) + size).collect::<Vec<_>>()
            })
            .collect();
        ports.sort_unstable();
        ports
    }

    #[test]
    fn port_range_prefixes_cover_exactly_the_range() {
        for (first, last) in [
            (1, 1),
            (80, 80),
            (1, 65535),
            (1000, 2000),
            (8080, 8090),
            (0, 65535),
            (65535, 65535),
            (32768, 40000),
        ] {
            let blocks = port_range_prefixes(first, last);
            assert_eq!(
                covered(&blocks),
                (u32::from(first)..=u32::from(last)).collect::<Vec<_>>(),
                "range {first}-{last}"
            );
            assert!(
                blocks.len() <= 32,
                "range {first}-{last} took {} blocks",
                blocks.len()
            );
        }
    }

    #[test]
    fn port_range_prefixes_single_port_is_full_length() {
        assert_eq!(port_range_prefixes(443, 443), vec![(443, 16)]);
    }

    #[test]
    fn port_range_prefixes_empty_when_reversed() {
        assert!(port_range_prefixes(10, 9).is_empty());
    }

    #[test]
    fn lpm_entries_of_a_range_are_its_blocks_under_the_port_prefix() {
        let entries = L4Match::Ports {
            protocol: 6,
            first: 8080,
            last: 8083,
        }
        .lpm_entries();
        assert_eq!(entries, vec![(PREFIX_ANY_PORT + 14, 6, 8080)]);
        assert_eq!(
            L4Match::Any.lpm_entries(),
            vec![(PREFIX_ANY_PROTOCOL, 0, 0)]
        );
    }
}
