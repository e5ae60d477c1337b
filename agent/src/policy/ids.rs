//! Stable id allocation across compiles.
//!
//! Each compile is a generation: keys looked up during it keep (or get) an id;
//! at [`IdAllocator::finish`] ids whose keys were not used are freed, and become
//! available from the next compile on (never within the compile that freed
//! them, so one plan never reuses an id for two meanings back to back).

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;

/// Allocates `u32` ids for keys, stable while the key stays in use.
#[derive(Clone, Debug)]
pub struct IdAllocator<K> {
    ids: HashMap<K, Slot>,
    next: u32,
    free: BTreeSet<u32>,
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
            next: first,
            free: BTreeSet::new(),
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
        let id = match self.free.pop_first() {
            Some(id) => id,
            None => {
                let id = self.next;
                self.next = self.next.saturating_add(1);
                id
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

    /// The id of `key` if it has one, without marking it used.
    pub fn peek(&self, key: &K) -> Option<u32> {
        self.ids.get(key).map(|s| s.id)
    }

    /// Ends a compile: frees the ids of keys not used since the last call.
    pub fn finish(&mut self) {
        let generation = self.generation;
        let mut freed = Vec::new();
        self.ids.retain(|_, slot| {
            let keep = slot.used_in == generation;
            if !keep {
                freed.push(slot.id);
            }
            keep
        });
        self.free.extend(freed);
        self.generation += 1;
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
}
