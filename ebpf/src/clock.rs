//! `CLOCK`: the coarse monotonic clock from jiffies (see
//! `palisade_common::clock` for the arithmetic, the write order and drift).

use aya_ebpf::{
    helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns},
    macros::map,
    maps::Array,
    programs::TcContext,
};
use palisade_common::clock::{
    ANCHOR_FRAME_LEN, ANCHOR_KEPT_TICK, ANCHOR_OK, ANCHOR_REFUSED, ANCHOR_TICK_AT, CLOCK_INDEX,
    ClockBase, TICK_NS_MAX, TICK_NS_MIN,
};

#[map]
static CLOCK: Array<ClockBase> = Array::pinned(1, 0);

/// CLOCK_MONOTONIC_COARSE in ns: derived from jiffies once the agent anchored
/// the clock, from the helper before.
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: a plain helper call without arguments (the verifier inlines it
    // into a load of `jiffies`).
    let jiffies = unsafe { bpf_jiffies64() };
    if let Some(base) = CLOCK.get_ptr(CLOCK_INDEX) {
        // SAFETY: `base` points into the array's value, valid for the
        // program's run; each field is read with one aligned 8-byte load.
        let base = unsafe { core::ptr::read_volatile(base) };
        if let Some(ns) = base.ns(jiffies) {
            return ns;
        }
    }
    // SAFETY: a plain helper call without arguments.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// `clock_anchor`: anchors jiffies to the coarse clock now, with the tick the
/// frame carries (or the one already set). Run by the agent through
/// `BPF_PROG_TEST_RUN` at every load; never attached.
#[inline(always)]
pub fn anchor(ctx: &TcContext) -> i32 {
    let data = ctx.data();
    if data + ANCHOR_FRAME_LEN > ctx.data_end() {
        return ANCHOR_REFUSED;
    }
    // SAFETY: inside the frame, checked just above; an unaligned read.
    let given = unsafe { core::ptr::read_unaligned((data + ANCHOR_TICK_AT) as *const u64) };
    if !(TICK_NS_MIN..=TICK_NS_MAX).contains(&given) {
        return ANCHOR_REFUSED;
    }
    let Some(base) = CLOCK.get_ptr_mut(CLOCK_INDEX) else {
        return ANCHOR_REFUSED;
    };
    // SAFETY: `base` points into the array's value; every access is one
    // aligned 8-byte load or store, so readers on other CPUs never see a
    // torn field.
    unsafe {
        let set = core::ptr::read_volatile(&(*base).tick_ns);
        let (tick, outcome) = if set == 0 {
            core::ptr::write_volatile(&mut (*base).tick_ns, given);
            (given, ANCHOR_OK)
        } else if set == given {
            (set, ANCHOR_OK)
        } else {
            (set, ANCHOR_KEPT_TICK)
        };
        let jiffies = bpf_jiffies64();
        let ns = bpf_ktime_get_coarse_ns();
        core::ptr::write_volatile(&mut (*base).offset_ns, ClockBase::offset(tick, jiffies, ns));
        outcome
    }
}
