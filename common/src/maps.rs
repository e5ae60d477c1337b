//! Map names and default capacities.
//!
//! The eBPF statics are named exactly like these constants, so the agent opens a
//! map by the same name the kernel program declares it with.

/// Local endpoints by host-side interface index ([`crate::endpoint`]).
pub const ENDPOINTS: &str = "ENDPOINTS";
/// Remote address (LPM) to identity ([`crate::ipcache`]).
pub const IPCACHE: &str = "IPCACHE";
/// Allow rules (LPM) keyed by endpoint, identity, direction, protocol, port ([`crate::policy`]).
pub const POLICY: &str = "POLICY";
/// Connection tracking of IPv4 flows (LRU hash on the endpoint-relative
/// 5-tuple, compact key) ([`crate::conntrack::CtKeyV4`]).
pub const CONNTRACK_V4: &str = "CONNTRACK_V4";
/// Connection tracking of IPv6 flows ([`crate::conntrack::CtKeyV6`]). The name
/// predates the split by family: keeping it lets an upgraded agent adopt the
/// pinned map (see `datapath::load` in the agent).
pub const CONNTRACK: &str = "CONNTRACK";
/// Verdicts of first IP fragments, consulted by later fragments ([`crate::fragment`]).
pub const FRAGMENTS: &str = "FRAGMENTS";
/// Extra source prefixes of pods allowed to send from them ([`crate::source`]).
pub const SOURCE_PREFIXES: &str = "SOURCE_PREFIXES";
/// Program array holding `pod_egress_control` at [`CONTROL_PROGRAM_INDEX`]:
/// where `palisade_egress` hands ARP and neighbour discovery over (a tail call).
pub const CONTROL: &str = "CONTROL";
/// The slot of `pod_egress_control` in [`CONTROL`].
pub const CONTROL_PROGRAM_INDEX: u32 = 0;
/// Single-slot array holding the current policy revision ([`crate::stats::REVISION_INDEX`]).
pub const REVISION: &str = "REVISION";
/// Per-CPU packet/byte counters per rule id ([`crate::stats::RuleCounter`]).
pub const RULE_COUNTERS: &str = "RULE_COUNTERS";
/// Per-CPU counters per direction and outcome ([`crate::stats::StatIndex`]).
pub const STATS: &str = "STATS";
/// Ring buffer of denied and audited flows ([`crate::event::FlowEvent`]).
pub const EVENTS: &str = "EVENTS";
/// Per-CPU token bucket that rate-limits [`EVENTS`] in the kernel.
pub const EVENT_RATE: &str = "EVENT_RATE";

/// The programs' time base: jiffies anchored to the coarse clock ([`crate::clock`]).
pub const CLOCK: &str = "CLOCK";

/// Every map the programs declare, for pinning, inspection and cleanup.
pub const ALL: [&str; 14] = [
    ENDPOINTS,
    IPCACHE,
    POLICY,
    CONNTRACK_V4,
    CONNTRACK,
    FRAGMENTS,
    SOURCE_PREFIXES,
    CONTROL,
    REVISION,
    RULE_COUNTERS,
    STATS,
    EVENTS,
    EVENT_RATE,
    CLOCK,
];

/// Default capacity of [`ENDPOINTS`] (local pods on one node).
pub const DEFAULT_ENDPOINTS_MAX: u32 = 4096;
/// Default capacity of [`IPCACHE`].
pub const DEFAULT_IPCACHE_MAX: u32 = 262_144;
/// Default capacity of [`POLICY`].
pub const DEFAULT_POLICY_MAX: u32 = 262_144;
/// Default capacity of [`CONNTRACK_V4`] and of [`CONNTRACK`] (each).
pub const DEFAULT_CONNTRACK_MAX: u32 = 262_144;
/// Default capacity of [`SOURCE_PREFIXES`].
pub const DEFAULT_SOURCE_PREFIXES_MAX: u32 = 4096;
/// Default capacity of [`FRAGMENTS`].
pub const DEFAULT_FRAGMENTS_MAX: u32 = 8192;
/// Capacity of [`RULE_COUNTERS`]: rule ids are allocated below this.
pub const DEFAULT_RULES_MAX: u32 = 65_536;
/// Byte size of [`EVENTS`] (a power of two, multiple of the page size).
pub const EVENTS_BYTES: u32 = 1 << 20;
/// Events per second each CPU may emit before the kernel drops (and counts) the rest.
pub const EVENTS_PER_SEC_PER_CPU: u64 = 1000;
/// Burst size of the per-CPU event token bucket.
pub const EVENTS_BURST: u64 = 200;
