//! Two kernel states -> the ordered writes between them (pure).
//!
//! Order, make-before-break:
//! 1. policy entries and allowed source prefixes added or changed (new allows
//!    exist before anything uses them); policy entries of a remote identity
//!    before ANY's, each the most specific first (see `put_order`);
//! 2. ipcache entries added or changed (addresses move to identities whose
//!    allows are already in place);
//! 3. endpoints changed (isolation switches on after its allows exist, and
//!    switches off before they go);
//! 4. ipcache entries removed; 5. policy entries and source prefixes removed
//!    (policy: ANY's before a remote identity's, each the least specific
//!    first, see `delete_order`);
//! 6. endpoints added (a new interface reads exactly the new entries);
//! 7. endpoints removed;
//! 8. the revision bump, last, so established flows are re-checked against the
//!    final state only.
//!
//! An address that moves between identities whose entries change at the same
//! time goes through a waypoint identity ([`super::waypoint`]): then the
//! writes are three such legs in a row, and one bump.
//!
//! Traffic that both the old and the new state allow is allowed at every step;
//! traffic both deny is denied at every step.

use std::sync::Arc;

use palisade_common::addr::Addr16;
use palisade_common::endpoint::{EndpointInfo, IfIndex};
use palisade_common::ids::IdentityId;
use palisade_common::ipcache::IpcacheValue;
use palisade_common::policy::{PolicyKey, PolicyValue};
use palisade_common::source::SourcePrefixKey;

use super::changes::{Changes, changes};
use super::policy_map::{PolicyEntryKey, PolicyMap, PolicyPart};
use super::render::KernelState;
use super::waypoint::{Route, route};

/// How many leading bits of an LPM trie key an entry matches: of the
/// (v4-mapped) address in `IPCACHE`, of the whole key in `POLICY` and
/// `SOURCE_PREFIXES` (their layout docs in `palisade_common` say which bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PrefixLen(pub u32);

/// The order of policy puts. With deny entries the set of entries present
/// matters, not only which allows exist: a less specific deny written before
/// the more specific allow it shadows would drop what both states allow.
/// Written the most specific first, an entry of the new state that matches a
/// packet is only present once the new state's most specific match for that
/// packet is, so each lookup's winner is the old state's or the new state's.
/// A remote identity's entries go before ANY's because a hit there shadows
/// ANY: the new identity entries are complete before ANY's lookup changes.
fn put_order(key: &(u32, PolicyKey)) -> (bool, std::cmp::Reverse<u32>) {
    (is_any(&key.1), std::cmp::Reverse(key.0))
}

/// The order of policy deletes, the mirror of [`put_order`]: the least
/// specific first, so the old state's most specific match for a packet goes
/// last; ANY's first, so a remote identity's old entries still shadow ANY
/// while its lookup changes.
fn delete_order(key: &(u32, PolicyKey)) -> (bool, u32) {
    (!is_any(&key.1), key.0)
}

fn is_any(key: &PolicyKey) -> bool {
    key.identity_be == IdentityId::ANY.0.to_be_bytes()
}

/// One map write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapOp {
    /// Insert or replace the endpoint behind an interface.
    PutEndpoint(IfIndex, EndpointInfo),
    /// Remove the endpoint behind an interface.
    DeleteEndpoint(IfIndex),
    /// Insert or replace an ipcache prefix.
    PutIpcache(PrefixLen, Addr16, IpcacheValue),
    /// Remove an ipcache prefix.
    DeleteIpcache(PrefixLen, Addr16),
    /// Insert or replace a policy entry.
    PutPolicy(PrefixLen, PolicyKey, PolicyValue),
    /// Remove a policy entry.
    DeletePolicy(PrefixLen, PolicyKey),
    /// Insert an allowed source prefix.
    PutSourcePrefix(PrefixLen, SourcePrefixKey),
    /// Remove an allowed source prefix.
    DeleteSourcePrefix(PrefixLen, SourcePrefixKey),
    /// Bump the policy revision (re-checks established flows).
    BumpRevision,
}

impl KernelState {
    /// The state after `op` (the revision bump changes no entry).
    pub fn apply(&mut self, op: &MapOp) {
        match *op {
            MapOp::PutEndpoint(IfIndex(i), e) => {
                self.endpoints.insert(i, e);
            }
            MapOp::DeleteEndpoint(IfIndex(i)) => {
                self.endpoints.remove(&i);
            }
            MapOp::PutIpcache(PrefixLen(l), a, v) => {
                self.ipcache.insert((l, a), v);
            }
            MapOp::DeleteIpcache(PrefixLen(l), a) => {
                self.ipcache.remove(&(l, a));
            }
            MapOp::PutPolicy(PrefixLen(l), k, v) => {
                self.policy.insert((l, k), v);
            }
            MapOp::DeletePolicy(PrefixLen(l), k) => {
                self.policy.remove(&(l, k));
            }
            MapOp::PutSourcePrefix(PrefixLen(l), k) => {
                self.source_prefixes.insert((l, k), ());
            }
            MapOp::DeleteSourcePrefix(PrefixLen(l), k) => {
                self.source_prefixes.remove(&(l, k));
            }
            MapOp::BumpRevision => {}
        }
    }
}

/// The policy entries to put and to delete, each in write order. Parts the
/// two states share are equal and skipped unread; the rest are merged part
/// by part, so the result is what one merge over all entries gives.
fn policy_changes(old: &PolicyMap, new: &PolicyMap) -> PolicyChanges {
    let (mut puts, mut deletes) = (Vec::new(), Vec::new());
    let empty = PolicyPart::new();
    let mut o = old.parts().iter().peekable();
    let mut n = new.parts().iter().peekable();
    loop {
        let (old_part, new_part) = match (o.peek(), n.peek()) {
            (None, None) => break,
            (Some((oe, _)), Some((ne, _))) if oe == ne => {
                let (_, op) = o.next().expect("peeked");
                let (_, np) = n.next().expect("peeked");
                if Arc::ptr_eq(op, np) {
                    continue;
                }
                (&**op, &**np)
            }
            (Some((oe, _)), Some((ne, _))) if oe > ne => (&empty, &**n.next().expect("peeked").1),
            (Some(_), _) => (&**o.next().expect("peeked").1, &empty),
            (None, Some(_)) => (&empty, &**n.next().expect("peeked").1),
        };
        let (p, d) = changes(old_part, new_part);
        puts.extend(p);
        deletes.extend(d);
    }
    in_write_order((puts, deletes))
}

/// Policy puts in [`put_order`], deletes in [`delete_order`].
fn in_write_order((mut puts, mut deletes): PolicyChanges) -> PolicyChanges {
    puts.sort_by_key(|(k, _)| put_order(k));
    deletes.sort_by_key(delete_order);
    (puts, deletes)
}

/// Policy puts and deletes.
type PolicyChanges = (Vec<(PolicyEntryKey, PolicyValue)>, Vec<PolicyEntryKey>);

/// The writes of one leg, each map's changes in write order.
#[derive(Default)]
struct Leg {
    policy: PolicyChanges,
    source_prefixes: Changes<(u32, SourcePrefixKey), ()>,
    ipcache: Changes<(u32, Addr16), IpcacheValue>,
    /// Interfaces whose endpoint changes.
    changed_endpoints: Vec<(u32, EndpointInfo)>,
    /// Interfaces that gain an endpoint.
    new_endpoints: Vec<(u32, EndpointInfo)>,
    /// Interfaces that lose theirs.
    gone_endpoints: Vec<u32>,
}

pub fn diff(old: &KernelState, new: &KernelState) -> Vec<MapOp> {
    let policy = policy_changes(&old.policy, &new.policy);
    let ipcache = if old.ipcache.shares(&new.ipcache) {
        Changes::default()
    } else {
        changes(&old.ipcache, &new.ipcache)
    };
    let route = route(old, new, &policy, &ipcache);
    let (endpoint_puts, gone_endpoints) = changes(&old.endpoints, &new.endpoints);
    // A new interface goes in last: its endpoint's entries are then exactly
    // the new state's (a reused id may still hold stale ones until then).
    let (changed_endpoints, new_endpoints) = endpoint_puts
        .into_iter()
        .partition(|(i, _)| old.endpoints.contains_key(i));
    let plain = Leg {
        policy,
        source_prefixes: changes(&old.source_prefixes, &new.source_prefixes),
        ipcache,
        changed_endpoints,
        new_endpoints,
        gone_endpoints,
    };
    let mut ops = match route {
        None => writes(plain),
        Some(Route {
            copies,
            onto,
            recopied,
            dropped,
        }) => {
            // The addresses onto waypoints that answer as they did; every
            // change but theirs, the waypoints' entries changing with the
            // rest; the addresses on to where they go.
            let to_waypoints = Leg {
                policy: in_write_order((copies, Vec::new())),
                ipcache: (onto, Vec::new()),
                ..Leg::default()
            };
            let (mut puts, mut deletes) = plain.policy;
            puts.extend(recopied.0);
            deletes.extend(recopied.1);
            let from_waypoints = Leg {
                policy: in_write_order((Vec::new(), dropped)),
                ipcache: plain.ipcache,
                ..Leg::default()
            };
            let middle = Leg {
                policy: in_write_order((puts, deletes)),
                ipcache: Default::default(),
                ..plain
            };
            [to_waypoints, middle, from_waypoints]
                .into_iter()
                .flat_map(writes)
                .collect()
        }
    };
    if !ops.is_empty() {
        ops.push(MapOp::BumpRevision);
    }
    ops
}

/// One leg's writes in the order of the module's doc, without the revision
/// bump.
fn writes(leg: Leg) -> Vec<MapOp> {
    let (policy_puts, policy_deletes) = leg.policy;
    let (ipcache_puts, ipcache_deletes) = leg.ipcache;
    let (prefix_puts, prefix_deletes) = leg.source_prefixes;
    let mut ops = Vec::new();
    ops.extend(
        policy_puts
            .into_iter()
            .map(|((l, k), v)| MapOp::PutPolicy(PrefixLen(l), k, v)),
    );
    ops.extend(
        prefix_puts
            .into_iter()
            .map(|((l, k), ())| MapOp::PutSourcePrefix(PrefixLen(l), k)),
    );
    ops.extend(
        ipcache_puts
            .into_iter()
            .map(|((l, a), v)| MapOp::PutIpcache(PrefixLen(l), a, v)),
    );
    ops.extend(
        leg.changed_endpoints
            .into_iter()
            .map(|(i, e)| MapOp::PutEndpoint(IfIndex(i), e)),
    );
    ops.extend(
        ipcache_deletes
            .into_iter()
            .map(|(l, a)| MapOp::DeleteIpcache(PrefixLen(l), a)),
    );
    ops.extend(
        policy_deletes
            .into_iter()
            .map(|(l, k)| MapOp::DeletePolicy(PrefixLen(l), k)),
    );
    ops.extend(
        prefix_deletes
            .into_iter()
            .map(|(l, k)| MapOp::DeleteSourcePrefix(PrefixLen(l), k)),
    );
    ops.extend(
        leg.new_endpoints
            .into_iter()
            .map(|(i, e)| MapOp::PutEndpoint(IfIndex(i), e)),
    );
    ops.extend(
        leg.gone_endpoints
            .into_iter()
            .map(|i| MapOp::DeleteEndpoint(IfIndex(i))),
    );
    ops
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use palisade_common::endpoint::FLAG_INGRESS_ISOLATED;
    use palisade_common::ids::{EndpointId, IdentityId, RuleId};
    use palisade_common::verdict::Direction;

    use super::*;

    fn ep(flags: u32) -> EndpointInfo {
        EndpointInfo {
            id: EndpointId(7),
            flags,
            ..Default::default()
        }
    }

    fn rule(identity: u32) -> (u32, PolicyKey) {
        (
            96,
            PolicyKey::new(
                EndpointId(7),
                IdentityId(identity),
                Direction::Ingress,
                6,
                80,
            ),
        )
    }

    #[test]
    fn diff_of_equal_states_is_empty() {
        let mut s = KernelState::default();
        s.endpoints.insert(3, ep(0));
        assert!(diff(&s, &s.clone()).is_empty());
    }

    #[test]
    fn diff_adds_allows_before_isolating() {
        let old = KernelState::default();
        let mut new = KernelState::default();
        new.endpoints.insert(3, ep(FLAG_INGRESS_ISOLATED));
        new.policy.insert(rule(20), PolicyValue { rule: RuleId(1) });
        let ops = diff(&old, &new);
        let policy_at = ops
            .iter()
            .position(|o| matches!(o, MapOp::PutPolicy(..)))
            .expect("policy put");
        let ep_at = ops
            .iter()
            .position(|o| matches!(o, MapOp::PutEndpoint(..)))
            .expect("endpoint put");
        assert!(policy_at < ep_at, "{ops:?}");
        assert_eq!(ops.last(), Some(&MapOp::BumpRevision));
    }

    #[test]
    fn diff_unisolates_before_removing_allows() {
        let mut old = KernelState::default();
        old.endpoints.insert(3, ep(FLAG_INGRESS_ISOLATED));
        old.policy.insert(rule(20), PolicyValue { rule: RuleId(1) });
        let mut new = KernelState::default();
        new.endpoints.insert(3, ep(0));
        let ops = diff(&old, &new);
        let ep_at = ops
            .iter()
            .position(|o| matches!(o, MapOp::PutEndpoint(..)))
            .expect("endpoint put");
        let del_at = ops
            .iter()
            .position(|o| matches!(o, MapOp::DeletePolicy(..)))
            .expect("policy delete");
        assert!(ep_at < del_at, "{ops:?}");
    }

    #[test]
    fn diff_moves_address_to_new_identity_after_its_allows_exist() {
        let a = Addr16::from_v4([10, 0, 0, 1]);
        let mut old = KernelState::default();
        old.ipcache.insert(
            (128, a),
            IpcacheValue {
                identity: IdentityId(20),
                flags: 0,
            },
        );
        old.policy.insert(rule(20), PolicyValue { rule: RuleId(1) });
        let mut new = KernelState::default();
        new.ipcache.insert(
            (128, a),
            IpcacheValue {
                identity: IdentityId(21),
                flags: 0,
            },
        );
        new.policy.insert(rule(21), PolicyValue { rule: RuleId(1) });
        let ops = diff(&old, &new);
        let kinds: Vec<&str> = ops
            .iter()
            .map(|o| match o {
                MapOp::PutPolicy(..) => "put-policy",
                MapOp::PutIpcache(..) => "put-ipcache",
                MapOp::DeletePolicy(..) => "del-policy",
                MapOp::BumpRevision => "bump",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["put-policy", "put-ipcache", "del-policy", "bump"]);
    }

    #[test]
    fn diff_widens_sources_before_the_endpoint_relies_on_them_and_narrows_after() {
        let prefix = (
            32 + 120,
            SourcePrefixKey::new(EndpointId(7), Addr16::from_v4([10, 9, 0, 0])),
        );
        let position = |ops: &[MapOp], want: fn(&MapOp) -> bool| {
            ops.iter().position(want).expect("op present")
        };
        let mut narrow = KernelState::default();
        narrow.endpoints.insert(3, ep(0));
        let mut wide = KernelState::default();
        wide.endpoints
            .insert(3, ep(palisade_common::endpoint::FLAG_SOURCE_PREFIXES));
        wide.source_prefixes.insert(prefix, ());

        let ops = diff(&narrow, &wide);
        assert!(
            position(&ops, |o| matches!(o, MapOp::PutSourcePrefix(..)))
                < position(&ops, |o| matches!(o, MapOp::PutEndpoint(..))),
            "{ops:?}"
        );
        let ops = diff(&wide, &narrow);
        assert!(
            position(&ops, |o| matches!(o, MapOp::PutEndpoint(..)))
                < position(&ops, |o| matches!(o, MapOp::DeleteSourcePrefix(..))),
            "{ops:?}"
        );
    }

    const MOVING_POD: [u8; 4] = [10, 0, 0, 1];

    /// Endpoints 7 (10.0.0.1, on interface 3) and 8 (10.0.0.2, on 4); the
    /// pod 10.0.0.1 on `identity`; `any` allows TCP `any_port` from
    /// anywhere to endpoint `any`.
    fn two_endpoints(identity: u32, any: u32, any_port: u16) -> KernelState {
        let mut s = KernelState::default();
        for (ifindex, id, host) in [(3, 7, 1), (4, 8, 2)] {
            s.endpoints.insert(
                ifindex,
                EndpointInfo {
                    id: EndpointId(id),
                    flags: FLAG_INGRESS_ISOLATED,
                    ipv4: Addr16::from_v4([10, 0, 0, host]),
                    ipv6: Addr16::UNSPECIFIED,
                },
            );
        }
        s.ipcache.insert(
            (128, Addr16::from_v4(MOVING_POD)),
            IpcacheValue {
                identity: IdentityId(identity),
                flags: 0,
            },
        );
        let key = PolicyKey::new(
            EndpointId(any),
            IdentityId::ANY,
            Direction::Ingress,
            6,
            any_port,
        );
        s.policy.insert((128, key), PolicyValue::allow(RuleId(1)));
        s
    }

    fn waypoint_writes(old: &KernelState, new: &KernelState) -> usize {
        diff(old, new)
            .iter()
            .filter(|op| {
                matches!(op, MapOp::PutIpcache(_, _, v) if v.identity.0 >= IdentityId::FIRST_WAYPOINT)
            })
            .count()
    }

    #[test]
    fn a_pod_moving_while_its_own_endpoints_entries_change_needs_no_waypoint() {
        // Endpoint 7 never reads its policy for its own address.
        let (old, new) = (two_endpoints(20, 7, 80), two_endpoints(21, 7, 443));
        assert_eq!(waypoint_writes(&old, &new), 0, "{:?}", diff(&old, &new));
    }

    #[test]
    fn a_pod_moving_while_another_endpoints_entries_change_takes_a_waypoint() {
        // Endpoint 8 reads 10.0.0.1 by its identity.
        let (old, new) = (two_endpoints(20, 8, 80), two_endpoints(21, 8, 443));
        assert_eq!(waypoint_writes(&old, &new), 1, "{:?}", diff(&old, &new));
    }

    #[test]
    fn diff_changed_value_is_a_single_put() {
        let mut old = KernelState::default();
        old.policy.insert(rule(20), PolicyValue { rule: RuleId(1) });
        let mut new = KernelState::default();
        new.policy.insert(rule(20), PolicyValue { rule: RuleId(2) });
        assert_eq!(
            diff(&old, &new),
            vec![
                MapOp::PutPolicy(PrefixLen(96), rule(20).1, PolicyValue { rule: RuleId(2) }),
                MapOp::BumpRevision
            ]
        );
    }

    /// What the kernel's two LPM lookups find in `policy` for endpoint 7's
    /// ingress from `identity` on `protocol`/`port`: `Some(denies)`, or
    /// `None` for a miss.
    fn kernel_lookup(
        policy: impl Fn(&(u32, PolicyKey)) -> Option<PolicyValue>,
        identity: u32,
        protocol: u8,
        port: u16,
    ) -> Option<bool> {
        [identity, IdentityId::ANY.0]
            .into_iter()
            .find_map(|identity| {
                (72..=96).rev().find_map(|len: u32| {
                    let key = masked_key(identity, len, protocol, port);
                    policy(&(len, key)).map(|v| v.denies())
                })
            })
    }

    /// Endpoint 7's ingress key from `identity` as an entry of `len` bits
    /// holds it: the protocol kept from 80 bits on, the port's leading bits.
    fn masked_key(identity: u32, len: u32, protocol: u8, port: u16) -> PolicyKey {
        let protocol = if len >= 80 { protocol } else { 0 };
        let kept = len.saturating_sub(80);
        let mask = if kept == 0 { 0 } else { !0u16 << (16 - kept) };
        PolicyKey::new(
            EndpointId(7),
            IdentityId(identity),
            Direction::Ingress,
            protocol,
            port & mask,
        )
    }

    /// The policy entry of endpoint 7's ingress from `identity`: TCP `port`
    /// under a key of `len` bits (72: any protocol).
    fn policy_entry(
        identity: u32,
        len: u32,
        port: u16,
        deny: bool,
        rule: u32,
    ) -> ((u32, PolicyKey), PolicyValue) {
        let key = masked_key(identity, len, 6, port);
        let value = if deny {
            PolicyValue::deny(RuleId(rule))
        } else {
            PolicyValue::allow(RuleId(rule))
        };
        ((len, key), value)
    }

    /// Random policy entries of endpoint 7: (identity 0 or 20, prefix
    /// length, TCP port) -> deny?
    fn entries()
    -> impl proptest::strategy::Strategy<Value = BTreeMap<(u32, PolicyKey), PolicyValue>> {
        use proptest::prelude::*;
        let entry = (
            prop::sample::select(vec![0u32, 20]),
            prop::sample::select(vec![72u32, 80, 92, 93, 94, 95, 96]),
            0u16..16,
            any::<bool>(),
            1u32..4,
        );
        proptest::collection::vec(entry, 0..12).prop_map(|entries| {
            entries
                .into_iter()
                .map(|(identity, len, port, deny, rule)| {
                    policy_entry(identity, len, port, deny, rule)
                })
                .collect()
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 500,
            failure_persistence: None,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0xdea1),
            ..Default::default()
        })]

        /// With allow and deny entries, every state between two policy maps
        /// that the writes pass through decides each packet the way the old
        /// or the new map does: what both allow is never dropped, what both
        /// deny (or miss) never passes.
        #[test]
        fn every_intermediate_policy_state_agrees_where_old_and_new_agree(
            old in entries(),
            new in entries(),
        ) {
            let state = |policy: &BTreeMap<(u32, PolicyKey), PolicyValue>| KernelState {
                policy: policy.iter().map(|(k, v)| (*k, *v)).collect(),
                ..Default::default()
            };
            let allowed = |policy: &BTreeMap<(u32, PolicyKey), PolicyValue>, identity, port| {
                kernel_lookup(|k| policy.get(k).copied(), identity, 6, port) == Some(false)
            };
            let mut replay = old.clone();
            for op in diff(&state(&old), &state(&new)) {
                match op {
                    MapOp::PutPolicy(l, k, v) => { replay.insert((l.0, k), v); }
                    MapOp::DeletePolicy(l, k) => { replay.remove(&(l.0, k)); }
                    _ => continue,
                }
                for identity in [20, 21] {
                    for port in 0..16 {
                        let (was, will) = (allowed(&old, identity, port), allowed(&new, identity, port));
                        if was == will {
                            proptest::prop_assert_eq!(
                                allowed(&replay, identity, port), was,
                                "identity {} port {} after {:?}", identity, port, op
                            );
                        }
                    }
                }
            }
            proptest::prop_assert_eq!(replay, new);
        }
    }

    /// Random states of endpoint 7 (on interface 3): addresses 10.0.0.1-4
    /// with or without a /32 entry, under a 10.0.0.0/24 entry or none, on
    /// identities 20-22; policy entries of those identities and ANY.
    fn states() -> impl proptest::strategy::Strategy<Value = KernelState> {
        use proptest::prelude::*;
        let identity = || prop::option::of(prop::sample::select(vec![20u32, 21, 22]));
        let entry = (
            prop::sample::select(vec![0u32, 20, 21, 22]),
            prop::sample::select(vec![72u32, 80, 93, 96]),
            0u16..8,
            any::<bool>(),
        );
        (
            proptest::collection::vec(identity(), 4),
            identity(),
            proptest::collection::vec(entry, 0..14),
        )
            .prop_map(|(hosts, subnet, entries)| {
                let mut s = KernelState::default();
                s.endpoints.insert(3, ep(FLAG_INGRESS_ISOLATED));
                let value = |id| IpcacheValue {
                    identity: IdentityId(id),
                    flags: 0,
                };
                for (i, id) in hosts.into_iter().enumerate() {
                    if let Some(id) = id {
                        let host = Addr16::from_v4([10, 0, 0, 1 + i as u8]);
                        s.ipcache.insert((128, host), value(id));
                    }
                }
                if let Some(id) = subnet {
                    s.ipcache
                        .insert((120, Addr16::from_v4([10, 0, 0, 0])), value(id));
                }
                s.policy.extend(
                    entries.into_iter().map(|(identity, len, port, deny)| {
                        policy_entry(identity, len, port, deny, 1)
                    }),
                );
                s
            })
    }

    /// Whether endpoint 7 admits TCP `port` from 10.0.0.`host`: its own
    /// address always (as the programs do); any other by the address's
    /// identity by longest prefix (WORLD without one), then the policy
    /// lookups.
    fn admits(state: &KernelState, host: u8, port: u16) -> bool {
        let addr = Addr16::from_v4([10, 0, 0, host]);
        if state.endpoints[&3].is_own(&addr, true) {
            return true;
        }
        let identity = state
            .ipcache
            .get(&(128, addr))
            .or_else(|| state.ipcache.get(&(120, Addr16::from_v4([10, 0, 0, 0]))))
            .map_or(IdentityId::WORLD.0, |v| v.identity.0);
        kernel_lookup(|k| state.policy.get(k).copied(), identity, 6, port) == Some(false)
    }

    fn compact(state: &KernelState) -> String {
        let ipcache: Vec<String> = state
            .ipcache
            .iter()
            .map(|((l, a), v)| format!("{}/{}={}", a.0[15], l - 96, v.identity.0))
            .collect();
        let policy: Vec<String> = state
            .policy
            .iter()
            .map(|((l, k), v)| {
                let id = u32::from_be_bytes(k.identity_be);
                let port = u16::from_be_bytes(k.port_be);
                format!("{id}:{port}/{l}{}", if v.denies() { "D" } else { "A" })
            })
            .collect();
        format!("{ipcache:?} {policy:?}")
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 500,
            failure_persistence: None,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x3a7e),
            ..Default::default()
        })]

        /// Addresses moving between identities whose entries change too,
        /// the endpoint's own address among them or not: every intermediate
        /// state agrees with the old and the new one wherever they agree.
        /// The endpoint keeps its address (a pod's IPs do not change under
        /// a live interface).
        #[test]
        fn every_intermediate_state_agrees_where_old_and_new_agree_as_addresses_move(
            mut old in states(),
            mut new in states(),
            own in proptest::option::of(1u8..=5),
        ) {
            let address = own.map_or(Addr16::UNSPECIFIED, |h| Addr16::from_v4([10, 0, 0, h]));
            for state in [&mut old, &mut new] {
                state.endpoints.get_mut(&3).expect("endpoint").ipv4 = address;
            }
            let mut state = old.clone();
            for op in diff(&old, &new) {
                state.apply(&op);
                for host in 1..=5 {
                    for port in 0..8 {
                        let was = admits(&old, host, port);
                        if was == admits(&new, host, port) {
                            proptest::prop_assert_eq!(
                                admits(&state, host, port), was,
                                "10.0.0.{} port {} after {:?}\nold {}\nnew {}", host, port, op,
                                compact(&old), compact(&new)
                            );
                        }
                    }
                }
            }
            state.endpoints = new.endpoints.clone();
            proptest::prop_assert_eq!(state, new);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 300,
            failure_persistence: None,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x5a4e),
            ..Default::default()
        })]

        /// Policy writes taken part by part, skipping the parts both states
        /// share, are exactly those of one merge over all entries.
        #[test]
        fn policy_changes_by_part_equal_one_merge_over_all_entries(
            old in proptest::collection::btree_map((0u32..4, 0u32..3, 0u32..4), 0u32..3, 0..30),
            edits in proptest::collection::vec(((0u32..4, 0u32..3, 0u32..4), 0u32..4), 0..10),
        ) {
            let key = |(endpoint, identity, len): (u32, u32, u32)| {
                (
                    93 + len,
                    PolicyKey::new(
                        EndpointId(endpoint),
                        IdentityId(identity * 10),
                        Direction::Ingress,
                        6,
                        80,
                    ),
                )
            };
            let old: PolicyMap = old
                .into_iter()
                .map(|(k, v)| (key(k), PolicyValue::allow(RuleId(v))))
                .collect();
            let mut new = old.clone();
            for (k, v) in edits {
                match v {
                    0 => { new.remove(&key(k)); }
                    v => { new.insert(key(k), PolicyValue::allow(RuleId(v))); }
                }
            }
            let flat = |m: &PolicyMap| -> BTreeMap<PolicyEntryKey, PolicyValue> {
                m.iter().map(|(k, v)| (*k, *v)).collect()
            };
            let (mut puts, mut deletes) = changes(&flat(&old), &flat(&new));
            puts.sort_by_key(|(k, _)| put_order(k));
            deletes.sort_by_key(delete_order);
            proptest::prop_assert_eq!(policy_changes(&old, &new), (puts, deletes));
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 300,
            failure_persistence: None,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0xd1ff),
            ..Default::default()
        })]

        /// Replaying the writes on the old state gives the new one, and a
        /// write is emitted only for an entry that differs.
        #[test]
        fn writes_turn_the_old_state_into_the_new(
            old in proptest::collection::btree_map((0u32..40, 0u32..3), 0u32..3, 0..30),
            new in proptest::collection::btree_map((0u32..40, 0u32..3), 0u32..3, 0..30),
        ) {
            let state = |m: &BTreeMap<(u32, u32), u32>| {
                let mut s = KernelState::default();
                for ((identity, endpoint), value) in m {
                    s.policy.insert(rule(*identity), PolicyValue { rule: RuleId(*value) });
                    s.endpoints.insert(*endpoint, ep(*value));
                }
                s
            };
            let (old, new) = (state(&old), state(&new));
            let mut replay = old.clone();
            let ops = diff(&old, &new);
            for op in &ops {
                match *op {
                    MapOp::PutPolicy(l, k, v) => { replay.policy.insert((l.0, k), v); }
                    MapOp::DeletePolicy(l, k) => { replay.policy.remove(&(l.0, k)); }
                    MapOp::PutEndpoint(i, e) => { replay.endpoints.insert(i.0, e); }
                    MapOp::DeleteEndpoint(i) => { replay.endpoints.remove(&i.0); }
                    MapOp::PutIpcache(..) | MapOp::DeleteIpcache(..) | MapOp::BumpRevision
                    | MapOp::PutSourcePrefix(..) | MapOp::DeleteSourcePrefix(..) => {}
                }
            }
            proptest::prop_assert_eq!(&replay, &new);
            let changed = old.policy.iter().filter(|(k, v)| new.policy.get(k) != Some(v)).count()
                + new.policy.keys().filter(|k| !old.policy.contains_key(k)).count()
                + old.endpoints.iter().filter(|(k, v)| new.endpoints.get(k) != Some(v)).count()
                + new.endpoints.keys().filter(|k| !old.endpoints.contains_key(k)).count();
            proptest::prop_assert_eq!(ops.len(), changed + usize::from(changed > 0));
        }
    }
}
