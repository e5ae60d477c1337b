//! Every packet read: Ethernet, IPv4 (with options and fragments), IPv6 (with
//! extension headers and fragments), TCP, UDP, SCTP, ICMP and ICMPv6. All access
//! goes through [`ptr_at`], which proves the bounds to the verifier.

use aya_ebpf::programs::TcContext;
use palisade_common::addr::Addr16;

pub const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_ARP: u16 = 0x0806;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_SCTP: u8 = 132;

const IPV6_HOPOPTS: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_DSTOPTS: u8 = 60;
/// Extension headers followed before giving up (reported as malformed).
const IPV6_MAX_EXT_HEADERS: usize = 6;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// Bytes pulled into the linear area when the headers are not already there.
const PULL_LEN: u32 = 128;

/// Where a packet stands with respect to IP fragmentation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fragment {
    /// A whole datagram.
    None,
    /// First fragment: has the L4 header, more fragments follow.
    First(u32),
    /// A later fragment: no L4 header.
    Later(u32),
}

/// The parts of an IP packet the pipeline needs.
#[derive(Clone, Copy)]
pub struct Packet {
    /// IPv4 (addresses v4-mapped) rather than IPv6.
    pub ipv4: bool,
    pub src: Addr16,
    pub dst: Addr16,
    pub protocol: u8,
    /// Host order; for ICMP echo both hold the echo identifier.
    pub src_port: u16,
    pub dst_port: u16,
    pub tcp_flags: u8,
    pub fragment: Fragment,
}

/// What the parser found.
pub enum Parsed {
    /// ARP, neighbour discovery: always passes.
    Control,
    /// Not IP and not ARP.
    OtherEtherType,
    /// An IP packet.
    Ip(Packet),
    /// An IP packet whose headers are truncated or malformed; addresses are
    /// known when the IP header itself was readable.
    Malformed(Option<(Addr16, Addr16, u8)>),
}

#[inline(always)]
fn ptr_at<T>(ctx: &TcContext, offset: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *const T)
}

/// The four bytes at `data + OFFSET` as one 32-bit load (the value's
/// little-endian bytes are the packet's bytes).
///
/// Through `asm!` because headers in a packet have no fixed alignment:
/// `read_unaligned` makes LLVM's BPF backend split the load into four byte
/// loads with shifts, and a plain `read` of a misaligned pointer would be
/// undefined behaviour. The kernel allows unaligned packet loads wherever it
/// JITs them efficiently (x86-64, arm64).
///
/// # Safety
/// `data + OFFSET..data + OFFSET + 4` lies inside the packet, proven by a
/// bounds check against `data_end` that the verifier has seen.
#[inline(always)]
pub unsafe fn load_u32<const OFFSET: usize>(data: usize) -> u32 {
    let value: u64;
    // SAFETY: the caller's bounds check covers the four bytes; the asm only
    // reads them.
    unsafe {
        core::arch::asm!(
            "{value} = *(u32 *)({data} + {offset})",
            data = in(reg) data,
            offset = const OFFSET,
            value = lateout(reg) value,
            options(pure, readonly, nostack, preserves_flags),
        );
    }
    value as u32
}

/// Source and destination of the IPv6 header after the Ethernet header.
///
/// # Safety
/// The 40-byte header lies inside the packet, proven by a bounds check against
/// `data_end` that the verifier has seen.
#[inline(always)]
pub unsafe fn ipv6_addresses(data: usize) -> (Addr16, Addr16) {
    // SAFETY: the caller's bounds check covers the whole header.
    unsafe {
        (
            Addr16::from_le_words([
                load_u32::<{ ETH_HLEN + 8 }>(data),
                load_u32::<{ ETH_HLEN + 12 }>(data),
                load_u32::<{ ETH_HLEN + 16 }>(data),
                load_u32::<{ ETH_HLEN + 20 }>(data),
            ]),
            Addr16::from_le_words([
                load_u32::<{ ETH_HLEN + 24 }>(data),
                load_u32::<{ ETH_HLEN + 28 }>(data),
                load_u32::<{ ETH_HLEN + 32 }>(data),
                load_u32::<{ ETH_HLEN + 36 }>(data),
            ]),
        )
    }
}

#[inline(always)]
fn read<T: Copy>(ctx: &TcContext, offset: usize) -> Option<T> {
    // SAFETY: `ptr_at` checked that `offset..offset+size_of::<T>()` lies inside
    // the packet's linear data; the read is unaligned-safe.
    ptr_at::<T>(ctx, offset).map(|p| unsafe { core::ptr::read_unaligned(p) })
}

#[inline(always)]
fn be16(ctx: &TcContext, offset: usize) -> Option<u16> {
    read::<[u8; 2]>(ctx, offset).map(u16::from_be_bytes)
}

/// Makes sure the first headers are in the linear area, so direct packet access
/// sees them (veth usually delivers linear headers; GRO'd packets may not).
#[inline(always)]
fn ensure_linear(ctx: &TcContext) {
    let len = ctx.len();
    let want = if len < PULL_LEN { len } else { PULL_LEN };
    if ((ctx.data_end() - ctx.data()) as u32) < want {
        let _ = ctx.pull_data(want);
    }
}

#[inline(always)]
pub fn parse(ctx: &TcContext) -> Parsed {
    ensure_linear(ctx);
    let Some(ethertype) = be16(ctx, 12) else {
        return Parsed::Malformed(None);
    };
    match ethertype {
        ETH_P_IP => parse_ipv4(ctx),
        ETH_P_IPV6 => parse_ipv6(ctx),
        ETH_P_ARP => Parsed::Control,
        _ => Parsed::OtherEtherType,
    }
}

#[inline(always)]
fn parse_ipv4(ctx: &TcContext) -> Parsed {
    let Some(hdr) = read::<[u8; 20]>(ctx, ETH_HLEN) else {
        return Parsed::Malformed(None);
    };
    let src = Addr16::from_v4([hdr[12], hdr[13], hdr[14], hdr[15]]);
    let dst = Addr16::from_v4([hdr[16], hdr[17], hdr[18], hdr[19]]);
    let protocol = hdr[9];
    let version = hdr[0] >> 4;
    let ihl = (hdr[0] & 0x0f) as usize * 4;
    if version != 4 || ihl < 20 {
        return Parsed::Malformed(Some((src, dst, protocol)));
    }
    let flags_offset = u16::from_be_bytes([hdr[6], hdr[7]]);
    let more_fragments = flags_offset & 0x2000 != 0;
    let offset = flags_offset & 0x1fff;
    let id = u16::from_be_bytes([hdr[4], hdr[5]]) as u32;
    let fragment = if offset != 0 {
        Fragment::Later(id)
    } else if more_fragments {
        Fragment::First(id)
    } else {
        Fragment::None
    };
    l4(ctx, ETH_HLEN + ihl, true, src, dst, protocol, fragment)
}

#[inline(always)]
fn parse_ipv6(ctx: &TcContext) -> Parsed {
    if ptr_at::<[u8; 40]>(ctx, ETH_HLEN).is_none() {
        return Parsed::Malformed(None);
    }
    let data = ctx.data();
    // SAFETY (all loads): inside the 40-byte header, checked just above.
    let (first, second, (src, dst)) = unsafe {
        (
            load_u32::<{ ETH_HLEN }>(data),
            load_u32::<{ ETH_HLEN + 4 }>(data),
            ipv6_addresses(data),
        )
    };
    let next_header = second.to_le_bytes()[2];
    if first.to_le_bytes()[0] >> 4 != 6 {
        return Parsed::Malformed(Some((src, dst, next_header)));
    }
    let mut next = next_header;
    let mut offset = ETH_HLEN + 40;
    let mut fragment = Fragment::None;
    for _ in 0..IPV6_MAX_EXT_HEADERS {
        match next {
            IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS => {
                let Some(ext) = read::<[u8; 2]>(ctx, offset) else {
                    return Parsed::Malformed(Some((src, dst, next)));
                };
                next = ext[0];
                // Bounded so the verifier can follow the offset.
                offset = (offset + (ext[1] as usize + 1) * 8) & 0x3ff;
            }
            IPV6_FRAGMENT => {
                let Some(ext) = read::<[u8; 8]>(ctx, offset) else {
                    return Parsed::Malformed(Some((src, dst, next)));
                };
                next = ext[0];
                let frag_offset = u16::from_be_bytes([ext[2], ext[3]]) >> 3;
                let more = ext[3] & 1 != 0;
                let id = u32::from_be_bytes([ext[4], ext[5], ext[6], ext[7]]);
                fragment = if frag_offset != 0 {
                    Fragment::Later(id)
                } else if more {
                    Fragment::First(id)
                } else {
                    Fragment::None
                };
                offset = (offset + 8) & 0x3ff;
            }
            _ => return l4(ctx, offset, false, src, dst, next, fragment),
        }
    }
    Parsed::Malformed(Some((src, dst, next)))
}

#[inline(always)]
fn l4(
    ctx: &TcContext,
    offset: usize,
    ipv4: bool,
    src: Addr16,
    dst: Addr16,
    protocol: u8,
    fragment: Fragment,
) -> Parsed {
    let mut packet = Packet {
        ipv4,
        src,
        dst,
        protocol,
        src_port: 0,
        dst_port: 0,
        tcp_flags: 0,
        fragment,
    };
    if let Fragment::Later(_) = fragment {
        return Parsed::Ip(packet);
    }
    let offset = offset & 0x3ff;
    match protocol {
        IPPROTO_TCP => {
            let Some(h) = read::<[u8; 20]>(ctx, offset) else {
                return Parsed::Malformed(Some((src, dst, protocol)));
            };
            if (h[12] >> 4) < 5 {
                return Parsed::Malformed(Some((src, dst, protocol)));
            }
            packet.src_port = u16::from_be_bytes([h[0], h[1]]);
            packet.dst_port = u16::from_be_bytes([h[2], h[3]]);
            packet.tcp_flags = h[13];
        }
        IPPROTO_UDP => {
            let Some(h) = read::<[u8; 8]>(ctx, offset) else {
                return Parsed::Malformed(Some((src, dst, protocol)));
            };
            packet.src_port = u16::from_be_bytes([h[0], h[1]]);
            packet.dst_port = u16::from_be_bytes([h[2], h[3]]);
        }
        IPPROTO_SCTP => {
            let Some(h) = read::<[u8; 12]>(ctx, offset) else {
                return Parsed::Malformed(Some((src, dst, protocol)));
            };
            packet.src_port = u16::from_be_bytes([h[0], h[1]]);
            packet.dst_port = u16::from_be_bytes([h[2], h[3]]);
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            let Some(h) = read::<[u8; 8]>(ctx, offset) else {
                return Parsed::Malformed(Some((src, dst, protocol)));
            };
            let ty = h[0];
            if protocol == IPPROTO_ICMPV6 && (133..=137).contains(&ty) {
                // Router and neighbour discovery and redirects.
                return Parsed::Control;
            }
            if protocol == IPPROTO_ICMPV6
                && ((130..=132).contains(&ty) || ty == 143)
                && dst.0[0] == 0xff
            {
                // Multicast listener queries and reports (MLD) always go to a
                // multicast group; sent to a unicast address they are just
                // ICMPv6 and face policy like any other.
                return Parsed::Control;
            }
            if is_echo(protocol, ty) {
                let id = u16::from_be_bytes([h[4], h[5]]);
                packet.src_port = id;
                packet.dst_port = id;
            }
        }
        _ => {}
    }
    Parsed::Ip(packet)
}

/// ICMP echo request or reply: tracked by identifier like a port pair.
#[inline(always)]
fn is_echo(protocol: u8, ty: u8) -> bool {
    if protocol == IPPROTO_ICMP {
        ty == 8 || ty == 0
    } else {
        ty == 128 || ty == 129
    }
}

/// Whether the protocol carries ports that rules can match.
#[inline(always)]
pub fn has_ports(protocol: u8) -> bool {
    protocol == IPPROTO_TCP || protocol == IPPROTO_UDP || protocol == IPPROTO_SCTP
}
