//! The VM tier: tests and benchmarks on Debian's 6.1 LTS kernel, the oldest
//! Palisade supports, booted under qemu by virtme-ng.
//!
//! - [`kernel`]: the newest `linux-image-6.1.0-*-amd64`, unpacked into a cache.
//! - [`vng`]: virtme-ng, pinned, in its own venv.

pub mod kernel;
pub mod vng;
