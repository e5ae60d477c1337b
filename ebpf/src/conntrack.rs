//! Connection tracking: lookup, create and refresh of `CONNTRACK_V4` (IPv4
//! flows) and `CONNTRACK` (IPv6 flows) entries.
//!
//! Races: the agent writes these maps only to delete entries and, on an
//! upgrade, to carry an older build's IPv4 entries over into `CONNTRACK_V4`.
//! Several CPUs may refresh one entry at once. Each refresh writes whole words
//! (timestamp, revision, flags), so the worst case is a lost flag bit or an
//! older timestamp, which at most shortens an idle timeout; it never lets a
//! packet bypass policy.

use aya_ebpf::{macros::map, maps::LruHashMap};
use palisade_common::{
    addr::Addr16,
    conntrack::{
        CT_FLAG_CLOSING, CT_FLAG_ESTABLISHED, CT_FLAG_ORIGIN_EGRESS, CT_FLAG_REPLIED, CtKeyV4,
        CtKeyV6, CtValue, TIMEOUT_OTHER_NS, TIMEOUT_TCP_CLOSING_NS, TIMEOUT_TCP_ESTABLISHED_NS,
        TIMEOUT_TCP_SYN_NS, TIMEOUT_UDP_NS,
    },
    ids::{Revision, RuleId},
    maps::DEFAULT_CONNTRACK_MAX,
    verdict::Direction,
};

use crate::parse::{IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};

#[map]
static CONNTRACK_V4: LruHashMap<CtKeyV4, CtValue> = LruHashMap::pinned(DEFAULT_CONNTRACK_MAX, 0);

#[map]
static CONNTRACK: LruHashMap<CtKeyV6, CtValue> = LruHashMap::pinned(DEFAULT_CONNTRACK_MAX, 0);

/// Only refresh the timestamp when it is older than this, so established flows
/// do not write the entry on every packet.
const REFRESH_NS: u64 = 1_000_000_000;

/// The key of a flow, in its family's map.
#[derive(Clone, Copy)]
enum Key {
    V4(CtKeyV4),
    V6(CtKeyV6),
}

/// The flow as seen from the endpoint: local = the pod's side.
#[derive(Clone, Copy)]
pub struct Flow {
    protocol: u8,
    local_port: u16,
    remote_port: u16,
    key: Key,
}

impl Flow {
    /// `ipv4`: the packet is IPv4, so both addresses are v4-mapped.
    #[inline(always)]
    pub fn new(
        ifindex: u32,
        ipv4: bool,
        protocol: u8,
        local: &Addr16,
        remote: &Addr16,
        local_port: u16,
        remote_port: u16,
    ) -> Self {
        let key = if ipv4 {
            Key::V4(CtKeyV4::new(
                ifindex,
                protocol,
                local.v4_octets(),
                remote.v4_octets(),
                local_port,
                remote_port,
            ))
        } else {
            Key::V6(CtKeyV6::new(
                ifindex,
                protocol,
                *local,
                *remote,
                local_port,
                remote_port,
            ))
        };
        Flow {
            protocol,
            local_port,
            remote_port,
            key,
        }
    }

    /// The server's port of a flow opened in `origin`: the pod's own port when
    /// the remote opened it, the remote's port when the pod did.
    #[inline(always)]
    pub fn server_port(&self, origin: Direction) -> u16 {
        match origin {
            Direction::Ingress => self.local_port,
            Direction::Egress => self.remote_port,
        }
    }
}

/// A live entry for a flow: where it lives, and its value as read once at
/// lookup (every decision for this packet uses that one read).
pub struct Entry {
    value: *mut CtValue,
    seen: CtValue,
}

impl Entry {
    /// The direction in which the flow was opened.
    #[inline(always)]
    pub fn origin(&self) -> Direction {
        if self.seen.flags & CT_FLAG_ORIGIN_EGRESS != 0 {
            Direction::Egress
        } else {
            Direction::Ingress
        }
    }

    /// The revision that last allowed the flow.
    #[inline(always)]
    pub fn revision(&self) -> Revision {
        self.seen.revision
    }

    /// Records that `revision` (re)allowed the flow via `rule`.
    #[inline(always)]
    pub fn revalidate(&self, revision: Revision, rule: RuleId) {
        // SAFETY: `value` points into the map value (see `lookup`); word-sized
        // writes.
        unsafe {
            (*self.value).revision = revision;
            (*self.value).rule = rule;
        }
    }

    /// Refreshes the timestamp and TCP state for a packet in `direction`.
    #[inline(always)]
    pub fn touch(&self, direction: Direction, protocol: u8, tcp_flags: u8, now: u64) {
        let v = self.seen;
        let mut flags = v.flags;
        let origin_is_egress = flags & CT_FLAG_ORIGIN_EGRESS != 0;
        let is_reply = origin_is_egress != (direction == Direction::Egress);
        if is_reply {
            flags |= CT_FLAG_REPLIED;
        } else if protocol == IPPROTO_TCP
            && tcp_flags & TCP_ACK != 0
            && flags & CT_FLAG_REPLIED != 0
        {
            flags |= CT_FLAG_ESTABLISHED;
        }
        if protocol == IPPROTO_TCP && tcp_flags & (TCP_FIN | TCP_RST) != 0 {
            flags |= CT_FLAG_CLOSING;
        }
        if protocol == IPPROTO_TCP
            && tcp_flags & TCP_SYN != 0
            && tcp_flags & TCP_ACK == 0
            && !is_reply
        {
            // A new SYN on a closing tuple reopens it.
            flags &= !CT_FLAG_CLOSING;
        }
        if flags != v.flags || now > v.last_seen_ns + REFRESH_NS {
            // SAFETY: as in `revalidate`.
            unsafe {
                (*self.value).flags = flags;
                (*self.value).last_seen_ns = now;
            }
        }
    }
}

#[inline(always)]
fn timeout(protocol: u8, flags: u32) -> u64 {
    match protocol {
        IPPROTO_TCP => {
            if flags & CT_FLAG_CLOSING != 0 {
                TIMEOUT_TCP_CLOSING_NS
            } else if flags & CT_FLAG_ESTABLISHED != 0 {
                TIMEOUT_TCP_ESTABLISHED_NS
            } else {
                TIMEOUT_TCP_SYN_NS
            }
        }
        IPPROTO_UDP | IPPROTO_SCTP => TIMEOUT_UDP_NS,
        _ => TIMEOUT_OTHER_NS,
    }
}

/// The live (not expired) entry of a flow.
#[inline(always)]
pub fn lookup(flow: &Flow, now: u64) -> Option<Entry> {
    let value = match &flow.key {
        Key::V4(key) => CONNTRACK_V4.get_ptr_mut(key)?,
        Key::V6(key) => CONNTRACK.get_ptr_mut(key)?,
    };
    live(value, flow.protocol, now)
}

#[inline(always)]
fn live(value: *mut CtValue, protocol: u8, now: u64) -> Option<Entry> {
    // SAFETY: `value` points into a map value that stays valid for the
    // program's run (RCU); the read is a plain copy.
    let seen = unsafe { core::ptr::read_volatile(value) };
    // Not `now - last_seen`: a timestamp slightly ahead of `now` (written with
    // the finer `bpf_ktime_get_ns` by an older build before an upgrade) must
    // count as fresh, not wrap around to expired.
    if now > seen.last_seen_ns + timeout(protocol, seen.flags) {
        return None;
    }
    Some(Entry { value, seen })
}

/// The live entry of an IPv4 flow, by key.
#[inline(always)]
pub fn lookup_v4(key: &CtKeyV4, protocol: u8, now: u64) -> Option<Entry> {
    let value = CONNTRACK_V4.get_ptr_mut(key)?;
    live(value, protocol, now)
}

/// The live entry of an IPv6 flow, by key.
#[inline(always)]
pub fn lookup_v6(key: &CtKeyV6, protocol: u8, now: u64) -> Option<Entry> {
    let value = CONNTRACK.get_ptr_mut(key)?;
    live(value, protocol, now)
}

/// Creates (or replaces) the entry of a flow opened in `origin`.
/// Returns false when the insert failed.
#[inline(always)]
pub fn create(
    flow: &Flow,
    origin: Direction,
    revision: Revision,
    rule: RuleId,
    extra_flags: u32,
    tcp_flags: u8,
    now: u64,
) -> bool {
    let mut flags = extra_flags;
    if origin == Direction::Egress {
        flags |= CT_FLAG_ORIGIN_EGRESS;
    }
    if flow.protocol == IPPROTO_TCP && tcp_flags & TCP_SYN == 0 {
        // Only audited flows are picked up mid-stream.
        flags |= CT_FLAG_ESTABLISHED;
    }
    let value = CtValue {
        last_seen_ns: now,
        revision,
        rule,
        flags,
        _pad: 0,
    };
    match &flow.key {
        Key::V4(key) => CONNTRACK_V4.insert(key, &value, 0).is_ok(),
        Key::V6(key) => CONNTRACK.insert(key, &value, 0).is_ok(),
    }
}

/// Removes the entry of a flow that is no longer allowed.
#[inline(always)]
pub fn remove(flow: &Flow) {
    let _ = match &flow.key {
        Key::V4(key) => CONNTRACK_V4.remove(key),
        Key::V6(key) => CONNTRACK.remove(key),
    };
}
