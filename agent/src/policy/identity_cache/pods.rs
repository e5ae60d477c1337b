//! Each endpoint pod's atoms: all pods evaluated against all atoms, or only
//! what the journal and the atom table say changed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ipnet::IpNet;

use super::block_index::BlockIndex;
use super::cache::{IdentityCache, PodAtoms, normalize};
use super::pod_index::PodIndex;
use crate::policy::identity::{Atom, AtomId, AtomTable};
use crate::policy::ids::IdAllocator;
use crate::state::ClusterState;
use crate::state::PodRef;
use crate::state::journal::Change;
use crate::state::model::Pod;
use crate::state::netpol::{IpBlock, NamespaceScope, PodPeer};
use crate::state::selector::Selector;

impl IdentityCache {
    /// Evaluates every pod against every atom (first update, or ipBlocks or
    /// egress port names changed, or the journal lost track).
    pub(super) fn rebuild(
        &mut self,
        cluster: &ClusterState,
        table: &mut AtomTable,
        blocks: Vec<(AtomId, IpBlock)>,
        atom_alloc: &mut IdAllocator<Atom>,
        id_alloc: &mut IdAllocator<Vec<AtomId>>,
    ) {
        // Everything alive before is dead until counted again.
        let atoms_of = std::mem::take(&mut self.atoms_of);
        let flipped = atoms_of.keys().copied().collect();
        *self = IdentityCache {
            block_index: BlockIndex::new(&blocks),
            blocks,
            egress_names: table.egress_names.clone(),
            peers: table.pod_peers.iter().cloned().collect(),
            atoms_of,
            flipped,
            ..IdentityCache::default()
        };

        let index = PodIndex::new(cluster);
        let mut pod_atoms: Vec<Vec<AtomId>> = vec![Vec::new(); index.pods.len()];
        // Each distinct (namespaces, pods) pair evaluated once; each (pod
        // selector, namespace) pair selected once.
        let mut ns_cache: HashMap<&Selector, Vec<&str>> = HashMap::new();
        let mut sel_cache: HashMap<(&Selector, &str), Vec<usize>> = HashMap::new();
        for (atom, peer) in &table.pod_peers {
            let namespaces: Vec<&str> = match &peer.namespaces {
                NamespaceScope::Own(ns) => vec![ns.as_str()],
                NamespaceScope::Selected(s) => ns_cache
                    .entry(s)
                    .or_insert_with(|| {
                        index
                            .by_ns
                            .keys()
                            .copied()
                            .filter(|ns| s.matches(&cluster.namespace_labels(ns)))
                            .collect()
                    })
                    .clone(),
            };
            for ns in namespaces {
                let Some(ns) = index.by_ns.get_key_value(ns).map(|(k, _)| *k) else {
                    continue;
                };
                let hits = sel_cache
                    .entry((&peer.pods, ns))
                    .or_insert_with(|| index.select(ns, &peer.pods));
                for i in hits.iter() {
                    pod_atoms[*i].push(*atom);
                }
            }
        }
        for (pod, atoms) in index.pods.iter().zip(pod_atoms) {
            let mut atoms = atoms;
            atoms.extend(self.named_port_atoms(pod, table, atom_alloc));
            self.insert_pod(pod, normalize(atoms), id_alloc);
        }
        let prefixes: Vec<(IpNet, Vec<AtomId>)> = self
            .block_index
            .prefixes
            .iter()
            .map(|(n, m)| (*n, m.clone()))
            .collect();
        for (net, members) in prefixes {
            let id = self.id_of(members, id_alloc);
            self.layers.blocks.insert(net, id);
            self.hold(id);
            self.refresh(net);
        }
    }

    /// Applies the journal's changes and the atoms that came and went.
    pub(super) fn catch_up(
        &mut self,
        cluster: &ClusterState,
        table: &mut AtomTable,
        atom_alloc: &mut IdAllocator<Atom>,
        id_alloc: &mut IdAllocator<Vec<AtomId>>,
    ) {
        let mut dirty: BTreeSet<PodRef> = BTreeSet::new();
        let mut namespaces: BTreeSet<&str> = BTreeSet::new();
        if let Some(changes) = self.mark.and_then(|m| cluster.changes_since(m)) {
            for change in changes {
                match change {
                    Change::Pod(p) => {
                        dirty.insert(p.clone());
                    }
                    Change::Namespace(ns) => {
                        namespaces.insert(ns);
                    }
                    Change::Policy(_) | Change::ClusterPolicy(_) => {}
                }
            }
        }
        for ns in namespaces {
            dirty.extend(self.by_ns.get(ns).into_iter().flatten().cloned());
            dirty.extend(
                cluster
                    .pods_in(ns)
                    .filter(|p| p.is_endpoint())
                    .map(Pod::pod_ref),
            );
        }

        let new_peers: BTreeMap<AtomId, PodPeer> = table.pod_peers.iter().cloned().collect();
        let removed: Vec<AtomId> = self
            .peers
            .iter()
            .filter(|(a, p)| new_peers.get(a) != Some(p))
            .map(|(a, _)| *a)
            .collect();
        let added: Vec<(AtomId, PodPeer)> = new_peers
            .iter()
            .filter(|(a, p)| self.peers.get(a) != Some(p))
            .map(|(a, p)| (*a, p.clone()))
            .collect();
        self.peers = new_peers;

        for key in &dirty {
            self.remove_pod(key);
            if let Some(pod) = cluster.pod(key).filter(|p| p.is_endpoint()) {
                let atoms = self.evaluate(cluster, pod, table, atom_alloc);
                self.insert_pod(pod, atoms, id_alloc);
            }
        }
        if !removed.is_empty() {
            let holders: Vec<PodRef> = self
                .pods
                .iter()
                .filter(|(k, e)| !dirty.contains(*k) && removed.iter().any(|a| e.atoms.contains(a)))
                .map(|(k, _)| k.clone())
                .collect();
            for key in holders {
                self.patch(
                    cluster,
                    &key,
                    |atoms| atoms.retain(|a| !removed.contains(a)),
                    id_alloc,
                );
            }
        }
        for (atom, peer) in added {
            let scope: Vec<String> = match &peer.namespaces {
                NamespaceScope::Own(ns) => vec![ns.clone()],
                NamespaceScope::Selected(s) => self
                    .by_ns
                    .keys()
                    .filter(|ns| s.matches(&cluster.namespace_labels(ns)))
                    .cloned()
                    .collect(),
            };
            let members: Vec<PodRef> = scope
                .iter()
                .filter_map(|ns| self.by_ns.get(ns))
                .flatten()
                .filter(|k| !dirty.contains(*k))
                .filter(|k| cluster.pod(k).is_some_and(|p| peer.pods.matches(&p.labels)))
                .cloned()
                .collect();
            for key in members {
                self.patch(
                    cluster,
                    &key,
                    |atoms| {
                        if let Err(at) = atoms.binary_search(&atom) {
                            atoms.insert(at, atom);
                        }
                    },
                    id_alloc,
                );
            }
        }
    }

    /// Re-inserts a cached pod with its atoms changed by `edit`.
    pub(super) fn patch(
        &mut self,
        cluster: &ClusterState,
        key: &PodRef,
        edit: impl FnOnce(&mut Vec<AtomId>),
        id_alloc: &mut IdAllocator<Vec<AtomId>>,
    ) {
        let Some(pod) = cluster.pod(key) else { return };
        let Some(mut atoms) = self.remove_pod(key) else {
            return;
        };
        edit(&mut atoms);
        self.insert_pod(pod, atoms, id_alloc);
    }

    /// The atoms `pod` satisfies, sorted.
    pub(super) fn evaluate(
        &mut self,
        cluster: &ClusterState,
        pod: &Pod,
        table: &mut AtomTable,
        atom_alloc: &mut IdAllocator<Atom>,
    ) -> Vec<AtomId> {
        let ns_labels = cluster.namespace_labels(&pod.namespace);
        let mut atoms: Vec<AtomId> = self
            .peers
            .iter()
            .filter(|(_, peer)| {
                let in_scope = match &peer.namespaces {
                    NamespaceScope::Own(ns) => *ns == pod.namespace,
                    NamespaceScope::Selected(s) => s.matches(&ns_labels),
                };
                in_scope && peer.pods.matches(&pod.labels)
            })
            .map(|(a, _)| *a)
            .collect();
        atoms.extend(self.named_port_atoms(pod, table, atom_alloc));
        normalize(atoms)
    }

    /// The named-port atoms of `pod` for the names egress rules use.
    pub(super) fn named_port_atoms(
        &mut self,
        pod: &Pod,
        table: &mut AtomTable,
        atom_alloc: &mut IdAllocator<Atom>,
    ) -> Vec<AtomId> {
        if self.egress_names.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for cp in &pod.ports {
            let Some(name) = &cp.name else { continue };
            if self.egress_names.contains(&(name.clone(), cp.protocol)) {
                let atom = Atom::NamedPort {
                    name: name.clone(),
                    protocol: cp.protocol,
                    port: cp.port,
                };
                let id = table.intern(atom_alloc, &atom);
                self.named_atoms.entry(id).or_insert((atom, 0));
                out.push(id);
            }
        }
        out
    }

    pub(super) fn insert_pod(
        &mut self,
        pod: &Pod,
        atoms: Vec<AtomId>,
        id_alloc: &mut IdAllocator<Vec<AtomId>>,
    ) {
        let key = pod.pod_ref();
        for a in &atoms {
            if let Some((_, n)) = self.named_atoms.get_mut(a) {
                *n += 1;
            }
        }
        for ip in &pod.ips {
            let mut k = atoms.clone();
            k.extend_from_slice(self.block_index.membership(*ip));
            let id = self.id_of(normalize(k), id_alloc);
            let net = IpNet::from(*ip);
            let claims = self.layers.pods.entry(net).or_default();
            // A pod is removed before it is inserted again, so it is never there.
            if let Err(at) = claims.binary_search_by(|(k, _)| k.cmp(&key)) {
                claims.insert(at, (key.clone(), id));
                self.hold(id);
            }
            self.refresh(net);
        }
        self.by_ns
            .entry(pod.namespace.clone())
            .or_default()
            .insert(key.clone());
        self.pods.insert(
            key,
            PodAtoms {
                ips: pod.ips.clone(),
                atoms,
            },
        );
    }

    /// Forgets a cached pod, returning its atoms.
    pub(super) fn remove_pod(&mut self, key: &PodRef) -> Option<Vec<AtomId>> {
        let entry = self.pods.remove(key)?;
        for a in &entry.atoms {
            if let Some((_, n)) = self.named_atoms.get_mut(a) {
                *n -= 1;
            }
        }
        for ip in &entry.ips {
            let net = IpNet::from(*ip);
            let mut released = None;
            if let Some(claims) = self.layers.pods.get_mut(&net) {
                if let Ok(at) = claims.binary_search_by(|(k, _)| k.cmp(key)) {
                    released = Some(claims.remove(at).1);
                }
                if claims.is_empty() {
                    self.layers.pods.remove(&net);
                }
            }
            if let Some(id) = released {
                self.release(id);
            }
            self.refresh(net);
        }
        if let Some(set) = self.by_ns.get_mut(&key.namespace) {
            set.remove(key);
            if set.is_empty() {
                self.by_ns.remove(&key.namespace);
            }
        }
        Some(entry.atoms)
    }
}
