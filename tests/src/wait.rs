//! Polling until a condition holds, with a deadline.

use std::time::{Duration, Instant};

/// Pause between two polls.
const POLL_EVERY: Duration = Duration::from_millis(20);

/// Environment variable: a factor for every deadline the bed waits on (not
/// for windows in which something must *not* happen). An emulated VM runs
/// the same tests several times slower; `cargo xtask test` sets it there.
pub const TIME_SCALE_ENV: &str = "PALISADE_TEST_TIME_SCALE";

/// `timeout` stretched by [`TIME_SCALE_ENV`] (1 when unset or invalid).
pub fn scaled(timeout: Duration) -> Duration {
    let scale = std::env::var(TIME_SCALE_ENV)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 1.0)
        .unwrap_or(1.0);
    timeout.mul_f64(scale)
}

/// Calls `probe` until it returns `true`; returns whether it did before
/// `timeout` (scaled, see [`scaled`]) passed. `probe` is always called at
/// least once.
pub fn try_wait_until(timeout: Duration, mut probe: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + scaled(timeout);
    loop {
        if probe() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(POLL_EVERY.min(deadline - now));
    }
}

/// Calls `probe` until it returns `true`, polling every 20 ms; panics
/// (at the caller's location) naming `what` if `timeout` passes first.
#[track_caller]
pub fn wait_until(timeout: Duration, what: &str, probe: impl FnMut() -> bool) {
    if !try_wait_until(timeout, probe) {
        panic!("timed out after {timeout:?} waiting for {what}");
    }
}
