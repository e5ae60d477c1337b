//! `CONNTRACK_V4` and `CONNTRACK`: flows seen at an endpoint, one LRU map per
//! address family, so neither can ever fill up.
//!
//! The key is endpoint-relative (local = the pod's side), so both directions of
//! a flow at one endpoint share one entry, and the same flow crossing two local
//! pods has two independent entries (one per endpoint, each checked against its
//! own policy). Ports are big-endian. For ICMP echo, the echo identifier stands
//! in for both ports.
//!
//! IPv4 flows (most traffic) get the compact [`CtKeyV4`]: hashing and comparing
//! its 20 bytes is cheaper on every packet than the 44 of [`CtKeyV6`]. Which map
//! a flow lives in follows the packet's IP version: an IPv6 packet between
//! v4-mapped addresses stays in `CONNTRACK`. Both maps hold a [`CtValue`].

use crate::addr::Addr16;
use crate::ids::{Revision, RuleId};

/// Key of `CONNTRACK_V4` (IPv4 flows).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKeyV4 {
    /// Host-side interface index of the endpoint.
    pub ifindex: u32,
    /// IP protocol number.
    pub protocol: u8,
    /// Always zero. Two scalars rather than `[u8; 3]`: the eBPF side then
    /// zeroes them with plain stores instead of calling `memset` per packet.
    pub _pad0: u8,
    /// Always zero.
    pub _pad1: u16,
    /// The pod's port, big-endian.
    pub local_port_be: [u8; 2],
    /// The remote's port, big-endian.
    pub remote_port_be: [u8; 2],
    /// The pod's address, network order.
    pub local: [u8; 4],
    /// The remote's address, network order.
    pub remote: [u8; 4],
}

const _: () = assert!(core::mem::size_of::<CtKeyV4>() == 20);

impl CtKeyV4 {
    /// The key of a flow at endpoint `ifindex`; ports in host order.
    #[inline(always)]
    pub const fn new(
        ifindex: u32,
        protocol: u8,
        local: [u8; 4],
        remote: [u8; 4],
        local_port: u16,
        remote_port: u16,
    ) -> Self {
        CtKeyV4 {
            ifindex,
            protocol,
            _pad0: 0,
            _pad1: 0,
            local_port_be: local_port.to_be_bytes(),
            remote_port_be: remote_port.to_be_bytes(),
            local,
            remote,
        }
    }

    /// The same key built from whole words as a program loads them from the
    /// packet: `ports` holds the local then the remote port and each address
    /// its four bytes, all in packet byte order (the words' little-endian
    /// bytes). Five word stores instead of a dozen byte stores per packet.
    #[inline(always)]
    pub const fn from_words(
        ifindex: u32,
        protocol: u8,
        ports: u32,
        local: u32,
        remote: u32,
    ) -> Self {
        // `to_le` makes each word's memory hold its little-endian bytes on
        // any host; `ifindex` is a native-endian field.
        let words: [u32; 5] = [
            ifindex,
            (protocol as u32).to_le(),
            ports.to_le(),
            local.to_le(),
            remote.to_le(),
        ];
        // SAFETY: `CtKeyV4` is `repr(C)`, 20 bytes of plain integers and byte
        // arrays without implicit padding; every bit pattern is valid.
        unsafe { core::mem::transmute::<[u32; 5], CtKeyV4>(words) }
    }

    /// The same flow in the IPv6 key form (addresses v4-mapped).
    pub fn to_v6(&self) -> CtKeyV6 {
        CtKeyV6::new(
            self.ifindex,
            self.protocol,
            Addr16::from_v4(self.local),
            Addr16::from_v4(self.remote),
            u16::from_be_bytes(self.local_port_be),
            u16::from_be_bytes(self.remote_port_be),
        )
    }
}

/// Key of `CONNTRACK` (IPv6 flows).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKeyV6 {
    /// Host-side interface index of the endpoint.
    pub ifindex: u32,
    /// IP protocol number.
    pub protocol: u8,
    /// Always zero (two scalars: see [`CtKeyV4::_pad0`]).
    pub _pad0: u8,
    /// Always zero.
    pub _pad1: u16,
    /// The pod's port, big-endian.
    pub local_port_be: [u8; 2],
    /// The remote's port, big-endian.
    pub remote_port_be: [u8; 2],
    /// The pod's address.
    pub local: Addr16,
    /// The remote's address.
    pub remote: Addr16,
}

const _: () = assert!(core::mem::size_of::<CtKeyV6>() == 44);

impl CtKeyV6 {
    /// The key from words as a program loads them from the packet, like
    /// [`CtKeyV4::from_words`]; each address is four words in packet byte
    /// order (as [`Addr16::from_le_words`] takes them). Eleven word stores.
    #[inline(always)]
    pub const fn from_words(
        ifindex: u32,
        protocol: u8,
        ports: u32,
        local: [u32; 4],
        remote: [u32; 4],
    ) -> Self {
        let words: [u32; 11] = [
            ifindex,
            (protocol as u32).to_le(),
            ports.to_le(),
            local[0].to_le(),
            local[1].to_le(),
            local[2].to_le(),
            local[3].to_le(),
            remote[0].to_le(),
            remote[1].to_le(),
            remote[2].to_le(),
            remote[3].to_le(),
        ];
        // SAFETY: `CtKeyV6` is `repr(C)`, 44 bytes of plain integers, byte
        // arrays and `Addr16`s (4-byte aligned) without implicit padding;
        // every bit pattern is valid.
        unsafe { core::mem::transmute::<[u32; 11], CtKeyV6>(words) }
    }

    /// The key of a flow at endpoint `ifindex`; ports in host order.
    #[inline(always)]
    pub const fn new(
        ifindex: u32,
        protocol: u8,
        local: Addr16,
        remote: Addr16,
        local_port: u16,
        remote_port: u16,
    ) -> Self {
        CtKeyV6 {
            ifindex,
            protocol,
            _pad0: 0,
            _pad1: 0,
            local_port_be: local_port.to_be_bytes(),
            remote_port_be: remote_port.to_be_bytes(),
            local,
            remote,
        }
    }

    /// The compact IPv4 form, when both addresses are v4-mapped.
    pub fn to_v4(&self) -> Option<CtKeyV4> {
        if !self.local.is_v4_mapped() || !self.remote.is_v4_mapped() {
            return None;
        }
        Some(CtKeyV4::new(
            self.ifindex,
            self.protocol,
            self.local.v4_octets(),
            self.remote.v4_octets(),
            u16::from_be_bytes(self.local_port_be),
            u16::from_be_bytes(self.remote_port_be),
        ))
    }
}

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

/// Value of `CONNTRACK_V4` and `CONNTRACK`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtValue {
    /// Last packet, CLOCK_MONOTONIC_COARSE ns ([`crate::clock`]).
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

crate::user_pod!(CtKeyV4, CtKeyV6, CtValue);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_from_packet_words_equals_key_from_fields() {
        let local = [10, 0, 0, 1];
        let remote = [192, 168, 7, 200];
        let (local_port, remote_port) = (8080u16, 40001u16);
        let lp = local_port.to_be_bytes();
        let rp = remote_port.to_be_bytes();
        let ports = u32::from_le_bytes([lp[0], lp[1], rp[0], rp[1]]);
        let words = CtKeyV4::from_words(
            0x0102_0304,
            6,
            ports,
            u32::from_le_bytes(local),
            u32::from_le_bytes(remote),
        );
        let fields = CtKeyV4::new(0x0102_0304, 6, local, remote, local_port, remote_port);
        assert_eq!(words, fields);
        let words = |a: Addr16| {
            let b = a.0;
            core::array::from_fn(|i| {
                u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
            })
        };
        let v6 = CtKeyV6::from_words(
            0x0102_0304,
            6,
            ports,
            words(Addr16::from_v4(local)),
            words(Addr16::from_v4(remote)),
        );
        assert_eq!(v6, fields.to_v6());
        let (l6, r6) = (
            Addr16([0xfd, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]),
            Addr16([0xfe, 0x80, 0, 0, 0, 0, 0, 0, 2, 3, 4, 5, 6, 7, 8, 9]),
        );
        assert_eq!(
            CtKeyV6::from_words(7, 17, ports, words(l6), words(r6)),
            CtKeyV6::new(7, 17, l6, r6, local_port, remote_port)
        );
    }
}
