//! The only map writer: applies diffs to the kernel and remembers what the
//! kernel holds, so the next plan costs only its differences.
//!
//! Fail closed: when an insert fails because a map is full, every isolated
//! endpoint is marked `FLAG_FAIL_CLOSED` at once and through the rest of the
//! apply (the datapath then denies all but node, self and established traffic
//! of the old revision), the failure is reported, and the next apply tries
//! again.

use palisade_common::endpoint::FLAG_FAIL_CLOSED;
use palisade_common::endpoint::{FLAG_EGRESS_ISOLATED, FLAG_INGRESS_ISOLATED, IfIndex};
use palisade_common::ids::Revision;
use palisade_common::policy::PolicyValue;

use super::diff::{MapOp, diff};
use super::hold::hold_denies;
use super::render::KernelState;

/// The kernel's maps as the syncer writes them. `datapath::Maps` is the real
/// one; tests use a fake with small capacities.
pub trait MapWriter {
    /// Performs one put or delete (never [`MapOp::BumpRevision`]).
    fn write(&mut self, op: &MapOp) -> Result<(), WriteError>;
    /// Stores the policy revision the programs compare flows against.
    fn set_revision(&mut self, revision: Revision) -> Result<(), WriteError>;
    /// Performs `ops` (puts and deletes) in order until one fails: how many
    /// landed, and the failure. The real maps write runs of one kind in one
    /// syscall.
    fn write_all(&mut self, ops: &[MapOp]) -> (usize, Result<(), WriteError>)
    where
        Self: Sized,
    {
        write_each(self, ops)
    }
}

/// Writes `ops` one at a time until one fails: how many landed, and the
/// failure.
pub fn write_each(maps: &mut impl MapWriter, ops: &[MapOp]) -> (usize, Result<(), WriteError>) {
    for (landed, op) in ops.iter().enumerate() {
        if let Err(e) = maps.write(op) {
            return (landed, Err(e));
        }
    }
    (ops.len(), Ok(()))
}

/// A map write the kernel refused.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// An insert found no room (`E2BIG`, `ENOSPC` or `ENOMEM` from the kernel).
    #[error("map {map} is full")]
    Full {
        /// The map's name.
        map: &'static str,
    },
    /// Any other failure: the loop cannot go on with unknown map contents.
    #[error("writing map {map}")]
    Failed {
        /// The map's name.
        map: &'static str,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A write that failed because its map was full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapFull {
    /// The map's name.
    pub map: &'static str,
    /// The write that found no room.
    pub op: MapOp,
}

impl std::fmt::Display for MapFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is full", self.map)
    }
}

/// What one apply did.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// Map writes performed (including the revision bump).
    pub writes: usize,
    /// Writes that failed because a map was full (the plan was applied fail-closed).
    pub map_full: Vec<MapFull>,
    /// The revision now in the kernel.
    pub revision: Revision,
    /// Endpoints held as pinned because their deny entries must wait for
    /// [`Syncer::programs_upgraded`]; apply again right after it.
    pub held: usize,
}

impl ApplyReport {
    /// Whether the whole plan made it into the kernel.
    pub fn complete(&self) -> bool {
        self.map_full.is_empty()
    }
}

/// Keeps the kernel's maps in step with successive states.
#[derive(Debug, Default)]
pub struct Syncer {
    /// What the kernel holds (only successful writes are recorded).
    current: KernelState,
    revision: Revision,
    /// The next apply bumps the revision even if no entry changes: the
    /// first apply over adopted pins, so that every flow an older build's
    /// programs admitted is judged once more by this build's (its checks may
    /// be stricter).
    recheck_flows: bool,
    /// Programs of an earlier build may still run on some link (pins were
    /// adopted and not every link carries this build's programs yet): deny
    /// entries are held back (see [`super::hold`]).
    hold_denies: bool,
}

impl Syncer {
    /// A syncer for maps that already hold `current` (read back from pinned
    /// maps after a restart), at `revision`.
    pub fn adopt(current: KernelState, revision: Revision) -> Syncer {
        // Pinned deny entries were written by an agent whose gate was open:
        // every link it left runs programs that read them. Holding then would
        // only judge held endpoints by pinned entries against a rewritten
        // ipcache (a peer on an identity the pins never knew falls to ANY).
        let hold_denies = !current.policy.values().any(PolicyValue::denies);
        Syncer {
            current,
            revision,
            recheck_flows: true,
            hold_denies,
        }
    }

    /// Every link now carries this build's programs: the next apply writes
    /// deny entries.
    pub fn programs_upgraded(&mut self) {
        self.hold_denies = false;
    }

    /// What the kernel holds, as far as this syncer wrote or read it.
    pub fn current(&self) -> &KernelState {
        &self.current
    }

    /// Applies `target` make-before-break.
    pub fn apply(
        &mut self,
        maps: &mut impl MapWriter,
        target: &KernelState,
    ) -> Result<ApplyReport, WriteError> {
        let mut report = ApplyReport::default();
        let held;
        let target = if self.hold_denies {
            held = hold_denies(&self.current, target);
            if held.endpoints > 0 {
                tracing::info!(
                    endpoints = held.endpoints,
                    "holding endpoints with deny entries as pinned until every link carries this build's programs"
                );
            }
            report.held = held.endpoints;
            &held.state
        } else {
            target
        };
        let mut ops = diff(&self.current, target);
        if ops.is_empty() && self.recheck_flows {
            ops.push(MapOp::BumpRevision);
        }
        self.recheck_flows = false;
        // While every write lands, `self.current` is brought up to date only
        // at the end (with `target`'s parts, shared with the renderer's):
        // recording each write would copy every part it touches.
        let mut next = 0;
        while next < ops.len() && report.map_full.is_empty() {
            let (landed, result) = match ops[next] {
                MapOp::BumpRevision => {
                    let result = self.write_unrecorded(maps, &ops[next]);
                    (usize::from(result.is_ok()), result)
                }
                _ => {
                    let end = ops[next..]
                        .iter()
                        .position(|op| matches!(op, MapOp::BumpRevision))
                        .map_or(ops.len(), |p| next + p);
                    maps.write_all(&ops[next..end])
                }
            };
            report.writes += landed;
            next += landed;
            if let Err(e) = result {
                self.record(&ops[..next]);
                let WriteError::Full { map } = e else {
                    return Err(e);
                };
                self.close_current(maps, &mut report)?;
                report.map_full.push(MapFull { map, op: ops[next] });
                next += 1;
            }
        }
        // After a write found no room, the state in between is neither
        // plan's: isolated endpoints stay closed through the rest.
        for op in &ops[next..] {
            let op = closed(*op);
            match self.write(maps, &op) {
                Ok(()) => report.writes += 1,
                Err(WriteError::Full { map }) => report.map_full.push(MapFull { map, op }),
                Err(e) => return Err(e),
            }
        }
        if report.map_full.is_empty() {
            // Every write landed, so the kernel holds `target`: keep its
            // policy parts (shared with the renderer's), so that the next
            // diff skips the endpoints that do not change again.
            debug_assert!({
                let mut replay = self.current.clone();
                ops.iter().for_each(|op| replay.apply(op));
                &replay == target
            });
            self.current = target.clone();
        } else {
            self.fail_closed(maps, target, &mut report)?;
        }
        report.revision = self.revision;
        Ok(report)
    }

    /// Marks every isolated endpoint the kernel holds now fail-closed.
    fn close_current(
        &mut self,
        maps: &mut impl MapWriter,
        report: &mut ApplyReport,
    ) -> Result<(), WriteError> {
        let open: Vec<MapOp> = self
            .current
            .endpoints
            .iter()
            .map(|(i, e)| closed(MapOp::PutEndpoint(IfIndex(*i), *e)))
            .filter(|op| matches!(op, MapOp::PutEndpoint(IfIndex(i), e) if self.current.endpoints.get(i) != Some(e)))
            .collect();
        for op in &open {
            self.write(maps, op)?;
            report.writes += 1;
        }
        Ok(())
    }

    fn fail_closed(
        &mut self,
        maps: &mut impl MapWriter,
        target: &KernelState,
        report: &mut ApplyReport,
    ) -> Result<(), WriteError> {
        let failures: Vec<String> = report.map_full.iter().map(MapFull::to_string).collect();
        tracing::error!(?failures, "a map is full: isolated endpoints fail closed");
        for (ifindex, info) in &target.endpoints {
            if info.flags & (FLAG_INGRESS_ISOLATED | FLAG_EGRESS_ISOLATED) == 0 {
                continue;
            }
            let mut shut = *info;
            shut.flags |= FLAG_FAIL_CLOSED;
            if self.current.endpoints.get(ifindex) == Some(&shut) {
                continue;
            }
            self.write(maps, &MapOp::PutEndpoint(IfIndex(*ifindex), shut))?;
            report.writes += 1;
        }
        self.write(maps, &MapOp::BumpRevision)?;
        report.writes += 1;
        Ok(())
    }

    /// Performs `op` and records it in `self.current`.
    fn write(&mut self, maps: &mut impl MapWriter, op: &MapOp) -> Result<(), WriteError> {
        self.write_unrecorded(maps, op)?;
        self.current.apply(op);
        Ok(())
    }

    /// Performs `op`; the caller records it.
    fn write_unrecorded(
        &mut self,
        maps: &mut impl MapWriter,
        op: &MapOp,
    ) -> Result<(), WriteError> {
        if let MapOp::BumpRevision = op {
            let next = Revision(self.revision.0.wrapping_add(1).max(1));
            maps.set_revision(next)?;
            self.revision = next;
            return Ok(());
        }
        maps.write(op)
    }

    /// Records writes that landed unrecorded.
    fn record(&mut self, landed: &[MapOp]) {
        landed.iter().for_each(|op| self.current.apply(op));
    }
}

/// `op` with an isolated endpoint's value marked fail-closed.
fn closed(op: MapOp) -> MapOp {
    match op {
        MapOp::PutEndpoint(i, mut e)
            if e.flags & (FLAG_INGRESS_ISOLATED | FLAG_EGRESS_ISOLATED) != 0 =>
        {
            e.flags |= FLAG_FAIL_CLOSED;
            MapOp::PutEndpoint(i, e)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use palisade_common::endpoint::EndpointInfo;
    use palisade_common::ids::{EndpointId, IdentityId, RuleId};
    use palisade_common::maps as names;
    use palisade_common::policy::{PolicyKey, PolicyValue};
    use palisade_common::verdict::Direction;

    use super::*;
    use crate::sync::PrefixLen;

    /// Maps with room for `policy_room` policy entries, recording every write
    /// like the kernel; `broken` makes every write fail with another error.
    #[derive(Default)]
    struct FakeMaps {
        endpoints: BTreeMap<u32, EndpointInfo>,
        policy: BTreeMap<(u32, PolicyKey), PolicyValue>,
        policy_room: usize,
        revision: Revision,
        broken: bool,
        /// For each policy write after the first full one: whether every
        /// isolated endpoint was marked fail-closed by then.
        closed_after_full: Vec<bool>,
        full_seen: bool,
    }

    impl MapWriter for FakeMaps {
        fn write(&mut self, op: &MapOp) -> Result<(), WriteError> {
            if self.broken {
                return Err(WriteError::Failed {
                    map: names::ENDPOINTS,
                    source: "EPERM".into(),
                });
            }
            match *op {
                MapOp::PutEndpoint(IfIndex(i), e) => {
                    self.endpoints.insert(i, e);
                }
                MapOp::DeleteEndpoint(IfIndex(i)) => {
                    self.endpoints.remove(&i);
                }
                MapOp::PutPolicy(PrefixLen(l), k, v) => {
                    if self.full_seen {
                        let isolated = FLAG_INGRESS_ISOLATED | FLAG_EGRESS_ISOLATED;
                        self.closed_after_full.push(
                            self.endpoints
                                .values()
                                .filter(|e| e.flags & isolated != 0)
                                .all(|e| e.has(FLAG_FAIL_CLOSED)),
                        );
                    }
                    if !self.policy.contains_key(&(l, k)) && self.policy.len() >= self.policy_room {
                        self.full_seen = true;
                        return Err(WriteError::Full { map: names::POLICY });
                    }
                    self.policy.insert((l, k), v);
                }
                MapOp::DeletePolicy(PrefixLen(l), k) => {
                    self.policy.remove(&(l, k));
                }
                _ => {}
            }
            Ok(())
        }

        fn set_revision(&mut self, revision: Revision) -> Result<(), WriteError> {
            self.revision = revision;
            Ok(())
        }
    }

    const ISOLATED: u32 = 10;
    const OPEN: u32 = 11;

    /// One isolated endpoint allowed from `rules` identities, one open endpoint.
    fn target(rules: u32) -> KernelState {
        let mut state = KernelState::default();
        let endpoint = |id, flags| EndpointInfo {
            id: EndpointId(id),
            flags,
            ..Default::default()
        };
        state
            .endpoints
            .insert(ISOLATED, endpoint(1, FLAG_INGRESS_ISOLATED));
        state.endpoints.insert(OPEN, endpoint(2, 0));
        for identity in 0..rules {
            let key = PolicyKey::new(
                EndpointId(1),
                IdentityId(identity),
                Direction::Ingress,
                6,
                80,
            );
            state
                .policy
                .insert((96, key), PolicyValue { rule: RuleId(1) });
        }
        state
    }

    #[test]
    fn a_full_map_fails_closed_every_isolated_endpoint_and_the_next_apply_recovers() {
        let mut maps = FakeMaps {
            policy_room: 2,
            ..Default::default()
        };
        let mut syncer = Syncer::default();
        let report = syncer.apply(&mut maps, &target(3)).expect("apply");

        assert!(!report.complete());
        assert_eq!(report.map_full.len(), 1, "{:?}", report.map_full);
        assert_eq!(report.map_full[0].map, names::POLICY);
        assert_eq!(report.map_full[0].to_string(), "POLICY is full");
        assert!(
            maps.endpoints[&ISOLATED].has(FLAG_FAIL_CLOSED),
            "isolated endpoint fails closed"
        );
        assert!(
            !maps.endpoints[&OPEN].has(FLAG_FAIL_CLOSED),
            "an open endpoint stays open"
        );
        assert_eq!(maps.revision, report.revision);
        assert_ne!(
            report.revision,
            Revision::default(),
            "live flows are re-checked"
        );
        assert_eq!(
            syncer.current().policy.len(),
            2,
            "only the writes that landed are recorded"
        );

        maps.policy_room = 3;
        let retried = syncer.apply(&mut maps, &target(3)).expect("retry");
        assert!(retried.complete(), "{:?}", retried.map_full);
        assert!(
            !maps.endpoints[&ISOLATED].has(FLAG_FAIL_CLOSED),
            "the failure clears once it fits"
        );
        assert_eq!(maps.policy.len(), 3);
        assert_eq!(syncer.current(), &target(3));
    }

    #[test]
    fn isolated_endpoints_are_closed_from_the_first_full_write_on() {
        let mut maps = FakeMaps {
            policy_room: 2,
            ..Default::default()
        };
        let mut syncer = Syncer::default();
        syncer.apply(&mut maps, &target(1)).expect("apply");
        assert!(!maps.endpoints[&ISOLATED].has(FLAG_FAIL_CLOSED));
        // Identities 1..3 are new: 1 fits, 2 does not, 3 is tried after.
        let report = syncer.apply(&mut maps, &target(4)).expect("apply");
        assert_eq!(report.map_full.len(), 2, "{:?}", report.map_full);
        assert_eq!(
            maps.closed_after_full,
            [true],
            "every write after the first full one finds the isolated endpoint closed"
        );
        assert!(!maps.endpoints[&OPEN].has(FLAG_FAIL_CLOSED));
    }

    #[test]
    fn pins_holding_deny_entries_open_the_gate_at_once() {
        // The agent that wrote deny entries had every link on its programs.
        let mut pinned = target(1);
        let key = PolicyKey::new(EndpointId(1), IdentityId(5), Direction::Ingress, 6, 22);
        pinned
            .policy
            .insert((96, key), PolicyValue::deny(RuleId(2)));
        let mut next = target(2);
        let other = PolicyKey::new(EndpointId(1), IdentityId(6), Direction::Ingress, 6, 22);
        next.policy
            .insert((96, other), PolicyValue::deny(RuleId(3)));
        let mut maps = FakeMaps {
            policy_room: 8,
            ..Default::default()
        };
        let mut syncer = Syncer::adopt(pinned, Revision(3));
        let report = syncer.apply(&mut maps, &next).expect("apply");
        assert_eq!(report.held, 0, "nothing held");
        assert_eq!(syncer.current(), &next);
        // The control: allow-only pins may come from a build without denies.
        let mut syncer = Syncer::adopt(target(1), Revision(3));
        let report = syncer.apply(&mut maps, &next).expect("apply");
        assert_eq!(report.held, 1, "the endpoint with deny entries is held");
    }

    #[test]
    fn a_write_that_fails_otherwise_stops_the_apply() {
        let mut maps = FakeMaps {
            policy_room: 8,
            broken: true,
            ..Default::default()
        };
        let mut syncer = Syncer::default();
        let err = syncer
            .apply(&mut maps, &target(1))
            .expect_err("broken maps");
        assert!(
            matches!(err, WriteError::Failed { map, .. } if map == names::ENDPOINTS),
            "{err}"
        );
        assert_eq!(
            syncer.current(),
            &KernelState::default(),
            "nothing recorded as written"
        );
    }

    #[test]
    fn adopted_pins_hold_endpoints_with_deny_entries_until_the_programs_are_upgraded() {
        let endpoint = |id| EndpointInfo {
            id: EndpointId(id),
            flags: FLAG_INGRESS_ISOLATED,
            ..Default::default()
        };
        let key = |endpoint, port| {
            let k = PolicyKey::new(
                EndpointId(endpoint),
                IdentityId(20),
                Direction::Ingress,
                6,
                port,
            );
            (96, k)
        };
        // Pinned by an earlier build: interface 10 (endpoint 1) allows port 80.
        let mut pinned = KernelState::default();
        pinned.endpoints.insert(10, endpoint(1));
        pinned
            .policy
            .insert(key(1, 80), PolicyValue::allow(RuleId(1)));
        let mut maps = FakeMaps {
            policy_room: 8,
            endpoints: pinned.endpoints.clone(),
            policy: pinned.policy.iter().map(|(k, v)| (*k, *v)).collect(),
            ..Default::default()
        };
        // Target: endpoint 1 now denies 22 and allows 443; interface 11
        // (endpoint 2, new) denies 22; interface 12 (endpoint 3) only allows.
        let mut target = KernelState::default();
        target.endpoints.insert(10, endpoint(1));
        target.endpoints.insert(11, endpoint(2));
        target.endpoints.insert(12, endpoint(3));
        target
            .policy
            .insert(key(1, 22), PolicyValue::deny(RuleId(2)));
        target
            .policy
            .insert(key(1, 443), PolicyValue::allow(RuleId(3)));
        target
            .policy
            .insert(key(2, 22), PolicyValue::deny(RuleId(2)));
        target
            .policy
            .insert(key(3, 443), PolicyValue::allow(RuleId(4)));

        let mut syncer = Syncer::adopt(pinned.clone(), Revision(3));
        let first = syncer.apply(&mut maps, &target).expect("apply");
        assert_eq!(first.held, 2);
        assert_eq!(maps.endpoints.get(&10), Some(&endpoint(1)), "as pinned");
        assert_eq!(maps.endpoints.get(&11), None, "absent stays absent");
        assert_eq!(maps.endpoints.get(&12), Some(&endpoint(3)), "written");
        assert_eq!(
            maps.policy.keys().copied().collect::<Vec<_>>(),
            vec![key(1, 80), key(3, 443)],
            "held entries as pinned, the others written"
        );
        assert!(!maps.policy.values().any(PolicyValue::denies));
        assert_ne!(first.revision, Revision(3), "live flows are re-checked");

        syncer.programs_upgraded();
        let second = syncer.apply(&mut maps, &target).expect("apply");
        assert_eq!(second.held, 0);
        assert_eq!(maps.endpoints, target.endpoints);
        assert!(maps.policy.iter().eq(target.policy.iter()));
        assert_eq!(maps.policy[&key(2, 22)], PolicyValue::deny(RuleId(2)));
        assert_eq!(syncer.current(), &target);
    }

    #[test]
    fn a_fresh_syncer_writes_deny_entries_at_once() {
        let mut target = target(1);
        let deny_key = *target.policy.keys().next().expect("an entry");
        target.policy.insert(deny_key, PolicyValue::deny(RuleId(1)));
        let mut maps = FakeMaps {
            policy_room: 8,
            ..Default::default()
        };
        let report = Syncer::default().apply(&mut maps, &target).expect("apply");
        assert_eq!(report.held, 0);
        assert_eq!(maps.policy[&deny_key], PolicyValue::deny(RuleId(1)));
    }

    #[test]
    fn an_adopted_state_is_rechecked_once_even_when_nothing_changes() {
        let mut maps = FakeMaps {
            policy_room: 8,
            ..Default::default()
        };
        let mut syncer = Syncer::adopt(target(1), Revision(7));
        let first = syncer.apply(&mut maps, &target(1)).expect("apply");
        assert_eq!((first.writes, first.revision), (1, Revision(8)));
        let second = syncer.apply(&mut maps, &target(1)).expect("apply");
        assert_eq!((second.writes, second.revision), (0, Revision(8)));
    }
}
