//! `CONNTRACK`: flows seen at an endpoint, LRU so it can never fill up.
//!
//! The key is endpoint-relative (local = the pod's side), so both directions of
//! a flow at one endpoint share one entry, and the same flow crossing two local
//! pods has two independent entries (one per endpoint, each checked against its
//! own policy). Ports are big-endian; addresses are [`Addr16`]. For ICMP echo,
//! the echo identifier stands in for both ports.

use crate::addr::Addr16;
use crate::ids::{Revision, RuleId};

/// Key of `CONNTRACK`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey {
    /// Host-side interface index of the endpoint.
    pub ifindex: u32,
    /// IP protocol number.
    pub protocol: u8,
    /// Always zero.
    pub _pad: [u8; 3],
    /// The pod's port, big-endian.
    pub local_port_be: [u8; 2],
    /// The remote's port, big-endian.
    pub remote_port_be: [u8; 2],
    /// The pod's address.
    pub local: Addr16,
    /// The remote's address.
    pub remote: Addr16,
}

const _: () = assert!(core::mem::size_of::<CtKey>() == 44);

/// The flow was opened by the pod (its egress) rather than towards it.
pub const CT_FLAG_ORIGIN_EGRESS: u32 = 1 << 0;
/// A TCP FIN or RST was seen: the entry expires quickly.
pub const CT_FLAG_CLOSING: u32 = 1 << 1;
/// A TCP packet without SYN opened the entry, or the three-way handshake has
/// completed (ACK seen in the origin direction after a reply).
pub const CT_FLAG_ESTABLISHED: u32 = 1 << 2;
/// A reply has been seen.
pub const CT_FLAG_REPLIED: u32 = 1 << 3;
/// The flow was let through by audit mode, not by a rule.
pub const CT_FLAG_AUDITED: u32 = 1 << 4;

/// Value of `CONNTRACK`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtValue {
    /// Last packet, `bpf_ktime_get_coarse_ns` (CLOCK_MONOTONIC_COARSE).
    pub last_seen_ns: u64,
    /// The policy revision that last allowed this flow.
    pub revision: Revision,
    /// The rule that allowed it ([`RuleId::NONE`] for unconditional allows).
    pub rule: RuleId,
    /// `CT_FLAG_*` bits.
    pub flags: u32,
    /// Always zero.
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<CtValue>() == 24);

/// Idle timeout of a TCP flow that has not completed its handshake.
pub const TIMEOUT_TCP_SYN_NS: u64 = 60 * 1_000_000_000;
/// Idle timeout of an established TCP flow.
pub const TIMEOUT_TCP_ESTABLISHED_NS: u64 = 6 * 3600 * 1_000_000_000;
/// Idle timeout after FIN or RST.
pub const TIMEOUT_TCP_CLOSING_NS: u64 = 10 * 1_000_000_000;
/// Idle timeout of UDP and SCTP flows.
pub const TIMEOUT_UDP_NS: u64 = 120 * 1_000_000_000;
/// Idle timeout of ICMP and other protocols.
pub const TIMEOUT_OTHER_NS: u64 = 30 * 1_000_000_000;

crate::user_pod!(CtKey, CtValue);
