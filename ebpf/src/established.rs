//! The fast path for the most common packet: TCP or UDP straight over IPv4
//! (no options, not fragmented) or IPv6 (no extension headers), of a flow
//! that conntrack allowed under the current policy revision.
//!
//! It reads the few header words the conntrack key needs with one load each,
//! builds the key from them and looks it up. Everything else goes to the full
//! pipeline in [`crate::enforce`]: other packets unparsed ([`Fast::Declined`]),
//! a flow without a live entry with its packet parsed and its lookup done
//! ([`Fast::Missed`]), and an entry whose revision is stale ([`Fast::Declined`],
//! to be re-checked there). For the packets it takes, this path decides as the
//! full pipeline would; the kernel tests, differential test included, run
//! every packet through both.

use aya_ebpf::programs::TcContext;
use palisade_common::{
    addr::Addr16,
    conntrack::{CtKeyV4, CtKeyV6},
    ids::RuleId,
    verdict::Direction,
};

use crate::{
    conntrack::{self, Entry},
    parse::{ETH_HLEN, Fragment, IPPROTO_TCP, IPPROTO_UDP, Packet, ipv6_address_words, load_u32},
    stats, verdict,
};

/// What the fast path found.
pub enum Fast {
    /// Decided: the verdict.
    Done(i32),
    /// A packet this path takes, whose flow has no live entry: the full
    /// pipeline goes on from the conntrack miss.
    Missed(Packet),
    /// Not for this path: the full pipeline parses and decides.
    Declined,
}

const IPV4_L4: usize = ETH_HLEN + 20;
const IPV6_L4: usize = ETH_HLEN + 40;
/// The bytes every packet this path takes has: an IPv4 header and UDP's.
const SHORTEST: usize = IPV4_L4 + 8;

/// Ethernet type and the first IP byte of IPv4 with a 20-byte header, as the
/// little-endian word at offset 12 reads them (0x0800, then 0x45).
const IPV4_PLAIN: u32 = 0x0045_0008;
const IPV4_PLAIN_MASK: u32 = 0x00ff_ffff;
/// Ethernet type 0x86dd and IP version 6, likewise.
const IPV6: u32 = 0x0060_dd86;
const IPV6_MASK: u32 = 0x00f0_ffff;
/// IPv4's more-fragments flag and fragment offset, in the word at offset 4 of
/// its header.
const IPV4_FRAGMENT_MASK: u32 = 0xff3f_0000;

#[inline(always)]
pub fn try_established(
    ctx: &TcContext,
    direction: Direction,
    ifindex: u32,
    now: u64,
    bytes: u32,
) -> Fast {
    let data = ctx.data();
    let end = ctx.data_end();
    if data + SHORTEST > end {
        return Fast::Declined;
    }
    // SAFETY: inside the `SHORTEST` bytes checked above.
    let head = unsafe { load_u32::<12>(data) };
    if head & IPV4_PLAIN_MASK == IPV4_PLAIN {
        // SAFETY: inside the `SHORTEST` bytes checked above.
        let (fragment, ttl_protocol, src, dst) = unsafe {
            (
                load_u32::<{ ETH_HLEN + 4 }>(data),
                load_u32::<{ ETH_HLEN + 8 }>(data),
                load_u32::<{ ETH_HLEN + 12 }>(data),
                load_u32::<{ ETH_HLEN + 16 }>(data),
            )
        };
        if fragment & IPV4_FRAGMENT_MASK != 0 {
            return Fast::Declined;
        }
        let protocol = ttl_protocol.to_le_bytes()[1];
        let Some(t) = transport::<IPV4_L4, { IPV4_L4 + 12 }>(data, end, protocol) else {
            return Fast::Declined;
        };
        let (local, remote, local_remote) = endpoint_relative(direction, src, dst, t.ports);
        let key = CtKeyV4::from_words(ifindex, protocol, local_remote, local, remote);
        let entry = conntrack::lookup_v4(&key, protocol, now);
        let addresses = || {
            let (src, dst) = (src.to_le_bytes(), dst.to_le_bytes());
            (true, Addr16::from_v4(src), Addr16::from_v4(dst))
        };
        return decide(entry, t, addresses, direction, now, bytes);
    }
    if head & IPV6_MASK == IPV6 {
        if data + IPV6_L4 > end {
            return Fast::Declined;
        }
        // SAFETY: inside the IPv6 header, checked just above.
        let payload_next = unsafe { load_u32::<{ ETH_HLEN + 4 }>(data) };
        // Any extension header makes `protocol` neither TCP nor UDP.
        let protocol = payload_next.to_le_bytes()[2];
        let Some(t) = transport::<IPV6_L4, { IPV6_L4 + 12 }>(data, end, protocol) else {
            return Fast::Declined;
        };
        // Loaded only now, next to the key they go into: loaded before the
        // transport checks, the eight words outlived the registers and were
        // spilled and reloaded.
        // SAFETY: inside the IPv6 header, checked above.
        let (src, dst) = unsafe { ipv6_address_words(data) };
        let (local, remote, local_remote) = endpoint_relative(direction, src, dst, t.ports);
        let key = CtKeyV6::from_words(ifindex, protocol, local_remote, local, remote);
        let entry = conntrack::lookup_v6(&key, protocol, now);
        let addresses = || {
            (
                false,
                Addr16::from_le_words(src),
                Addr16::from_le_words(dst),
            )
        };
        return decide(entry, t, addresses, direction, now, bytes);
    }
    Fast::Declined
}

/// What this path reads of a TCP or UDP header.
#[derive(Clone, Copy)]
struct Transport {
    protocol: u8,
    /// Source then destination port, in packet byte order.
    ports: u32,
    tcp_flags: u8,
}

/// The verdict for a looked-up flow: pass an entry under the current
/// revision, hand anything else to the full pipeline. `addresses` gives
/// (IPv4?, source, destination) for the packet a miss hands over.
#[inline(always)]
fn decide(
    entry: Option<Entry>,
    t: Transport,
    addresses: impl FnOnce() -> (bool, Addr16, Addr16),
    direction: Direction,
    now: u64,
    bytes: u32,
) -> Fast {
    let Some(entry) = entry else {
        let (ipv4, src, dst) = addresses();
        // No entry ever holds a v4-mapped address in an IPv6 packet (the
        // parser refuses them): left to it, so they are never judged as flows.
        if !ipv4 && (src.is_v4_mapped() || dst.is_v4_mapped()) {
            return Fast::Declined;
        }
        return Fast::Missed(Packet {
            ipv4,
            src,
            dst,
            protocol: t.protocol,
            src_port: port(t.ports, 0),
            dst_port: port(t.ports, 2),
            tcp_flags: t.tcp_flags,
            fragment: Fragment::NONE,
        });
    };
    if entry.revision() != stats::revision() {
        return Fast::Declined;
    }
    entry.touch(direction, t.protocol, t.tcp_flags, now);
    Fast::Done(verdict::pass(direction, RuleId::NONE, bytes))
}

/// The TCP or UDP header at `L4`; `None` for other protocols, a header the
/// packet does not hold whole, and a malformed TCP data offset. `L4_12` is
/// `L4 + 12`, where TCP keeps its data offset and flags (spelled out: a
/// constant generic cannot be computed from another).
#[inline(always)]
fn transport<const L4: usize, const L4_12: usize>(
    data: usize,
    end: usize,
    protocol: u8,
) -> Option<Transport> {
    match protocol {
        IPPROTO_TCP => {
            if data + L4 + 20 > end {
                return None;
            }
            // SAFETY: inside the 20 bytes checked just above.
            let (ports, offset_flags) = unsafe { (load_u32::<L4>(data), load_u32::<L4_12>(data)) };
            let [offset, flags, ..] = offset_flags.to_le_bytes();
            if offset >> 4 < 5 {
                return None;
            }
            Some(Transport {
                protocol,
                ports,
                tcp_flags: flags,
            })
        }
        IPPROTO_UDP => {
            if data + L4 + 8 > end {
                return None;
            }
            // SAFETY: inside the 8 bytes checked just above.
            Some(Transport {
                protocol,
                ports: unsafe { load_u32::<L4>(data) },
                tcp_flags: 0,
            })
        }
        _ => None,
    }
}

/// Local and remote address and the local-then-remote port word, as the
/// conntrack key orders them for `direction`.
#[inline(always)]
fn endpoint_relative<A>(direction: Direction, src: A, dst: A, ports: u32) -> (A, A, u32) {
    match direction {
        Direction::Egress => (src, dst, ports),
        Direction::Ingress => (dst, src, ports.rotate_left(16)),
    }
}

/// The port at byte `at` of a port word, in host order.
#[inline(always)]
fn port(ports: u32, at: usize) -> u16 {
    let b = ports.to_le_bytes();
    u16::from_be_bytes([b[at], b[at + 1]])
}
