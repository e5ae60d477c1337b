//! Types shared by Palisade's eBPF programs and its agent.
//!
//! This crate is the only definition of every map key, map value, event record
//! and drop reason that crosses the kernel/userspace boundary. Everything here is
//! `#[repr(C)]`, `Copy`, has explicit (zeroed) padding and a compile-time size
//! check, so the eBPF object and the agent can never disagree about a layout.
//!
//! The `user` feature adds `aya::Pod` impls for the agent; without it the crate
//! is `no_std` and dependency-free for the kernel side.
//!
//! # Layout
//! - [`maps`]: map names (the ELF symbol names) and default capacities.
//! - [`ids`]: newtypes for every id stored in a map.
//! - [`addr`]: the 16-byte address form (IPv4 as v4-mapped IPv6) used in keys.
//! - one module per map: [`endpoint`], [`ipcache`], [`policy`], [`conntrack`],
//!   [`fragment`], [`source`], [`stats`], [`clock`].
//! - [`verdict`]: [`verdict::Direction`] and [`verdict::DropReason`], the only list.
//! - [`event`]: the ring-buffer record for denied and audited flows.
#![no_std]

pub mod addr;
pub mod clock;
pub mod conntrack;
pub mod endpoint;
pub mod event;
pub mod fragment;
pub mod ids;
pub mod ipcache;
pub mod maps;
pub mod policy;
pub mod source;
pub mod stats;
pub mod verdict;

/// Implements `aya::Pod` for the given types when built for userspace.
macro_rules! user_pod {
    ($($ty:ty),* $(,)?) => {
        $(
            #[cfg(feature = "user")]
            // SAFETY: the type is `#[repr(C)]`, `Copy`, has no implicit padding
            // (checked by a const size assertion next to its definition) and every
            // bit pattern is a valid value.
            unsafe impl aya::Pod for $ty {}
        )*
    };
}
pub(crate) use user_pod;
