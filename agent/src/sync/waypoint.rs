//! Address moves that cannot be written in one step (pure).
//!
//! The writes between two states change each identity's policy entries in
//! place, ordered so that every lookup finds the old or the new answer, and
//! move addresses (`IPCACHE`) between identities once the target's new
//! entries exist. That is sound only while the identities on both ends of a
//! move hold still: an address leaving X while X gains entries (or while the
//! endpoint's ANY entries change) sees X's *new* entries before it moves,
//! which are not its answer in either state; an address arriving at Y while
//! Y still holds entries to be deleted sees those. Both can pass what the old
//! and the new state drop.
//!
//! Such a move goes through a waypoint: a fresh identity W whose entries are
//! first a copy of X's old ones (moving the address to W changes nothing),
//! then change in place to Y's new ones with everything else, and finally the
//! address moves on to Y (again changing nothing) and W's entries go. Once
//! one move needs it, every changed ipcache key takes a waypoint, so that the
//! middle leg moves no address at all. [`route`] returns the two
//! intermediate states; the writes run old -> `before` -> `after` -> new,
//! each leg in the usual order.

use std::collections::{BTreeMap, BTreeSet};

use palisade_common::addr::Addr16;
use palisade_common::ids::IdentityId;
use palisade_common::ipcache::IpcacheValue;
use palisade_common::policy::{PolicyKey, PolicyValue};

use super::policy_map::PolicyMap;
use super::render::KernelState;

/// The intermediate states of a transition with waypoints.
#[derive(Debug)]
pub struct Route {
    /// The old state with the waypoints holding copies of the old entries
    /// of the identities the moving addresses leave, and those addresses on
    /// their waypoints.
    pub before: KernelState,
    /// The new state with the waypoints holding the new entries of the
    /// identities the addresses go to, and the addresses still on them.
    pub after: KernelState,
}

/// One map's entries to put (added or changed) and keys to delete.
pub type Changes<K, V> = (Vec<(K, V)>, Vec<K>);

fn identity_of(key: &PolicyKey) -> u32 {
    u32::from_be_bytes(key.identity_be)
}

fn endpoint_of(key: &PolicyKey) -> u32 {
    u32::from_be_bytes(key.endpoint_be)
}

/// The identity `addr/len`'s addresses get from the entries strictly less
/// specific than `len` (WORLD when none covers them), with its flags.
fn covering(
    ipcache: &BTreeMap<(u32, Addr16), IpcacheValue>,
    len: u32,
    addr: &Addr16,
) -> IpcacheValue {
    (0..len)
        .rev()
        .find_map(|l| ipcache.get(&(l, masked(addr, l))).copied())
        .unwrap_or(IpcacheValue {
            identity: IdentityId::WORLD,
            flags: 0,
        })
}

/// `addr` with all but its first `len` bits cleared.
fn masked(addr: &Addr16, len: u32) -> Addr16 {
    let mut out = [0u8; 16];
    for (i, byte) in addr.0.iter().enumerate() {
        let kept = len.saturating_sub(8 * i as u32).min(8);
        out[i] = if kept == 0 {
            0
        } else {
            byte & (0xffu8 << (8 - kept))
        };
    }
    Addr16(out)
}

/// Which policy changes make a move unsafe, seen by the endpoints the old
/// state's interfaces use (entries of no live endpoint are read only once
/// every policy write is done).
struct Risk {
    /// Identities gaining or changing entries of a live endpoint.
    put: BTreeSet<u32>,
    /// Identities losing entries of a live endpoint.
    deleted: BTreeSet<u32>,
    /// Whether a live endpoint's ANY entries change.
    any: bool,
}

impl Risk {
    fn of(old: &KernelState, policy: &Changes<(u32, PolicyKey), PolicyValue>) -> Risk {
        let live: BTreeSet<u32> = old.endpoints.values().map(|e| e.id.0).collect();
        let mut risk = Risk {
            put: BTreeSet::new(),
            deleted: BTreeSet::new(),
            any: false,
        };
        let puts = policy.0.iter().map(|((_, k), _)| (k, true));
        let deletes = policy.1.iter().map(|(_, k)| (k, false));
        for (key, put) in puts.chain(deletes) {
            if !live.contains(&endpoint_of(key)) {
                continue;
            }
            match identity_of(key) {
                id if id == IdentityId::ANY.0 => risk.any = true,
                id if put => {
                    risk.put.insert(id);
                }
                id => {
                    risk.deleted.insert(id);
                }
            }
        }
        risk
    }

    fn is_empty(&self) -> bool {
        !self.any && self.put.is_empty() && self.deleted.is_empty()
    }

    fn unsafe_move(&self, from: u32, to: u32) -> bool {
        from != to && (self.any || self.put.contains(&from) || self.deleted.contains(&to))
    }
}

/// The waypoints `old` -> `new` needs, if any, given the changes of their
/// policy and ipcache entries.
pub fn route(
    old: &KernelState,
    new: &KernelState,
    policy: &Changes<(u32, PolicyKey), PolicyValue>,
    ipcache: &Changes<(u32, Addr16), IpcacheValue>,
) -> Option<Route> {
    let risk = Risk::of(old, policy);
    if risk.is_empty() {
        return None;
    }
    // Each changed ipcache key: (key, what its addresses had, what they get).
    let put = ipcache.0.iter().map(|(key, value)| {
        let was = old
            .ipcache
            .get(key)
            .copied()
            .unwrap_or_else(|| covering(&old.ipcache, key.0, &key.1));
        (*key, was, *value)
    });
    let deleted = ipcache.1.iter().map(|key| {
        (
            *key,
            old.ipcache[key],
            covering(&new.ipcache, key.0, &key.1),
        )
    });
    let moves: Vec<_> = put.chain(deleted).collect();
    // One unsafe move routes them all: a key written directly in the middle
    // leg could uncover (or cover) a waypoint whose entries are changing.
    if !moves
        .iter()
        .any(|(_, was, will)| risk.unsafe_move(was.identity.0, will.identity.0))
    {
        return None;
    }

    let mut used: BTreeSet<u32> = BTreeSet::new();
    for state in [old, new] {
        used.extend(state.policy.keys().map(|(_, k)| identity_of(k)));
        used.extend(state.ipcache.values().map(|v| v.identity.0));
    }
    let mut free = (IdentityId::FIRST_WAYPOINT..=u32::MAX)
        .rev()
        .filter(|id| !used.contains(id));
    let mut waypoints: BTreeMap<(u32, u32), u32> = BTreeMap::new();
    for (_, was, will) in &moves {
        // Fewer ids are in use than there are waypoint ids.
        waypoints
            .entry((was.identity.0, will.identity.0))
            .or_insert_with(|| free.next().unwrap_or(u32::MAX));
    }

    let mut before = old.clone();
    let mut after = new.clone();
    for (&(from, to), &waypoint) in &waypoints {
        before.policy.extend(copies(&old.policy, from, waypoint));
        after.policy.extend(copies(&new.policy, to, waypoint));
    }
    for (key, was, will) in &moves {
        let identity = IdentityId(waypoints[&(was.identity.0, will.identity.0)]);
        // The flags change with the identity, in the last leg.
        let on_waypoint = IpcacheValue {
            identity,
            flags: was.flags,
        };
        before.ipcache.insert(*key, on_waypoint);
        after.ipcache.insert(*key, on_waypoint);
    }
    Some(Route { before, after })
}

/// `policy`'s entries of identity `from`, re-keyed to `to`.
fn copies(policy: &PolicyMap, from: u32, to: u32) -> Vec<((u32, PolicyKey), PolicyValue)> {
    policy
        .iter()
        .filter(|((_, k), _)| identity_of(k) == from)
        .map(|((len, k), v)| {
            let mut key = *k;
            key.identity_be = to.to_be_bytes();
            ((*len, key), *v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_clears_host_bits() {
        let a = Addr16::from_v4([10, 1, 2, 3]);
        assert_eq!(masked(&a, 96 + 16), Addr16::from_v4([10, 1, 0, 0]));
        assert_eq!(masked(&a, 96 + 20), Addr16::from_v4([10, 1, 0, 0]));
        assert_eq!(masked(&a, 96 + 23), Addr16::from_v4([10, 1, 2, 0]));
        assert_eq!(masked(&a, 128), a);
        assert_eq!(masked(&a, 0), Addr16::UNSPECIFIED);
    }
}
