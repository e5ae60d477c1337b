//! The address form used in every key: 16 bytes in network order, IPv4 as the
//! v4-mapped IPv6 address `::ffff:a.b.c.d`, so one map serves both families.

/// A 16-byte address in network byte order.
///
/// Aligned to 4 bytes (every key and value places it at a multiple of 4): with
/// byte alignment, LLVM's BPF backend copies and compares it one byte at a
/// time, 16 loads and stores per copy on the per-packet path.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Addr16(pub [u8; 16]);

const _: () = assert!(core::mem::size_of::<Addr16>() == 16);
const _: () = assert!(core::mem::align_of::<Addr16>() == 4);

crate::user_pod!(Addr16);

/// Bits added to an IPv4 prefix length to express it over [`Addr16`].
pub const V4_MAPPED_PREFIX_BITS: u32 = 96;

impl Addr16 {
    /// All zero: `::`, and the placeholder for a family a pod has no address of.
    pub const UNSPECIFIED: Addr16 = Addr16([0; 16]);

    /// The v4-mapped form of an IPv4 address given as its 4 network-order bytes.
    #[inline(always)]
    pub const fn from_v4(octets: [u8; 4]) -> Self {
        Addr16([
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, octets[0], octets[1], octets[2], octets[3],
        ])
    }

    /// The address from four words as a program loads them from a packet:
    /// each word's little-endian bytes are four of the address's bytes, in
    /// order. Four word stores instead of sixteen byte stores.
    #[inline(always)]
    pub const fn from_le_words(words: [u32; 4]) -> Self {
        let words = [
            words[0].to_le(),
            words[1].to_le(),
            words[2].to_le(),
            words[3].to_le(),
        ];
        // SAFETY: 16 plain bytes either way; `to_le` puts each word's bytes in
        // memory in little-endian order on any host.
        unsafe { core::mem::transmute::<[u32; 4], Addr16>(words) }
    }

    /// The inverse of [`Addr16::from_le_words`].
    #[inline(always)]
    pub const fn to_le_words(&self) -> [u32; 4] {
        let w = self.words();
        [
            u32::from_le(w[0]),
            u32::from_le(w[1]),
            u32::from_le(w[2]),
            u32::from_le(w[3]),
        ]
    }

    /// The last four bytes: the IPv4 address of a v4-mapped one.
    #[inline(always)]
    pub const fn v4_octets(&self) -> [u8; 4] {
        [self.0[12], self.0[13], self.0[14], self.0[15]]
    }

    /// Whether this is a v4-mapped IPv4 address.
    #[inline(always)]
    pub fn is_v4_mapped(&self) -> bool {
        let w = self.words();
        w[0] == 0 && w[1] == 0 && w[2] == u32::from_ne_bytes([0, 0, 0xff, 0xff])
    }

    /// Whether this is an IPv6 link-local unicast address (`fe80::/10`).
    #[inline(always)]
    pub fn is_link_local(&self) -> bool {
        self.0[0] == 0xfe && self.0[1] & 0xc0 == 0x80
    }

    /// Whether this is an IPv6 multicast address (`ff00::/8`).
    #[inline(always)]
    pub fn is_multicast(&self) -> bool {
        self.0[0] == 0xff
    }

    /// The link-local address a modified EUI-64 interface identifier makes of
    /// an Ethernet address (RFC 4291 appendix A): what Linux gives an
    /// interface by default.
    #[inline(always)]
    pub const fn link_local_eui64(mac: [u8; 6]) -> Addr16 {
        Addr16([
            0xfe,
            0x80,
            0,
            0,
            0,
            0,
            0,
            0,
            mac[0] ^ 0x02,
            mac[1],
            mac[2],
            0xff,
            0xfe,
            mac[3],
            mac[4],
            mac[5],
        ])
    }

    /// The address as four words in memory order (for word-wise compares).
    #[inline(always)]
    const fn words(&self) -> [u32; 4] {
        // SAFETY: 16 plain bytes either way; `Addr16` is 4-byte aligned.
        unsafe { core::mem::transmute::<Addr16, [u32; 4]>(*self) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_mapped_is_recognised_by_its_prefix_only() {
        assert!(Addr16::from_v4([10, 0, 0, 1]).is_v4_mapped());
        assert!(Addr16::from_v4([0, 0, 0, 0]).is_v4_mapped());
        assert!(!Addr16::UNSPECIFIED.is_v4_mapped());
        let mut v6 = Addr16::from_v4([10, 0, 0, 1]);
        v6.0[9] = 1;
        assert!(!v6.is_v4_mapped());
    }

    #[test]
    fn link_local_of_a_mac_is_its_modified_eui64() {
        let ll = Addr16::link_local_eui64([0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);
        let want: [u8; 16] = [
            0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x00, 0x42, 0xac, 0xff, 0xfe, 0x11, 0x00, 0x02,
        ];
        assert_eq!(ll, Addr16(want));
        assert!(ll.is_link_local());
        assert!(!Addr16::from_v4([10, 0, 0, 1]).is_link_local());
    }

    #[test]
    fn address_from_packet_words_keeps_byte_order() {
        let bytes: [u8; 16] = core::array::from_fn(|i| i as u8 * 17);
        let word =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        assert_eq!(
            Addr16::from_le_words([word(0), word(4), word(8), word(12)]),
            Addr16(bytes)
        );
    }
}
