//! Evaluates a [`DatapathPlan`] exactly the way the kernel does, for one flow
//! at one endpoint and direction. Shared with the kernel differential tests:
//! keep it literal.
//!
//! Order of checks (first match decides):
//! 1. the endpoint is not isolated in this direction: allowed, [`RuleId::NONE`];
//! 2. the remote address is one of the endpoint's own addresses: allowed;
//! 3. ingress from one of the node's own addresses
//!    ([`DatapathPlan::host_addresses`]): allowed;
//! 4. the policy lookup with the remote identity, then with
//!    [`IdentityId::ANY`]: the most specific entry of the first lookup that
//!    finds one decides, allowed or denied, with its rule;
//! 5. denied.
//!
//! The remote address is the source for ingress and the destination for
//! egress; the port is always the destination port. Protocols without ports
//! (ICMP, ...) match only [`L4Match::Any`] rules.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use palisade_common::ids::{IdentityId, RuleId};
use palisade_common::policy::{PREFIX_ANY_PORT, PREFIX_FULL};
use serde::{Deserialize, Serialize};

use super::plan::{DatapathPlan, EndpointPlan, L4Match, PlanEntries};
use crate::state::Direction;

/// The first packet of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol number.
    pub protocol: u8,
    /// Destination port (ignored for protocols without ports).
    pub dst_port: u16,
}

impl Flow {
    /// The address on the far side of the endpoint for `direction`.
    pub fn remote(&self, direction: Direction) -> IpAddr {
        match direction {
            Direction::Ingress => self.src,
            Direction::Egress => self.dst,
        }
    }
}

/// Why a verdict was reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// No policy isolates the endpoint in this direction.
    NotIsolated,
    /// The remote is the endpoint itself.
    SelfTraffic,
    /// The remote is the local node.
    Host,
    /// An allow entry matched.
    Rule,
    /// A deny entry matched (a ClusterNetworkPolicy's decision).
    Denied,
    /// Isolated and no entry matched.
    NoRule,
}

/// The outcome of one lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Whether policy allows the flow (audit mode does not change this).
    pub allowed: bool,
    /// Why.
    pub reason: Reason,
    /// The rule that allowed it (`reason` `Rule`) or denied it (`Denied`;
    /// [`RuleId::NONE`] when no rule but isolation did); else [`RuleId::NONE`].
    pub rule: RuleId,
    /// The remote identity the ipcache resolved.
    pub remote_identity: IdentityId,
}

/// Longest-prefix match of `ip` in an ipcache; WORLD when nothing matches.
pub fn ipcache_lookup(ipcache: &BTreeMap<IpNet, IdentityId>, ip: IpAddr) -> IdentityId {
    let max = match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    for len in (0..=max).rev() {
        if let Ok(net) = IpNet::new(ip, len)
            && let Some(id) = ipcache.get(&net.trunc())
        {
            return *id;
        }
    }
    IdentityId::WORLD
}

/// Whether `l4` matches `protocol` / destination `port`.
pub fn l4_matches(l4: L4Match, protocol: u8, port: u16) -> bool {
    match l4 {
        L4Match::Any => true,
        L4Match::Protocol(p) => p == protocol && has_ports(protocol),
        L4Match::Ports {
            protocol: p,
            first,
            last,
        } => p == protocol && has_ports(protocol) && (first..=last).contains(&port),
    }
}

/// TCP, UDP and SCTP carry ports; every other protocol only matches `Any`.
pub fn has_ports(protocol: u8) -> bool {
    matches!(protocol, 6 | 17 | 132)
}

/// How specific a match of `l4` on `port` is in the kernel's LPM trie: the
/// prefix length of the trie entry that matches (72 for Any, 80 for a whole
/// protocol, 80 + k for the aligned port block of a range containing `port`).
///
/// A range is written as its minimal cover by aligned blocks
/// ([`L4Match::lpm_entries`]); this finds the block holding `port`.
pub fn match_prefix_len(l4: L4Match, port: u16) -> u32 {
    l4.lpm_entries()
        .into_iter()
        .find(|&(len, _, start)| {
            let size = 1u32 << (PREFIX_FULL - len).min(16);
            len <= PREFIX_ANY_PORT
                || (u32::from(start)..u32::from(start) + size).contains(&u32::from(port))
        })
        .map_or(PREFIX_FULL, |(len, _, _)| len)
}

/// What the kernel's LPM lookup returns for `identity`: among the entries of
/// `endpoint`/`direction`/`identity` (allow and deny) matching the L4, the
/// most specific one; for equally specific entries (the same trie key) a
/// deny before an allow, then the lowest rule id. `Ok` allows, `Err` denies.
fn find_entry(
    plan: &DatapathPlan,
    ep: &EndpointPlan,
    direction: Direction,
    identity: IdentityId,
    protocol: u8,
    port: u16,
) -> Option<Result<RuleId, RuleId>> {
    let matching = |entries: &'_ PlanEntries, deny: bool| {
        let part = entries
            .part(ep.id, direction)
            .map_or(&[][..], |p| p.as_slice());
        let first = part.partition_point(|(k, _)| k.identity < identity);
        part[first..]
            .iter()
            .take_while(|(k, _)| k.identity == identity)
            .filter(|(k, _)| l4_matches(k.l4, protocol, port))
            .map(move |(k, r)| (std::cmp::Reverse(match_prefix_len(k.l4, port)), !deny, *r))
            .collect::<Vec<_>>()
    };
    let mut found = matching(&plan.rules, false);
    found.extend(matching(&plan.denies, true));
    found
        .into_iter()
        .min()
        .map(|(_, allow, r)| if allow { Ok(r) } else { Err(r) })
}

/// Evaluates `flow` at endpoint `ep` of `plan` in `direction`.
pub fn evaluate(
    plan: &DatapathPlan,
    ep: &EndpointPlan,
    direction: Direction,
    flow: &Flow,
) -> Verdict {
    let remote = flow.remote(direction);
    let remote_identity = ipcache_lookup(&plan.ipcache, remote);
    let verdict = |allowed, reason, rule| Verdict {
        allowed,
        reason,
        rule,
        remote_identity,
    };
    let isolated = match direction {
        Direction::Ingress => ep.ingress_isolated,
        Direction::Egress => ep.egress_isolated,
    };
    if !isolated {
        return verdict(true, Reason::NotIsolated, RuleId::NONE);
    }
    let own = match remote {
        IpAddr::V4(a) => ep.ipv4 == Some(a),
        IpAddr::V6(a) => ep.ipv6 == Some(a),
    };
    if own {
        return verdict(true, Reason::SelfTraffic, RuleId::NONE);
    }
    if direction == Direction::Ingress && plan.host_addresses.contains(&remote) {
        return verdict(true, Reason::Host, RuleId::NONE);
    }
    let port = if has_ports(flow.protocol) {
        flow.dst_port
    } else {
        0
    };
    let hit = find_entry(plan, ep, direction, remote_identity, flow.protocol, port)
        .or_else(|| find_entry(plan, ep, direction, IdentityId::ANY, flow.protocol, port));
    match hit {
        Some(Ok(rule)) => verdict(true, Reason::Rule, rule),
        Some(Err(rule)) => verdict(false, Reason::Denied, rule),
        None => verdict(false, Reason::NoRule, RuleId::NONE),
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use palisade_common::ids::EndpointId;

    use crate::policy::plan::RuleKey;

    use super::*;

    fn ep() -> EndpointPlan {
        EndpointPlan {
            id: EndpointId(1),
            ipv4: Some(Ipv4Addr::new(10, 0, 0, 1)),
            ipv6: None,
            ingress_isolated: true,
            egress_isolated: false,
            audit: false,
            source_prefixes: Vec::new(),
            policies: vec![],
        }
    }

    fn flow(src: &str, proto: u8, port: u16) -> Flow {
        Flow {
            src: src.parse().expect("ip"),
            dst: "10.0.0.1".parse().expect("ip"),
            protocol: proto,
            dst_port: port,
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    #[test]
    fn longest_prefix_decides_the_identity_and_unknown_is_world() {
        let mut plan = DatapathPlan::default();
        std::sync::Arc::make_mut(&mut plan.ipcache).insert(net("10.0.0.0/8"), IdentityId(16));
        std::sync::Arc::make_mut(&mut plan.ipcache).insert(net("10.1.0.0/16"), IdentityId(17));
        assert_eq!(
            ipcache_lookup(&plan.ipcache, "10.1.2.3".parse().expect("ip")),
            IdentityId(17)
        );
        assert_eq!(
            ipcache_lookup(&plan.ipcache, "10.2.2.3".parse().expect("ip")),
            IdentityId(16)
        );
        assert_eq!(
            ipcache_lookup(&plan.ipcache, "11.0.0.1".parse().expect("ip")),
            IdentityId::WORLD
        );
    }

    #[test]
    fn identity_rule_then_any_rule_and_port_ranges_are_inclusive() {
        let mut plan = DatapathPlan::default();
        std::sync::Arc::make_mut(&mut plan.ipcache).insert(net("10.9.0.0/16"), IdentityId(16));
        let e = ep();
        let key = |identity, l4| RuleKey {
            endpoint: e.id,
            direction: Direction::Ingress,
            identity,
            l4,
        };
        plan.rules.insert(
            key(
                IdentityId(16),
                L4Match::Ports {
                    protocol: 6,
                    first: 80,
                    last: 90,
                },
            ),
            RuleId(3),
        );
        plan.rules
            .insert(key(IdentityId::ANY, L4Match::Protocol(17)), RuleId(4));
        let v = |src, proto, port| evaluate(&plan, &e, Direction::Ingress, &flow(src, proto, port));
        assert_eq!(v("10.9.0.5", 6, 90).rule, RuleId(3));
        assert!(!v("10.9.0.5", 6, 91).allowed);
        assert!(!v("10.8.0.5", 6, 80).allowed);
        assert_eq!(v("10.8.0.5", 17, 5).rule, RuleId(4));
        assert!(!v("10.8.0.5", 1, 0).allowed, "ICMP only matches Any rules");
    }

    #[test]
    fn deny_entries_decide_where_they_are_the_most_specific() {
        let mut plan = DatapathPlan::default();
        std::sync::Arc::make_mut(&mut plan.ipcache).insert(net("10.9.0.0/16"), IdentityId(16));
        let e = ep();
        let key = |identity, l4| RuleKey {
            endpoint: e.id,
            direction: Direction::Ingress,
            identity,
            l4,
        };
        let tcp = |first, last| L4Match::Ports {
            protocol: 6,
            first,
            last,
        };
        plan.rules
            .insert(key(IdentityId::ANY, L4Match::Any), RuleId(1));
        plan.denies
            .insert(key(IdentityId(16), L4Match::Protocol(6)), RuleId(2));
        plan.rules
            .insert(key(IdentityId(16), tcp(8080, 8080)), RuleId(3));
        plan.denies
            .insert(key(IdentityId::ANY, tcp(22, 22)), RuleId(4));
        plan.rules
            .insert(key(IdentityId::ANY, tcp(0, 65535)), RuleId(5));
        plan.denies
            .insert(key(IdentityId::ANY, L4Match::Protocol(17)), RuleId(6));
        let v = |plan: &DatapathPlan, src, proto, port| {
            evaluate(plan, &e, Direction::Ingress, &flow(src, proto, port))
        };
        let denied = |plan: &DatapathPlan, src, proto, port| {
            let verdict = v(plan, src, proto, port);
            (!verdict.allowed && verdict.reason == Reason::Denied).then_some(verdict.rule)
        };
        assert_eq!(
            denied(&plan, "10.9.0.5", 6, 80),
            Some(RuleId(2)),
            "identity deny shadows ANY"
        );
        assert_eq!(
            v(&plan, "10.9.0.5", 6, 8080).rule,
            RuleId(3),
            "a longer allow inside a deny"
        );
        // No UDP entry of the identity: ANY's decide, its deny and its allow.
        assert_eq!(denied(&plan, "10.9.0.5", 17, 53), Some(RuleId(6)));
        assert_eq!(v(&plan, "10.9.0.5", 1, 0).rule, RuleId(1));
        assert_eq!(denied(&plan, "10.8.0.5", 6, 22), Some(RuleId(4)));
        assert_eq!(v(&plan, "10.8.0.5", 6, 23).rule, RuleId(5));
        assert_eq!(denied(&plan, "10.8.0.5", 17, 53), Some(RuleId(6)));
        // Protocol(6) and 0-65535 are one kernel key: the deny wins.
        plan.denies
            .insert(key(IdentityId::ANY, L4Match::Protocol(6)), RuleId(7));
        assert_eq!(denied(&plan, "10.8.0.5", 6, 23), Some(RuleId(7)));
    }

    #[test]
    fn the_most_specific_entry_names_the_rule() {
        assert_eq!(
            match_prefix_len(
                L4Match::Ports {
                    protocol: 6,
                    first: 80,
                    last: 80
                },
                80
            ),
            96
        );
        // 0..=65535 is one block of 2^16.
        assert_eq!(
            match_prefix_len(
                L4Match::Ports {
                    protocol: 6,
                    first: 0,
                    last: 65535
                },
                7
            ),
            80
        );
        // 80..=95 is one aligned block of 16; 79..=80 is [79] + [80].
        assert_eq!(
            match_prefix_len(
                L4Match::Ports {
                    protocol: 6,
                    first: 80,
                    last: 95
                },
                90
            ),
            92
        );
        assert_eq!(
            match_prefix_len(
                L4Match::Ports {
                    protocol: 6,
                    first: 79,
                    last: 80
                },
                80
            ),
            96
        );
        let mut plan = DatapathPlan::default();
        let e = ep();
        let key = |l4| RuleKey {
            endpoint: e.id,
            direction: Direction::Ingress,
            identity: IdentityId::ANY,
            l4,
        };
        plan.rules.insert(key(L4Match::Any), RuleId(1));
        plan.rules.insert(
            key(L4Match::Ports {
                protocol: 6,
                first: 80,
                last: 80,
            }),
            RuleId(9),
        );
        assert_eq!(
            evaluate(&plan, &e, Direction::Ingress, &flow("10.8.0.5", 6, 80)).rule,
            RuleId(9)
        );
        assert_eq!(
            evaluate(&plan, &e, Direction::Ingress, &flow("10.8.0.5", 6, 81)).rule,
            RuleId(1)
        );
    }

    #[test]
    fn host_self_and_unisolated_are_allowed_without_rules() {
        let mut plan = DatapathPlan::default();
        plan.host_addresses
            .insert("192.168.0.1".parse().expect("ip"));
        let e = ep();
        assert_eq!(
            evaluate(&plan, &e, Direction::Ingress, &flow("192.168.0.1", 6, 1)).reason,
            Reason::Host
        );
        assert_eq!(
            evaluate(&plan, &e, Direction::Ingress, &flow("10.0.0.1", 6, 1)).reason,
            Reason::SelfTraffic
        );
        assert_eq!(
            evaluate(&plan, &e, Direction::Egress, &flow("10.0.0.1", 6, 1)).reason,
            Reason::NotIsolated
        );
        assert!(!evaluate(&plan, &e, Direction::Ingress, &flow("10.0.0.2", 6, 1)).allowed);
    }
}
