//! The plan's rule origins, kept from compile to compile.
//!
//! Every rule of a policy that applies to a local pod has an origin (policy,
//! direction, index, and for ClusterNetworkPolicy tier, action and name).
//! Building that map anew clones a policy ref per rule, every compile. The
//! indexed policies are kept while they stay the same
//! ([`super::network_rules`], [`super::cluster_rules`]), so the map is too:
//! only the origins of policies indexed anew, or no longer indexed, are
//! written, and a compile that keeps every policy shares the last map.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use palisade_common::ids::RuleId;

use super::cluster_rules::IndexedPolicy;
use super::network_rules::IndexedNetworkPolicy;
use super::plan::RuleOrigin;

/// An indexed policy of a compile.
#[derive(Clone, Debug)]
pub(super) enum Indexed {
    Network(Arc<IndexedNetworkPolicy>),
    Cluster(Arc<IndexedPolicy>),
}

impl Indexed {
    /// Its allocation's address: the same while the index is kept. Held
    /// in [`Origins`], so no other index can take it meanwhile.
    fn address(&self) -> usize {
        match self {
            Indexed::Network(p) => Arc::as_ptr(p).addr(),
            Indexed::Cluster(p) => Arc::as_ptr(p).addr(),
        }
    }

    fn origins(&self) -> Box<dyn Iterator<Item = (RuleId, &RuleOrigin)> + '_> {
        match self {
            Indexed::Network(p) => Box::new(p.origins.iter().map(|(id, o)| (*id, o))),
            Indexed::Cluster(p) => Box::new(
                p.rules
                    .iter()
                    .filter_map(|r| r.origin.as_ref().map(|o| (r.id, o))),
            ),
        }
    }
}

/// The origins of the last compile's indexed policies.
#[derive(Debug, Default)]
pub(super) struct Origins {
    map: Arc<BTreeMap<RuleId, RuleOrigin>>,
    /// The indexed policies `map` holds the origins of, by address.
    from: HashMap<usize, Indexed>,
}

impl Origins {
    /// The origins of the rules of `indexed`, this compile's policies.
    ///
    /// Rule ids are distinct among the policies of one compile, and a
    /// policy no longer indexed held its ids alongside those still kept;
    /// so removing the dropped policies' ids before inserting the new ones'
    /// leaves exactly the origins of `indexed`.
    pub(super) fn update(
        &mut self,
        indexed: impl Iterator<Item = Indexed>,
    ) -> Arc<BTreeMap<RuleId, RuleOrigin>> {
        let now: HashMap<usize, Indexed> = indexed.map(|i| (i.address(), i)).collect();
        let dropped: Vec<&Indexed> = self
            .from
            .iter()
            .filter(|(address, _)| !now.contains_key(address))
            .map(|(_, i)| i)
            .collect();
        let added: Vec<&Indexed> = now
            .iter()
            .filter(|(address, _)| !self.from.contains_key(address))
            .map(|(_, i)| i)
            .collect();
        if !dropped.is_empty() || !added.is_empty() {
            let map = Arc::make_mut(&mut self.map);
            for (id, _) in dropped.iter().flat_map(|i| i.origins()) {
                map.remove(&id);
            }
            for (id, origin) in added.iter().flat_map(|i| i.origins()) {
                map.insert(id, origin.clone());
            }
        }
        self.from = now;
        Arc::clone(&self.map)
    }
}
