//! The per-packet pipeline: conntrack -> endpoint -> ipcache -> policy -> verdict.

use aya_ebpf::{helpers::bpf_ktime_get_coarse_ns, programs::TcContext};
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
    conntrack::{self, Flow},
    endpoint,
    established::{self, Fast},
    fragment, ipcache,
    parse::{self, Fragment, Packet, Parsed},
    policy, stats,
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
    Deny(DropReason, IdentityId),
}

/// The policy decision for a flow opened in `origin` towards/from `remote` on
/// the server port `port`, ignoring conntrack.
#[inline(always)]
fn decide(
    ep: &EndpointInfo,
    origin: Direction,
    remote: &Addr16,
    protocol: u8,
    port: u16,
) -> Decision {
    if !isolated(ep, origin) {
        return Decision::Allow(RuleId::NONE);
    }
    if *remote == ep.ipv4 || *remote == ep.ipv6 {
        return Decision::Allow(RuleId::NONE);
    }
    let (identity, from_node) = ipcache::lookup(remote);
    if origin == Direction::Ingress && from_node {
        return Decision::Allow(RuleId::NONE);
    }
    if ep.has(FLAG_FAIL_CLOSED) {
        return Decision::Deny(DropReason::FailClosed, identity);
    }
    let port = if parse::has_ports(protocol) { port } else { 0 };
    match policy::allowing_rule(ep.id, identity, origin, protocol, port) {
        Some(rule) => Decision::Allow(rule),
        None => Decision::Deny(DropReason::PolicyDenied, identity),
    }
}

#[inline(always)]
fn info(ifindex: u32, ep: Option<&EndpointInfo>, p: &Packet, identity: IdentityId) -> DenyInfo {
    DenyInfo {
        ifindex,
        endpoint: match ep {
            Some(ep) => ep.id.0,
            None => 0,
        },
        src: p.src,
        dst: p.dst,
        protocol: p.protocol,
        src_port: p.src_port,
        dst_port: p.dst_port,
        remote_identity: identity,
    }
}

/// The endpoint behind the interface, or the verdict for an interface that
/// carries the programs but has no endpoint entry: drop (fail closed).
#[inline(always)]
fn endpoint_or_deny(
    ifindex: u32,
    direction: Direction,
    bytes: u32,
    packet: &Packet,
) -> Result<EndpointInfo, i32> {
    match endpoint::lookup(ifindex) {
        Some(ep) => Ok(ep),
        None => Err(verdict::deny(
            direction,
            DropReason::EndpointUnknown,
            false,
            bytes,
            &info(ifindex, None, packet, IdentityId::WORLD),
        )),
    }
}

#[inline(always)]
pub fn enforce(ctx: &TcContext, direction: Direction) -> i32 {
    let bytes = ctx.len();
    // SAFETY: `skb` is the context pointer the kernel passed to the program.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // Conntrack and fragment timeouts are seconds long, so the jiffy-resolution
    // clock is precise enough, at half the cost of `bpf_ktime_get_ns`.
    // SAFETY: a plain helper call without arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let (packet, ct_missed) =
        match established::try_established(ctx, direction, ifindex, now, bytes) {
            Fast::Done(verdict) => return verdict,
            Fast::Missed(packet) => (packet, true),
            Fast::Declined => match parse::parse(ctx) {
                Parsed::Ip(p) => (p, false),
                Parsed::Control => return verdict::pass(direction, RuleId::NONE, bytes),
                Parsed::OtherEtherType => return other(ifindex, direction, bytes, None),
                Parsed::Malformed(addrs) => return other(ifindex, direction, bytes, addrs),
            },
        };

    if let Fragment::Later(id) = packet.fragment {
        return later_fragment(ifindex, direction, &packet, id, now, bytes);
    }

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

    let entry = if ct_missed {
        None
    } else {
        conntrack::lookup(&flow, now)
    };
    let verdict = if let Some(entry) = entry {
        entry.touch(direction, packet.protocol, packet.tcp_flags, now);
        if entry.revision() == revision {
            verdict::pass(direction, RuleId::NONE, bytes)
        } else {
            // The policy changed since this flow was allowed: check it again as
            // the flow was opened.
            let origin = entry.origin();
            let ep = match endpoint_or_deny(ifindex, direction, bytes, &packet) {
                Ok(ep) => ep,
                Err(verdict) => {
                    conntrack::remove(&flow);
                    return verdict;
                }
            };
            match decide(
                &ep,
                origin,
                &remote,
                packet.protocol,
                flow.server_port(origin),
            ) {
                Decision::Allow(rule) => {
                    entry.revalidate(revision, rule);
                    verdict::pass(direction, RuleId::NONE, bytes)
                }
                Decision::Deny(_, identity) => {
                    let audit = ep.has(FLAG_AUDIT);
                    if audit {
                        entry.revalidate(revision, RuleId::NONE);
                    } else {
                        conntrack::remove(&flow);
                    }
                    verdict::deny(
                        direction,
                        DropReason::PolicyRevoked,
                        audit,
                        bytes,
                        &info(ifindex, Some(&ep), &packet, identity),
                    )
                }
            }
        }
    } else {
        new_flow(
            ifindex, direction, &packet, &flow, &remote, revision, now, bytes,
        )
    };

    if verdict == TC_ACT_UNSPEC {
        if let Fragment::First(id) = packet.fragment {
            fragment::remember_first(ifindex, &packet, id, now);
        }
    }
    verdict
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
    revision: palisade_common::ids::Revision,
    now: u64,
    bytes: u32,
) -> i32 {
    let ep = match endpoint_or_deny(ifindex, direction, bytes, packet) {
        Ok(ep) => ep,
        Err(verdict) => return verdict,
    };
    match decide(&ep, direction, remote, packet.protocol, packet.dst_port) {
        Decision::Allow(rule) => {
            // Only a SYN opens a TCP connection. A mid-stream segment without an
            // entry (e.g. the server's side of a flow whose entry was just
            // revoked) passes on its own direction's policy but must not open an
            // entry in that direction, or the revoked peer's packets would come
            // back in as "replies".
            let opens =
                packet.protocol != parse::IPPROTO_TCP || packet.tcp_flags & parse::TCP_SYN != 0;
            if opens
                && !conntrack::create(flow, direction, revision, rule, 0, packet.tcp_flags, now)
            {
                stats::count(StatIndex::CtInsertFailed, direction, 0);
            }
            verdict::pass(direction, rule, bytes)
        }
        Decision::Deny(reason, identity) => {
            let audit = ep.has(FLAG_AUDIT);
            if audit {
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
                &info(ifindex, Some(&ep), packet, identity),
            )
        }
    }
}

/// Non-first fragments carry no ports: they pass only when the first fragment
/// of their datagram passed at this endpoint.
#[inline(always)]
fn later_fragment(
    ifindex: u32,
    direction: Direction,
    packet: &Packet,
    id: u32,
    now: u64,
    bytes: u32,
) -> i32 {
    if fragment::first_passed(ifindex, packet, id, now) {
        return verdict::pass(direction, RuleId::NONE, bytes);
    }
    let ep = match endpoint_or_deny(ifindex, direction, bytes, packet) {
        Ok(ep) => ep,
        Err(verdict) => return verdict,
    };
    if !isolated(&ep, direction) {
        return verdict::pass(direction, RuleId::NONE, bytes);
    }
    verdict::deny(
        direction,
        DropReason::FragmentUnknown,
        ep.has(FLAG_AUDIT),
        bytes,
        &info(ifindex, Some(&ep), packet, IdentityId::WORLD),
    )
}

/// Malformed IP and non-IP frames: pass when the pod is not isolated in this
/// direction, otherwise drop as malformed.
#[inline(always)]
fn other(
    ifindex: u32,
    direction: Direction,
    bytes: u32,
    addrs: Option<(Addr16, Addr16, u8)>,
) -> i32 {
    let (src, dst, protocol) = addrs.unwrap_or((Addr16::default(), Addr16::default(), 0));
    let packet = Packet {
        ipv4: false,
        src,
        dst,
        protocol,
        src_port: 0,
        dst_port: 0,
        tcp_flags: 0,
        fragment: Fragment::None,
    };
    let ep = match endpoint_or_deny(ifindex, direction, bytes, &packet) {
        Ok(ep) => ep,
        Err(verdict) => return verdict,
    };
    if !isolated(&ep, direction) {
        return verdict::pass(direction, RuleId::NONE, bytes);
    }
    verdict::deny(
        direction,
        DropReason::Malformed,
        ep.has(FLAG_AUDIT),
        bytes,
        &info(ifindex, Some(&ep), &packet, IdentityId::WORLD),
    )
}
