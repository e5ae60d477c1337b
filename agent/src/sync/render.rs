//! Plan -> map entries (pure). A [`Renderer`] keeps each endpoint's policy
//! entries between renders and renders again only the endpoints whose plan
//! entries changed; [`render`] renders from nothing. Both give the same state.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Weak};

use ipnet::IpNet;
use palisade_common::addr::{Addr16, V4_MAPPED_PREFIX_BITS};
use palisade_common::endpoint::{
    EndpointInfo, FLAG_AUDIT, FLAG_EGRESS_ISOLATED, FLAG_INGRESS_ISOLATED, FLAG_SOURCE_PREFIXES,
};
use palisade_common::ids::{EndpointId, IdentityId, RuleId};
use palisade_common::ipcache::{IPCACHE_FLAG_HOST, IpcacheValue};
use palisade_common::policy::{PolicyKey, PolicyValue};
use palisade_common::source::{SOURCE_PREFIX_ENDPOINT_BITS, SourcePrefixKey};
use palisade_common::verdict::Direction;

use super::ipcache_map::IpcacheMap;
use super::policy_map::{PolicyMap, PolicyPart};
use crate::policy::plan::{DatapathPlan, EntryPart, PlanEntries, RuleKey};
use crate::state::PodRef;

/// The entries of the maps the agent writes, exactly as the kernel holds them.
/// Keys keep the kernel's raw numbers (ifindex, LPM prefix length); the
/// writes between two states carry them typed ([`super::MapOp`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelState {
    /// `ENDPOINTS`: ifindex -> endpoint.
    pub endpoints: BTreeMap<u32, EndpointInfo>,
    /// `IPCACHE`: (prefix length, address) -> identity.
    pub ipcache: IpcacheMap,
    /// `POLICY`: (prefix length, key) -> rule, by endpoint.
    pub policy: PolicyMap,
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
/// without an interface are not written (their pod has no programs yet);
/// their policy entries are.
pub fn render(plan: &DatapathPlan, interfaces: &BTreeMap<PodRef, u32>) -> KernelState {
    Renderer::default().render(plan, interfaces)
}

/// Renders plans, keeping each endpoint's policy entries (and the plan
/// entries they came from) for the next render.
#[derive(Debug, Default)]
pub struct Renderer {
    parts: HashMap<EndpointId, Rendered>,
    ipcache: Option<RenderedIpcache>,
}

/// The last plan's ipcache and host addresses, and the `IPCACHE` entries
/// rendered from them. The plan's ipcache is held weakly: a strong hold
/// would make the compiler copy it on its next change. A weak one still
/// keeps its allocation, so no other map can come to sit at its address,
/// and `Arc::make_mut` moves a value that weak pointers see, so the map
/// found there is the one rendered.
#[derive(Debug)]
struct RenderedIpcache {
    plan: Weak<BTreeMap<IpNet, IdentityId>>,
    host_addresses: BTreeSet<IpAddr>,
    map: IpcacheMap,
}

/// One endpoint's plan parts and the `POLICY` part rendered from them.
#[derive(Debug)]
struct Rendered {
    parts: EndpointParts,
    part: Arc<PolicyPart>,
}

/// An endpoint's allow and deny parts, ingress then egress.
type EndpointParts = [Option<EntryPart>; 4];

impl Renderer {
    /// What [`render`] gives for `plan`; an endpoint's policy part is
    /// rendered again only when its plan parts differ from the last
    /// render's (the compiler shares unchanged parts, so most compare by
    /// pointer).
    pub fn render(
        &mut self,
        plan: &DatapathPlan,
        interfaces: &BTreeMap<PodRef, u32>,
    ) -> KernelState {
        let mut state = KernelState::default();
        render_endpoints(plan, interfaces, &mut state);
        state.ipcache = match self.ipcache.take() {
            // The compiler hands out the same ipcache while it stays the same.
            Some(last)
                if std::ptr::eq(last.plan.as_ptr(), Arc::as_ptr(&plan.ipcache))
                    && last.host_addresses == plan.host_addresses =>
            {
                self.ipcache.insert(last).map.clone()
            }
            _ => {
                let map = render_ipcache(plan);
                self.ipcache = Some(RenderedIpcache {
                    plan: Arc::downgrade(&plan.ipcache),
                    host_addresses: plan.host_addresses.clone(),
                    map: map.clone(),
                });
                map
            }
        };
        let mut kept = HashMap::with_capacity(self.parts.len());
        for endpoint in endpoints_with_entries(plan) {
            let parts = endpoint_parts(plan, endpoint);
            let rendered = match self.parts.remove(&endpoint) {
                Some(r) if r.parts == parts => r,
                _ => {
                    let part = Arc::new(render_part(&parts));
                    Rendered { parts, part }
                }
            };
            state
                .policy
                .set_part(endpoint.0, Arc::clone(&rendered.part));
            kept.insert(endpoint, rendered);
        }
        self.parts = kept;
        state
    }
}

/// One endpoint's plan parts.
fn endpoint_parts(plan: &DatapathPlan, endpoint: EndpointId) -> EndpointParts {
    let part = |entries: &PlanEntries, d| entries.part(endpoint, d).cloned();
    [
        part(&plan.rules, Direction::Ingress),
        part(&plan.rules, Direction::Egress),
        part(&plan.denies, Direction::Ingress),
        part(&plan.denies, Direction::Egress),
    ]
}

fn render_endpoints(
    plan: &DatapathPlan,
    interfaces: &BTreeMap<PodRef, u32>,
    state: &mut KernelState,
) {
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
}

fn render_ipcache(plan: &DatapathPlan) -> IpcacheMap {
    // Collected from an iterator, which `BTreeMap` sorts and builds in bulk
    // (the kernel keys do not sort like the plan's).
    plan.ipcache
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
        .collect()
}

/// The endpoints with allow or deny entries, ascending.
fn endpoints_with_entries(plan: &DatapathPlan) -> Vec<EndpointId> {
    let mut out: Vec<EndpointId> = [&plan.rules, &plan.denies]
        .iter()
        .flat_map(|entries| entries.parts().keys().map(|(e, _)| *e))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The `POLICY` entries of one endpoint's allow and deny entries. Several
/// plan entries can cover one kernel key: a deny before an allow, then the
/// lowest rule id (the order `lookup::evaluate` reads them in).
fn render_part(parts: &EndpointParts) -> PolicyPart {
    let mut policy: Vec<((u32, PolicyKey), bool, RuleId)> = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let allow = i < 2;
        for (key, rule) in part.iter().flat_map(|p| p.iter()) {
            policy.extend(policy_keys(key).into_iter().map(|k| (k, allow, *rule)));
        }
    }
    policy.sort_unstable();
    policy.dedup_by(|later, first| later.0 == first.0);
    policy
        .into_iter()
        .map(|(k, allow, rule)| {
            let value = if allow {
                PolicyValue::allow(rule)
            } else {
                PolicyValue::deny(rule)
            };
            (k, value)
        })
        .collect()
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
            *state
                .policy
                .get(&(palisade_common::policy::PREFIX_ANY_PORT, k))
                .expect("an entry")
        };
        assert_eq!(state.policy.len(), 2, "{:?}", state.policy);
        assert_eq!(value(6), PolicyValue::deny(RuleId(9)));
        assert_eq!(value(17), PolicyValue::deny(RuleId::NONE));
        assert!(value(17).denies() && value(17).credited() == RuleId::NONE);
    }

    /// Plan entries of endpoint `endpoint`: (direction, identity, L4 kind,
    /// rule, deny?) picked from a small space.
    fn endpoint_entries(
        endpoint: u32,
    ) -> impl proptest::strategy::Strategy<Value = Vec<(RuleKey, RuleId, bool)>> {
        use crate::policy::plan::L4Match;
        use palisade_common::ids::IdentityId;
        use proptest::prelude::*;
        let entry = (any::<bool>(), 0u32..3, 0u8..4, 1u32..4, any::<bool>());
        proptest::collection::vec(entry, 0..6).prop_map(move |entries| {
            entries
                .into_iter()
                .map(|(egress, identity, l4, rule, deny)| {
                    let l4 = match l4 {
                        0 => L4Match::Any,
                        1 => L4Match::Protocol(6),
                        2 => L4Match::Ports {
                            protocol: 6,
                            first: 80,
                            last: 80,
                        },
                        _ => L4Match::Ports {
                            protocol: 6,
                            first: 8000,
                            last: 8099,
                        },
                    };
                    let key = RuleKey {
                        endpoint: EndpointId(endpoint),
                        direction: if egress {
                            Direction::Egress
                        } else {
                            Direction::Ingress
                        },
                        identity: IdentityId(identity * 20),
                        l4,
                    };
                    (key, RuleId(rule), deny)
                })
                .collect()
        })
    }

    /// Plans over endpoints 1-4, each step choosing for every endpoint one
    /// of its two entry sets (or none) and whether it has an interface.
    fn plans()
    -> impl proptest::strategy::Strategy<Value = Vec<(DatapathPlan, BTreeMap<PodRef, u32>, Vec<u8>)>>
    {
        use crate::policy::plan::EndpointPlan;
        use proptest::prelude::*;
        let variants = (1u32..=4)
            .map(|e| (endpoint_entries(e), endpoint_entries(e)))
            .collect::<Vec<_>>();
        let steps =
            proptest::collection::vec(proptest::collection::vec((0u8..3, any::<bool>()), 4), 1..6);
        (variants, steps).prop_map(|(variants, steps)| {
            steps
                .into_iter()
                .map(|choices| {
                    let mut plan = DatapathPlan::default();
                    let mut interfaces = BTreeMap::new();
                    for (e, (&(choice, attached), (a, b))) in
                        choices.iter().zip(&variants).enumerate()
                    {
                        let pod = PodRef {
                            namespace: "t".into(),
                            name: format!("p{e}"),
                        };
                        plan.endpoints.insert(
                            pod.clone(),
                            EndpointPlan {
                                id: EndpointId(e as u32 + 1),
                                ipv4: None,
                                ipv6: None,
                                ingress_isolated: true,
                                egress_isolated: choice == 1,
                                audit: false,
                                source_prefixes: Vec::new(),
                                policies: Vec::new(),
                            },
                        );
                        if attached {
                            interfaces.insert(pod, 10 + e as u32);
                        }
                        let entries = match choice {
                            0 => a.as_slice(),
                            1 => b.as_slice(),
                            _ => &[],
                        };
                        for (key, rule, deny) in entries {
                            let map = if *deny {
                                &mut plan.denies
                            } else {
                                &mut plan.rules
                            };
                            let lowest = map.get(key).map_or(*rule, |r| (*r).min(*rule));
                            map.insert(*key, lowest);
                        }
                    }
                    let chosen = choices.iter().map(|(c, _)| *c).collect();
                    (plan, interfaces, chosen)
                })
                .collect()
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 300,
            failure_persistence: None,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x7e4d),
            ..Default::default()
        })]

        /// A renderer kept across plans renders each exactly as a render
        /// from nothing does, and keeps (shares) the policy part of every
        /// endpoint whose entries did not change.
        #[test]
        fn a_kept_renderer_renders_what_a_render_from_nothing_does(steps in plans()) {
            let mut renderer = Renderer::default();
            let mut previous: Option<(KernelState, Vec<u8>)> = None;
            for (plan, interfaces, chosen) in steps {
                let state = renderer.render(&plan, &interfaces);
                proptest::prop_assert_eq!(&state, &render(&plan, &interfaces));
                if let Some((before, was)) = &previous {
                    for e in 0..4u32 {
                        let same = was[e as usize] == chosen[e as usize];
                        if let (true, Some(a), Some(b)) =
                            (same, before.policy.part(e + 1), state.policy.part(e + 1))
                        {
                            proptest::prop_assert!(Arc::ptr_eq(a, b), "endpoint {} rendered again", e + 1);
                        }
                    }
                }
                previous = Some((state, chosen));
            }
        }
    }

    #[test]
    fn a_kept_renderer_shares_the_ipcache_until_the_plan_ipcache_or_the_host_addresses_change() {
        let host: IpAddr = "10.0.0.9".parse().expect("address");
        let mut plan = DatapathPlan {
            ipcache: Arc::new(BTreeMap::from([(IpNet::from(host), IdentityId(20))])),
            ..DatapathPlan::default()
        };
        let interfaces = BTreeMap::new();
        let mut renderer = Renderer::default();
        let first = renderer.render(&plan, &interfaces);
        let again = renderer.render(&plan, &interfaces);
        assert!(again.ipcache.shares(&first.ipcache));

        plan.host_addresses.insert(host);
        let hosted = renderer.render(&plan, &interfaces);
        assert!(!hosted.ipcache.shares(&first.ipcache));
        assert_eq!(hosted.ipcache, render(&plan, &interfaces).ipcache);
        let key = prefix_key(&IpNet::from(host));
        assert_eq!(hosted.ipcache[&key].flags, IPCACHE_FLAG_HOST);

        // Changed in place, as the compiler changes it.
        Arc::make_mut(&mut plan.ipcache).insert(IpNet::from(host), IdentityId(21));
        let relabelled = renderer.render(&plan, &interfaces);
        assert_eq!(relabelled.ipcache[&key].identity, IdentityId(21));
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
