//! Kernel timestamps to wall time, and wall time as text.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jiff::Timestamp;

use crate::datapath::monotonic_ns;

/// Converts the kernel's `bpf_ktime_get_ns` (CLOCK_MONOTONIC) to wall time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    wall: SystemTime,
    monotonic_ns: u64,
}

impl Clock {
    /// The clocks now.
    pub fn now() -> Clock {
        Clock {
            wall: SystemTime::now(),
            monotonic_ns: monotonic_ns(),
        }
    }

    /// A fixed pair, for tests.
    pub fn at(wall: SystemTime, monotonic_ns: u64) -> Clock {
        Clock { wall, monotonic_ns }
    }

    /// The wall time of a monotonic timestamp.
    pub fn wall_time(&self, monotonic_ns: u64) -> SystemTime {
        if monotonic_ns <= self.monotonic_ns {
            self.wall - Duration::from_nanos(self.monotonic_ns - monotonic_ns)
        } else {
            self.wall + Duration::from_nanos(monotonic_ns - self.monotonic_ns)
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (milliseconds truncated). Times before the
/// epoch read as the epoch, times past year 9999 as its last instant.
pub fn rfc3339(t: SystemTime) -> String {
    let timestamp = Timestamp::try_from(t.max(UNIX_EPOCH)).unwrap_or(Timestamp::MAX);
    format!("{timestamp:.3}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_is_utc_with_milliseconds() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(951_782_400_123); // 2000-02-29
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.123Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_767_225_599); // last second of 2025
        assert_eq!(rfc3339(t), "2025-12-31T23:59:59.000Z");
        let t = UNIX_EPOCH + Duration::from_nanos(1_999_999_999);
        assert_eq!(
            rfc3339(t),
            "1970-01-01T00:00:01.999Z",
            "truncated, not rounded"
        );
        let t = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(rfc3339(t), "1970-01-01T00:00:00.000Z", "before the epoch");
    }
}
