//! Reading `EVENTS`, the ring buffer of denied and audited packets, and the
//! clock the programs stamp them with.

use aya::maps::{MapData, RingBuf};
use palisade_common::event::FlowEvent;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::maps::decode_event;

/// Waits for flow events and hands them over in batches.
pub struct EventReader {
    ring: AsyncFd<RingBuf<MapData>>,
}

impl EventReader {
    /// Registers the ring buffer (taken from [`super::maps::Maps::events`])
    /// with the tokio reactor.
    pub fn new(ring: RingBuf<MapData>) -> std::io::Result<EventReader> {
        // SAFETY: the ring buffer owns its map fd, which stays open and the
        // same for as long as the `AsyncFd` owns the ring buffer.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(EventReader { ring })
    }

    /// Waits until events are there and returns every one in the buffer
    /// (records of an unexpected size are skipped).
    pub async fn next_batch(&mut self) -> std::io::Result<Vec<FlowEvent>> {
        loop {
            let mut guard = self.ring.readable_mut().await?;
            let mut batch = Vec::new();
            {
                let ring = guard.get_inner_mut();
                while let Some(item) = ring.next() {
                    batch.extend(decode_event(&item));
                }
            }
            guard.clear_ready();
            if !batch.is_empty() {
                return Ok(batch);
            }
        }
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of `bpf_ktime_get_ns`, which
/// stamps every event.
pub fn monotonic_ns() -> u64 {
    // SAFETY: `ts` is a valid, writable timespec.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: as above; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}
