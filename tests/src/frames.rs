//! Crafted Ethernet frames for `BPF_PROG_TEST_RUN` kernel tests.
//!
//! ```
//! use palisade_tests::frames::{Frame, TcpFlags};
//! let frame = Frame::ipv4("10.244.0.2".parse().unwrap(), "10.244.0.3".parse().unwrap())
//!     .tcp(40000, 80, TcpFlags::SYN)
//!     .payload(10)
//!     .build();
//! assert_eq!(frame.len(), 14 + 20 + 20 + 10);
//! ```
//!
//! Length fields (IPv4 total length, IPv6 payload length, UDP length) always
//! describe the packet as built, before [`Frame::truncate_to`] cuts it or
//! [`Frame::pad_to`] appends trailing zeros (like Ethernet padding). The
//! IPv4 header checksum and the L4 checksums (TCP, UDP, ICMP, ICMPv6 and
//! SCTP's CRC32c) are computed over the bytes of this frame, so unfragmented
//! frames are valid packets.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::{
    checksum::{internet_checksum, l4_checksum},
    sctp,
};

/// Length of an Ethernet header.
pub const ETH_HLEN: usize = 14;
/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// Length of an IPv4 header without options.
pub const IPV4_HLEN: usize = 20;
/// Length of the fixed IPv6 header.
pub const IPV6_HLEN: usize = 40;

/// IP protocol numbers used here.
pub mod ipproto {
    /// IPv6 Hop-by-Hop Options.
    pub const HOPOPTS: u8 = 0;
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// IPv6 Routing header.
    pub const ROUTING: u8 = 43;
    /// IPv6 Fragment header.
    pub const FRAGMENT: u8 = 44;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// IPv6 "no next header".
    pub const NONE: u8 = 59;
    /// IPv6 Destination Options.
    pub const DSTOPTS: u8 = 60;
    /// SCTP.
    pub const SCTP: u8 = 132;
    /// Reserved; used for IPv4 frames without an L4 part.
    pub const RESERVED: u8 = 255;
}

/// TCP header flags; combine with `|`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// No flags.
    pub const NONE: TcpFlags = TcpFlags(0);
    /// FIN.
    pub const FIN: TcpFlags = TcpFlags(0x01);
    /// SYN.
    pub const SYN: TcpFlags = TcpFlags(0x02);
    /// RST.
    pub const RST: TcpFlags = TcpFlags(0x04);
    /// PSH.
    pub const PSH: TcpFlags = TcpFlags(0x08);
    /// ACK.
    pub const ACK: TcpFlags = TcpFlags(0x10);
    /// URG.
    pub const URG: TcpFlags = TcpFlags(0x20);
}

impl std::ops::BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

/// An IPv6 extension header placed between the IPv6 header and the L4
/// header, each 8 bytes long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipv6Ext {
    /// Hop-by-Hop Options (next header 0) holding one PadN option.
    HopByHop,
    /// Routing header (43), type 253 (experimental), segments left 0.
    Routing,
    /// Destination Options (60) holding one PadN option.
    DestinationOptions,
}

impl Ipv6Ext {
    /// The next-header value that announces this header.
    pub fn protocol(self) -> u8 {
        match self {
            Ipv6Ext::HopByHop => ipproto::HOPOPTS,
            Ipv6Ext::Routing => ipproto::ROUTING,
            Ipv6Ext::DestinationOptions => ipproto::DSTOPTS,
        }
    }

    fn write(self, next: u8, out: &mut Vec<u8>) {
        match self {
            Ipv6Ext::HopByHop | Ipv6Ext::DestinationOptions => {
                // next, hdr ext len 0 (8 bytes), PadN(4 zero bytes).
                out.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
            }
            Ipv6Ext::Routing => {
                // next, len 0, routing type 253, segments left 0, reserved.
                out.extend_from_slice(&[next, 0, 253, 0, 0, 0, 0, 0]);
            }
        }
    }
}

/// Fragmentation of the IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fragment {
    offset: u16,
    more: bool,
    id: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Network {
    V4 { src: Ipv4Addr, dst: Ipv4Addr },
    V6 { src: Ipv6Addr, dst: Ipv6Addr },
    Arp { sender: Ipv4Addr, target: Ipv4Addr },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    None,
    Tcp {
        sport: u16,
        dport: u16,
        flags: TcpFlags,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    Sctp {
        sport: u16,
        dport: u16,
    },
    IcmpEcho,
    Icmpv6Echo,
    /// Any ICMPv6 message: type, code, and what follows the checksum.
    Icmpv6 {
        ty: u8,
        code: u8,
    },
    Other(u8),
}

/// Bytes an [`Frame::proto`] frame carries as its "L4 header".
const OTHER_PROTO_LEN: usize = 8;

/// A frame under construction; finish with [`Frame::build`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Frame {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    network: Network,
    transport: Transport,
    ttl: u8,
    ipv4_options: Vec<u8>,
    ext_headers: Vec<Ipv6Ext>,
    fragment: Option<Fragment>,
    payload: Vec<u8>,
    truncate: Option<usize>,
    pad: Option<usize>,
}

impl Frame {
    fn new(network: Network) -> Self {
        Self {
            src_mac: [0x02, 0, 0, 0, 0, 0x01],
            dst_mac: [0x02, 0, 0, 0, 0, 0x02],
            network,
            transport: Transport::None,
            ttl: 64,
            ipv4_options: Vec::new(),
            ext_headers: Vec::new(),
            fragment: None,
            payload: Vec::new(),
            truncate: None,
            pad: None,
        }
    }

    /// An IPv4 frame (EtherType 0x0800). Without an L4 choice its protocol
    /// is 255 and it carries nothing after the IP header.
    pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr) -> Self {
        Self::new(Network::V4 { src, dst })
    }

    /// An IPv6 frame (EtherType 0x86dd). Without an L4 choice its next
    /// header is 59 (no next header).
    pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr) -> Self {
        Self::new(Network::V6 { src, dst })
    }

    /// An IP frame of `src`'s family. `src` and `dst` must be of the same
    /// family (a mix panics).
    pub fn ip(src: IpAddr, dst: IpAddr) -> Self {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => Self::ipv4(s, d),
            (IpAddr::V6(s), IpAddr::V6(d)) => Self::ipv6(s, d),
            _ => panic!("Frame::ip: {src} and {dst} are of different families"),
        }
    }

    /// A broadcast ARP request from 10.244.0.2 for 169.254.1.1 (a pod asking
    /// for its gateway).
    pub fn arp() -> Self {
        Self::arp_request(Ipv4Addr::new(10, 244, 0, 2), Ipv4Addr::new(169, 254, 1, 1))
    }

    /// A broadcast ARP request from `sender` asking for `target`.
    pub fn arp_request(sender: Ipv4Addr, target: Ipv4Addr) -> Self {
        let mut f = Self::new(Network::Arp { sender, target });
        f.dst_mac = [0xff; 6];
        f
    }

    /// Sets the Ethernet source and destination MACs.
    pub fn macs(mut self, src: [u8; 6], dst: [u8; 6]) -> Self {
        self.src_mac = src;
        self.dst_mac = dst;
        self
    }

    /// Sets the IPv4 TTL / IPv6 hop limit (default 64).
    pub fn ttl(mut self, ttl: u8) -> Self {
        self.ttl = ttl;
        self
    }

    /// TCP header (20 bytes, seq 1, ack 1 when ACK is set, window 65535).
    pub fn tcp(mut self, sport: u16, dport: u16, flags: TcpFlags) -> Self {
        self.transport = Transport::Tcp {
            sport,
            dport,
            flags,
        };
        self
    }

    /// UDP header (8 bytes).
    pub fn udp(mut self, sport: u16, dport: u16) -> Self {
        self.transport = Transport::Udp { sport, dport };
        self
    }

    /// SCTP common header plus an INIT chunk (32 bytes).
    pub fn sctp(mut self, sport: u16, dport: u16) -> Self {
        self.transport = Transport::Sctp { sport, dport };
        self
    }

    /// ICMP echo request (type 8, id 0x1234, seq 1; 8 bytes).
    pub fn icmp_echo(mut self) -> Self {
        self.transport = Transport::IcmpEcho;
        self
    }

    /// ICMPv6 echo request (type 128, id 0x1234, seq 1; 8 bytes).
    pub fn icmpv6_echo(mut self) -> Self {
        self.transport = Transport::Icmpv6Echo;
        self
    }

    /// An ICMPv6 message of type `ty` and code `code` whose body (what follows
    /// the checksum) is the payload ([`Frame::payload_bytes`]); see
    /// [`nd`] for neighbour discovery bodies.
    pub fn icmpv6(mut self, ty: u8, code: u8) -> Self {
        self.transport = Transport::Icmpv6 { ty, code };
        self
    }

    /// The frame's Ethernet source.
    pub fn src_mac(&self) -> [u8; 6] {
        self.src_mac
    }

    /// Another IP protocol `protocol`, carrying 8 bytes (0xa5) before any
    /// payload.
    pub fn proto(mut self, protocol: u8) -> Self {
        self.transport = Transport::Other(protocol);
        self
    }

    /// IPv4 options (header longer than 20 bytes, IHL > 5). Padded with
    /// End-of-Options (0) to a multiple of 4; at most 40 bytes.
    pub fn ipv4_options(mut self, options: &[u8]) -> Self {
        assert!(options.len() <= 40, "IPv4 options are at most 40 bytes");
        self.ipv4_options = options.to_vec();
        while !self.ipv4_options.len().is_multiple_of(4) {
            self.ipv4_options.push(0);
        }
        self
    }

    /// IPv6 extension headers, in this order, before the L4 header (and
    /// before the Fragment header if [`Frame::fragment`] is used).
    pub fn ipv6_ext_headers(mut self, headers: &[Ipv6Ext]) -> Self {
        self.ext_headers = headers.to_vec();
        self
    }

    /// Makes the packet a fragment: `offset` in 8-byte units, the
    /// more-fragments flag, and the identification (IPv4 uses the low 16
    /// bits). IPv4 sets the flags/offset field; IPv6 gets a Fragment header
    /// right before the L4 header. The L4 header is still written, so a
    /// non-first fragment can carry bytes that look like ports: a program
    /// must not trust them.
    pub fn fragment(mut self, offset: u16, more_fragments: bool, id: u32) -> Self {
        assert!(offset < 1 << 13, "fragment offset has 13 bits");
        self.fragment = Some(Fragment {
            offset,
            more: more_fragments,
            id,
        });
        self
    }

    /// `n` bytes of payload after the L4 header (a counting pattern).
    pub fn payload(mut self, n: usize) -> Self {
        self.payload = (0..n).map(|i| (i % 251) as u8).collect();
        self
    }

    /// These bytes as payload after the L4 header.
    pub fn payload_bytes(mut self, bytes: &[u8]) -> Self {
        self.payload = bytes.to_vec();
        self
    }

    /// Cuts the finished frame to at most `len` bytes (length fields keep
    /// describing the whole packet, as in a truncated capture).
    pub fn truncate_to(mut self, len: usize) -> Self {
        self.truncate = Some(len);
        self
    }

    /// Appends zeros to the finished frame until it is `len` bytes long
    /// (after any truncation; length fields are unchanged).
    pub fn pad_to(mut self, len: usize) -> Self {
        self.pad = Some(len);
        self
    }

    /// The L4 protocol number the network header announces.
    fn protocol(&self) -> u8 {
        match self.transport {
            Transport::None => match self.network {
                Network::V6 { .. } => ipproto::NONE,
                _ => ipproto::RESERVED,
            },
            Transport::Tcp { .. } => ipproto::TCP,
            Transport::Udp { .. } => ipproto::UDP,
            Transport::Sctp { .. } => ipproto::SCTP,
            Transport::IcmpEcho => ipproto::ICMP,
            Transport::Icmpv6Echo | Transport::Icmpv6 { .. } => ipproto::ICMPV6,
            Transport::Other(p) => p,
        }
    }

    /// The L4 segment (header and payload) with its checksum.
    fn segment(&self, src: IpAddr, dst: IpAddr) -> Vec<u8> {
        let mut s = Vec::new();
        let checksum_at = match self.transport {
            Transport::None => None,
            Transport::Tcp {
                sport,
                dport,
                flags,
            } => {
                s.extend_from_slice(&sport.to_be_bytes());
                s.extend_from_slice(&dport.to_be_bytes());
                s.extend_from_slice(&1u32.to_be_bytes());
                let ack = u32::from(flags.0 & TcpFlags::ACK.0 != 0);
                s.extend_from_slice(&ack.to_be_bytes());
                s.extend_from_slice(&[5 << 4, flags.0]);
                s.extend_from_slice(&65535u16.to_be_bytes());
                s.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
                Some(16)
            }
            Transport::Udp { sport, dport } => {
                s.extend_from_slice(&sport.to_be_bytes());
                s.extend_from_slice(&dport.to_be_bytes());
                let len = (8 + self.payload.len()) as u16;
                s.extend_from_slice(&len.to_be_bytes());
                s.extend_from_slice(&[0, 0]);
                Some(6)
            }
            Transport::Sctp { sport, dport } => {
                s = sctp::init_packet(sport, dport, 0x5a5a_0001, 1);
                None
            }
            Transport::IcmpEcho => {
                s.extend_from_slice(&[8, 0, 0, 0, 0x12, 0x34, 0, 1]);
                Some(2)
            }
            Transport::Icmpv6Echo => {
                s.extend_from_slice(&[128, 0, 0, 0, 0x12, 0x34, 0, 1]);
                Some(2)
            }
            Transport::Icmpv6 { ty, code } => {
                s.extend_from_slice(&[ty, code, 0, 0]);
                Some(2)
            }
            Transport::Other(_) => {
                s.extend_from_slice(&[0xa5; OTHER_PROTO_LEN]);
                None
            }
        };
        s.extend_from_slice(&self.payload);
        match self.transport {
            Transport::Sctp { .. } => sctp::set_checksum(&mut s),
            Transport::IcmpEcho => {
                let c = internet_checksum(&s);
                s[2..4].copy_from_slice(&c.to_be_bytes());
            }
            _ => {
                if let Some(at) = checksum_at {
                    let mut c = l4_checksum(src, dst, self.protocol(), &s);
                    if c == 0 && matches!(self.transport, Transport::Udp { .. }) {
                        c = 0xffff;
                    }
                    s[at..at + 2].copy_from_slice(&c.to_be_bytes());
                }
            }
        }
        s
    }

    /// Builds the frame.
    pub fn build(&self) -> Vec<u8> {
        let mut f = Vec::with_capacity(128);
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        match self.network {
            Network::V4 { src, dst } => {
                f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
                let segment = self.segment(src.into(), dst.into());
                let hlen = IPV4_HLEN + self.ipv4_options.len();
                let total = (hlen + segment.len()) as u16;
                let (id, frag) = match self.fragment {
                    Some(fr) => (fr.id as u16, fr.offset | if fr.more { 0x2000 } else { 0 }),
                    None => (0x4242, 0),
                };
                let mut h = Vec::with_capacity(hlen);
                h.push(0x40 | (hlen / 4) as u8);
                h.push(0); // DSCP/ECN
                h.extend_from_slice(&total.to_be_bytes());
                h.extend_from_slice(&id.to_be_bytes());
                h.extend_from_slice(&frag.to_be_bytes());
                h.push(self.ttl);
                h.push(self.protocol());
                h.extend_from_slice(&[0, 0]); // checksum
                h.extend_from_slice(&src.octets());
                h.extend_from_slice(&dst.octets());
                h.extend_from_slice(&self.ipv4_options);
                let c = internet_checksum(&h);
                h[10..12].copy_from_slice(&c.to_be_bytes());
                f.extend_from_slice(&h);
                f.extend_from_slice(&segment);
            }
            Network::V6 { src, dst } => {
                f.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
                let segment = self.segment(src.into(), dst.into());
                // Chain: ext headers..., fragment header, L4.
                let mut chain: Vec<u8> = self.ext_headers.iter().map(|e| e.protocol()).collect();
                if self.fragment.is_some() {
                    chain.push(ipproto::FRAGMENT);
                }
                chain.push(self.protocol());
                let mut ext = Vec::new();
                for (i, header) in self.ext_headers.iter().enumerate() {
                    header.write(chain[i + 1], &mut ext);
                }
                if let Some(fr) = self.fragment {
                    ext.push(self.protocol());
                    ext.push(0);
                    let field = (fr.offset << 3) | u16::from(fr.more);
                    ext.extend_from_slice(&field.to_be_bytes());
                    ext.extend_from_slice(&fr.id.to_be_bytes());
                }
                let payload_len = (ext.len() + segment.len()) as u16;
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                f.extend_from_slice(&payload_len.to_be_bytes());
                f.push(chain[0]);
                f.push(self.ttl);
                f.extend_from_slice(&src.octets());
                f.extend_from_slice(&dst.octets());
                f.extend_from_slice(&ext);
                f.extend_from_slice(&segment);
            }
            Network::Arp { sender, target } => {
                f.extend_from_slice(&ETHERTYPE_ARP.to_be_bytes());
                f.extend_from_slice(&1u16.to_be_bytes()); // Ethernet
                f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
                f.extend_from_slice(&[6, 4]);
                f.extend_from_slice(&1u16.to_be_bytes()); // request
                f.extend_from_slice(&self.src_mac);
                f.extend_from_slice(&sender.octets());
                f.extend_from_slice(&[0; 6]);
                f.extend_from_slice(&target.octets());
            }
        }
        if let Some(len) = self.truncate {
            f.truncate(len);
        }
        if let Some(len) = self.pad
            && f.len() < len
        {
            f.resize(len, 0);
        }
        f
    }
}

/// Bodies of neighbour discovery messages (RFC 4861), for
/// [`Frame::icmpv6`] with [`Frame::payload_bytes`].
pub mod nd {
    use std::net::Ipv6Addr;

    /// ICMPv6 type of a router solicitation.
    pub const ROUTER_SOLICIT: u8 = 133;
    /// ICMPv6 type of a router advertisement.
    pub const ROUTER_ADVERT: u8 = 134;
    /// ICMPv6 type of a neighbour solicitation.
    pub const NEIGHBOUR_SOLICIT: u8 = 135;
    /// ICMPv6 type of a neighbour advertisement.
    pub const NEIGHBOUR_ADVERT: u8 = 136;
    /// ICMPv6 type of a redirect.
    pub const REDIRECT: u8 = 137;
    /// The hop limit ND messages carry.
    pub const HOP_LIMIT: u8 = 255;

    /// A link-layer address option: `kind` 1 (source) or 2 (target).
    pub fn lladdr(kind: u8, mac: [u8; 6]) -> Vec<u8> {
        let mut o = vec![kind, 1];
        o.extend_from_slice(&mac);
        o
    }

    /// A solicitation for `target`, with these options.
    pub fn solicit(target: Ipv6Addr, options: &[u8]) -> Vec<u8> {
        let mut b = vec![0; 4];
        b.extend_from_slice(&target.octets());
        b.extend_from_slice(options);
        b
    }

    /// A solicited, overriding advertisement for `target`.
    pub fn advert(target: Ipv6Addr, options: &[u8]) -> Vec<u8> {
        let mut b = vec![0x60, 0, 0, 0];
        b.extend_from_slice(&target.octets());
        b.extend_from_slice(options);
        b
    }

    /// A router solicitation with these options.
    pub fn router_solicit(options: &[u8]) -> Vec<u8> {
        let mut b = vec![0; 4];
        b.extend_from_slice(options);
        b
    }

    /// A router advertisement: hop limit 64, lifetime 1800 s.
    pub fn router_advert(options: &[u8]) -> Vec<u8> {
        let mut b = vec![64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0];
        b.extend_from_slice(options);
        b
    }

    /// A redirect of traffic for `destination` to `target`.
    pub fn redirect(target: Ipv6Addr, destination: Ipv6Addr) -> Vec<u8> {
        let mut b = vec![0; 4];
        b.extend_from_slice(&target.octets());
        b.extend_from_slice(&destination.octets());
        b
    }

    /// The solicited-node multicast group of `addr`.
    pub fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
        let o = addr.octets();
        Ipv6Addr::new(
            0xff02,
            0,
            0,
            0,
            0,
            1,
            0xff00 | u16::from(o[13]),
            u16::from_be_bytes([o[14], o[15]]),
        )
    }

    /// The modified EUI-64 link-local address of `mac`.
    pub fn link_local(mac: [u8; 6]) -> Ipv6Addr {
        Ipv6Addr::from([
            0xfe,
            0x80,
            0,
            0,
            0,
            0,
            0,
            0,
            mac[0] ^ 2,
            mac[1],
            mac[2],
            0xff,
            0xfe,
            mac[3],
            mac[4],
            mac[5],
        ])
    }
}
