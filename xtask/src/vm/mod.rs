//! The VM tier: tests and benchmarks on Debian's 6.1 LTS kernel, the oldest
//! Palisade supports, booted under qemu by virtme-ng.
//!
//! - [`kernel`]: the newest `linux-image-6.1.0-*-amd64`, unpacked into a cache.
//! - [`vng`]: virtme-ng, pinned, in its own venv.
//! - [`guest`]: the script the VM runs; [`launch`]: one boot under a watchdog,
//!   nothing left running; [`session`]: jobs in, exits and logs out.
//! - [`tier`]: `cargo xtask test`'s VM tier.

pub mod guest;
pub mod kernel;
mod launch;
pub mod session;
pub mod tier;
pub mod vng;
