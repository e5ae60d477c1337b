//! The VM tier: tests and benchmarks on the LTS kernels most clusters run
//! (Debian 12's 6.1, Ubuntu 22.04's 5.15), booted under qemu by virtme-ng.
//!
//! - [`kernel`]: those kernels, unpacked into a cache.
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
