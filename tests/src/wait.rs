//! Polling until a condition holds, with a deadline: [`Poll`] (sync and
//! async) and its shorthands [`wait_until`] / [`try_wait_until`].

use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

/// Pause between two polls unless [`Poll::every`] says otherwise.
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

/// A wait for something: what it is, its deadline (set when the `Poll` is
/// made, so several waits can share one) and how often to look.
///
/// ```
/// use std::time::Duration;
/// use palisade_tests::wait::Poll;
///
/// let mut calls = 0;
/// let found = Poll::new("the third call", Duration::from_secs(1))
///     .until(|| { calls += 1; calls }, |&n| n == 3)
///     .unwrap();
/// assert_eq!(found, 3);
/// ```
#[derive(Clone, Debug)]
pub struct Poll {
    what: String,
    started: Instant,
    deadline: Instant,
    every: Duration,
}

impl Poll {
    /// Waiting for `what` for at most `timeout` (scaled, see [`scaled`]),
    /// looking every 20 ms.
    pub fn new(what: impl Into<String>, timeout: Duration) -> Poll {
        let started = Instant::now();
        Poll {
            what: what.into(),
            started,
            deadline: started + scaled(timeout),
            every: POLL_EVERY,
        }
    }

    /// Looks every `every` instead (the last pause is cut short at the deadline).
    pub fn every(mut self, every: Duration) -> Poll {
        self.every = every;
        self
    }

    /// Calls `observe` until `accept` holds for what it returned, and returns
    /// that value. `observe` runs at least once, and once more at the
    /// deadline; after that, the error holds the last value observed.
    pub fn until<T>(
        &self,
        mut observe: impl FnMut() -> T,
        mut accept: impl FnMut(&T) -> bool,
    ) -> Result<T, TimedOut<T>> {
        loop {
            let value = observe();
            match self.next_pause(value, &mut accept) {
                Next::Done(result) => return result,
                Next::Pause(pause) => std::thread::sleep(pause),
            }
        }
    }

    /// [`Poll::until`] for an async `observe`; pauses on tokio's timer.
    pub async fn until_async<T, F: Future<Output = T>>(
        &self,
        mut observe: impl FnMut() -> F,
        mut accept: impl FnMut(&T) -> bool,
    ) -> Result<T, TimedOut<T>> {
        loop {
            let value = observe().await;
            match self.next_pause(value, &mut accept) {
                Next::Done(result) => return result,
                Next::Pause(pause) => tokio::time::sleep(pause).await,
            }
        }
    }

    /// After one observation: done (accepted or out of time), or how long
    /// to pause before the next.
    fn next_pause<T>(&self, value: T, accept: &mut impl FnMut(&T) -> bool) -> Next<T> {
        if accept(&value) {
            return Next::Done(Ok(value));
        }
        let now = Instant::now();
        if now >= self.deadline {
            return Next::Done(Err(TimedOut {
                what: self.what.clone(),
                waited: now - self.started,
                last: value,
            }));
        }
        Next::Pause(self.every.min(self.deadline - now))
    }
}

enum Next<T> {
    Done(Result<T, TimedOut<T>>),
    Pause(Duration),
}

/// A [`Poll`] ran out of time: what it waited for, how long, and what it
/// saw last. Its `Debug` is its message, so `.unwrap()` reads well.
#[derive(thiserror::Error)]
#[error("timed out after {waited:?} waiting for {what}; last observed: {last:#?}")]
pub struct TimedOut<T> {
    pub what: String,
    pub waited: Duration,
    pub last: T,
}

impl<T: fmt::Debug> fmt::Debug for TimedOut<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Calls `probe` until it returns `true`; returns whether it did before
/// `timeout` (scaled, see [`scaled`]) passed. `probe` is always called at
/// least once.
pub fn try_wait_until(timeout: Duration, probe: impl FnMut() -> bool) -> bool {
    Poll::new("", timeout).until(probe, |&done| done).is_ok()
}

/// Calls `probe` until it returns `true`, polling every 20 ms; panics
/// (at the caller's location) naming `what` if `timeout` passes first.
#[track_caller]
pub fn wait_until(timeout: Duration, what: &str, probe: impl FnMut() -> bool) {
    if !try_wait_until(timeout, probe) {
        panic!("timed out after {timeout:?} waiting for {what}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_returns_the_first_accepted_value() {
        let mut calls = 0;
        let found = Poll::new("the third call", Duration::from_secs(1))
            .every(Duration::from_millis(1))
            .until(
                || {
                    calls += 1;
                    calls
                },
                |&n| n >= 3,
            );
        assert_eq!(found.unwrap(), 3);
    }

    #[test]
    fn until_times_out_naming_what_and_the_last_value() {
        let mut calls = 0;
        let started = Instant::now();
        let timed_out = Poll::new("the impossible", Duration::from_millis(50))
            .until(
                || {
                    calls += 1;
                    calls
                },
                |_| false,
            )
            .unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert_eq!(timed_out.last, calls);
        assert!(calls >= 2, "looked more than once ({calls})");
        let message = timed_out.to_string();
        assert!(message.contains("waiting for the impossible"), "{message}");
        assert!(
            message.ends_with(&format!("last observed: {calls}")),
            "{message}"
        );
    }

    #[test]
    fn a_shared_poll_keeps_one_deadline() {
        let poll = Poll::new("both", Duration::from_millis(60));
        assert!(poll.until(|| (), |_| false).is_err());
        let started = Instant::now();
        assert!(poll.until(|| (), |_| false).is_err());
        assert!(
            started.elapsed() < Duration::from_millis(30),
            "the second wait started a new deadline"
        );
    }

    #[tokio::test]
    async fn until_async_awaits_each_observation() {
        let mut calls = 0;
        let poll = Poll::new("the third call", Duration::from_secs(1));
        let found = poll
            .until_async(
                || {
                    calls += 1;
                    let n = calls;
                    async move {
                        tokio::task::yield_now().await;
                        n
                    }
                },
                |&n| n >= 3,
            )
            .await;
        assert_eq!(found.unwrap(), 3);
        let timed_out = Poll::new("never", Duration::from_millis(30))
            .until_async(|| async { "no" }, |_| false)
            .await
            .unwrap_err();
        assert_eq!(timed_out.last, "no");
    }
}
