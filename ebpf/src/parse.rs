//! Every packet read: Ethernet, ARP, IPv4 (with options and fragments), IPv6
//! (with extension headers and fragments), TCP, UDP, SCTP, ICMP, ICMPv6 and
//! its neighbour discovery messages. All access goes through [`ptr_at`], which
//! proves the bounds to the verifier.

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

/// Where a packet stands with respect to IP fragmentation, and its datagram
/// id. A plain struct, not an enum with payloads: LLVM copies the unset
/// payload of a payload-less variant as uninitialised registers, which the
/// verifier refuses.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    /// `WHOLE`, `FIRST` or `LATER`.
    position: u8,
    /// The datagram's identification (0 for a whole datagram).
    pub id: u32,
}

const WHOLE: u8 = 0;
const FIRST: u8 = 1;
const LATER: u8 = 2;

impl Fragment {
    /// A whole datagram.
    pub const NONE: Fragment = Fragment {
        position: WHOLE,
        id: 0,
    };

    /// From the more-fragments flag and the fragment offset.
    #[inline(always)]
    fn of(more: bool, offset: u16, id: u32) -> Fragment {
        if offset != 0 {
            Fragment {
                position: LATER,
                id,
            }
        } else if more {
            Fragment {
                position: FIRST,
                id,
            }
        } else {
            Fragment::NONE
        }
    }

    /// The first fragment: has the L4 header, more fragments follow.
    #[inline(always)]
    pub fn is_first(self) -> bool {
        self.position == FIRST
    }

    /// A later fragment: no L4 header.
    #[inline(always)]
    pub fn is_later(self) -> bool {
        self.position == LATER
    }
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

/// ICMPv6 types of neighbour discovery (RFC 4861) and multicast listener
/// discovery (RFC 2710, RFC 3810).
pub const ND_ROUTER_SOLICIT: u8 = 133;
pub const ND_ROUTER_ADVERT: u8 = 134;
pub const ND_NEIGHBOUR_SOLICIT: u8 = 135;
pub const ND_NEIGHBOUR_ADVERT: u8 = 136;
pub const ND_REDIRECT: u8 = 137;
pub const MLD_QUERY: u8 = 130;
pub const MLD_REPORT: u8 = 131;
pub const MLD_DONE: u8 = 132;
pub const MLD2_REPORT: u8 = 143;
/// The hop limit every ND message carries; receivers drop others (RFC 4861).
const ND_HOP_LIMIT: u8 = 255;
/// Link-layer address options (RFC 4861 4.6.1): source and target.
const ND_OPT_SOURCE_LLADDR: u8 = 1;
const ND_OPT_TARGET_LLADDR: u8 = 2;
/// Options looked at before giving up (reported as malformed). Linux sends one.
const ND_MAX_OPTIONS: usize = 4;

/// An Ethernet address as loaded: its first four bytes as a little-endian
/// word (packet order), its last two as a big-endian half-word.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Mac {
    pub head: u32,
    pub tail: u16,
}

impl Mac {
    /// Its six bytes in order.
    #[inline(always)]
    pub fn octets(self) -> [u8; 6] {
        let [a, b, c, d] = self.head.to_le_bytes();
        let [e, f] = self.tail.to_be_bytes();
        [a, b, c, d, e, f]
    }
}

/// Where a neighbour discovery or MLD message lies in the frame.
#[derive(Clone, Copy)]
pub struct NeighbourAt {
    /// Offset of the ICMPv6 header.
    pub offset: u16,
    /// End of the IPv6 payload.
    pub ip_end: u16,
}

/// An ARP packet over Ethernet for IPv4.
#[derive(Clone, Copy)]
pub struct Arp {
    /// The sender protocol address (v4-mapped): who the packet claims to be.
    pub sender: Addr16,
}

/// A neighbour discovery or multicast listener message: the kernel's
/// neighbour machinery consumes it, no application sees it.
#[derive(Clone, Copy)]
pub struct Neighbour {
    pub src: Addr16,
    pub dst: Addr16,
    /// ICMPv6 type (`ND_*`, `MLD_*`).
    pub icmp_type: u8,
    /// The target address of a solicitation or advertisement; zero otherwise.
    pub target: Addr16,
    /// The frame's Ethernet source.
    pub src_mac: Mac,
    /// Every link-layer address option carries `src_mac`: a message cannot
    /// bind an address to another node's MAC.
    pub lladdr_is_src_mac: bool,
}

impl Packet {
    /// A packet known only by its IP header.
    #[inline(always)]
    pub fn addresses(ipv4: bool, src: Addr16, dst: Addr16, protocol: u8) -> Packet {
        Packet {
            ipv4,
            src,
            dst,
            protocol,
            src_port: 0,
            dst_port: 0,
            tcp_flags: 0,
            fragment: Fragment::NONE,
        }
    }
}

/// What the parser found.
pub enum Parsed {
    /// ARP ([`arp`] reads it).
    Arp,
    /// Neighbour discovery (hop limit 255) or multicast listener discovery
    /// (to a multicast group), read by [`neighbour`].
    Neighbour(NeighbourAt),
    /// Not IP and not ARP.
    OtherEtherType,
    /// An IP packet.
    Ip(Packet),
    /// A packet whose headers are truncated or malformed; its addresses
    /// (ports zero) when the IP header itself was readable.
    Malformed(Option<Packet>),
}

#[inline(always)]
fn ptr_at<T>(ctx: &TcContext, offset: usize) -> Option<*const T> {
    let start = ctx.data();
    if beyond(start + offset, core::mem::size_of::<T>(), ctx.data_end()) {
        return None;
    }
    Some((start + offset) as *const T)
}

/// Whether the `len` bytes at `at` reach beyond `end`, in the one form the
/// verifier takes as a bound: the packet pointer plus `len` compared with
/// `data_end`. The addition is an opaque instruction so that LLVM cannot
/// fold the comparison into `at > data_end - len`, or hoist `data_end - len`
/// out of a loop: the verifier refuses arithmetic on `data_end`.
#[inline(always)]
fn beyond(at: usize, len: usize, end: usize) -> bool {
    let mut last = at;
    // SAFETY: one addition in registers.
    unsafe {
        core::arch::asm!(
            "{last} += {len}",
            last = inout(reg) last,
            len = in(reg) len,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    last > end
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
    // SAFETY: the caller's guarantee.
    let (src, dst) = unsafe { ipv6_address_words(data) };
    (Addr16::from_le_words(src), Addr16::from_le_words(dst))
}

/// The same as words in packet byte order (see [`Addr16::from_le_words`]).
///
/// # Safety
/// As [`ipv6_addresses`].
#[inline(always)]
pub unsafe fn ipv6_address_words(data: usize) -> ([u32; 4], [u32; 4]) {
    // SAFETY: the caller's bounds check covers the whole header.
    unsafe {
        (
            [
                load_u32::<{ ETH_HLEN + 8 }>(data),
                load_u32::<{ ETH_HLEN + 12 }>(data),
                load_u32::<{ ETH_HLEN + 16 }>(data),
                load_u32::<{ ETH_HLEN + 20 }>(data),
            ],
            [
                load_u32::<{ ETH_HLEN + 24 }>(data),
                load_u32::<{ ETH_HLEN + 28 }>(data),
                load_u32::<{ ETH_HLEN + 32 }>(data),
                load_u32::<{ ETH_HLEN + 36 }>(data),
            ],
        )
    }
}

/// The start of the `N` bytes at `offset`, when the linear data holds them
/// all. One check per header, then unchecked loads inside it ([`at_u32`],
/// [`at_be16`]): checking each field on its own lets LLVM merge the checks
/// into control flow whose infeasible paths the verifier still walks.
///
/// Headers are read into registers a word at a time, never copied to the
/// stack, whose 512 bytes every frame of a program shares.
#[inline(always)]
fn header<const N: usize>(ctx: &TcContext, offset: usize) -> Option<usize> {
    ptr_at::<[u8; N]>(ctx, offset).map(|p| p as usize)
}

/// The four bytes at `at + OFFSET` (see [`load_u32`]).
///
/// # Safety
/// As for [`load_u32`]: `at` comes from [`header`] for at least `OFFSET + 4`
/// bytes.
#[inline(always)]
unsafe fn at_u32<const OFFSET: usize>(at: usize) -> u32 {
    // SAFETY: the caller's header check covers the four bytes.
    unsafe { load_u32::<OFFSET>(at) }
}

/// The big-endian 16-bit value at `at + OFFSET`.
///
/// # Safety
/// `at` comes from [`header`] for at least `OFFSET + 2` bytes.
#[inline(always)]
unsafe fn at_be16<const OFFSET: usize>(at: usize) -> u16 {
    let p = (at + OFFSET) as *const u8;
    // SAFETY: the caller's header check covers both bytes.
    unsafe { u16::from_be_bytes([*p, *p.add(1)]) }
}

/// The big-endian 16-bit value at `offset`.
#[inline(always)]
fn be16(ctx: &TcContext, offset: usize) -> Option<u16> {
    let at = header::<2>(ctx, offset)?;
    // SAFETY: `header` checked both bytes.
    Some(unsafe { at_be16::<0>(at) })
}

/// The address in the 16 bytes at `at + OFFSET`.
///
/// # Safety
/// `at` comes from [`header`] for at least `OFFSET + 16` bytes.
#[inline(always)]
unsafe fn at_addr16<const OFFSET: usize, const O4: usize, const O8: usize, const O12: usize>(
    at: usize,
) -> Addr16 {
    // SAFETY: the caller's header check covers the 16 bytes.
    unsafe {
        Addr16::from_le_words([
            at_u32::<OFFSET>(at),
            at_u32::<O4>(at),
            at_u32::<O8>(at),
            at_u32::<O12>(at),
        ])
    }
}

/// The MAC address in the 6 bytes at `at + OFFSET` (`O4` = `OFFSET + 4`).
///
/// # Safety
/// `at` comes from [`header`] for at least `OFFSET + 6` bytes.
#[inline(always)]
unsafe fn at_mac<const OFFSET: usize, const O4: usize>(at: usize) -> Mac {
    // SAFETY: the caller's header check covers the 6 bytes.
    unsafe {
        Mac {
            head: at_u32::<OFFSET>(at),
            tail: at_be16::<O4>(at),
        }
    }
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
        ETH_P_ARP => Parsed::Arp,
        _ => Parsed::OtherEtherType,
    }
}

/// The ARP packet of a frame [`parse`] found to be ARP: for IPv4 over
/// Ethernet (hardware type 1, protocol 0x0800, address lengths 6 and 4), or
/// `None` for anything else claiming to be ARP.
#[inline(always)]
pub fn arp(ctx: &TcContext) -> Option<Arp> {
    let h = header::<28>(ctx, ETH_HLEN)?;
    // SAFETY (all loads): inside the 28 bytes `header` checked.
    let (types, lengths, sender) = unsafe { (at_u32::<0>(h), at_be16::<4>(h), at_u32::<14>(h)) };
    // Hardware type, protocol type, then the two address lengths.
    if types != u32::from_le_bytes([0, 1, 0x08, 0x00]) || lengths != u16::from_be_bytes([6, 4]) {
        return None;
    }
    Some(Arp {
        sender: Addr16::from_v4(sender.to_le_bytes()),
    })
}

#[inline(always)]
fn parse_ipv4(ctx: &TcContext) -> Parsed {
    if ptr_at::<[u8; 20]>(ctx, ETH_HLEN).is_none() {
        return Parsed::Malformed(None);
    }
    let data = ctx.data();
    // SAFETY (all loads): inside the 20-byte header, checked just above.
    let (first, id_fragment, ttl_protocol, src, dst) = unsafe {
        (
            load_u32::<{ ETH_HLEN }>(data),
            load_u32::<{ ETH_HLEN + 4 }>(data),
            load_u32::<{ ETH_HLEN + 8 }>(data),
            load_u32::<{ ETH_HLEN + 12 }>(data),
            load_u32::<{ ETH_HLEN + 16 }>(data),
        )
    };
    let src = Addr16::from_v4(src.to_le_bytes());
    let dst = Addr16::from_v4(dst.to_le_bytes());
    let protocol = ttl_protocol.to_le_bytes()[1];
    let version_ihl = first.to_le_bytes()[0];
    let ihl = (version_ihl & 0x0f) as usize * 4;
    if version_ihl >> 4 != 4 || ihl < 20 {
        return Parsed::Malformed(Some(Packet::addresses(true, src, dst, protocol)));
    }
    let [id_hi, id_lo, flags_hi, flags_lo] = id_fragment.to_le_bytes();
    let flags_offset = u16::from_be_bytes([flags_hi, flags_lo]);
    let more_fragments = flags_offset & 0x2000 != 0;
    let offset = flags_offset & 0x1fff;
    let id = u16::from_be_bytes([id_hi, id_lo]) as u32;
    let fragment = Fragment::of(more_fragments, offset, id);
    l4(
        ctx,
        ETH_HLEN + ihl,
        true,
        src,
        dst,
        protocol,
        fragment,
        0,
        0,
    )
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
    let [len_hi, len_lo, next_header, hop_limit] = second.to_le_bytes();
    let ip_end = ETH_HLEN + 40 + u16::from_be_bytes([len_hi, len_lo]) as usize;
    let malformed =
        |protocol| Parsed::Malformed(Some(Packet::addresses(false, src, dst, protocol)));
    // An IPv6 packet with a v4-mapped address would meet the IPv4 entries of
    // the ipcache (UDP sockets accept such sources): never an identity.
    if first.to_le_bytes()[0] >> 4 != 6 || src.is_v4_mapped() || dst.is_v4_mapped() {
        return malformed(next_header);
    }
    let mut next = next_header;
    let mut offset = ETH_HLEN + 40;
    let mut fragment = Fragment::NONE;
    for _ in 0..IPV6_MAX_EXT_HEADERS {
        match next {
            IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS => {
                let Some(ext) = be16(ctx, offset) else {
                    return malformed(next);
                };
                let [following, units] = ext.to_be_bytes();
                next = following;
                // Bounded so the verifier can follow the offset.
                offset = (offset + (units as usize + 1) * 8) & 0x3ff;
            }
            IPV6_FRAGMENT => {
                let Some(h) = header::<8>(ctx, offset) else {
                    return malformed(next);
                };
                // SAFETY: inside the 8 bytes `header` checked.
                let (head, id) = unsafe { (at_u32::<0>(h), at_u32::<4>(h)) };
                let [following, _, field_hi, field_lo] = head.to_le_bytes();
                next = following;
                let frag_offset = u16::from_be_bytes([field_hi, field_lo]) >> 3;
                let more = field_lo & 1 != 0;
                let id = u32::from_be(id);
                fragment = Fragment::of(more, frag_offset, id);
                offset = (offset + 8) & 0x3ff;
            }
            _ => {
                return l4(
                    ctx, offset, false, src, dst, next, fragment, hop_limit, ip_end,
                );
            }
        }
    }
    malformed(next)
}

#[inline(always)]
#[expect(
    clippy::too_many_arguments,
    reason = "inlined parser stage; the arguments are the IP header's fields"
)]
fn l4(
    ctx: &TcContext,
    offset: usize,
    ipv4: bool,
    src: Addr16,
    dst: Addr16,
    protocol: u8,
    fragment: Fragment,
    hop_limit: u8,
    ip_end: usize,
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
    if fragment.is_later() {
        return Parsed::Ip(packet);
    }
    let offset = offset & 0x3ff;
    let malformed = || Parsed::Malformed(Some(Packet::addresses(ipv4, src, dst, protocol)));
    match protocol {
        IPPROTO_TCP => {
            let Some(h) = header::<20>(ctx, offset) else {
                return malformed();
            };
            // SAFETY: inside the 20 bytes `header` checked.
            let (ports, offset_flags) = unsafe { (at_u32::<0>(h), at_u32::<12>(h)) };
            let [data_offset, flags, ..] = offset_flags.to_le_bytes();
            if data_offset >> 4 < 5 {
                return malformed();
            }
            (packet.src_port, packet.dst_port) = ports_of(ports);
            packet.tcp_flags = flags;
        }
        IPPROTO_UDP | IPPROTO_SCTP => {
            // UDP's header is 8 bytes, SCTP's common header 12.
            let h = if protocol == IPPROTO_UDP {
                header::<8>(ctx, offset)
            } else {
                header::<12>(ctx, offset)
            };
            let Some(h) = h else {
                return malformed();
            };
            // SAFETY: inside the (at least 8) bytes `header` checked.
            (packet.src_port, packet.dst_port) = ports_of(unsafe { at_u32::<0>(h) });
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            let Some(h) = header::<8>(ctx, offset) else {
                return malformed();
            };
            // SAFETY: inside the 8 bytes `header` checked.
            let (head, rest) = unsafe { (at_u32::<0>(h), at_u32::<4>(h)) };
            let [ty, code, ..] = head.to_le_bytes();
            if protocol == IPPROTO_ICMPV6 && code == 0 && fragment == Fragment::NONE {
                let nd =
                    (ND_ROUTER_SOLICIT..=ND_REDIRECT).contains(&ty) && hop_limit == ND_HOP_LIMIT;
                // Multicast listener queries and reports (MLD) always go to a
                // multicast group; sent to a unicast address they are just
                // ICMPv6 and face policy like any other.
                let mld = matches!(ty, MLD_QUERY | MLD_REPORT | MLD_DONE | MLD2_REPORT)
                    && dst.is_multicast();
                if nd || mld {
                    return Parsed::Neighbour(NeighbourAt {
                        offset: offset as u16,
                        ip_end: ip_end as u16,
                    });
                }
            }
            if is_echo(protocol, ty) {
                let [id_hi, id_lo, ..] = rest.to_le_bytes();
                let id = u16::from_be_bytes([id_hi, id_lo]);
                packet.src_port = id;
                packet.dst_port = id;
            }
        }
        _ => {}
    }
    Parsed::Ip(packet)
}

/// The ND or MLD message [`parse`] found at `at`: its addresses, its target
/// and whether its link-layer address options name the frame's own source
/// MAC; `None` when it is truncated or its options are malformed.
#[inline(always)]
pub fn neighbour(ctx: &TcContext, at: NeighbourAt) -> Option<Neighbour> {
    let offset = at.offset as usize & 0x3ff;
    let ip_end = at.ip_end as usize;
    if ptr_at::<[u8; 40]>(ctx, ETH_HLEN).is_none() {
        return None;
    }
    // SAFETY: inside the 40-byte header, checked just above.
    let (src, dst) = unsafe { ipv6_addresses(ctx.data()) };
    let eth = header::<12>(ctx, 0)?;
    // SAFETY: inside the 12 bytes `header` checked.
    let src_mac = unsafe { at_mac::<6, 10>(eth) };
    let [ty, _code] = be16(ctx, offset)?.to_be_bytes();
    let mut msg = Neighbour {
        src,
        dst,
        icmp_type: ty,
        target: Addr16::UNSPECIFIED,
        src_mac,
        lladdr_is_src_mac: true,
    };
    // Where the options start: after the fixed part of the message.
    let options = match ty {
        ND_ROUTER_SOLICIT => offset + 8,
        ND_NEIGHBOUR_SOLICIT | ND_NEIGHBOUR_ADVERT | ND_REDIRECT => {
            let h = header::<24>(ctx, offset)?;
            // SAFETY: inside the 24 bytes `header` checked.
            msg.target = unsafe { at_addr16::<8, 12, 16, 20>(h) };
            // A redirect also names the destination it redirects.
            if ty == ND_REDIRECT {
                offset + 40
            } else {
                offset + 24
            }
        }
        // Router advertisements are judged by type alone; MLD has no
        // link-layer options.
        _ => return Some(msg),
    };
    let mut at = options & 0x3ff;
    for _ in 0..ND_MAX_OPTIONS {
        if at >= ip_end {
            return Some(msg);
        }
        // Inside the message but not in the linear data: unseen, so refused.
        let [kind, units] = be16(ctx, at)?.to_be_bytes();
        if units == 0 {
            // Invalid, and receivers stop at it (RFC 4861 4.6).
            return None;
        }
        if kind == ND_OPT_SOURCE_LLADDR || kind == ND_OPT_TARGET_LLADDR {
            let h = header::<8>(ctx, at)?;
            // SAFETY: inside the 8 bytes `header` checked.
            let lladdr = unsafe { at_mac::<2, 6>(h) };
            if units != 1 || lladdr != src_mac {
                msg.lladdr_is_src_mac = false;
            }
        }
        at = (at + units as usize * 8) & 0x3ff;
    }
    // More options than any sender writes: none may go unseen.
    (at >= ip_end).then_some(msg)
}

/// Source and destination port, host order, of the word holding both.
#[inline(always)]
fn ports_of(word: u32) -> (u16, u16) {
    let [a, b, c, d] = word.to_le_bytes();
    (u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]))
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
