//! Read-only handles on the datapath's pinned maps, opened from their pins
//! (independent of the reconcile loop's handles), for scrape-time reads:
//! per-CPU counters summed over CPUs, and entries/capacity per map. This is
//! how `observe/` reads the kernel: it holds no map handle of its own.

use std::path::Path;

use aya::maps::{HashMap, LpmTrie, Map, MapData, PerCpuArray};
use palisade_common::addr::Addr16;
use palisade_common::conntrack::{CtKeyV4, CtKeyV6, CtValue};
use palisade_common::endpoint::{EndpointInfo, IfIndex};
use palisade_common::fragment::{FragKey, FragValue};
use palisade_common::ipcache::IpcacheValue;
use palisade_common::maps as names;
use palisade_common::policy::{PolicyKey, PolicyValue};
use palisade_common::stats::{RuleCounter, StatCounter, StatIndex};
use palisade_common::verdict::Direction;
use serde::{Deserialize, Serialize};

use super::error::Error;

/// Entries and capacity of one map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapPressure {
    /// Map name (as in `palisade_common::maps`).
    pub map: String,
    /// Entries now.
    pub entries: u64,
    /// Capacity (`max_entries`).
    pub capacity: u64,
}

/// Handles on the pinned maps.
pub struct KernelView {
    rule_counters: PerCpuArray<MapData, RuleCounter>,
    stats: PerCpuArray<MapData, StatCounter>,
    endpoints: HashMap<MapData, IfIndex, EndpointInfo>,
    ipcache: LpmTrie<MapData, Addr16, IpcacheValue>,
    policy: LpmTrie<MapData, PolicyKey, PolicyValue>,
    conntrack_v4: HashMap<MapData, CtKeyV4, CtValue>,
    conntrack_v6: HashMap<MapData, CtKeyV6, CtValue>,
    fragments: HashMap<MapData, FragKey, FragValue>,
    capacities: [(&'static str, u32); 6],
}

impl std::fmt::Debug for KernelView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelView")
            .field("capacities", &self.capacities)
            .finish()
    }
}

fn open<T>(maps_dir: &Path, name: &'static str) -> Result<(T, u32), Error>
where
    T: TryFrom<Map, Error = aya::maps::MapError>,
{
    let data = MapData::from_pin(maps_dir.join(name)).map_err(|e| Error::map(name, e))?;
    let capacity = data
        .info()
        .map(|i| i.max_entries())
        .map_err(|e| Error::map(name, e))?;
    let map = Map::from_map_data(data)
        .and_then(T::try_from)
        .map_err(|e| Error::map(name, e))?;
    Ok((map, capacity))
}

impl KernelView {
    /// Opens every map the metrics read from `maps_dir` (the datapath pins
    /// them on load).
    pub fn open(maps_dir: &Path) -> Result<KernelView, Error> {
        let (rule_counters, _) = open(maps_dir, names::RULE_COUNTERS)?;
        let (stats, _) = open(maps_dir, names::STATS)?;
        let (endpoints, c_ep) = open(maps_dir, names::ENDPOINTS)?;
        let (ipcache, c_ipc) = open(maps_dir, names::IPCACHE)?;
        let (policy, c_pol) = open(maps_dir, names::POLICY)?;
        let (conntrack_v4, c_ct4) = open(maps_dir, names::CONNTRACK_V4)?;
        let (conntrack_v6, c_ct6) = open(maps_dir, names::CONNTRACK)?;
        let (fragments, c_frag) = open(maps_dir, names::FRAGMENTS)?;
        Ok(KernelView {
            rule_counters,
            stats,
            endpoints,
            ipcache,
            policy,
            conntrack_v4,
            conntrack_v6,
            fragments,
            capacities: [
                (names::ENDPOINTS, c_ep),
                (names::IPCACHE, c_ipc),
                (names::POLICY, c_pol),
                (names::CONNTRACK_V4, c_ct4),
                (names::CONNTRACK, c_ct6),
                (names::FRAGMENTS, c_frag),
            ],
        })
    }

    /// A rule's counter summed over CPUs (zero when unreadable).
    pub fn rule(&self, id: u32) -> RuleCounter {
        self.rule_counters
            .get(&id, 0)
            .map(|per_cpu| {
                per_cpu
                    .iter()
                    .fold(RuleCounter::default(), |acc, c| RuleCounter {
                        packets: acc.packets.wrapping_add(c.packets),
                        bytes: acc.bytes.wrapping_add(c.bytes),
                    })
            })
            .unwrap_or_default()
    }

    /// A `STATS` slot summed over CPUs (zero when unreadable).
    pub fn stat(&self, stat: StatIndex, direction: Direction) -> StatCounter {
        self.stats
            .get(&stat.index(direction), 0)
            .map(|per_cpu| {
                per_cpu
                    .iter()
                    .fold(StatCounter::default(), |acc, c| StatCounter {
                        packets: acc.packets.wrapping_add(c.packets),
                        bytes: acc.bytes.wrapping_add(c.bytes),
                    })
            })
            .unwrap_or_default()
    }

    /// Entries and capacity of every capacity-bound map (walks them).
    pub fn pressure(&self) -> Vec<MapPressure> {
        self.capacities
            .iter()
            .map(|&(name, capacity)| {
                let entries = match name {
                    names::ENDPOINTS => count(self.endpoints.keys(), capacity),
                    names::IPCACHE => count(self.ipcache.keys(), capacity),
                    names::POLICY => count(self.policy.keys(), capacity),
                    names::CONNTRACK_V4 => count(self.conntrack_v4.keys(), capacity),
                    names::CONNTRACK => count(self.conntrack_v6.keys(), capacity),
                    _ => count(self.fragments.keys(), capacity),
                };
                MapPressure {
                    map: name.to_string(),
                    entries,
                    capacity: u64::from(capacity),
                }
            })
            .collect()
    }
}

/// Counts keys, bounded by the capacity: a walk over an LRU map that evicts
/// under it may restart from the first key, and must still end.
fn count<K, E>(keys: impl Iterator<Item = Result<K, E>>, capacity: u32) -> u64 {
    keys.take(capacity as usize).filter(Result::is_ok).count() as u64
}
