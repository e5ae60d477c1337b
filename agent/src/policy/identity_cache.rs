//! Remote identities kept across compiles and brought up to date from what
//! changed (see [`super::identity`] for what an identity is).
//!
//! Every endpoint pod of the cluster keeps the atoms it satisfies. A compile
//! re-evaluates only the pods and namespaces the state's journal names, and
//! patches the atoms that appeared or disappeared into the pods they select,
//! so one pod's change costs a few selector matches and map updates, not a
//! pass over the cluster. When ipBlocks or egress port names change, or the
//! journal cannot say what changed, everything is evaluated again.
//!
//! The ipcache is layered like the full evaluation writes it: ipBlock
//! prefixes, then Service ClusterIPs, then pod IPs (the greatest pod key wins
//! an address several pods claim), then the node's own addresses. Each
//! address's entry is the top layer that has it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;
use palisade_common::ids::IdentityId;

use super::identity::{Atom, AtomTable, Identities};
use super::ids::IdAllocator;
use crate::state::ClusterState;
use crate::state::PodRef;
use crate::state::journal::{Change, Mark};
use crate::state::model::{Pod, Protocol, Service};
use crate::state::netpol::{IpBlock, NamespaceScope, PodPeer};
use crate::state::selector::{Requirement, Selector};

/// What an update changed, for caches of rule expansions.
#[derive(Debug, Default)]
pub struct IdentityChanges {
    /// Everything was evaluated again: no earlier expansion can be trusted.
    pub rebuilt: bool,
    /// Atoms whose set of live identities changed.
    pub atoms: HashSet<u32>,
    /// Port names (egress rules' names) whose set of live identities changed.
    pub names: HashSet<(String, Protocol)>,
}

/// The identity state of the cluster's endpoint pods, kept between compiles.
#[derive(Debug, Default)]
pub struct IdentityCache {
    /// The state's point this cache reflects; `None` before the first update.
    mark: Option<Mark>,
    /// Pod-peer atoms the pods were evaluated against.
    peers: BTreeMap<u32, PodPeer>,
    /// ipBlock atoms the prefixes were computed from.
    blocks: Vec<(u32, IpBlock)>,
    /// Port names egress rules refer to.
    egress_names: HashSet<(String, Protocol)>,
    block_index: BlockIndex,
    pods: BTreeMap<PodRef, PodAtoms>,
    by_ns: HashMap<String, BTreeSet<PodRef>>,
    /// Named-port atoms and how many pods hold each.
    named_atoms: HashMap<u32, (Atom, usize)>,
    layers: Layers,
    ipcache: BTreeMap<IpNet, IdentityId>,
    /// Allocated identities and how many layer entries hold each.
    held: HashMap<IdentityId, usize>,
    /// Allocated identities and how many ipcache entries have each.
    live: HashMap<IdentityId, usize>,
    /// The atoms of each held identity.
    keys: HashMap<IdentityId, Vec<u32>>,
    /// Live identities and their atoms.
    atoms_of: BTreeMap<IdentityId, Vec<u32>>,
    /// Identities whose liveness flipped during this update.
    flipped: BTreeSet<IdentityId>,
}

/// One endpoint pod's part.
#[derive(Debug)]
struct PodAtoms {
    ips: Vec<IpAddr>,
    /// Pod-peer and named-port atoms it satisfies, sorted.
    atoms: Vec<u32>,
}

/// Where ipcache entries come from, lowest priority first.
#[derive(Debug, Default)]
struct Layers {
    blocks: BTreeMap<IpNet, IdentityId>,
    services: BTreeMap<IpNet, IdentityId>,
    /// The pods claiming each address, sorted by pod (almost always one: a
    /// vector, since a map's node would cost ~0.5 KiB per address).
    pods: BTreeMap<IpNet, Vec<(PodRef, IdentityId)>>,
    host: BTreeMap<IpNet, IdentityId>,
}

impl Layers {
    fn resolve(&self, net: &IpNet) -> Option<IdentityId> {
        self.host
            .get(net)
            .or_else(|| self.pods.get(net).and_then(|v| v.last()).map(|(_, id)| id))
            .or_else(|| self.services.get(net))
            .or_else(|| self.blocks.get(net))
            .copied()
    }
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

fn normalize(mut v: Vec<u32>) -> Vec<u32> {
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
        id_alloc: &mut IdAllocator<Vec<u32>>,
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
        self.update_host(inputs.host, id_alloc);
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
        // a compile is freed at its end).
        for key in self.keys.values() {
            id_alloc.get(key);
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
            ipcache: self.ipcache.clone(),
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

    /// Evaluates every pod against every atom (first update, or ipBlocks or
    /// egress port names changed, or the journal lost track).
    fn rebuild(
        &mut self,
        cluster: &ClusterState,
        table: &mut AtomTable,
        blocks: Vec<(u32, IpBlock)>,
        atom_alloc: &mut IdAllocator<Atom>,
        id_alloc: &mut IdAllocator<Vec<u32>>,
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
        let mut pod_atoms: Vec<Vec<u32>> = vec![Vec::new(); index.pods.len()];
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
        let prefixes: Vec<(IpNet, Vec<u32>)> = self
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
    fn catch_up(
        &mut self,
        cluster: &ClusterState,
        table: &mut AtomTable,
        atom_alloc: &mut IdAllocator<Atom>,
        id_alloc: &mut IdAllocator<Vec<u32>>,
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
                    Change::Policy(_) => {}
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

        let new_peers: BTreeMap<u32, PodPeer> = table.pod_peers.iter().cloned().collect();
        let removed: Vec<u32> = self
            .peers
            .iter()
            .filter(|(a, p)| new_peers.get(a) != Some(p))
            .map(|(a, _)| *a)
            .collect();
        let added: Vec<(u32, PodPeer)> = new_peers
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
    fn patch(
        &mut self,
        cluster: &ClusterState,
        key: &PodRef,
        edit: impl FnOnce(&mut Vec<u32>),
        id_alloc: &mut IdAllocator<Vec<u32>>,
    ) {
        let Some(pod) = cluster.pod(key) else { return };
        let Some(mut atoms) = self.remove_pod(key) else {
            return;
        };
        edit(&mut atoms);
        self.insert_pod(pod, atoms, id_alloc);
    }

    /// The atoms `pod` satisfies, sorted.
    fn evaluate(
        &mut self,
        cluster: &ClusterState,
        pod: &Pod,
        table: &mut AtomTable,
        atom_alloc: &mut IdAllocator<Atom>,
    ) -> Vec<u32> {
        let ns_labels = cluster.namespace_labels(&pod.namespace);
        let mut atoms: Vec<u32> = self
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
    fn named_port_atoms(
        &mut self,
        pod: &Pod,
        table: &mut AtomTable,
        atom_alloc: &mut IdAllocator<Atom>,
    ) -> Vec<u32> {
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

    fn insert_pod(&mut self, pod: &Pod, atoms: Vec<u32>, id_alloc: &mut IdAllocator<Vec<u32>>) {
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
    fn remove_pod(&mut self, key: &PodRef) -> Option<Vec<u32>> {
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

    fn update_services(
        &mut self,
        services: &[&Service],
        table: &mut AtomTable,
        atom_alloc: &mut IdAllocator<Atom>,
        id_alloc: &mut IdAllocator<Vec<u32>>,
    ) -> BTreeMap<(String, String), Vec<(IpAddr, IdentityId)>> {
        let mut layer = BTreeMap::new();
        let mut service_ips: BTreeMap<(String, String), Vec<(IpAddr, IdentityId)>> =
            BTreeMap::new();
        for svc in services {
            let atom = Atom::Service {
                namespace: svc.namespace.clone(),
                name: svc.name.clone(),
            };
            let a = table.intern(atom_alloc, &atom);
            for ip in &svc.cluster_ips {
                let mut key = vec![a];
                key.extend_from_slice(self.block_index.membership(*ip));
                let id = self.id_of(normalize(key), id_alloc);
                layer.insert(IpNet::from(*ip), id);
                service_ips
                    .entry((svc.namespace.clone(), svc.name.clone()))
                    .or_default()
                    .push((*ip, id));
            }
        }
        let old = std::mem::replace(&mut self.layers.services, layer);
        self.replaced_layer(old, |l| &l.services);
        service_ips
    }

    fn update_host(&mut self, host: &BTreeSet<IpAddr>, id_alloc: &mut IdAllocator<Vec<u32>>) {
        let mut layer = BTreeMap::new();
        for ip in host {
            let key = self.block_index.membership(*ip).to_vec();
            layer.insert(IpNet::from(*ip), self.id_of(normalize(key), id_alloc));
        }
        let old = std::mem::replace(&mut self.layers.host, layer);
        self.replaced_layer(old, |l| &l.host);
    }

    /// Accounts for a single-valued layer replaced by the one `now` reads.
    fn replaced_layer(
        &mut self,
        old: BTreeMap<IpNet, IdentityId>,
        now: impl Fn(&Layers) -> &BTreeMap<IpNet, IdentityId>,
    ) {
        if old == *now(&self.layers) {
            return;
        }
        let new: Vec<(IpNet, IdentityId)> =
            now(&self.layers).iter().map(|(n, i)| (*n, *i)).collect();
        for (net, id) in &new {
            self.hold(*id);
            self.refresh(*net);
        }
        for (net, id) in old {
            self.release(id);
            self.refresh(net);
        }
    }

    /// The identity of an atom set (WORLD for none).
    fn id_of(&mut self, key: Vec<u32>, id_alloc: &mut IdAllocator<Vec<u32>>) -> IdentityId {
        if key.is_empty() {
            return IdentityId::WORLD;
        }
        let id = IdentityId(id_alloc.get(&key));
        self.keys.entry(id).or_insert(key);
        id
    }

    fn hold(&mut self, id: IdentityId) {
        if id != IdentityId::WORLD {
            *self.held.entry(id).or_default() += 1;
        }
    }

    fn release(&mut self, id: IdentityId) {
        if let Some(n) = self.held.get_mut(&id) {
            *n -= 1;
        }
    }

    /// Sets the ipcache entry of `net` from the layers.
    fn refresh(&mut self, net: IpNet) {
        let new = self.layers.resolve(&net);
        let old = match new {
            Some(id) => self.ipcache.insert(net, id),
            None => self.ipcache.remove(&net),
        };
        if old == new {
            return;
        }
        if let Some(id) = old.filter(|i| *i != IdentityId::WORLD) {
            let n = self.live.entry(id).or_default();
            *n -= 1;
            if *n == 0 {
                self.flipped.insert(id);
            }
        }
        if let Some(id) = new.filter(|i| *i != IdentityId::WORLD) {
            let n = self.live.entry(id).or_default();
            *n += 1;
            if *n == 1 {
                self.flipped.insert(id);
            }
        }
    }
}

/// Pods of the cluster that can be peers, indexed for selector evaluation.
struct PodIndex<'a> {
    pods: Vec<&'a Pod>,
    by_ns: BTreeMap<&'a str, Vec<usize>>,
    by_label: HashMap<(&'a str, &'a str, &'a str), Vec<usize>>,
    by_key: HashMap<(&'a str, &'a str), Vec<usize>>,
}

impl<'a> PodIndex<'a> {
    fn new(cluster: &'a ClusterState) -> Self {
        let pods: Vec<&Pod> = cluster.pods().filter(|p| p.is_endpoint()).collect();
        let mut idx = PodIndex {
            pods,
            by_ns: BTreeMap::new(),
            by_label: HashMap::new(),
            by_key: HashMap::new(),
        };
        for (i, p) in idx.pods.iter().enumerate() {
            let ns = p.namespace.as_str();
            idx.by_ns.entry(ns).or_default().push(i);
            for (k, v) in &p.labels {
                idx.by_label
                    .entry((ns, k.as_str(), v.as_str()))
                    .or_default()
                    .push(i);
                idx.by_key.entry((ns, k.as_str())).or_default().push(i);
            }
        }
        idx
    }

    /// Pods of `ns` matching `sel`, in index order.
    fn select(&self, ns: &str, sel: &Selector) -> Vec<usize> {
        const EMPTY: &[usize] = &[];
        let all = self.by_ns.get(ns).map_or(EMPTY, Vec::as_slice);
        // Narrow with the smallest posting list among In/Exists requirements.
        let mut best: Option<Vec<usize>> = None;
        for r in sel.requirements() {
            let cand: Vec<usize> = match r {
                Requirement::In(k, vs) => {
                    let mut v: Vec<usize> = vs
                        .iter()
                        .flat_map(|val| {
                            self.by_label
                                .get(&(ns, k.as_str(), val.as_str()))
                                .map_or(EMPTY, Vec::as_slice)
                        })
                        .copied()
                        .collect();
                    v.sort_unstable();
                    v
                }
                Requirement::Exists(k) => self
                    .by_key
                    .get(&(ns, k.as_str()))
                    .cloned()
                    .unwrap_or_default(),
                _ => continue,
            };
            if best.as_ref().is_none_or(|b| cand.len() < b.len()) {
                best = Some(cand);
            }
        }
        let cands = best.unwrap_or_else(|| all.to_vec());
        cands
            .into_iter()
            .filter(|i| sel.matches(&self.pods[*i].labels))
            .collect()
    }
}

/// ipBlock membership of prefixes and addresses.
#[derive(Debug, Default)]
struct BlockIndex {
    /// Every cidr and except -> atoms of the ipBlocks containing the prefix.
    prefixes: BTreeMap<IpNet, Vec<u32>>,
    /// Distinct prefix lengths present, longest first, per family.
    lens_v4: Vec<u8>,
    lens_v6: Vec<u8>,
}

impl BlockIndex {
    fn new(blocks: &[(u32, IpBlock)]) -> Self {
        let mut nets: BTreeSet<IpNet> = BTreeSet::new();
        for (_, b) in blocks {
            nets.insert(b.cidr);
            nets.extend(b.except.iter().copied());
        }
        let mut prefixes = BTreeMap::new();
        for p in nets {
            let mut m: Vec<u32> = blocks
                .iter()
                .filter(|(_, b)| b.cidr.contains(&p) && !b.except.iter().any(|e| e.contains(&p)))
                .map(|(a, _)| *a)
                .collect();
            m.sort_unstable();
            prefixes.insert(p, m);
        }
        let lens = |v4: bool| {
            let set: BTreeSet<u8> = prefixes
                .keys()
                .filter(|n| matches!(n, IpNet::V4(_)) == v4)
                .map(|n| n.prefix_len())
                .collect();
            set.into_iter().rev().collect::<Vec<u8>>()
        };
        let (lens_v4, lens_v6) = (lens(true), lens(false));
        BlockIndex {
            prefixes,
            lens_v4,
            lens_v6,
        }
    }

    /// Atoms of the ipBlocks containing `ip`.
    fn membership(&self, ip: IpAddr) -> &[u32] {
        let lens = if ip.is_ipv4() {
            &self.lens_v4
        } else {
            &self.lens_v6
        };
        for len in lens {
            if let Ok(net) = IpNet::new(ip, *len)
                && let Some(m) = self.prefixes.get(&net.trunc())
            {
                return m;
            }
        }
        &[]
    }
}
