//! `CLOCK`: the programs' time base without a helper call per packet.
//!
//! Conntrack and fragment timestamps are CLOCK_MONOTONIC_COARSE nanoseconds.
//! `bpf_ktime_get_coarse_ns` is a helper call (~14 ns on the reference
//! machine, most of it the call and its return thunk); `bpf_jiffies64` is
//! inlined by the verifier into one load of `jiffies` (~1 ns), and the coarse
//! clock advances by one tick per jiffy. So the programs derive the coarse
//! clock from jiffies: `ns = jiffies * tick_ns + offset_ns` (wrapping), where
//! `tick_ns` is the jiffy length (`clock_getres(CLOCK_MONOTONIC_COARSE)`) and
//! `offset_ns` anchors jiffies to the coarse clock at one instant. The result
//! stays in the coarse clock's units and origin, so entries written by a build
//! that called the helper keep their age across an upgrade (and back).
//!
//! Only the `clock_anchor` program writes the value, with one 8-byte store per
//! field (`tick_ns` first, set once, never changed; then `offset_ns`), so no
//! reader ever sees a torn field. Readers use the value only when both fields
//! are non-zero, and call the helper otherwise (a fresh map before the agent
//! anchored it): never a wrong time, at worst the slower call.
//!
//! Drift: jiffies count ticks, the coarse clock follows NTP, so the derived
//! clock drifts from the real one by the NTP frequency correction (at most
//! 500 ppm). Each agent start re-anchors, so the gap is bounded by that much of
//! the agent's uptime; a re-anchor moves the derived clock by that gap at once.
//! Timeouts are seconds to hours and expiry treats a timestamp ahead of the
//! clock as fresh, so neither matters for enforcement.

/// Value of `CLOCK` (one slot, [`CLOCK_INDEX`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockBase {
    /// Length of a jiffy in ns; 0 until anchored.
    pub tick_ns: u64,
    /// `coarse_ns - jiffies * tick_ns` at the anchor (wrapping); 0 until anchored.
    pub offset_ns: u64,
}

const _: () = assert!(core::mem::size_of::<ClockBase>() == 16);

/// The slot of `CLOCK`.
pub const CLOCK_INDEX: u32 = 0;

/// Shortest jiffy `clock_anchor` accepts (HZ 10,000).
pub const TICK_NS_MIN: u64 = 100_000;
/// Longest jiffy `clock_anchor` accepts (HZ 10).
pub const TICK_NS_MAX: u64 = 100_000_000;

/// The frame `clock_anchor` is run on: an Ethernet header's worth of zeroes,
/// then the tick in ns as a native-endian `u64`.
pub const ANCHOR_FRAME_LEN: usize = 14 + 8;
/// Where the tick sits in the anchor frame.
pub const ANCHOR_TICK_AT: usize = 14;

/// `clock_anchor` anchored the clock with the tick it was given.
pub const ANCHOR_OK: i32 = 0;
/// `clock_anchor` anchored the clock with the tick already in the map, which
/// differs from the one it was given.
pub const ANCHOR_KEPT_TICK: i32 = 1;
/// `clock_anchor` refused: a tick out of range or no map slot.
pub const ANCHOR_REFUSED: i32 = 2;

impl ClockBase {
    /// The offset that anchors `jiffies` to the coarse clock reading `ns`.
    #[inline(always)]
    pub const fn offset(tick_ns: u64, jiffies: u64, ns: u64) -> u64 {
        ns.wrapping_sub(jiffies.wrapping_mul(tick_ns))
    }

    /// The coarse clock at `jiffies`, once anchored.
    #[inline(always)]
    pub const fn ns(&self, jiffies: u64) -> Option<u64> {
        if self.tick_ns == 0 || self.offset_ns == 0 {
            return None;
        }
        Some(
            jiffies
                .wrapping_mul(self.tick_ns)
                .wrapping_add(self.offset_ns),
        )
    }

    /// The frame that asks `clock_anchor` to anchor with `tick_ns`.
    pub const fn anchor_frame(tick_ns: u64) -> [u8; ANCHOR_FRAME_LEN] {
        let mut frame = [0u8; ANCHOR_FRAME_LEN];
        let tick = tick_ns.to_ne_bytes();
        let mut i = 0;
        while i < 8 {
            frame[ANCHOR_TICK_AT + i] = tick[i];
            i += 1;
        }
        frame
    }
}

crate::user_pod!(ClockBase);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_derived_clock_counts_ticks_from_the_anchor() {
        // jiffies start near 2^32 (INITIAL_JIFFIES), so `jiffies * tick` is far
        // larger than the coarse clock: the offset wraps.
        let (tick, j0, ns0) = (4_000_000, (1u64 << 32) - 75_000 + 1_234, 5_000_000_000);
        let base = ClockBase {
            tick_ns: tick,
            offset_ns: ClockBase::offset(tick, j0, ns0),
        };
        assert_eq!(base.ns(j0), Some(ns0));
        assert_eq!(base.ns(j0 + 250), Some(ns0 + 1_000_000_000));
    }

    #[test]
    fn an_unanchored_clock_gives_no_time() {
        assert_eq!(ClockBase::default().ns(1 << 32), None);
        let half = ClockBase {
            tick_ns: 4_000_000,
            offset_ns: 0,
        };
        assert_eq!(half.ns(1 << 32), None);
    }

    #[test]
    fn the_anchor_frame_carries_the_tick() {
        let frame = ClockBase::anchor_frame(3_333_333);
        assert_eq!(frame[..ANCHOR_TICK_AT], [0u8; ANCHOR_TICK_AT]);
        let tick: [u8; 8] = frame[ANCHOR_TICK_AT..].try_into().expect("8 bytes");
        assert_eq!(u64::from_ne_bytes(tick), 3_333_333);
    }
}
