//! Polling until a condition holds, with a deadline.

use std::time::{Duration, Instant};

/// Pause between two polls.
const POLL_EVERY: Duration = Duration::from_millis(20);

/// Calls `probe` until it returns `true`; returns whether it did before
/// `timeout` passed. `probe` is always called at least once.
pub fn try_wait_until(timeout: Duration, mut probe: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
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
