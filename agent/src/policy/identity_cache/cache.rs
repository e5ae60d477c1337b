//! The cache, what an update reads and what it changed.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use palisade_common::ids::IdentityId;

use super::block_index::BlockIndex;
use super::layers::Layers;
use crate::policy::identity::{Atom, AtomId, AtomTable, Identities};
use crate::policy::ids::IdAllocator;
use crate::state::ClusterState;
use crate::state::PodRef;
use crate::state::journal::Mark;
use crate::state::model::{Protocol, Service};
use crate::state::netpol::{IpBlock, PodPeer};

/// What an update changed, for caches of rule expansions.
#[derive(Debug, Default)]
pub struct IdentityChanges {
    /// Everything was evaluated again: no earlier expansion can be trusted.
    pub rebuilt: bool,
    /// Atoms whose set of live identities changed.
    pub atoms: HashSet<AtomId>,
    /// Port names (egress rules' names) whose set of live identities changed.
    pub names: HashSet<(String, Protocol)>,
}

/// The identity state of the cluster's endpoint pods, kept between compiles.
#[derive(Debug, Default)]
pub struct IdentityCache {
    /// The state's point this cache reflects; `None` before the first update.
    pub(super) mark: Option<Mark>,
    /// Pod-peer atoms the pods were evaluated against.
    pub(super) peers: BTreeMap<AtomId, PodPeer>,
    /// ipBlock atoms the prefixes were computed from.
    pub(super) blocks: Vec<(AtomId, IpBlock)>,
    /// Port names egress rules refer to.
    pub(super) egress_names: HashSet<(String, Protocol)>,
    pub(super) block_index: BlockIndex,
    pub(super) pods: BTreeMap<PodRef, PodAtoms>,
    pub(super) by_ns: HashMap<String, BTreeSet<PodRef>>,
    /// Named-port atoms and how many pods hold each.
    pub(super) named_atoms: HashMap<AtomId, (Atom, usize)>,
    pub(super) layers: Layers,
    pub(super) ipcache: Arc<BTreeMap<IpNet, IdentityId>>,
    /// Allocated identities and how many layer entries hold each.
    pub(super) held: HashMap<IdentityId, usize>,
    /// Allocated identities and how many ipcache entries have each.
    pub(super) live: HashMap<IdentityId, usize>,
    /// The atoms of each held identity.
    pub(super) keys: HashMap<IdentityId, Vec<AtomId>>,
    /// Live identities and their atoms.
    pub(super) atoms_of: BTreeMap<IdentityId, Vec<AtomId>>,
    /// Identities whose liveness flipped during this update.
    pub(super) flipped: BTreeSet<IdentityId>,
}

/// One endpoint pod's part.
#[derive(Debug)]
pub(super) struct PodAtoms {
    pub(super) ips: Vec<IpAddr>,
    /// Pod-peer and named-port atoms it satisfies, sorted.
    pub(super) atoms: Vec<AtomId>,
}

/// What an update reads.
pub struct Inputs<'a> {
    /// The cluster.
    pub cluster: &'a ClusterState,
    /// Services whose ClusterIPs get identities.
    pub services: &'a [&'a Service],
    /// The node's own addresses.
    pub host: &'a BTreeSet<IpAddr>,
}

/// The `nodes` atoms each Node address satisfies (addresses of no such
/// atom left out).
fn node_atoms(cluster: &ClusterState, table: &AtomTable) -> BTreeMap<IpAddr, Vec<AtomId>> {
    let mut out: BTreeMap<IpAddr, Vec<AtomId>> = BTreeMap::new();
    if table.node_selectors.is_empty() {
        return out;
    }
    for node in cluster.nodes() {
        for (atom, selector) in &table.node_selectors {
            if selector.matches(&node.labels) {
                for ip in &node.addresses {
                    out.entry(*ip).or_default().push(*atom);
                }
            }
        }
    }
    out
}

pub(super) fn normalize(mut v: Vec<AtomId>) -> Vec<AtomId> {
    v.sort_unstable();
    v.dedup();
    v
}

impl IdentityCache {
    /// Brings the identities up to date with `inputs` for the atoms of
    /// `table` (named-port and Service atoms are added to it), and returns
    /// them with what changed since the last update.
    pub fn update(
        &mut self,
        inputs: &Inputs<'_>,
        table: &mut AtomTable,
        atom_alloc: &mut IdAllocator<Atom>,
        id_alloc: &mut IdAllocator<Vec<AtomId>>,
    ) -> (Identities, IdentityChanges) {
        let cluster = inputs.cluster;
        let mut blocks = table.blocks.clone();
        blocks.sort();
        let incremental = self
            .mark
            .is_some_and(|m| cluster.changes_since(m).is_some())
            && blocks == self.blocks
            && table.egress_names == self.egress_names;
        if incremental {
            self.catch_up(cluster, table, atom_alloc, id_alloc);
        } else {
            self.rebuild(cluster, table, blocks, atom_alloc, id_alloc);
        }
        let service_ips = self.update_services(inputs.services, table, atom_alloc, id_alloc);
        let node_atoms = node_atoms(cluster, table);
        self.update_nodes(&node_atoms, inputs.host, id_alloc);
        self.update_host(inputs.host, &node_atoms, id_alloc);
        self.mark = Some(cluster.mark());

        let mut changes = IdentityChanges {
            rebuilt: !incremental,
            ..IdentityChanges::default()
        };
        for id in std::mem::take(&mut self.flipped) {
            let alive = self.live.get(&id).is_some_and(|n| *n > 0);
            let key = self.keys.get(&id).cloned().unwrap_or_default();
            let was = self.atoms_of.contains_key(&id);
            if alive && !was {
                changes.atoms.extend(key.iter().copied());
                self.atoms_of.insert(id, key);
            } else if !alive && was {
                changes.atoms.extend(key.iter().copied());
                self.atoms_of.remove(&id);
            }
        }
        for a in &changes.atoms {
            if let Some((Atom::NamedPort { name, protocol, .. }, _)) = self.named_atoms.get(a) {
                changes.names.insert((name.clone(), *protocol));
            }
        }
        self.live.retain(|_, n| *n > 0);
        self.held.retain(|_, n| *n > 0);
        self.keys.retain(|id, _| self.held.contains_key(id));
        self.named_atoms.retain(|_, (_, n)| *n > 0);
        // Keep every held id and named atom allocated (an id not looked up in
        // a compile is freed at its end). Every id here was allocated for its
        // key and kept in every compile since.
        for id in self.keys.keys() {
            id_alloc.hold(id.0);
        }
        for (atom, _) in self.named_atoms.values() {
            table.intern(atom_alloc, atom);
        }
        (self.identities(table, service_ips), changes)
    }

    fn identities(
        &self,
        table: &AtomTable,
        service_ips: BTreeMap<(String, String), Vec<(IpAddr, IdentityId)>>,
    ) -> Identities {
        let mut out = Identities {
            ipcache: Arc::clone(&self.ipcache),
            atoms_of: self.atoms_of.clone(),
            service_ips,
            ..Identities::default()
        };
        for (id, atoms) in &self.atoms_of {
            for a in atoms {
                out.by_atom.entry(*a).or_default().push(*id);
                if let Some(Atom::NamedPort {
                    name,
                    protocol,
                    port,
                }) = table.atoms.get(a)
                {
                    out.named
                        .entry((name.clone(), *protocol))
                        .or_default()
                        .push((*id, *port));
                }
            }
        }
        out
    }
}
