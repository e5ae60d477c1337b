//! Counters and the current policy revision.

use aya_ebpf::{
    macros::map,
    maps::{Array, PerCpuArray},
};
use palisade_common::{
    ids::{Revision, RuleId},
    maps::DEFAULT_RULES_MAX,
    stats::{REVISION_INDEX, RuleCounter, STATS_SLOTS, StatCounter, StatIndex},
    verdict::Direction,
};

#[map]
static REVISION: Array<Revision> = Array::pinned(1, 0);

#[map]
static RULE_COUNTERS: PerCpuArray<RuleCounter> = PerCpuArray::pinned(DEFAULT_RULES_MAX, 0);

#[map]
static STATS: PerCpuArray<StatCounter> = PerCpuArray::pinned(STATS_SLOTS, 0);

/// The revision of the policy currently in the maps.
#[inline(always)]
pub fn revision() -> Revision {
    match REVISION.get(REVISION_INDEX) {
        Some(r) => *r,
        None => Revision(0),
    }
}

/// Credits a packet to the rule that allowed or denied it.
#[inline(always)]
pub fn count_rule(rule: RuleId, bytes: u32) {
    if let Some(c) = RULE_COUNTERS.get_ptr_mut(rule.0) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes as u64;
        }
    }
}

/// Counts a packet in a direction's outcome slot.
#[inline(always)]
pub fn count(stat: StatIndex, direction: Direction, bytes: u32) {
    if let Some(c) = STATS.get_ptr_mut(stat.index(direction)) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes as u64;
        }
    }
}
