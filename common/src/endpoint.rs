//! `ENDPOINTS`: local pods by the ifindex of their host-side interface.
//!
//! Key: the host-side ifindex ([`IfIndex`]), a native-endian `u32`.
//! A packet on an interface carrying the programs but absent from this map is
//! dropped ([`crate::verdict::DropReason::EndpointUnknown`]): fail closed.

use crate::addr::Addr16;
use crate::ids::EndpointId;

/// The pod's ingress (traffic to the pod) is isolated.
pub const FLAG_INGRESS_ISOLATED: u32 = 1 << 0;
/// The pod's egress (traffic from the pod) is isolated.
pub const FLAG_EGRESS_ISOLATED: u32 = 1 << 1;
/// Audit: would-be drops pass, counted and reported as audited.
pub const FLAG_AUDIT: u32 = 1 << 2;
/// The agent could not program this endpoint's policy completely (a map was
/// full): deny everything that is not node, self or an established reply.
pub const FLAG_FAIL_CLOSED: u32 = 1 << 3;
/// The pod may also send from the prefixes `SOURCE_PREFIXES` holds for its
/// endpoint id (the `palisade.dev/allowed-source-prefixes` annotation).
pub const FLAG_SOURCE_PREFIXES: u32 = 1 << 4;

/// Key of `ENDPOINTS`: the index of the pod's host-side interface.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IfIndex(pub u32);

/// Value of `ENDPOINTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointInfo {
    /// Keys this endpoint's rules in `POLICY`.
    pub id: EndpointId,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// The pod's IPv4 address (v4-mapped), or all zero when it has none.
    pub ipv4: Addr16,
    /// The pod's IPv6 address, or all zero when it has none.
    pub ipv6: Addr16,
}

const _: () = assert!(core::mem::size_of::<EndpointInfo>() == 40);

impl EndpointInfo {
    /// Whether the given direction's flag bit is set.
    #[inline(always)]
    pub fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }

    /// Whether `addr` is the pod's own address of its family (`ipv4`: `addr`
    /// is v4-mapped). A family the pod has no address of matches nothing, not
    /// the all-zero placeholder.
    #[inline(always)]
    pub fn is_own(&self, addr: &Addr16, ipv4: bool) -> bool {
        if ipv4 {
            *addr == self.ipv4 && self.ipv4 != Addr16::UNSPECIFIED
        } else {
            *addr == self.ipv6 && self.ipv6 != Addr16::UNSPECIFIED
        }
    }
}

crate::user_pod!(IfIndex, EndpointInfo);
