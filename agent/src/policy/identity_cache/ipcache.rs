//! The layers' entries, the ipcache they resolve to, and which identities
//! are held (by a layer entry) and live (in the ipcache).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use palisade_common::ids::IdentityId;

use super::cache::{IdentityCache, normalize};
use super::layers::Layers;
use crate::policy::identity::{Atom, AtomId, AtomTable};
use crate::policy::ids::IdAllocator;
use crate::state::model::Service;

impl IdentityCache {
    pub(super) fn update_services(
        &mut self,
        services: &[&Service],
        table: &mut AtomTable,
        atom_alloc: &mut IdAllocator<Atom>,
        id_alloc: &mut IdAllocator<Vec<AtomId>>,
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

    /// The addresses of other Nodes that `nodes` atoms select (this node's
    /// are in the host layer).
    pub(super) fn update_nodes(
        &mut self,
        node_atoms: &BTreeMap<IpAddr, Vec<AtomId>>,
        host: &BTreeSet<IpAddr>,
        id_alloc: &mut IdAllocator<Vec<AtomId>>,
    ) {
        let mut layer = BTreeMap::new();
        for (ip, atoms) in node_atoms.iter().filter(|(ip, _)| !host.contains(ip)) {
            let mut key = atoms.clone();
            key.extend_from_slice(self.block_index.membership(*ip));
            layer.insert(IpNet::from(*ip), self.id_of(normalize(key), id_alloc));
        }
        let old = std::mem::replace(&mut self.layers.nodes, layer);
        self.replaced_layer(old, |l| &l.nodes);
    }

    pub(super) fn update_host(
        &mut self,
        host: &BTreeSet<IpAddr>,
        node_atoms: &BTreeMap<IpAddr, Vec<AtomId>>,
        id_alloc: &mut IdAllocator<Vec<AtomId>>,
    ) {
        let mut layer = BTreeMap::new();
        for ip in host {
            let mut key = self.block_index.membership(*ip).to_vec();
            key.extend(node_atoms.get(ip).into_iter().flatten().copied());
            layer.insert(IpNet::from(*ip), self.id_of(normalize(key), id_alloc));
        }
        let old = std::mem::replace(&mut self.layers.host, layer);
        self.replaced_layer(old, |l| &l.host);
    }

    /// Accounts for a single-valued layer replaced by the one `now` reads.
    pub(super) fn replaced_layer(
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
    pub(super) fn id_of(
        &mut self,
        key: Vec<AtomId>,
        id_alloc: &mut IdAllocator<Vec<AtomId>>,
    ) -> IdentityId {
        if key.is_empty() {
            return IdentityId::WORLD;
        }
        let id = IdentityId(id_alloc.get(&key));
        self.keys.entry(id).or_insert(key);
        id
    }

    pub(super) fn hold(&mut self, id: IdentityId) {
        if id != IdentityId::WORLD {
            *self.held.entry(id).or_default() += 1;
        }
    }

    pub(super) fn release(&mut self, id: IdentityId) {
        if let Some(n) = self.held.get_mut(&id) {
            *n -= 1;
        }
    }

    /// Sets the ipcache entry of `net` from the layers.
    pub(super) fn refresh(&mut self, net: IpNet) {
        let new = self.layers.resolve(&net);
        let old = match new {
            Some(id) => Arc::make_mut(&mut self.ipcache).insert(net, id),
            None => Arc::make_mut(&mut self.ipcache).remove(&net),
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
