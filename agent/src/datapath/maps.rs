//! Typed handles on every map, opened by their `palisade_common::maps` names, so
//! a key or value size that drifted from the eBPF side fails at load time.

use aya::Ebpf;
use aya::maps::lpm_trie::Key;
use aya::maps::{Array, HashMap, IterableMap, LpmTrie, MapData, MapError, PerCpuArray, RingBuf};
use aya::sys::SyscallError;
use palisade_common::addr::Addr16;
use palisade_common::conntrack::{CtKeyV4, CtKeyV6, CtValue};
use palisade_common::endpoint::{EndpointInfo, IfIndex};
use palisade_common::ids::{Revision, RuleId};
use palisade_common::ipcache::IpcacheValue;
use palisade_common::maps as names;
use palisade_common::maps;

/// `BPF_NOEXIST`: an update that only creates.
const BPF_NOEXIST: u64 = 1;
use palisade_common::policy::{PolicyKey, PolicyValue};
use palisade_common::source::{SourcePrefixKey, SourcePrefixValue};
use palisade_common::stats::{REVISION_INDEX, RuleCounter, StatCounter, StatIndex};
use palisade_common::verdict::Direction;

use super::batch;
use super::error::Error;
use crate::sync::apply::write_each;
use crate::sync::{KernelState, MapOp, MapWriter, PrefixLen, WriteError};

/// Map capacities. A full map fails closed (see `sync::apply`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacities {
    /// Local endpoints.
    pub endpoints: u32,
    /// ipcache prefixes.
    pub ipcache: u32,
    /// Policy entries.
    pub policy: u32,
    /// Tracked IPv4 connections.
    pub conntrack_v4: u32,
    /// Tracked IPv6 connections.
    pub conntrack_v6: u32,
    /// Tracked first fragments.
    pub fragments: u32,
}

impl Default for Capacities {
    fn default() -> Self {
        Capacities {
            endpoints: maps::DEFAULT_ENDPOINTS_MAX,
            ipcache: maps::DEFAULT_IPCACHE_MAX,
            policy: maps::DEFAULT_POLICY_MAX,
            conntrack_v4: maps::DEFAULT_CONNTRACK_MAX,
            conntrack_v6: maps::DEFAULT_CONNTRACK_MAX,
            fragments: maps::DEFAULT_FRAGMENTS_MAX,
        }
    }
}

/// Every map of the object, typed.
pub struct Maps {
    /// `ENDPOINTS`.
    pub endpoints: HashMap<MapData, IfIndex, EndpointInfo>,
    /// `IPCACHE`.
    pub ipcache: LpmTrie<MapData, Addr16, IpcacheValue>,
    /// `POLICY`.
    pub policy: LpmTrie<MapData, PolicyKey, PolicyValue>,
    /// `SOURCE_PREFIXES`.
    pub source_prefixes: LpmTrie<MapData, SourcePrefixKey, SourcePrefixValue>,
    /// `CONNTRACK_V4` (LRU, IPv4 flows).
    pub conntrack_v4: HashMap<MapData, CtKeyV4, CtValue>,
    /// `CONNTRACK` (LRU, IPv6 flows).
    pub conntrack_v6: HashMap<MapData, CtKeyV6, CtValue>,
    /// `REVISION`.
    pub revision: Array<MapData, Revision>,
    /// `RULE_COUNTERS`.
    pub rule_counters: PerCpuArray<MapData, RuleCounter>,
    /// `STATS`.
    pub stats: PerCpuArray<MapData, StatCounter>,
    /// `EVENTS`, until the flow reader takes it.
    pub events: Option<RingBuf<MapData>>,
    /// Configured capacities.
    pub capacities: Capacities,
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, Error>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(Error::MapMissing { name })?;
    T::try_from(map).map_err(|e| Error::map(name, e))
}

impl Maps {
    pub(crate) fn take(ebpf: &mut Ebpf, capacities: Capacities) -> Result<Maps, Error> {
        Ok(Maps {
            endpoints: take(ebpf, names::ENDPOINTS)?,
            ipcache: take(ebpf, names::IPCACHE)?,
            policy: take(ebpf, names::POLICY)?,
            source_prefixes: take(ebpf, names::SOURCE_PREFIXES)?,
            conntrack_v4: take(ebpf, names::CONNTRACK_V4)?,
            conntrack_v6: take(ebpf, names::CONNTRACK)?,
            revision: take(ebpf, names::REVISION)?,
            rule_counters: take(ebpf, names::RULE_COUNTERS)?,
            stats: take(ebpf, names::STATS)?,
            events: Some(take(ebpf, names::EVENTS)?),
            capacities,
        })
    }

    /// The policy revision in the kernel.
    pub fn revision(&self) -> Result<Revision, Error> {
        self.revision
            .get(&REVISION_INDEX, 0)
            .map_err(|e| Error::map(names::REVISION, e))
    }

    /// Sets the policy revision (the last write of every plan change).
    fn set_revision(&mut self, revision: Revision) -> Result<(), Error> {
        self.revision
            .set(REVISION_INDEX, revision, 0)
            .map_err(|e| Error::map(names::REVISION, e))
    }

    /// Packets and bytes a rule allowed, summed over CPUs.
    pub fn rule_counter(&self, rule: RuleId) -> Result<RuleCounter, Error> {
        let per_cpu = self
            .rule_counters
            .get(&rule.0, 0)
            .map_err(|e| Error::map(names::RULE_COUNTERS, e))?;
        Ok(per_cpu
            .iter()
            .fold(RuleCounter::default(), |acc, c| RuleCounter {
                packets: acc.packets + c.packets,
                bytes: acc.bytes + c.bytes,
            }))
    }

    /// A `STATS` slot summed over CPUs.
    pub fn stat(&self, stat: StatIndex, direction: Direction) -> Result<StatCounter, Error> {
        let per_cpu = self
            .stats
            .get(&stat.index(direction), 0)
            .map_err(|e| Error::map(names::STATS, e))?;
        Ok(per_cpu
            .iter()
            .fold(StatCounter::default(), |acc, c| StatCounter {
                packets: acc.packets + c.packets,
                bytes: acc.bytes + c.bytes,
            }))
    }

    /// Every endpoint entry in the kernel.
    fn read_endpoints(&self) -> Result<Vec<(IfIndex, EndpointInfo)>, Error> {
        self.endpoints
            .iter()
            .collect::<Result<_, _>>()
            .map_err(|e| Error::map(names::ENDPOINTS, e))
    }

    /// Every ipcache entry in the kernel, as (prefix length, address, value).
    fn read_ipcache(&self) -> Result<Vec<(u32, Addr16, IpcacheValue)>, Error> {
        self.ipcache
            .iter()
            .map(|r| r.map(|(k, v)| (k.prefix_len(), k.data(), v)))
            .collect::<Result<_, _>>()
            .map_err(|e| Error::map(names::IPCACHE, e))
    }

    /// Every policy entry in the kernel, as (prefix length, key, value).
    fn read_policy(&self) -> Result<Vec<(u32, PolicyKey, PolicyValue)>, Error> {
        self.policy
            .iter()
            .map(|r| r.map(|(k, v)| (k.prefix_len(), k.data(), v)))
            .collect::<Result<_, _>>()
            .map_err(|e| Error::map(names::POLICY, e))
    }

    /// Every allowed source prefix in the kernel, as (prefix length, key).
    fn read_source_prefixes(&self) -> Result<Vec<(u32, SourcePrefixKey)>, Error> {
        self.source_prefixes
            .iter()
            .map(|r| r.map(|(k, _)| (k.prefix_len(), k.data())))
            .collect::<Result<_, _>>()
            .map_err(|e| Error::map(names::SOURCE_PREFIXES, e))
    }

    /// Writes an allowed source prefix.
    fn put_source_prefix(
        &mut self,
        prefix_len: PrefixLen,
        key: SourcePrefixKey,
    ) -> Result<(), Error> {
        self.source_prefixes
            .insert(
                &Key::new(prefix_len.0, key),
                SourcePrefixValue::default(),
                0,
            )
            .map_err(|e| Error::map(names::SOURCE_PREFIXES, e))
    }

    /// Removes an allowed source prefix (absent is fine).
    fn delete_source_prefix(
        &mut self,
        prefix_len: PrefixLen,
        key: SourcePrefixKey,
    ) -> Result<(), Error> {
        ignore_missing(self.source_prefixes.remove(&Key::new(prefix_len.0, key)))
            .map_err(|e| Error::map(names::SOURCE_PREFIXES, e))
    }

    /// Writes an endpoint entry.
    fn put_endpoint(&mut self, ifindex: IfIndex, info: EndpointInfo) -> Result<(), Error> {
        self.endpoints
            .insert(ifindex, info, 0)
            .map_err(|e| Error::map(names::ENDPOINTS, e))
    }

    /// Removes an endpoint entry (absent is fine).
    fn delete_endpoint(&mut self, ifindex: IfIndex) -> Result<(), Error> {
        ignore_missing(self.endpoints.remove(&ifindex)).map_err(|e| Error::map(names::ENDPOINTS, e))
    }

    /// Writes an ipcache entry.
    fn put_ipcache(
        &mut self,
        prefix_len: PrefixLen,
        addr: Addr16,
        value: IpcacheValue,
    ) -> Result<(), Error> {
        self.ipcache
            .insert(&Key::new(prefix_len.0, addr), value, 0)
            .map_err(|e| Error::map(names::IPCACHE, e))
    }

    /// Removes an ipcache entry (absent is fine).
    fn delete_ipcache(&mut self, prefix_len: PrefixLen, addr: Addr16) -> Result<(), Error> {
        ignore_missing(self.ipcache.remove(&Key::new(prefix_len.0, addr)))
            .map_err(|e| Error::map(names::IPCACHE, e))
    }

    /// Writes a policy entry.
    fn put_policy(
        &mut self,
        prefix_len: PrefixLen,
        key: PolicyKey,
        value: PolicyValue,
    ) -> Result<(), Error> {
        self.policy
            .insert(&Key::new(prefix_len.0, key), value, 0)
            .map_err(|e| Error::map(names::POLICY, e))
    }

    /// Removes a policy entry (absent is fine).
    fn delete_policy(&mut self, prefix_len: PrefixLen, key: PolicyKey) -> Result<(), Error> {
        ignore_missing(self.policy.remove(&Key::new(prefix_len.0, key)))
            .map_err(|e| Error::map(names::POLICY, e))
    }

    /// What the maps the agent writes hold now, and the revision: the state a
    /// restarted agent adopts.
    pub fn read_state(&self) -> Result<(KernelState, Revision), Error> {
        let mut state = KernelState::default();
        state.endpoints.extend(
            self.read_endpoints()?
                .into_iter()
                .map(|(IfIndex(i), e)| (i, e)),
        );
        state.ipcache.extend(
            self.read_ipcache()?
                .into_iter()
                .map(|(l, a, v)| ((l, a), v)),
        );
        state
            .policy
            .extend(self.read_policy()?.into_iter().map(|(l, k, v)| ((l, k), v)));
        state
            .source_prefixes
            .extend(self.read_source_prefixes()?.into_iter().map(|k| (k, ())));
        Ok((state, self.revision()?))
    }

    /// Copies the IPv4 flows that a build from before the split by family
    /// tracked in `CONNTRACK` (v4-mapped keys) into `CONNTRACK_V4`, so their
    /// replies keep passing across the upgrade. Flows already there are left
    /// alone (the new programs' entries are newer). The originals stay: the
    /// old programs keep using them until the new ones are attached, and LRU
    /// eviction reclaims them later. Returns how many were copied.
    pub fn copy_legacy_v4_conntrack(&mut self) -> Result<usize, Error> {
        // Bounded: a walk over an LRU map that evicts under it may restart.
        let legacy: Vec<(CtKeyV4, CtValue)> = self
            .conntrack_v6
            .iter()
            .take(self.capacities.conntrack_v6 as usize)
            .filter_map(Result::ok)
            .filter_map(|(key, value)| Some((key.to_v4()?, value)))
            .collect();
        let mut copied = 0;
        for (key, value) in &legacy {
            match self.conntrack_v4.insert(key, value, BPF_NOEXIST) {
                Ok(()) => copied += 1,
                Err(MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(Error::map(names::CONNTRACK_V4, e)),
            }
        }
        Ok(copied)
    }

    /// Number of conntrack entries, both families (walks the maps; for
    /// metrics and tests).
    pub fn conntrack_len(&self) -> usize {
        self.conntrack_v4.keys().filter(Result::is_ok).count()
            + self.conntrack_v6.keys().filter(Result::is_ok).count()
    }
}

fn ignore_missing(r: Result<(), aya::maps::MapError>) -> Result<(), aya::maps::MapError> {
    match r {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// Decodes one `EVENTS` record; `None` when the size does not match.
pub fn decode_event(bytes: &[u8]) -> Option<palisade_common::event::FlowEvent> {
    if bytes.len() != std::mem::size_of::<palisade_common::event::FlowEvent>() {
        return None;
    }
    // SAFETY: the length matches, `FlowEvent` is `#[repr(C)]` plain data for
    // which every bit pattern is valid, and the read is unaligned-safe.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) })
}

impl Maps {
    /// Drains the flow events currently in the ring buffer (tests and `flows`).
    pub fn drain_events(&mut self) -> Vec<palisade_common::event::FlowEvent> {
        let Some(ring) = self.events.as_mut() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        while let Some(item) = ring.next() {
            if let Some(event) = decode_event(&item) {
                out.push(event);
            }
        }
        out
    }
}

/// The kernel has no batch command for this map or run (then each op is
/// written alone).
struct Unbatched;

impl Maps {
    /// Writes a run of ops of one kind in one syscall: how many ops it got
    /// through (an absent key a delete skips counts as done) and why it
    /// stopped, if it did.
    fn write_batch(&mut self, run: &[MapOp]) -> Result<(usize, Result<(), WriteError>), Unbatched> {
        let run = &run[..run.len().min(batch::MAX_BATCH)];
        let (name, deleting, done) = match run.first() {
            Some(MapOp::PutPolicy(..)) => {
                let (keys, values): (Vec<_>, Vec<_>) = run
                    .iter()
                    .filter_map(|op| match *op {
                        MapOp::PutPolicy(l, k, v) => Some((Key::new(l.0, k), v)),
                        _ => None,
                    })
                    .unzip();
                (
                    names::POLICY,
                    false,
                    batch::update(self.policy.map(), &keys, &values),
                )
            }
            Some(MapOp::DeletePolicy(..)) => {
                let keys: Vec<_> = run
                    .iter()
                    .filter_map(|op| match *op {
                        MapOp::DeletePolicy(l, k) => Some(Key::new(l.0, k)),
                        _ => None,
                    })
                    .collect();
                (names::POLICY, true, batch::delete(self.policy.map(), &keys))
            }
            Some(MapOp::PutIpcache(..)) => {
                let (keys, values): (Vec<_>, Vec<_>) = run
                    .iter()
                    .filter_map(|op| match *op {
                        MapOp::PutIpcache(l, a, v) => Some((Key::new(l.0, a), v)),
                        _ => None,
                    })
                    .unzip();
                (
                    names::IPCACHE,
                    false,
                    batch::update(self.ipcache.map(), &keys, &values),
                )
            }
            Some(MapOp::DeleteIpcache(..)) => {
                let keys: Vec<_> = run
                    .iter()
                    .filter_map(|op| match *op {
                        MapOp::DeleteIpcache(l, a) => Some(Key::new(l.0, a)),
                        _ => None,
                    })
                    .collect();
                (
                    names::IPCACHE,
                    true,
                    batch::delete(self.ipcache.map(), &keys),
                )
            }
            _ => return Err(Unbatched),
        };
        let Some(error) = done.error else {
            return Ok((done.landed, Ok(())));
        };
        let errno = error.raw_os_error();
        // ENOTSUPP (524), the kernel's own: a map type without the command.
        if done.landed == 0 && matches!(errno, Some(libc::EINVAL | libc::EOPNOTSUPP | 524)) {
            return Err(Unbatched);
        }
        if deleting && errno == Some(libc::ENOENT) {
            return Ok((done.landed + 1, Ok(())));
        }
        let call = if deleting {
            "bpf_map_delete_batch"
        } else {
            "bpf_map_update_batch"
        };
        let source = MapError::SyscallError(SyscallError {
            call,
            io_error: error,
        });
        Ok((
            done.landed,
            Err(Error::map(name, source).into_write_error()),
        ))
    }
}

/// How many ops from the first are of its kind.
fn run_length(ops: &[MapOp]) -> usize {
    let Some(first) = ops.first() else {
        return 0;
    };
    let kind = std::mem::discriminant(first);
    ops.iter()
        .take_while(|op| std::mem::discriminant(*op) == kind)
        .count()
}

impl MapWriter for Maps {
    fn write_all(&mut self, ops: &[MapOp]) -> (usize, Result<(), WriteError>) {
        let mut landed = 0;
        while landed < ops.len() {
            let run = &ops[landed..landed + run_length(&ops[landed..])];
            let batched = if run.len() > 1 {
                self.write_batch(run)
            } else {
                Err(Unbatched)
            };
            let (done, result) = match batched {
                Ok(outcome) => outcome,
                Err(Unbatched) => write_each(self, run),
            };
            landed += done;
            if let Err(e) = result {
                return (landed, Err(e));
            }
        }
        (landed, Ok(()))
    }

    fn write(&mut self, op: &MapOp) -> Result<(), WriteError> {
        match *op {
            MapOp::PutEndpoint(i, e) => self.put_endpoint(i, e),
            MapOp::DeleteEndpoint(i) => self.delete_endpoint(i),
            MapOp::PutIpcache(l, a, v) => self.put_ipcache(l, a, v),
            MapOp::DeleteIpcache(l, a) => self.delete_ipcache(l, a),
            MapOp::PutPolicy(l, k, v) => self.put_policy(l, k, v),
            MapOp::DeletePolicy(l, k) => self.delete_policy(l, k),
            MapOp::PutSourcePrefix(l, k) => self.put_source_prefix(l, k),
            MapOp::DeleteSourcePrefix(l, k) => self.delete_source_prefix(l, k),
            MapOp::BumpRevision => return Ok(()),
        }
        .map_err(Error::into_write_error)
    }

    fn set_revision(&mut self, revision: Revision) -> Result<(), WriteError> {
        Maps::set_revision(self, revision).map_err(Error::into_write_error)
    }
}
