//! The only map writer: applies diffs to the kernel and remembers what the
//! kernel holds, so the next plan costs only its differences.
//!
//! Fail closed: when an insert fails because a map is full, every isolated
//! endpoint is marked `FLAG_FAIL_CLOSED` (the datapath then denies all but
//! node, self and established traffic of the old revision), the failure is
//! reported, and the next apply tries again.

use palisade_common::endpoint::FLAG_FAIL_CLOSED;
use palisade_common::endpoint::{FLAG_EGRESS_ISOLATED, FLAG_INGRESS_ISOLATED};
use palisade_common::ids::Revision;

use super::diff::{MapOp, diff};
use super::render::KernelState;
use crate::datapath::{Error, maps::Maps};

/// What one apply did.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// Map writes performed (including the revision bump).
    pub writes: usize,
    /// Writes that failed because a map was full (the plan was applied fail-closed).
    pub map_full: Vec<String>,
    /// The revision now in the kernel.
    pub revision: Revision,
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
}

impl Syncer {
    /// A syncer for maps that already hold `current` (read back from pinned
    /// maps after a restart), at `revision`.
    pub fn adopt(current: KernelState, revision: Revision) -> Syncer {
        Syncer {
            current,
            revision,
            recheck_flows: true,
        }
    }

    /// Reads what the kernel's maps hold now.
    pub fn read_kernel(maps: &Maps) -> Result<Syncer, Error> {
        let mut current = KernelState::default();
        current.endpoints.extend(maps.read_endpoints()?);
        current.ipcache.extend(
            maps.read_ipcache()?
                .into_iter()
                .map(|(l, a, v)| ((l, a), v)),
        );
        current
            .policy
            .extend(maps.read_policy()?.into_iter().map(|(l, k, v)| ((l, k), v)));
        current
            .source_prefixes
            .extend(maps.read_source_prefixes()?.into_iter().map(|k| (k, ())));
        Ok(Syncer::adopt(current, maps.revision()?))
    }

    /// What the kernel holds, as far as this syncer wrote or read it.
    pub fn current(&self) -> &KernelState {
        &self.current
    }

    /// Applies `target` make-before-break.
    pub fn apply(&mut self, maps: &mut Maps, target: &KernelState) -> Result<ApplyReport, Error> {
        let mut report = ApplyReport::default();
        let mut ops = diff(&self.current, target);
        if ops.is_empty() && self.recheck_flows {
            ops.push(MapOp::BumpRevision);
        }
        self.recheck_flows = false;
        for op in &ops {
            match self.write(maps, op) {
                Ok(()) => report.writes += 1,
                Err(e) if e.is_map_full() => report.map_full.push(e.to_string()),
                Err(e) => return Err(e),
            }
        }
        if !report.map_full.is_empty() {
            self.fail_closed(maps, target, &mut report)?;
        }
        report.revision = self.revision;
        Ok(report)
    }

    fn fail_closed(
        &mut self,
        maps: &mut Maps,
        target: &KernelState,
        report: &mut ApplyReport,
    ) -> Result<(), Error> {
        tracing::error!(failures = ?report.map_full, "a map is full: isolated endpoints fail closed");
        for (ifindex, info) in &target.endpoints {
            if info.flags & (FLAG_INGRESS_ISOLATED | FLAG_EGRESS_ISOLATED) == 0 {
                continue;
            }
            let mut closed = *info;
            closed.flags |= FLAG_FAIL_CLOSED;
            self.write(maps, &MapOp::PutEndpoint(*ifindex, closed))?;
            report.writes += 1;
        }
        self.write(maps, &MapOp::BumpRevision)?;
        report.writes += 1;
        Ok(())
    }

    fn write(&mut self, maps: &mut Maps, op: &MapOp) -> Result<(), Error> {
        let cur = &mut self.current;
        match *op {
            MapOp::PutEndpoint(i, e) => {
                maps.put_endpoint(i, e)?;
                cur.endpoints.insert(i, e);
            }
            MapOp::DeleteEndpoint(i) => {
                maps.delete_endpoint(i)?;
                cur.endpoints.remove(&i);
            }
            MapOp::PutIpcache(l, a, v) => {
                maps.put_ipcache(l, a, v)?;
                cur.ipcache.insert((l, a), v);
            }
            MapOp::DeleteIpcache(l, a) => {
                maps.delete_ipcache(l, a)?;
                cur.ipcache.remove(&(l, a));
            }
            MapOp::PutPolicy(l, k, v) => {
                maps.put_policy(l, k, v)?;
                cur.policy.insert((l, k), v);
            }
            MapOp::DeletePolicy(l, k) => {
                maps.delete_policy(l, k)?;
                cur.policy.remove(&(l, k));
            }
            MapOp::PutSourcePrefix(l, k) => {
                maps.put_source_prefix(l, k)?;
                cur.source_prefixes.insert((l, k), ());
            }
            MapOp::DeleteSourcePrefix(l, k) => {
                maps.delete_source_prefix(l, k)?;
                cur.source_prefixes.remove(&(l, k));
            }
            MapOp::BumpRevision => {
                let next = Revision(self.revision.0.wrapping_add(1).max(1));
                maps.set_revision(next)?;
                self.revision = next;
            }
        }
        Ok(())
    }
}
