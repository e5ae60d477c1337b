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

    /// The last four bytes: the IPv4 address of a v4-mapped one.
    #[inline(always)]
    pub const fn v4_octets(&self) -> [u8; 4] {
        [self.0[12], self.0[13], self.0[14], self.0[15]]
    }

    /// Whether this is a v4-mapped IPv4 address.
    #[inline(always)]
    pub fn is_v4_mapped(&self) -> bool {
        let b = &self.0;
        b[0] == 0
            && b[1] == 0
            && b[2] == 0
            && b[3] == 0
            && b[4] == 0
            && b[5] == 0
            && b[6] == 0
            && b[7] == 0
            && b[8] == 0
            && b[9] == 0
            && b[10] == 0xff
            && b[11] == 0xff
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
