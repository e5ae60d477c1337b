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

use super::changes::{Changes, changes};
use super::policy_map::{PolicyEntryKey, PolicyMap, endpoint_of};
use super::render::KernelState;

/// The writes a transition with waypoints adds to the plain ones, leg by
/// leg: old -> (waypoints hold the old entries of the identities the moving
/// addresses leave, and the addresses sit on them) -> (the waypoints hold the
/// new entries of the identities the addresses go to) -> new.
#[derive(Debug)]
pub struct Route {
    /// Leg 1: the waypoints' entries, copies of the old entries of the
    /// identities the addresses leave.
    pub copies: Vec<(PolicyEntryKey, PolicyValue)>,
    /// Leg 1: every changed ipcache key, on its waypoint.
    pub onto: Vec<((u32, Addr16), IpcacheValue)>,
    /// Leg 2, beside the plain policy changes: the waypoints' entries
    /// become copies of the new entries of the identities the addresses go
    /// to.
    pub recopied: Changes<PolicyEntryKey, PolicyValue>,
    /// Leg 3, beside the plain ipcache changes: the waypoints' entries go.
    pub dropped: Vec<PolicyEntryKey>,
}

fn identity_of(key: &PolicyKey) -> u32 {
    u32::from_be_bytes(key.identity_be)
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
/// every policy write is done), each change with the endpoints it is of.
struct Risk {
    /// Identity -> live endpoints where it gains or changes entries.
    put: BTreeMap<u32, BTreeSet<u32>>,
    /// Identity -> live endpoints where it loses entries.
    deleted: BTreeMap<u32, BTreeSet<u32>>,
    /// Live endpoints whose ANY entries change.
    any: BTreeSet<u32>,
    /// Address -> the endpoints it is the own address of in both states.
    /// The programs let a pod reach itself without reading its policy, so
    /// an endpoint's changes cannot make a move of its own address unsafe.
    owners: BTreeMap<Addr16, Vec<u32>>,
}

impl Risk {
    fn of(
        old: &KernelState,
        new: &KernelState,
        policy: &Changes<(u32, PolicyKey), PolicyValue>,
    ) -> Risk {
        let live: BTreeSet<u32> = old.endpoints.values().map(|e| e.id.0).collect();
        let mut risk = Risk {
            put: BTreeMap::new(),
            deleted: BTreeMap::new(),
            any: BTreeSet::new(),
            owners: BTreeMap::new(),
        };
        let puts = policy.0.iter().map(|((_, k), _)| (k, true));
        let deletes = policy.1.iter().map(|(_, k)| (k, false));
        for (key, put) in puts.chain(deletes) {
            let endpoint = endpoint_of(key);
            if !live.contains(&endpoint) {
                continue;
            }
            let by_identity = if put {
                &mut risk.put
            } else {
                &mut risk.deleted
            };
            match identity_of(key) {
                id if id == IdentityId::ANY.0 => risk.any.insert(endpoint),
                id => by_identity.entry(id).or_default().insert(endpoint),
            };
        }
        if !risk.is_empty() {
            risk.owners = owners(old, new);
        }
        risk
    }

    fn is_empty(&self) -> bool {
        self.any.is_empty() && self.put.is_empty() && self.deleted.is_empty()
    }

    /// Whether moving `key`'s addresses from `from` to `to` in one write
    /// could give some live endpoint an answer neither state gives.
    fn unsafe_move(&self, key: &(u32, Addr16), from: u32, to: u32) -> bool {
        if from == to {
            return false;
        }
        let exempt: &[u32] = match self.owners.get(&key.1) {
            Some(owners) if key.0 == FULL_PREFIX => owners,
            _ => &[],
        };
        let reads = |endpoints: Option<&BTreeSet<u32>>| {
            endpoints.is_some_and(|set| set.iter().any(|e| !exempt.contains(e)))
        };
        reads(Some(&self.any)) || reads(self.put.get(&from)) || reads(self.deleted.get(&to))
    }
}

/// The prefix length of one address in `IPCACHE` (v4-mapped /32 or /128).
const FULL_PREFIX: u32 = 128;

/// Address -> the endpoints whose every interface, in both states, has it
/// as its own address of its family.
fn owners(old: &KernelState, new: &KernelState) -> BTreeMap<Addr16, Vec<u32>> {
    let mut own: BTreeMap<u32, Vec<Addr16>> = BTreeMap::new();
    for info in old.endpoints.values().chain(new.endpoints.values()) {
        let addresses: Vec<Addr16> = [info.ipv4, info.ipv6]
            .into_iter()
            .filter(|a| *a != Addr16::UNSPECIFIED)
            .collect();
        own.entry(info.id.0)
            .and_modify(|kept| kept.retain(|a| addresses.contains(a)))
            .or_insert(addresses);
    }
    let mut owners: BTreeMap<Addr16, Vec<u32>> = BTreeMap::new();
    for (endpoint, addresses) in own {
        for address in addresses {
            owners.entry(address).or_default().push(endpoint);
        }
    }
    owners
}

/// The waypoints `old` -> `new` needs, if any, given the changes of their
/// policy and ipcache entries.
pub fn route(
    old: &KernelState,
    new: &KernelState,
    policy: &Changes<(u32, PolicyKey), PolicyValue>,
    ipcache: &Changes<(u32, Addr16), IpcacheValue>,
) -> Option<Route> {
    let risk = Risk::of(old, new, policy);
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
        .any(|(key, was, will)| risk.unsafe_move(key, was.identity.0, will.identity.0))
    {
        return None;
    }

    let pairs: BTreeSet<(u32, u32)> = moves
        .iter()
        .map(|(_, was, will)| (was.identity.0, will.identity.0))
        .collect();
    let froms: BTreeSet<u32> = pairs.iter().map(|(from, _)| *from).collect();
    let tos: BTreeSet<u32> = pairs.iter().map(|(_, to)| *to).collect();
    let (old_entries, old_used) = entries_of(&old.policy, &froms);
    let (new_entries, new_used) = entries_of(&new.policy, &tos);
    let mut used: BTreeSet<u32> = old_used.union(&new_used).copied().collect();
    used.extend(
        [old, new]
            .iter()
            .flat_map(|state| state.ipcache.values())
            .map(|v| v.identity.0)
            .filter(|id| *id >= IdentityId::FIRST_WAYPOINT),
    );
    let mut free = (IdentityId::FIRST_WAYPOINT..=u32::MAX)
        .rev()
        .filter(|id| !used.contains(id));
    // Fewer ids are in use than there are waypoint ids.
    let waypoints: BTreeMap<(u32, u32), u32> = pairs
        .into_iter()
        .map(|pair| (pair, free.next().unwrap_or(u32::MAX)))
        .collect();

    let (mut leave, mut arrive) = (BTreeMap::new(), BTreeMap::new());
    for (&(from, to), &waypoint) in &waypoints {
        leave.extend(rekeyed(&old_entries, from, waypoint));
        arrive.extend(rekeyed(&new_entries, to, waypoint));
    }
    let onto = moves
        .iter()
        .map(|(key, was, will)| {
            let identity = IdentityId(waypoints[&(was.identity.0, will.identity.0)]);
            // The flags change with the identity, in the last leg.
            (
                *key,
                IpcacheValue {
                    identity,
                    flags: was.flags,
                },
            )
        })
        .collect();
    Some(Route {
        onto,
        recopied: changes(&leave, &arrive),
        dropped: arrive.into_keys().collect(),
        copies: leave.into_iter().collect(),
    })
}

/// Entries of one identity, by identity.
type ByIdentity = BTreeMap<u32, Vec<(PolicyEntryKey, PolicyValue)>>;

/// In one pass over `policy`: its entries of the identities in `wanted`,
/// and the waypoint ids its keys use (an apply that stopped half-way leaves
/// some behind).
fn entries_of(policy: &PolicyMap, wanted: &BTreeSet<u32>) -> (ByIdentity, BTreeSet<u32>) {
    let mut entries = ByIdentity::new();
    let mut used = BTreeSet::new();
    for (key, value) in policy.iter() {
        let identity = identity_of(&key.1);
        if identity >= IdentityId::FIRST_WAYPOINT {
            used.insert(identity);
        }
        if wanted.contains(&identity) {
            entries.entry(identity).or_default().push((*key, *value));
        }
    }
    (entries, used)
}

/// The entries of identity `from`, re-keyed to `to`.
fn rekeyed(
    entries: &ByIdentity,
    from: u32,
    to: u32,
) -> impl Iterator<Item = (PolicyEntryKey, PolicyValue)> + '_ {
    entries
        .get(&from)
        .into_iter()
        .flatten()
        .map(move |((len, k), v)| {
            let mut key = *k;
            key.identity_be = to.to_be_bytes();
            ((*len, key), *v)
        })
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
