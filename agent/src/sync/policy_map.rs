//! The `POLICY` entries of a [`KernelState`](super::KernelState), kept in one
//! part per endpoint. Parts are shared between states (`Arc`): a render
//! reuses the parts of endpoints whose plan entries did not change, and the
//! diff skips a part both states share without reading it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use palisade_common::policy::{PolicyKey, PolicyValue};

/// A `POLICY` key as the kernel holds it: (prefix length, key).
pub type PolicyEntryKey = (u32, PolicyKey);

/// One endpoint's entries.
pub type PolicyPart = BTreeMap<PolicyEntryKey, PolicyValue>;

/// The endpoint id a key belongs to.
pub fn endpoint_of(key: &PolicyKey) -> u32 {
    u32::from_be_bytes(key.endpoint_be)
}

/// Every `POLICY` entry, by endpoint. No part is empty, so two maps with the
/// same entries are equal.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PolicyMap {
    parts: BTreeMap<u32, Arc<PolicyPart>>,
    len: usize,
}

impl PolicyMap {
    /// How many entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every entry, by endpoint, each endpoint's in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&PolicyEntryKey, &PolicyValue)> {
        self.parts.values().flat_map(|part| part.iter())
    }

    /// Every key, in [`Self::iter`]'s order.
    pub fn keys(&self) -> impl Iterator<Item = &PolicyEntryKey> {
        self.iter().map(|(k, _)| k)
    }

    /// Every value, in [`Self::iter`]'s order.
    pub fn values(&self) -> impl Iterator<Item = &PolicyValue> {
        self.iter().map(|(_, v)| v)
    }

    /// The value of one key.
    pub fn get(&self, key: &PolicyEntryKey) -> Option<&PolicyValue> {
        self.parts.get(&endpoint_of(&key.1))?.get(key)
    }

    /// Whether a key is present.
    pub fn contains_key(&self, key: &PolicyEntryKey) -> bool {
        self.get(key).is_some()
    }

    /// Inserts or replaces an entry; the value it replaced.
    pub fn insert(&mut self, key: PolicyEntryKey, value: PolicyValue) -> Option<PolicyValue> {
        let part = self.parts.entry(endpoint_of(&key.1)).or_default();
        let old = Arc::make_mut(part).insert(key, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes an entry; its value.
    pub fn remove(&mut self, key: &PolicyEntryKey) -> Option<PolicyValue> {
        let endpoint = endpoint_of(&key.1);
        let part = self.parts.get_mut(&endpoint)?;
        if !part.contains_key(key) {
            return None;
        }
        let old = Arc::make_mut(part).remove(key);
        if part.is_empty() {
            self.parts.remove(&endpoint);
        }
        self.len -= 1;
        old
    }

    /// Keeps the entries `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&PolicyEntryKey, &PolicyValue) -> bool) {
        let mut len = 0;
        self.parts.retain(|_, part| {
            if part.iter().any(|(k, v)| !keep(k, v)) {
                Arc::make_mut(part).retain(|k, v| keep(k, v));
            }
            len += part.len();
            !part.is_empty()
        });
        self.len = len;
    }

    /// One endpoint's part, if it has entries.
    pub fn part(&self, endpoint: u32) -> Option<&Arc<PolicyPart>> {
        self.parts.get(&endpoint)
    }

    /// The parts, by endpoint.
    pub fn parts(&self) -> &BTreeMap<u32, Arc<PolicyPart>> {
        &self.parts
    }

    /// Sets one endpoint's part (`part`'s keys must all be that endpoint's;
    /// an empty part removes the endpoint's entries).
    pub fn set_part(&mut self, endpoint: u32, part: Arc<PolicyPart>) {
        debug_assert!(part.keys().all(|(_, k)| endpoint_of(k) == endpoint));
        let added = part.len();
        let removed = if part.is_empty() {
            self.parts.remove(&endpoint)
        } else {
            self.parts.insert(endpoint, part)
        };
        self.len = self.len + added - removed.map_or(0, |p| p.len());
    }
}

impl Extend<(PolicyEntryKey, PolicyValue)> for PolicyMap {
    fn extend<I: IntoIterator<Item = (PolicyEntryKey, PolicyValue)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl FromIterator<(PolicyEntryKey, PolicyValue)> for PolicyMap {
    fn from_iter<I: IntoIterator<Item = (PolicyEntryKey, PolicyValue)>>(iter: I) -> Self {
        let mut by_endpoint: BTreeMap<u32, Vec<(PolicyEntryKey, PolicyValue)>> = BTreeMap::new();
        for (k, v) in iter {
            by_endpoint
                .entry(endpoint_of(&k.1))
                .or_default()
                .push((k, v));
        }
        let mut map = PolicyMap::default();
        for (endpoint, entries) in by_endpoint {
            map.set_part(endpoint, Arc::new(entries.into_iter().collect()));
        }
        map
    }
}

impl fmt::Debug for PolicyMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use palisade_common::ids::{EndpointId, IdentityId, RuleId};
    use palisade_common::verdict::Direction;
    use proptest::prelude::*;

    use super::*;

    fn key(endpoint: u32, identity: u32) -> PolicyEntryKey {
        (
            96,
            PolicyKey::new(
                EndpointId(endpoint),
                IdentityId(identity),
                Direction::Ingress,
                6,
                80,
            ),
        )
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u32, u32, u32),
        Remove(u32, u32),
        Retain(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u32..4, 0u32..6, 0u32..3).prop_map(|(e, i, v)| Op::Insert(e, i, v)),
            (0u32..4, 0u32..6).prop_map(|(e, i)| Op::Remove(e, i)),
            (0u32..3).prop_map(Op::Retain),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 300,
            failure_persistence: None,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x9a27),
            ..ProptestConfig::default()
        })]

        /// Any sequence of writes leaves the map holding what a flat map
        /// given the same writes holds, with no empty part and a true length,
        /// and a copy taken before the writes unchanged.
        #[test]
        fn writes_match_a_flat_map(ops in proptest::collection::vec(op(), 0..40)) {
            let mut map = PolicyMap::default();
            let mut flat: BTreeMap<PolicyEntryKey, PolicyValue> = BTreeMap::new();
            let mut snapshot = (map.clone(), flat.clone());
            for (n, op) in ops.iter().enumerate() {
                if n == ops.len() / 2 {
                    snapshot = (map.clone(), flat.clone());
                }
                match *op {
                    Op::Insert(e, i, v) => {
                        let value = PolicyValue::allow(RuleId(v));
                        prop_assert_eq!(map.insert(key(e, i), value), flat.insert(key(e, i), value));
                    }
                    Op::Remove(e, i) => {
                        prop_assert_eq!(map.remove(&key(e, i)), flat.remove(&key(e, i)));
                    }
                    Op::Retain(v) => {
                        map.retain(|_, value| value.credited() != RuleId(v));
                        flat.retain(|_, value| value.credited() != RuleId(v));
                    }
                }
            }
            let entries: Vec<_> = map.iter().map(|(k, v)| (*k, *v)).collect();
            let mut sorted = entries.clone();
            sorted.sort_by_key(|(k, _)| *k);
            prop_assert_eq!(sorted, flat.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>());
            prop_assert_eq!(map.len(), flat.len());
            prop_assert!(map.parts().values().all(|p| !p.is_empty()));
            prop_assert_eq!(&map, &flat.clone().into_iter().collect::<PolicyMap>());
            let (old_map, old_flat) = snapshot;
            prop_assert_eq!(old_map, old_flat.into_iter().collect::<PolicyMap>());
        }
    }
}
