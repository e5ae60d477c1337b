//! A plan's allow or deny entries, kept in one shared part per endpoint and
//! direction. The compiler hands an unchanged endpoint's part from one plan
//! to the next by pointer, so a re-plan neither gathers nor drops the
//! entries of endpoints it did not touch, and the renderer can tell an
//! unchanged part by pointer.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use palisade_common::ids::{EndpointId, RuleId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::RuleKey;
use crate::state::Direction;

/// One endpoint's entries in one direction, sorted by key, one entry a key.
pub type EntryPart = Arc<Vec<(RuleKey, RuleId)>>;

/// Where a part belongs.
pub type PartKey = (EndpointId, Direction);

/// Entries by key, in key order (endpoint, direction, identity, L4), as a
/// map from [`RuleKey`] to [`RuleId`]. No part is empty, so two values with
/// the same entries are equal.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PlanEntries {
    parts: BTreeMap<PartKey, EntryPart>,
    len: usize,
}

impl PlanEntries {
    /// Entries from parts (each sorted by key, one entry a key, every key of
    /// the part's endpoint and direction); empty parts are left out.
    pub fn from_parts(parts: impl IntoIterator<Item = (PartKey, EntryPart)>) -> Self {
        let mut out = PlanEntries::default();
        for (at, part) in parts {
            debug_assert!(part.windows(2).all(|w| w[0].0 < w[1].0));
            debug_assert!(part.iter().all(|(k, _)| (k.endpoint, k.direction) == at));
            if !part.is_empty() {
                out.len += part.len();
                out.parts.insert(at, part);
            }
        }
        out
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every entry, in key order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            parts: self.parts.values(),
            part: [].iter(),
        }
    }

    /// Every key, in key order.
    pub fn keys(&self) -> impl Iterator<Item = &RuleKey> {
        self.iter().map(|(k, _)| k)
    }

    /// Every rule, in key order.
    pub fn values(&self) -> impl Iterator<Item = &RuleId> {
        self.iter().map(|(_, r)| r)
    }

    /// The parts, by endpoint and direction.
    pub fn parts(&self) -> &BTreeMap<PartKey, EntryPart> {
        &self.parts
    }

    /// One endpoint's part in one direction, if it has entries.
    pub fn part(&self, endpoint: EndpointId, direction: Direction) -> Option<&EntryPart> {
        self.parts.get(&(endpoint, direction))
    }

    /// The rule of one key.
    pub fn get(&self, key: &RuleKey) -> Option<&RuleId> {
        let part = self.part(key.endpoint, key.direction)?;
        let at = part.binary_search_by(|(k, _)| k.cmp(key)).ok()?;
        Some(&part[at].1)
    }

    /// Whether a key is present.
    pub fn contains_key(&self, key: &RuleKey) -> bool {
        self.get(key).is_some()
    }

    /// Inserts or replaces an entry; the rule it replaced.
    pub fn insert(&mut self, key: RuleKey, rule: RuleId) -> Option<RuleId> {
        let part = Arc::make_mut(self.parts.entry((key.endpoint, key.direction)).or_default());
        match part.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(at) => Some(std::mem::replace(&mut part[at].1, rule)),
            Err(at) => {
                part.insert(at, (key, rule));
                self.len += 1;
                None
            }
        }
    }

    /// Removes an entry; its rule.
    pub fn remove(&mut self, key: &RuleKey) -> Option<RuleId> {
        let at_part = (key.endpoint, key.direction);
        let part = self.parts.get_mut(&at_part)?;
        let at = part.binary_search_by(|(k, _)| k.cmp(key)).ok()?;
        let (_, rule) = Arc::make_mut(part).remove(at);
        if part.is_empty() {
            self.parts.remove(&at_part);
        }
        self.len -= 1;
        Some(rule)
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        self.parts.clear();
        self.len = 0;
    }
}

/// The entries of a [`PlanEntries`], in key order.
pub struct Iter<'a> {
    parts: std::collections::btree_map::Values<'a, PartKey, EntryPart>,
    part: std::slice::Iter<'a, (RuleKey, RuleId)>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a RuleKey, &'a RuleId);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((k, r)) = self.part.next() {
                return Some((k, r));
            }
            self.part = self.parts.next()?.iter();
        }
    }
}

impl<'a> IntoIterator for &'a PlanEntries {
    type Item = (&'a RuleKey, &'a RuleId);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl FromIterator<(RuleKey, RuleId)> for PlanEntries {
    /// The last rule of a key wins, as in a map.
    fn from_iter<I: IntoIterator<Item = (RuleKey, RuleId)>>(iter: I) -> Self {
        iter.into_iter().collect::<BTreeMap<_, _>>().into()
    }
}

impl From<BTreeMap<RuleKey, RuleId>> for PlanEntries {
    fn from(map: BTreeMap<RuleKey, RuleId>) -> Self {
        let mut parts: BTreeMap<PartKey, Vec<(RuleKey, RuleId)>> = BTreeMap::new();
        for (k, r) in map {
            parts
                .entry((k.endpoint, k.direction))
                .or_default()
                .push((k, r));
        }
        PlanEntries::from_parts(parts.into_iter().map(|(at, v)| (at, Arc::new(v))))
    }
}

impl fmt::Debug for PlanEntries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// Serialised as a list of `[key, rule]` pairs, like the plan's other maps.
impl Serialize for PlanEntries {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for PlanEntries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Vec::<(RuleKey, RuleId)>::deserialize(deserializer)?
            .into_iter()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use palisade_common::ids::IdentityId;
    use proptest::prelude::*;

    use super::*;
    use crate::policy::plan::L4Match;

    fn key(endpoint: u32, egress: bool, identity: u32, port: u16) -> RuleKey {
        RuleKey {
            endpoint: EndpointId(endpoint),
            direction: if egress {
                Direction::Egress
            } else {
                Direction::Ingress
            },
            identity: IdentityId(identity),
            l4: L4Match::Ports {
                protocol: 6,
                first: port,
                last: port,
            },
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

        /// Inserts and removes in any order leave what a `BTreeMap` holds,
        /// in its order, and equal values are equal.
        #[test]
        fn entries_behave_like_a_btree_map(
            ops in proptest::collection::vec((any::<bool>(), 1u32..4, any::<bool>(), 0u32..3, 0u16..3, 1u32..5), 0..40)
        ) {
            let mut map = BTreeMap::new();
            let mut entries = PlanEntries::default();
            for (insert, e, egress, i, p, r) in ops {
                let k = key(e, egress, i, p);
                if insert {
                    prop_assert_eq!(entries.insert(k, RuleId(r)), map.insert(k, RuleId(r)));
                } else {
                    prop_assert_eq!(entries.remove(&k), map.remove(&k));
                }
                prop_assert_eq!(entries.get(&k), map.get(&k));
            }
            prop_assert_eq!(entries.len(), map.len());
            prop_assert!(entries.iter().eq(map.iter()));
            prop_assert_eq!(&entries, &PlanEntries::from(map.clone()));
            let json = serde_json::to_string(&entries).expect("serialises");
            let back: PlanEntries = serde_json::from_str(&json).expect("deserialises");
            prop_assert_eq!(back, entries);
        }
    }
}
