//! `FRAGMENTS`: the verdict of a first IP fragment, for the fragments after it.
//!
//! Non-first fragments carry no L4 header, so they cannot be matched against
//! port rules; they inherit the verdict of the first fragment of the same
//! datagram instead, and are dropped when it was not seen or not allowed.

use crate::addr::Addr16;

/// Key of `FRAGMENTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    /// Host-side interface index of the endpoint.
    pub ifindex: u32,
    /// IP identification (IPv4: 16 bits; IPv6: the 32-bit fragment id).
    pub id: u32,
    /// IP protocol of the datagram.
    pub protocol: u8,
    /// Always zero (two scalars: see [`crate::conntrack::CtKeyV4::_pad0`]).
    pub _pad0: u8,
    /// Always zero.
    pub _pad1: u16,
    /// Source address.
    pub src: Addr16,
    /// Destination address.
    pub dst: Addr16,
}

const _: () = assert!(core::mem::size_of::<FragKey>() == 44);

/// Value of `FRAGMENTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragValue {
    /// When the first fragment passed, CLOCK_MONOTONIC_COARSE ns ([`crate::clock`]).
    pub first_seen_ns: u64,
}

const _: () = assert!(core::mem::size_of::<FragValue>() == 8);

/// How long the fragments of one datagram may trail its first fragment.
pub const FRAGMENT_TIMEOUT_NS: u64 = 30 * 1_000_000_000;

crate::user_pod!(FragKey, FragValue);
