//! ARP, neighbour discovery and MLD pass without policy (a pod must resolve
//! its gateway whatever isolates it, and the kernel's neighbour code consumes
//! them); what a pod sends passes only when it claims nothing that is not the
//! pod's ([`crate::source`]). What it receives passes unread.
//!
//! What the pod sends is judged by a program of its own, `pod_egress_control`,
//! reached by a tail call through `CONTROL`: reading these frames takes stack
//! that the main pipeline's frame cannot spare (every frame of a call chain
//! shares 512 bytes), and they are rare enough that the jump costs nothing
//! that matters. A failed tail call (an empty slot) drops: fail closed.

use aya_ebpf::{macros::map, maps::ProgramArray, programs::TcContext};
use palisade_common::{
    addr::Addr16,
    endpoint::EndpointInfo,
    ids::{IdentityId, RuleId},
    maps::CONTROL_PROGRAM_INDEX,
    verdict::{Direction, DropReason},
};

use crate::{
    endpoint,
    parse::{self, Packet, Parsed},
    source,
    verdict::{self, DenyInfo},
};

#[map]
static CONTROL: ProgramArray = ProgramArray::pinned(1, 0);

/// Hands a control frame the pod sent to `pod_egress_control`. Returns only
/// when the jump failed: the verdict is then a drop.
#[inline(always)]
pub fn hand_over(ctx: &TcContext, ifindex: u32, bytes: u32) -> i32 {
    // SAFETY: a tail call with the program's own context; on success control
    // never comes back here.
    unsafe { CONTROL.tail_call(ctx, CONTROL_PROGRAM_INDEX) };
    let packet = Packet::addresses(false, Addr16::UNSPECIFIED, Addr16::UNSPECIFIED, 0);
    malformed(ifindex, bytes, &packet)
}

/// The verdict for an ARP, ND or MLD frame the pod sent (the body of
/// `pod_egress_control`). Malformed ones are dropped: none is needed to
/// reach a neighbour, and what they claim cannot be checked.
#[inline(always)]
pub fn judge_sent(ctx: &TcContext) -> i32 {
    let bytes = ctx.len();
    // SAFETY: `skb` is the context pointer the kernel passed to the program.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let unknown = Packet::addresses(false, Addr16::UNSPECIFIED, Addr16::UNSPECIFIED, 0);
    // Each arm reads its message and judges it with the message in hand:
    // no `Option` of a message is carried further, whose unset payload LLVM
    // may copy as uninitialised registers the verifier refuses.
    match parse::parse(ctx) {
        Parsed::Arp => match parse::arp(ctx) {
            Some(arp) => {
                let packet = Packet::addresses(true, arp.sender, Addr16::UNSPECIFIED, 0);
                judge(ifindex, bytes, &packet, |ep| source::arp_valid(ep, &arp))
            }
            None => malformed(ifindex, bytes, &unknown),
        },
        Parsed::Neighbour(at) => match parse::neighbour(ctx, at) {
            Some(nd) => {
                let packet = Packet::addresses(false, nd.src, nd.dst, parse::IPPROTO_ICMPV6);
                judge(ifindex, bytes, &packet, |ep| {
                    source::neighbour_valid(ep, &nd)
                })
            }
            None => malformed(ifindex, bytes, &unknown),
        },
        // Only control frames are handed over.
        _ => malformed(ifindex, bytes, &unknown),
    }
}

#[inline(always)]
fn malformed(ifindex: u32, bytes: u32, packet: &Packet) -> i32 {
    verdict::deny(
        Direction::Egress,
        DropReason::Malformed,
        false,
        bytes,
        &DenyInfo::new(ifindex, 0, packet, IdentityId::WORLD),
    )
}

/// Passes when `valid`, drops as spoofed otherwise.
#[inline(always)]
fn judge(
    ifindex: u32,
    bytes: u32,
    packet: &Packet,
    valid: impl FnOnce(&EndpointInfo) -> bool,
) -> i32 {
    let direction = Direction::Egress;
    let ep = match endpoint::lookup_or_deny(ifindex, direction, bytes, packet) {
        Ok(ep) => ep,
        Err(verdict) => return verdict,
    };
    if valid(&ep) {
        verdict::pass(direction, RuleId::NONE, bytes)
    } else {
        source::deny_spoofed(ifindex, &ep, bytes, packet)
    }
}
