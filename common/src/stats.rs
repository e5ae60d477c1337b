//! Counters: `RULE_COUNTERS` (per rule id) and `STATS` (per direction and
//! outcome), both per-CPU arrays summed by the agent at scrape time; and the
//! single-slot `REVISION` array.

use crate::verdict::{Direction, DropReason};

/// Index of the only slot of `REVISION`.
pub const REVISION_INDEX: u32 = 0;

/// Value of `RULE_COUNTERS` (index = rule id).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleCounter {
    /// Packets the rule allowed.
    pub packets: u64,
    /// Bytes (L2 length) the rule allowed.
    pub bytes: u64,
}

const _: () = assert!(core::mem::size_of::<RuleCounter>() == 16);

/// Value of `STATS`: a packet count per slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatCounter {
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

const _: () = assert!(core::mem::size_of::<StatCounter>() == 16);

/// What a `STATS` slot counts. Slot index = `direction * SLOTS_PER_DIRECTION + slot`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatIndex {
    /// Packets passed (any reason).
    Forwarded,
    /// Packets dropped for a reason.
    Dropped(DropReason),
    /// Packets that would have been dropped for a reason but passed under audit.
    Audited(DropReason),
    /// Events not emitted: rate limit or full ring buffer.
    EventsLost,
    /// Conntrack inserts that failed.
    CtInsertFailed,
}

/// Slots per outcome kind: drop reasons start at 1, so this holds reasons
/// 1..=7. Growing it changes `STATS`'s size, which a pinned map of an older
/// build cannot follow: add reasons within it.
const REASON_SLOTS: u32 = 8;

const _: () = assert!((crate::verdict::DropReason::ALL.len() as u32) < REASON_SLOTS);
/// `STATS` slots per direction.
pub const SLOTS_PER_DIRECTION: u32 = 3 + 2 * REASON_SLOTS;
/// Capacity of `STATS`.
pub const STATS_SLOTS: u32 = 2 * SLOTS_PER_DIRECTION;

impl StatIndex {
    /// The array index of this slot for a direction.
    #[inline(always)]
    pub const fn index(self, direction: Direction) -> u32 {
        let slot = match self {
            StatIndex::Forwarded => 0,
            StatIndex::EventsLost => 1,
            StatIndex::CtInsertFailed => 2,
            StatIndex::Dropped(r) => 3 + r as u32,
            StatIndex::Audited(r) => 3 + REASON_SLOTS + r as u32,
        };
        direction as u32 * SLOTS_PER_DIRECTION + slot
    }
}

/// Value of `EVENT_RATE`: one token bucket per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventBucket {
    /// Time of the last refill, `bpf_ktime_get_ns`.
    pub last_ns: u64,
    /// Tokens available.
    pub tokens: u64,
}

const _: () = assert!(core::mem::size_of::<EventBucket>() == 16);

crate::user_pod!(RuleCounter, StatCounter, EventBucket);
