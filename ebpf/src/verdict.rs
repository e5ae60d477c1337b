//! The one way out: every packet leaves through [`pass`] or [`deny`], which
//! count it and, for denials, emit a rate-limited flow event.

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use palisade_common::{
    addr::Addr16,
    event::FlowEvent,
    ids::{IdentityId, RuleId},
    maps::{EVENTS_BURST, EVENTS_BYTES, EVENTS_PER_SEC_PER_CPU},
    stats::{EventBucket, StatIndex},
    verdict::{Direction, DropReason, TC_ACT_SHOT, TC_ACT_UNSPEC},
};

use crate::{parse::Packet, stats};

#[map]
static EVENTS: RingBuf = RingBuf::pinned(EVENTS_BYTES, 0);

#[map]
static EVENT_RATE: PerCpuArray<EventBucket> = PerCpuArray::pinned(1, 0);

/// What a denial event reports about the packet.
#[derive(Clone, Copy)]
pub struct DenyInfo {
    pub ifindex: u32,
    pub endpoint: u32,
    pub src: Addr16,
    pub dst: Addr16,
    pub protocol: u8,
    pub src_port: u16,
    pub dst_port: u16,
    pub remote_identity: IdentityId,
}

impl DenyInfo {
    /// The report of `packet` at `ifindex`, for endpoint `endpoint` (0 when
    /// unknown), whose remote resolved to `identity`.
    #[inline(always)]
    pub fn new(ifindex: u32, endpoint: u32, packet: &Packet, identity: IdentityId) -> Self {
        DenyInfo {
            ifindex,
            endpoint,
            src: packet.src,
            dst: packet.dst,
            protocol: packet.protocol,
            src_port: packet.src_port,
            dst_port: packet.dst_port,
            remote_identity: identity,
        }
    }
}

/// Lets the packet continue; credits `rule` unless it is [`RuleId::NONE`]
/// (no rule was needed).
#[inline(always)]
pub fn pass(direction: Direction, rule: RuleId, bytes: u32) -> i32 {
    if rule != RuleId::NONE {
        stats::count_rule(rule, bytes);
    }
    stats::count(StatIndex::Forwarded, direction, bytes);
    TC_ACT_UNSPEC
}

/// Denies the packet, or under audit lets it pass; either way counts the reason
/// and reports the flow.
#[inline(always)]
pub fn deny(
    direction: Direction,
    reason: DropReason,
    audit: bool,
    bytes: u32,
    info: &DenyInfo,
) -> i32 {
    if audit {
        stats::count(StatIndex::Audited(reason), direction, bytes);
        stats::count(StatIndex::Forwarded, direction, bytes);
    } else {
        stats::count(StatIndex::Dropped(reason), direction, bytes);
    }
    emit(direction, reason, audit, info);
    if audit { TC_ACT_UNSPEC } else { TC_ACT_SHOT }
}

/// Token bucket per CPU: refills at `EVENTS_PER_SEC_PER_CPU`, holds `EVENTS_BURST`.
#[inline(always)]
fn take_token(now: u64) -> bool {
    let Some(bucket) = EVENT_RATE.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: per-CPU slot, only this CPU touches it while the program runs.
    let b = unsafe { &mut *bucket };
    let elapsed = now.wrapping_sub(b.last_ns);
    let refill = elapsed / (1_000_000_000 / EVENTS_PER_SEC_PER_CPU);
    if refill > 0 {
        let tokens = b.tokens + refill;
        b.tokens = if tokens > EVENTS_BURST {
            EVENTS_BURST
        } else {
            tokens
        };
        b.last_ns = now;
    }
    if b.tokens == 0 {
        return false;
    }
    b.tokens -= 1;
    true
}

#[inline(always)]
fn emit(direction: Direction, reason: DropReason, audit: bool, info: &DenyInfo) {
    // The fine clock here, not the pipeline's coarse one: the token bucket
    // refills per millisecond (a 4 ms jiffy would hand out tokens in bursts)
    // and the flow event keeps a precise timestamp. Only denials pay for it.
    // SAFETY: a plain helper call without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if !take_token(now) {
        stats::count(StatIndex::EventsLost, direction, 0);
        return;
    }
    let Some(mut slot) = EVENTS.reserve::<FlowEvent>(0) else {
        stats::count(StatIndex::EventsLost, direction, 0);
        return;
    };
    slot.write(FlowEvent {
        timestamp_ns: now,
        ifindex: info.ifindex,
        endpoint: info.endpoint,
        reason: reason as u32,
        direction: direction as u8,
        protocol: info.protocol,
        audited: audit as u8,
        _pad: 0,
        src: info.src,
        dst: info.dst,
        src_port: info.src_port,
        dst_port: info.dst_port,
        remote_identity: info.remote_identity.0,
    });
    slot.submit(0);
}
