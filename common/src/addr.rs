//! The address form used in every key: 16 bytes in network order, IPv4 as the
//! v4-mapped IPv6 address `::ffff:a.b.c.d`, so one map serves both families.

/// A 16-byte address in network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Addr16(pub [u8; 16]);

const _: () = assert!(core::mem::size_of::<Addr16>() == 16);

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
