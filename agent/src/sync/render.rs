//! Plan -> map entries (pure).

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use palisade_common::addr::{Addr16, V4_MAPPED_PREFIX_BITS};
use palisade_common::endpoint::{
    EndpointInfo, FLAG_AUDIT, FLAG_EGRESS_ISOLATED, FLAG_INGRESS_ISOLATED, FLAG_SOURCE_PREFIXES,
};
use palisade_common::ids::RuleId;
use palisade_common::ipcache::{IPCACHE_FLAG_HOST, IpcacheValue};
use palisade_common::policy::{PolicyKey, PolicyValue};
use palisade_common::source::{SOURCE_PREFIX_ENDPOINT_BITS, SourcePrefixKey};

use crate::policy::plan::{DatapathPlan, RuleKey};
use crate::state::PodRef;

/// The entries of the maps the agent writes, exactly as the kernel holds them.
/// Keys keep the kernel's raw numbers (ifindex, LPM prefix length); the
/// writes between two states carry them typed ([`super::MapOp`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelState {
    /// `ENDPOINTS`: ifindex -> endpoint.
    pub endpoints: BTreeMap<u32, EndpointInfo>,
    /// `IPCACHE`: (prefix length, address) -> identity.
    pub ipcache: BTreeMap<(u32, Addr16), IpcacheValue>,
    /// `POLICY`: (prefix length, key) -> rule.
    pub policy: BTreeMap<(u32, PolicyKey), PolicyValue>,
    /// `SOURCE_PREFIXES`: (prefix length, key), present = allowed.
    pub source_prefixes: BTreeMap<(u32, SourcePrefixKey), ()>,
}

/// The 16-byte key form of an address.
pub fn addr16(ip: IpAddr) -> Addr16 {
    match ip {
        IpAddr::V4(v4) => Addr16::from_v4(v4.octets()),
        IpAddr::V6(v6) => Addr16(v6.octets()),
    }
}

/// The (prefix length, address) key of a network, IPv4 as v4-mapped.
pub fn prefix_key(net: &IpNet) -> (u32, Addr16) {
    match net {
        IpNet::V4(n) => (
            V4_MAPPED_PREFIX_BITS + u32::from(n.prefix_len()),
            addr16(IpAddr::V4(n.network())),
        ),
        IpNet::V6(n) => (u32::from(n.prefix_len()), addr16(IpAddr::V6(n.network()))),
    }
}

/// Renders a plan for the interfaces that carry its endpoints. Endpoints
/// without an interface are not written (their pod has no programs yet).
pub fn render(plan: &DatapathPlan, interfaces: &BTreeMap<PodRef, u32>) -> KernelState {
    let mut state = KernelState::default();
    for (pod, ep) in &plan.endpoints {
        let Some(&ifindex) = interfaces.get(pod) else {
            continue;
        };
        let mut flags = 0;
        if ep.ingress_isolated {
            flags |= FLAG_INGRESS_ISOLATED;
        }
        if ep.egress_isolated {
            flags |= FLAG_EGRESS_ISOLATED;
        }
        if ep.audit {
            flags |= FLAG_AUDIT;
        }
        if !ep.source_prefixes.is_empty() {
            flags |= FLAG_SOURCE_PREFIXES;
        }
        for net in &ep.source_prefixes {
            let (len, addr) = prefix_key(net);
            let key = SourcePrefixKey::new(ep.id, addr);
            state
                .source_prefixes
                .insert((SOURCE_PREFIX_ENDPOINT_BITS + len, key), ());
        }
        state.endpoints.insert(
            ifindex,
            EndpointInfo {
                id: ep.id,
                flags,
                ipv4: ep.ipv4.map(|a| addr16(IpAddr::V4(a))).unwrap_or_default(),
                ipv6: ep.ipv6.map(|a| addr16(IpAddr::V6(a))).unwrap_or_default(),
            },
        );
    }
    // Both maps are collected from vectors, which `BTreeMap` sorts and builds
    // in bulk (the kernel keys do not sort like the plan's).
    state.ipcache = plan
        .ipcache
        .iter()
        .map(|(net, identity)| {
            let is_host = net.prefix_len() == net.max_prefix_len()
                && plan.host_addresses.contains(&net.addr());
            let flags = if is_host { IPCACHE_FLAG_HOST } else { 0 };
            let value = IpcacheValue {
                identity: *identity,
                flags,
            };
            (prefix_key(net), value)
        })
        .collect();
    // Several plan entries can cover one kernel key: a deny before an allow,
    // then the lowest rule id (the order `lookup::evaluate` reads them in).
    let mut policy: Vec<((u32, PolicyKey), bool, RuleId)> = Vec::new();
    for (entries, allow) in [(&plan.rules, true), (&plan.denies, false)] {
        for (key, rule) in entries {
            policy.extend(policy_keys(key).into_iter().map(|k| (k, allow, *rule)));
        }
    }
    policy.sort_unstable();
    policy.dedup_by(|later, first| later.0 == first.0);
    state.policy = policy
        .into_iter()
        .map(|(k, allow, rule)| {
            let value = if allow {
                PolicyValue::allow(rule)
            } else {
                PolicyValue::deny(rule)
            };
            (k, value)
        })
        .collect();
    state
}

/// The LPM entries of one rule key.
fn policy_keys(key: &RuleKey) -> Vec<(u32, PolicyKey)> {
    key.l4
        .lpm_entries()
        .into_iter()
        .map(|(len, protocol, port)| {
            let k = PolicyKey::new(key.endpoint, key.identity, key.direction, protocol, port);
            (len, k)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_entries_are_written_with_the_deny_bit_and_win_a_shared_kernel_key() {
        use crate::policy::plan::{EndpointPlan, L4Match};
        use palisade_common::ids::{EndpointId, IdentityId};
        use palisade_common::verdict::Direction;

        let pod = PodRef {
            namespace: "t".into(),
            name: "pod".into(),
        };
        let mut plan = DatapathPlan::default();
        plan.endpoints.insert(
            pod.clone(),
            EndpointPlan {
                id: EndpointId(7),
                ipv4: None,
                ipv6: None,
                ingress_isolated: true,
                egress_isolated: false,
                audit: false,
                source_prefixes: Vec::new(),
                policies: Vec::new(),
            },
        );
        let key = |l4| RuleKey {
            endpoint: EndpointId(7),
            direction: Direction::Ingress,
            identity: IdentityId(20),
            l4,
        };
        // Protocol(6) and ports 0-65535 are one kernel key.
        let every_port = L4Match::Ports {
            protocol: 6,
            first: 0,
            last: 65535,
        };
        plan.rules.insert(key(L4Match::Protocol(6)), RuleId(1));
        plan.denies.insert(key(every_port), RuleId(9));
        plan.denies.insert(key(L4Match::Protocol(17)), RuleId::NONE);
        let state = render(&plan, &BTreeMap::from([(pod, 3)]));
        let value = |protocol| {
            let k = PolicyKey::new(
                EndpointId(7),
                IdentityId(20),
                Direction::Ingress,
                protocol,
                0,
            );
            state.policy[&(palisade_common::policy::PREFIX_ANY_PORT, k)]
        };
        assert_eq!(state.policy.len(), 2, "{:?}", state.policy);
        assert_eq!(value(6), PolicyValue::deny(RuleId(9)));
        assert_eq!(value(17), PolicyValue::deny(RuleId::NONE));
        assert!(value(17).denies() && value(17).credited() == RuleId::NONE);
    }

    #[test]
    fn prefix_key_maps_ipv4_into_v4_mapped_space() {
        let (len, addr) = prefix_key(&"10.1.0.0/16".parse().expect("valid cidr"));
        assert_eq!(len, 112);
        assert_eq!(addr, Addr16::from_v4([10, 1, 0, 0]));
        let (len6, _) = prefix_key(&"fd00::/8".parse().expect("valid cidr"));
        assert_eq!(len6, 8);
    }
}
