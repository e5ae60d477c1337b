//! Source validation: what a pod may claim to be, checked on everything it
//! sends (its egress, whether or not a policy isolates it), before policy.
//!
//! Policy is identity-based and the ipcache derives a packet's identity from
//! its source address, so a forged source would borrow another pod's
//! allows. A pod may send:
//! - IP packets from its own address of the packet's family, or from an
//!   allowed source prefix of its endpoint (`SOURCE_PREFIXES`);
//! - ARP whose sender is such an address, or 0.0.0.0 (an address probe,
//!   RFC 5227);
//! - neighbour discovery and MLD from such an address, from its link-local
//!   address (to link-local or multicast destinations), or from `::` for
//!   duplicate address detection and MLD reports; advertisements only for
//!   addresses it may claim; every link-layer address option naming the
//!   frame's own source MAC; never a router advertisement or a redirect.
//!
//! The pod's link-local address is taken to be the modified EUI-64 address
//! of its MAC (the kernel's default, `addr_gen_mode` 0): the agent cannot
//! know another, and a pod that may claim any link-local address could bind a
//! gateway's address to its own MAC on a shared bridge.
//!
//! Established flows need no second check: conntrack keys hold the ifindex
//! and the pod-side address, and entries are only made (and revalidated)
//! for addresses that passed here.

use aya_ebpf::{
    macros::map,
    maps::{LpmTrie, lpm_trie::Key},
};
use palisade_common::{
    addr::Addr16,
    endpoint::{EndpointInfo, FLAG_SOURCE_PREFIXES},
    ids::{EndpointId, IdentityId},
    maps::DEFAULT_SOURCE_PREFIXES_MAX,
    source::{SOURCE_PREFIX_ENDPOINT_BITS, SourcePrefixKey, SourcePrefixValue},
    verdict::{Direction, DropReason},
};

use crate::{
    parse::{
        Arp, MLD_REPORT, MLD2_REPORT, ND_NEIGHBOUR_ADVERT, ND_NEIGHBOUR_SOLICIT, ND_REDIRECT,
        ND_ROUTER_ADVERT, Neighbour, Packet,
    },
    verdict::{self, DenyInfo},
};

#[map]
static SOURCE_PREFIXES: LpmTrie<SourcePrefixKey, SourcePrefixValue> =
    LpmTrie::pinned(DEFAULT_SOURCE_PREFIXES_MAX, 0);

/// `0.0.0.0`, v4-mapped: the sender of an ARP probe.
const ARP_PROBE_SENDER: Addr16 = Addr16::from_v4([0, 0, 0, 0]);

/// Drops what the pod sent claiming what it may not. Never audited: a forged
/// identity would borrow other pods' allows, whatever this namespace's mode.
#[inline(always)]
pub fn deny_spoofed(ifindex: u32, ep: &EndpointInfo, bytes: u32, packet: &Packet) -> i32 {
    verdict::deny(
        Direction::Egress,
        DropReason::SourceSpoofed,
        false,
        bytes,
        &DenyInfo::new(ifindex, ep.id.0, packet, IdentityId::WORLD),
    )
}

/// Whether the pod behind `ep` may use `addr` (v4-mapped when `ipv4`) as its
/// own: its address of that family, or one under its allowed prefixes.
#[inline(always)]
pub fn may_claim(ep: &EndpointInfo, addr: &Addr16, ipv4: bool) -> bool {
    if ep.is_own(addr, ipv4) {
        return true;
    }
    if !ep.has(FLAG_SOURCE_PREFIXES) {
        return false;
    }
    let [w0, w1, w2, w3] = addr.to_le_words();
    in_prefixes(ep.id.0, w0, w1, w2, w3)
}

/// Whether the address given as words is under one of `endpoint`'s allowed
/// prefixes.
#[inline(always)]
fn in_prefixes(endpoint: u32, w0: u32, w1: u32, w2: u32, w3: u32) -> bool {
    let key = Key::new(
        SOURCE_PREFIX_ENDPOINT_BITS + 128,
        SourcePrefixKey::new(
            EndpointId(endpoint),
            Addr16::from_le_words([w0, w1, w2, w3]),
        ),
    );
    SOURCE_PREFIXES.get(&key).is_some()
}

/// Whether ARP from the pod claims only what it may.
#[inline(always)]
pub fn arp_valid(ep: &EndpointInfo, arp: &Arp) -> bool {
    arp.sender == ARP_PROBE_SENDER || may_claim(ep, &arp.sender, true)
}

/// Whether a neighbour discovery or MLD message from the pod claims only
/// what it may.
#[inline(always)]
pub fn neighbour_valid(ep: &EndpointInfo, nd: &Neighbour) -> bool {
    if !nd.lladdr_is_src_mac {
        return false;
    }
    let link_local = Addr16::link_local_eui64(nd.src_mac.octets());
    let claimable = |addr: &Addr16| *addr == link_local || may_claim(ep, addr, false);
    let source_ok = if nd.src == Addr16::UNSPECIFIED {
        match nd.icmp_type {
            // Duplicate address detection (RFC 4862 5.4.2): to the target's
            // solicited-node group, for an address the pod may take.
            ND_NEIGHBOUR_SOLICIT => solicited_node(&nd.dst) && claimable(&nd.target),
            // Reports before the pod has an address (RFC 3810 5.2.13).
            MLD_REPORT | MLD2_REPORT => true,
            _ => false,
        }
    } else if nd.src.is_link_local() {
        claimable(&nd.src) && (nd.dst.is_link_local() || nd.dst.is_multicast())
    } else {
        may_claim(ep, &nd.src, false)
    };
    source_ok
        && match nd.icmp_type {
            // A pod is never a router to its neighbours (CVE-2020-10749).
            ND_ROUTER_ADVERT | ND_REDIRECT => false,
            ND_NEIGHBOUR_ADVERT => claimable(&nd.target),
            _ => true,
        }
}

/// Whether `addr` is a solicited-node multicast address (`ff02::1:ff00:0/104`).
#[inline(always)]
fn solicited_node(addr: &Addr16) -> bool {
    let a = &addr.0;
    a[0] == 0xff
        && a[1] == 0x02
        && a[2..11] == [0, 0, 0, 0, 0, 0, 0, 0, 0]
        && a[11] == 0x01
        && a[12] == 0xff
}
