//! The per-packet pipeline: conntrack -> endpoint (and, for what the pod
//! sends, its source) -> ipcache -> policy -> verdict.

use aya_ebpf::programs::TcContext;
use palisade_common::{
    addr::Addr16,
    conntrack::CT_FLAG_AUDITED,
    endpoint::{
        EndpointInfo, FLAG_AUDIT, FLAG_EGRESS_ISOLATED, FLAG_FAIL_CLOSED, FLAG_INGRESS_ISOLATED,
    },
    ids::{IdentityId, RuleId},
    stats::StatIndex,
    verdict::{Direction, DropReason, TC_ACT_UNSPEC},
};

use crate::{
    clock,
    conntrack::{self, Flow},
    control, endpoint,
    established::{self, Fast},
    fragment, ipcache,
    parse::{self, Packet, Parsed},
    policy, source, stats,
    verdict::{self, DenyInfo},
};

#[inline(always)]
fn isolated(ep: &EndpointInfo, direction: Direction) -> bool {
    ep.has(match direction {
        Direction::Ingress => FLAG_INGRESS_ISOLATED,
        Direction::Egress => FLAG_EGRESS_ISOLATED,
    })
}

/// Why policy refused a flow (or which rule allowed it).
enum Decision {
    /// Allowed by `rule`, or [`RuleId::NONE`] when isolation being off, the
    /// node or the pod itself allowed it. (Not an `Option`: LLVM may copy the
    /// unset payload of a `None` as an uninitialised register, which the
    /// verifier rejects.)
    Allow(RuleId),
    /// Denied for a reason, with the remote's identity and the rule of the
    /// deny entry that decided ([`RuleId::NONE`] when none did).
    Deny(DropReason, IdentityId, RuleId),
}

/// The policy decision for a flow opened in `origin` towards/from `remote`
/// (v4-mapped when `ipv4`) on the server port `port`, ignoring conntrack.
#[inline(always)]
fn decide(
    ep: &EndpointInfo,
    origin: Direction,
    remote: &Addr16,
    ipv4: bool,
    protocol: u8,
    port: u16,
) -> Decision {
    if !isolated(ep, origin) {
        return Decision::Allow(RuleId::NONE);
    }
    // A pod may always reach itself: its own address of the packet's family.
    if ep.is_own(remote, ipv4) {
        return Decision::Allow(RuleId::NONE);
    }
    let (identity, from_node) = ipcache::lookup(remote);
    if origin == Direction::Ingress && from_node {
        return Decision::Allow(RuleId::NONE);
    }
    if ep.has(FLAG_FAIL_CLOSED) {
        return Decision::Deny(DropReason::FailClosed, identity, RuleId::NONE);
    }
    let port = if parse::has_ports(protocol) { port } else { 0 };
    let entry = policy::lookup(ep.id, identity, origin, protocol, port);
    if entry.denies() {
        Decision::Deny(DropReason::PolicyDenied, identity, entry.credited())
    } else {
        Decision::Allow(entry.rule)
    }
}

/// What the full pipeline is looking at.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A packet whose flow conntrack may know.
    Flow,
    /// A packet whose flow the fast path found untracked.
    Untracked,
    /// A non-first fragment whose first fragment did not pass here.
    LaterFragment,
    /// Headers truncated or malformed after a readable IP header.
    Malformed,
}

#[inline(always)]
pub fn enforce(ctx: &TcContext, direction: Direction) -> i32 {
    let bytes = ctx.len();
    // SAFETY: `skb` is the context pointer the kernel passed to the program.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // Conntrack and fragment timeouts are seconds long, so the jiffy-resolution
    // coarse clock is precise enough; derived from jiffies, it costs no call.
    let now = clock::now();
    let (packet, kind) = match established::try_established(ctx, direction, ifindex, now, bytes) {
        Fast::Done(verdict) => return verdict,
        Fast::Missed(packet) => (packet, Kind::Untracked),
        Fast::Declined => match parse::parse(ctx) {
            Parsed::Ip(p) => (p, Kind::Flow),
            Parsed::Malformed(Some(p)) => (p, Kind::Malformed),
            Parsed::Malformed(None) => return unreadable(ifindex, direction, bytes),
            Parsed::Arp | Parsed::Neighbour(_) if direction == Direction::Ingress => {
                return verdict::pass(direction, RuleId::NONE, bytes);
            }
            Parsed::Arp | Parsed::Neighbour(_) => return control::hand_over(ctx, ifindex, bytes),
            Parsed::OtherEtherType => return other(ifindex, direction, bytes),
        },
    };
    // Non-first fragments carry no ports: they pass when the first fragment
    // of their datagram passed at this endpoint (its entry holds both
    // addresses, so its source was checked).
    let kind = if packet.fragment.is_later() && kind != Kind::Malformed {
        if fragment::first_passed(ifindex, &packet, packet.fragment.id, now) {
            return verdict::pass(direction, RuleId::NONE, bytes);
        }
        Kind::LaterFragment
    } else {
        kind
    };

    let (local, remote, local_port, remote_port) = match direction {
        Direction::Egress => (packet.src, packet.dst, packet.src_port, packet.dst_port),
        Direction::Ingress => (packet.dst, packet.src, packet.dst_port, packet.src_port),
    };
    let flow = Flow::new(
        ifindex,
        packet.ipv4,
        packet.protocol,
        &local,
        &remote,
        local_port,
        remote_port,
    );
    let revision = stats::revision();
    let entry = match kind {
        Kind::Flow => conntrack::lookup(&flow, now),
        _ => None,
    };
    if let Some(entry) = &entry
        && entry.revision() == revision
    {
        entry.touch(direction, packet.protocol, packet.tcp_flags, now);
        return verdict::pass(direction, RuleId::NONE, bytes);
    }

    // Everything else is judged with the endpoint. The pod-side address must
    // be one the pod may claim for what it sends (the one place this is
    // checked), and only such addresses are ever tracked.
    let ep = match endpoint::lookup_or_deny(ifindex, direction, bytes, &packet) {
        Ok(ep) => ep,
        Err(verdict) => {
            if entry.is_some() {
                conntrack::remove(&flow);
            }
            return verdict;
        }
    };
    let claimed = source::may_claim(&ep, &local, packet.ipv4);
    if direction == Direction::Egress && !claimed {
        if entry.is_some() {
            conntrack::remove(&flow);
        }
        return source::deny_spoofed(ifindex, &ep, bytes, &packet);
    }
    let verdict = match (kind, entry) {
        (Kind::Malformed, _) => isolated_drop(
            ifindex,
            direction,
            bytes,
            &ep,
            &packet,
            DropReason::Malformed,
        ),
        (Kind::LaterFragment, _) => isolated_drop(
            ifindex,
            direction,
            bytes,
            &ep,
            &packet,
            DropReason::FragmentUnknown,
        ),
        // The policy changed since this flow was allowed: check it again as
        // the flow was opened.
        (_, Some(entry)) if claimed => {
            entry.touch(direction, packet.protocol, packet.tcp_flags, now);
            recheck(
                ifindex, direction, &packet, &flow, &remote, &ep, &entry, revision, bytes,
            )
        }
        (_, stale) => {
            // Tracked at an address this endpoint may not claim (the interface
            // now carries another pod): gone, and the packet is judged as a
            // new flow's.
            if stale.is_some() {
                conntrack::remove(&flow);
            }
            new_flow(
                ifindex, direction, &packet, &flow, &remote, &ep, claimed, revision, now, bytes,
            )
        }
    };

    if verdict == TC_ACT_UNSPEC && packet.fragment.is_first() {
        fragment::remember_first(ifindex, &packet, packet.fragment.id, now);
    }
    verdict
}

/// An established flow under a stale revision: allowed again (and marked
/// with the current revision) or revoked.
#[inline(always)]
#[expect(
    clippy::too_many_arguments,
    reason = "inlined pipeline stage; a struct would only rename the locals"
)]
fn recheck(
    ifindex: u32,
    direction: Direction,
    packet: &Packet,
    flow: &Flow,
    remote: &Addr16,
    ep: &EndpointInfo,
    entry: &conntrack::Entry,
    revision: palisade_common::ids::Revision,
    bytes: u32,
) -> i32 {
    let origin = entry.origin();
    match decide(
        ep,
        origin,
        remote,
        packet.ipv4,
        packet.protocol,
        flow.server_port(origin),
    ) {
        Decision::Allow(rule) => {
            entry.revalidate(revision, rule);
            verdict::pass(direction, RuleId::NONE, bytes)
        }
        Decision::Deny(_, identity, _) => {
            let audit = ep.has(FLAG_AUDIT);
            if audit {
                entry.revalidate(revision, RuleId::NONE);
            } else {
                conntrack::remove(flow);
            }
            verdict::deny(
                direction,
                DropReason::PolicyRevoked,
                audit,
                bytes,
                &DenyInfo::new(ifindex, ep.id.0, packet, identity),
            )
        }
    }
}

#[inline(always)]
#[expect(
    clippy::too_many_arguments,
    reason = "inlined pipeline stage; a struct would only rename the locals"
)]
fn new_flow(
    ifindex: u32,
    direction: Direction,
    packet: &Packet,
    flow: &Flow,
    remote: &Addr16,
    ep: &EndpointInfo,
    tracked: bool,
    revision: palisade_common::ids::Revision,
    now: u64,
    bytes: u32,
) -> i32 {
    match decide(
        ep,
        direction,
        remote,
        packet.ipv4,
        packet.protocol,
        packet.dst_port,
    ) {
        Decision::Allow(rule) => {
            // Only a SYN opens a TCP connection. A mid-stream segment without an
            // entry (e.g. the server's side of a flow whose entry was just
            // revoked) passes on its own direction's policy but must not open an
            // entry in that direction, or the revoked peer's packets would come
            // back in as "replies".
            let opens =
                packet.protocol != parse::IPPROTO_TCP || packet.tcp_flags & parse::TCP_SYN != 0;
            if opens
                && tracked
                && !conntrack::create(flow, direction, revision, rule, 0, packet.tcp_flags, now)
            {
                stats::count(StatIndex::CtInsertFailed, direction, 0);
            }
            verdict::pass(direction, rule, bytes)
        }
        Decision::Deny(reason, identity, rule) => {
            // A deny rule's hits count like an allow rule's: once per new
            // flow's packet that it decides.
            if rule != RuleId::NONE {
                stats::count_rule(rule, bytes);
            }
            let audit = ep.has(FLAG_AUDIT);
            if audit && tracked {
                // Track the audited flow so its replies are not reported again.
                let _ = conntrack::create(
                    flow,
                    direction,
                    revision,
                    RuleId::NONE,
                    CT_FLAG_AUDITED,
                    packet.tcp_flags,
                    now,
                );
            }
            verdict::deny(
                direction,
                reason,
                audit,
                bytes,
                &DenyInfo::new(ifindex, ep.id.0, packet, identity),
            )
        }
    }
}

/// Frames too short for their IP header (or ethertype). What the pod sends
/// is dropped: no stack accepts such a packet, and nothing unverifiable
/// leaves a pod. What it receives is judged as a non-IP frame.
#[inline(always)]
fn unreadable(ifindex: u32, direction: Direction, bytes: u32) -> i32 {
    if direction == Direction::Ingress {
        return other(ifindex, direction, bytes);
    }
    let packet = Packet::addresses(false, Addr16::UNSPECIFIED, Addr16::UNSPECIFIED, 0);
    let ep = match endpoint::lookup_or_deny(ifindex, direction, bytes, &packet) {
        Ok(ep) => ep,
        Err(verdict) => return verdict,
    };
    verdict::deny(
        direction,
        DropReason::Malformed,
        false,
        bytes,
        &DenyInfo::new(ifindex, ep.id.0, &packet, IdentityId::WORLD),
    )
}

/// Non-IP frames (other than ARP): pass when the pod is not isolated in this
/// direction, otherwise drop as malformed.
#[inline(always)]
fn other(ifindex: u32, direction: Direction, bytes: u32) -> i32 {
    let packet = Packet::addresses(false, Addr16::UNSPECIFIED, Addr16::UNSPECIFIED, 0);
    let ep = match endpoint::lookup_or_deny(ifindex, direction, bytes, &packet) {
        Ok(ep) => ep,
        Err(verdict) => return verdict,
    };
    isolated_drop(
        ifindex,
        direction,
        bytes,
        &ep,
        &packet,
        DropReason::Malformed,
    )
}

/// Passes when the pod is not isolated in `direction`, else drops for `reason`.
#[inline(always)]
fn isolated_drop(
    ifindex: u32,
    direction: Direction,
    bytes: u32,
    ep: &EndpointInfo,
    packet: &Packet,
    reason: DropReason,
) -> i32 {
    if !isolated(ep, direction) {
        return verdict::pass(direction, RuleId::NONE, bytes);
    }
    verdict::deny(
        direction,
        reason,
        ep.has(FLAG_AUDIT),
        bytes,
        &DenyInfo::new(ifindex, ep.id.0, packet, IdentityId::WORLD),
    )
}
