//! `POLICY`: allow rules, an LPM trie so protocol and port wildcard by prefix.
//!
//! Key data, 12 bytes, compared most significant bit first:
//!
//! ```text
//!  bits 0..32   endpoint id        (big-endian; always fully matched)
//!  bits 32..64  remote identity    (big-endian; 0 = ANY, matched by a second lookup)
//!  bits 64..72  direction          (Direction as u8; always fully matched)
//!  bits 72..80  IP protocol        (prefix 72 = every protocol and port)
//!  bits 80..96  L4 port, big-endian (prefix 80 = every port of the protocol;
//!                                    80+k = a power-of-two aligned port block)
//! ```
//!
//! Protocol and port come last because they are the only fields a rule may leave
//! open; an identity cannot be wildcarded in the middle of a prefix, which is why
//! the datapath looks up twice: once with the remote identity, once with
//! [`crate::ids::IdentityId::ANY`]. A port range `[lo, hi]` becomes the minimal
//! set of aligned blocks covering it (at most 30 entries for any 16-bit range).
//! The port of a packet is the destination port when the flow is towards the
//! pod (ingress) and towards the remote (egress); i.e. always the server's port.

use crate::ids::{EndpointId, IdentityId, RuleId};
use crate::verdict::Direction;

/// Prefix length of a rule that allows every protocol and port.
pub const PREFIX_ANY_PROTOCOL: u32 = 72;
/// Prefix length of a rule that allows every port of one protocol.
pub const PREFIX_ANY_PORT: u32 = 80;
/// Prefix length of a rule for exactly one port.
pub const PREFIX_FULL: u32 = 96;

/// Data part of the LPM key (aya supplies the `prefix_len` header).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyKey {
    /// Endpoint id, big-endian bytes.
    pub endpoint_be: [u8; 4],
    /// Remote identity, big-endian bytes.
    pub identity_be: [u8; 4],
    /// [`Direction`] as u8.
    pub direction: u8,
    /// IP protocol number.
    pub protocol: u8,
    /// L4 port, big-endian bytes.
    pub port_be: [u8; 2],
}

const _: () = assert!(core::mem::size_of::<PolicyKey>() == 12);

impl PolicyKey {
    /// Builds a key from host-order values.
    #[inline(always)]
    pub fn new(
        endpoint: EndpointId,
        identity: IdentityId,
        direction: Direction,
        protocol: u8,
        port: u16,
    ) -> Self {
        PolicyKey {
            endpoint_be: endpoint.0.to_be_bytes(),
            identity_be: identity.0.to_be_bytes(),
            direction: direction as u8,
            protocol,
            port_be: port.to_be_bytes(),
        }
    }
}

/// Value of `POLICY`: the rule credited with the packets the entry decides,
/// and (bit [`PolicyValue::DENY`] of the word) whether it denies them.
///
/// The deny bit sits in the rule word so the value keeps the 4 bytes that
/// pinned maps of earlier builds have; those builds read any entry as an
/// allow, so the agent never writes a deny entry where one of their programs
/// may still be attached.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyValue {
    /// The rule, with [`PolicyValue::DENY`] set on deny entries.
    pub rule: RuleId,
}

impl PolicyValue {
    /// Set in `rule` on an entry that denies.
    pub const DENY: u32 = 1 << 31;

    /// An entry allowing, credited to `rule`.
    #[inline(always)]
    pub const fn allow(rule: RuleId) -> Self {
        PolicyValue { rule }
    }

    /// An entry denying, credited to `rule` ([`RuleId::NONE`]: no rule).
    #[inline(always)]
    pub const fn deny(rule: RuleId) -> Self {
        PolicyValue {
            rule: RuleId(rule.0 | Self::DENY),
        }
    }

    /// Whether the entry denies.
    #[inline(always)]
    pub const fn denies(&self) -> bool {
        self.rule.0 & Self::DENY != 0
    }

    /// The rule credited, without the deny bit.
    #[inline(always)]
    pub const fn credited(&self) -> RuleId {
        RuleId(self.rule.0 & !Self::DENY)
    }
}

const _: () = assert!(core::mem::size_of::<PolicyValue>() == 4);

crate::user_pod!(PolicyKey, PolicyValue);
