//! Non-cryptographic random numbers for ports, tags and probe tokens.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

static STATE: AtomicU64 = AtomicU64::new(0);

/// splitmix64 finaliser.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A random-looking `u64`, different on every call in every process.
pub fn random_u64() -> u64 {
    let step = STATE.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    mix(step ^ mix(nanos ^ (u64::from(std::process::id()) << 40)))
}

/// A random `u32`.
pub fn random_u32() -> u32 {
    (random_u64() >> 32) as u32
}

/// A random port in the dynamic range 49152..=65535 that differs from `not`.
pub fn random_port(not: u16) -> u16 {
    loop {
        let p = 49152 + (random_u32() % 16384) as u16;
        if p != not {
            return p;
        }
    }
}
