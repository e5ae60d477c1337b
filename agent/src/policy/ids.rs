//! Stable id allocation across compiles.
//!
//! Each compile is a generation: keys looked up during it keep (or get) an id;
//! at [`IdAllocator::finish`] ids whose keys were not used are freed, and become
//! available from the next compile on (never within the compile that freed
//! them, so one plan never reuses an id for two meanings back to back).
//! [`IdAllocator::renumber`] moves live ids once, to take over the ids a
//! previous agent left in the kernel.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;

/// Allocates `u32` ids for keys, stable while the key stays in use.
#[derive(Clone, Debug)]
pub struct IdAllocator<K> {
    ids: HashMap<K, Slot>,
    first: u32,
    next: u32,
    free: BTreeSet<u32>,
    /// Ids never to hand out (see [`IdAllocator::renumber`]).
    reserved: BTreeSet<u32>,
    /// Ids held this compile without a lookup of their key ([`IdAllocator::hold`]).
    held: Vec<u32>,
    generation: u64,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    id: u32,
    used_in: u64,
}

impl<K: Hash + Eq + Clone> IdAllocator<K> {
    /// An allocator handing out ids from `first` upwards.
    pub fn new(first: u32) -> Self {
        IdAllocator {
            ids: HashMap::new(),
            first,
            next: first,
            free: BTreeSet::new(),
            reserved: BTreeSet::new(),
            held: Vec::new(),
            generation: 1,
        }
    }

    /// The id of `key`, allocating one (lowest free first) if it has none.
    pub fn get(&mut self, key: &K) -> u32 {
        let generation = self.generation;
        if let Some(slot) = self.ids.get_mut(key) {
            slot.used_in = generation;
            return slot.id;
        }
        let id = loop {
            let id = match self.free.pop_first() {
                Some(id) => id,
                None => {
                    let id = self.next;
                    self.next = self.next.saturating_add(1);
                    id
                }
            };
            if !self.reserved.contains(&id) {
                break id;
            }
        };
        self.ids.insert(
            key.clone(),
            Slot {
                id,
                used_in: generation,
            },
        );
        id
    }

    /// Marks `id` used in this compile, as [`IdAllocator::get`] of its key
    /// would, for a caller that looked it up in the previous compile (so it
    /// is still live) and knows its key is unchanged.
    pub fn hold(&mut self, id: u32) {
        self.held.push(id);
    }

    /// The id of `key` if it has one, without marking it used.
    pub fn peek(&self, key: &K) -> Option<u32> {
        self.ids.get(key).map(|s| s.id)
    }

    /// Ends a compile: frees the ids of keys not used since the last call.
    pub fn finish(&mut self) {
        let generation = self.generation;
        let mut held = std::mem::take(&mut self.held);
        held.sort_unstable();
        let mut freed = Vec::new();
        self.ids.retain(|_, slot| {
            let keep = slot.used_in == generation || held.binary_search(&slot.id).is_ok();
            if !keep {
                freed.push(slot.id);
            }
            keep
        });
        self.free.extend(freed);
        self.generation += 1;
    }

    /// Moves live ids: a key holding an id of `wanted` takes its target;
    /// a key whose id is a target or `reserved` without being wanted gets a
    /// fresh id. Reserved ids are never handed out afresh, now or later (the
    /// kernel may still hold entries under them). Returns whether any id
    /// moved. `wanted` must be injective.
    pub fn renumber(&mut self, wanted: &HashMap<u32, u32>, reserved: &BTreeSet<u32>) -> bool {
        self.reserved.extend(reserved);
        let mut taken: BTreeSet<u32> = wanted.values().copied().collect();
        taken.extend(&self.reserved);
        let mut vacated = Vec::new();
        let mut displaced = Vec::new();
        for slot in self.ids.values_mut() {
            match wanted.get(&slot.id) {
                Some(&to) if to == slot.id => {}
                Some(&to) => {
                    vacated.push(slot.id);
                    slot.id = to;
                }
                None if taken.contains(&slot.id) => displaced.push(slot),
                None => {
                    taken.insert(slot.id);
                }
            }
        }
        let moved = !vacated.is_empty() || !displaced.is_empty();
        // Fresh ids in a deterministic order: by the id each one leaves.
        displaced.sort_by_key(|slot| slot.id);
        let mut candidate = self.first;
        for slot in displaced {
            while taken.contains(&candidate) {
                candidate += 1;
            }
            vacated.push(slot.id);
            slot.id = candidate;
            taken.insert(candidate);
        }
        let live: BTreeSet<u32> = self.ids.values().map(|s| s.id).collect();
        if let Some(last) = live.last() {
            self.next = self.next.max(last.saturating_add(1));
        }
        self.free
            .extend(vacated.into_iter().filter(|id| *id < self.next));
        let reserved = &self.reserved;
        self.free
            .retain(|id| !live.contains(id) && !reserved.contains(id));
        moved
    }

    /// The key holding `id` (a scan: for tests).
    #[cfg(test)]
    pub fn key_of(&self, id: u32) -> Option<&K> {
        self.ids.iter().find(|(_, s)| s.id == id).map(|(k, _)| k)
    }

    /// Number of live ids.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no id is live.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_id_stays_live_and_an_unheld_one_is_freed() {
        let mut a = IdAllocator::new(1);
        let x = a.get(&"x");
        let y = a.get(&"y");
        a.finish();
        a.hold(x);
        a.finish(); // y freed, x held
        assert_eq!(a.peek(&"x"), Some(x));
        assert_eq!(a.peek(&"y"), None);
        assert_eq!(a.get(&"z"), y);
        a.finish(); // x neither used nor held
        assert_eq!(a.peek(&"x"), None);
    }

    #[test]
    fn ids_are_stable_while_used_and_reused_only_after_a_later_finish() {
        let mut a = IdAllocator::new(1);
        assert_eq!(a.get(&"x"), 1);
        assert_eq!(a.get(&"y"), 2);
        a.finish();
        assert_eq!(a.get(&"y"), 2);
        a.finish(); // x freed here
        assert_eq!(a.get(&"z"), 1);
        assert_eq!(a.get(&"y"), 2);
        assert_eq!(a.get(&"w"), 3);
    }

    #[test]
    fn renumbering_takes_wanted_ids_and_never_hands_out_reserved_ones() {
        let mut a = IdAllocator::new(1);
        for key in ["x", "y", "z"] {
            a.get(&key);
        }
        a.finish();
        // x: 1 -> 3 (z's id), y keeps 2 but 2 is reserved, z is unwanted.
        let wanted = HashMap::from([(1, 3)]);
        let reserved = BTreeSet::from([2, 5]);
        assert!(a.renumber(&wanted, &reserved));
        assert_eq!(a.peek(&"x"), Some(3));
        let (y, z) = (a.peek(&"y").unwrap(), a.peek(&"z").unwrap());
        let ids = BTreeSet::from([3, y, z]);
        assert_eq!(ids.len(), 3, "distinct ids: {ids:?}");
        assert!(![2, 5].contains(&y) && ![2, 5].contains(&z));
        for key in ["p", "q", "r", "s"] {
            let id = a.get(&key);
            assert!(
                !reserved.contains(&id) && !ids.contains(&id),
                "{key} got {id}"
            );
        }
        // A far reserved id (a waypoint left in the kernel) is skipped
        // without moving where fresh ids come from.
        let mut b: IdAllocator<&str> = IdAllocator::new(1);
        b.get(&"x");
        b.finish();
        assert!(!b.renumber(&HashMap::new(), &BTreeSet::from([2, u32::MAX])));
        assert_eq!(b.get(&"y"), 3);
        assert!(b.free.len() < 4 && b.next == 4, "{:?} {}", b.free, b.next);
        let unchanged = a.clone();
        let same: HashMap<u32, u32> = [3, y, z].into_iter().map(|id| (id, id)).collect();
        assert!(!a.renumber(&same, &BTreeSet::new()));
        assert_eq!(a.peek(&"x"), unchanged.peek(&"x"));
    }
}
