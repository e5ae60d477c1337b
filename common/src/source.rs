//! `SOURCE_PREFIXES`: extra source prefixes a pod may send from, beyond its
//! own addresses (gateways, VPN endpoints; the
//! `palisade.dev/allowed-source-prefixes` annotation in a namespace the
//! operator allows it in). Consulted only for endpoints carrying
//! [`crate::endpoint::FLAG_SOURCE_PREFIXES`], so other pods pay nothing.
//!
//! LPM trie key data, 20 bytes, compared most significant bit first:
//!
//! ```text
//!  bits 0..32    endpoint id   (big-endian; always fully matched)
//!  bits 32..160  address       (network order; IPv4 v4-mapped, so an IPv4
//!                               /n is a prefix of 32 + 96 + n bits)
//! ```
//!
//! Value: [`SourcePrefixValue`], present = allowed.

use crate::addr::Addr16;
use crate::ids::EndpointId;

/// Prefix bits of the endpoint id in front of the address.
pub const SOURCE_PREFIX_ENDPOINT_BITS: u32 = 32;

/// Data part of the LPM key (aya supplies the `prefix_len` header).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourcePrefixKey {
    /// Endpoint id, big-endian bytes.
    pub endpoint_be: [u8; 4],
    /// The prefix's address (host bits zero).
    pub addr: Addr16,
}

const _: () = assert!(core::mem::size_of::<SourcePrefixKey>() == 20);

impl SourcePrefixKey {
    /// The key of `addr` for `endpoint`.
    #[inline(always)]
    pub const fn new(endpoint: EndpointId, addr: Addr16) -> Self {
        SourcePrefixKey {
            endpoint_be: endpoint.0.to_be_bytes(),
            addr,
        }
    }
}

/// Value of `SOURCE_PREFIXES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourcePrefixValue {
    /// Reserved, zero.
    pub _reserved: u32,
}

const _: () = assert!(core::mem::size_of::<SourcePrefixValue>() == 4);

crate::user_pod!(SourcePrefixKey, SourcePrefixValue);
