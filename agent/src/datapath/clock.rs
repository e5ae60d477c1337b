//! Anchoring the programs' clock at load (`CLOCK`; the scheme is in
//! `palisade_common::clock`): the agent finds the jiffy length, and
//! `clock_anchor`, run once through `BPF_PROG_TEST_RUN`, ties jiffies to the
//! coarse clock. Until that has run the programs call the clock helper, so a
//! failure here costs speed, never correctness.

use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use palisade_common::clock::{ANCHOR_KEPT_TICK, ANCHOR_OK, ClockBase};

use super::error::Error;
use super::object::PROG_CLOCK_ANCHOR;

/// What anchoring did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Anchored {
    /// Anchored with this tick.
    Tick(u64),
    /// Anchored with the tick a previous load set, which differs from this
    /// one's reading (the earlier tick is kept: it never changes under readers).
    KeptEarlierTick(u64),
}

/// The jiffy length in ns: the resolution of CLOCK_MONOTONIC_COARSE.
pub fn coarse_tick_ns() -> std::io::Result<u64> {
    // SAFETY: `res` is a valid, writable timespec.
    let mut res: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut res) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((res.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(res.tv_nsec as u64))
}

/// Anchors the clock now with the object's anchor program (re-anchoring
/// one a previous load anchored).
pub(crate) fn anchor(prog: &SchedClassifier) -> Result<Anchored, Error> {
    let name = PROG_CLOCK_ANCHOR;
    let tick = coarse_tick_ns().map_err(|source| Error::ClockTick { source })?;
    let frame = ClockBase::anchor_frame(tick);
    let outcome = prog
        .test_run(TestRunOptions {
            data_in: Some(&frame),
            repeat: 1,
            ..TestRunOptions::default()
        })
        .map_err(|source| Error::Program {
            name,
            source: Box::new(source),
        })?
        .return_value as i32;
    match outcome {
        ANCHOR_OK => Ok(Anchored::Tick(tick)),
        ANCHOR_KEPT_TICK => Ok(Anchored::KeptEarlierTick(tick)),
        outcome => Err(Error::ClockAnchor { tick, outcome }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_common::clock::{TICK_NS_MAX, TICK_NS_MIN};

    #[test]
    fn the_coarse_clock_ticks_in_a_range_the_anchor_accepts() {
        let tick = coarse_tick_ns().expect("clock_getres");
        assert!((TICK_NS_MIN..=TICK_NS_MAX).contains(&tick), "{tick}");
    }
}
