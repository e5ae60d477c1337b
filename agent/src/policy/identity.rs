//! Remote identities: which peer "atoms" each remote address satisfies.
//!
//! An atom is one distinct question a rule can ask about a remote address:
//! "is it a pod matching this (namespace scope, pod selector)?", "is it in this
//! ipBlock?", "does the pod call port `http`/TCP number 8080?" (only for names
//! egress rules use), "is it this Service's ClusterIP?". An address's identity
//! is the set of atoms it satisfies; addresses with the same set share an id.
//!
//! ipcache entries: one /32 or /128 per pod IP and ClusterIP, one per ipBlock
//! cidr and except (its identity: the ipBlocks containing the whole prefix,
//! which is exactly the membership of every address whose longest matching
//! prefix it is), and the node's own addresses as HOST.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;
use palisade_common::ids::IdentityId;

use super::ids::IdAllocator;
use super::plan::IdentityInfo;
use super::selector::{Requirement, Selector};
use crate::state::ClusterState;
use crate::state::model::{Pod, Protocol, Service};
use crate::state::netpol::{IpBlock, NamespaceScope, PodPeer};

/// One question a rule asks about a remote address.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Atom {
    /// A pod matching a peer's namespace scope and pod selector.
    Pods(PodPeer),
    /// An address inside an ipBlock (and outside its excepts).
    IpBlock(IpBlock),
    /// A pod whose container port `name`/`protocol` has number `port`.
    NamedPort {
        /// Port name.
        name: String,
        /// Protocol.
        protocol: Protocol,
        /// Number on that pod.
        port: u16,
    },
    /// A Service's ClusterIP.
    Service {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
}

impl Atom {
    /// Human-readable form.
    pub fn describe(&self) -> String {
        match self {
            Atom::Pods(p) => match &p.namespaces {
                NamespaceScope::Own(ns) => format!("pods {} in namespace {ns}", p.pods),
                NamespaceScope::Selected(s) => format!("pods {} in namespaces {s}", p.pods),
            },
            Atom::IpBlock(b) if b.except.is_empty() => format!("ipBlock {}", b.cidr),
            Atom::IpBlock(b) => {
                let ex: Vec<String> = b.except.iter().map(|e| e.to_string()).collect();
                format!("ipBlock {} except {}", b.cidr, ex.join(","))
            }
            Atom::NamedPort {
                name,
                protocol,
                port,
            } => format!("port {name}/{protocol}={port}"),
            Atom::Service { namespace, name } => format!("service {namespace}/{name}"),
        }
    }
}

/// The atoms rules ask about, with their ids for this compile.
#[derive(Debug, Default)]
pub struct AtomTable {
    /// Atom id -> atom.
    pub atoms: BTreeMap<u32, Atom>,
    /// Pod-peer atoms.
    pub pod_peers: Vec<(u32, PodPeer)>,
    /// ipBlock atoms.
    pub blocks: Vec<(u32, IpBlock)>,
    /// Port names (with protocol) that egress rules refer to.
    pub egress_names: HashSet<(String, Protocol)>,
}

impl AtomTable {
    /// Interns `atom`, returning its stable id.
    pub fn intern(&mut self, alloc: &mut IdAllocator<Atom>, atom: &Atom) -> u32 {
        let id = alloc.get(atom);
        if !self.atoms.contains_key(&id) {
            match atom {
                Atom::Pods(p) => self.pod_peers.push((id, p.clone())),
                Atom::IpBlock(b) => self.blocks.push((id, b.clone())),
                Atom::NamedPort { .. } | Atom::Service { .. } => {}
            }
            self.atoms.insert(id, atom.clone());
        }
        id
    }
}

/// Result of identity assignment.
#[derive(Debug, Default)]
pub struct Identities {
    /// The ipcache.
    pub ipcache: BTreeMap<IpNet, IdentityId>,
    /// Atom id -> identities satisfying it (sorted, deduplicated).
    pub by_atom: HashMap<u32, Vec<IdentityId>>,
    /// (port name, protocol) -> identities whose pods have it, with the number.
    pub named: HashMap<(String, Protocol), Vec<(IdentityId, u16)>>,
    /// Every allocated identity in use and its atoms.
    pub atoms_of: BTreeMap<IdentityId, Vec<u32>>,
    /// ClusterIPs by (namespace, service name).
    pub service_ips: BTreeMap<(String, String), Vec<(IpAddr, IdentityId)>>,
}

/// Caches identity descriptions across compiles.
#[derive(Clone, Debug, Default)]
pub struct DescriptionCache {
    by_id: HashMap<IdentityId, (Vec<u32>, String)>,
}

impl DescriptionCache {
    /// Descriptions of the identities in use; drops the others.
    pub fn describe(
        &mut self,
        ids: &Identities,
        table: &AtomTable,
    ) -> BTreeMap<IdentityId, IdentityInfo> {
        let mut out = BTreeMap::new();
        for (id, atoms) in &ids.atoms_of {
            let fresh = self.by_id.get(id).is_none_or(|(k, _)| k != atoms);
            if fresh {
                let parts: Vec<String> = atoms
                    .iter()
                    .filter_map(|a| table.atoms.get(a))
                    .map(Atom::describe)
                    .collect();
                self.by_id.insert(*id, (atoms.clone(), parts.join("; ")));
            }
            if let Some((_, d)) = self.by_id.get(id) {
                out.insert(
                    *id,
                    IdentityInfo {
                        description: d.clone(),
                    },
                );
            }
        }
        self.by_id.retain(|id, _| ids.atoms_of.contains_key(id));
        out
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

/// Assigns identities to every remote address rules can tell apart.
pub fn assign(
    cluster: &ClusterState,
    table: &mut AtomTable,
    atom_alloc: &mut IdAllocator<Atom>,
    id_alloc: &mut IdAllocator<Vec<u32>>,
    services: &[&Service],
    host: &BTreeSet<IpAddr>,
) -> Identities {
    let index = PodIndex::new(cluster);
    let mut pod_atoms: Vec<Vec<u32>> = vec![Vec::new(); index.pods.len()];

    // Pod peers: each distinct (namespaces, pods) pair evaluated once; each
    // (pod selector, namespace) pair selected once.
    let mut ns_cache: HashMap<&Selector, Vec<&str>> = HashMap::new();
    let mut sel_cache: HashMap<(&Selector, &str), Vec<usize>> = HashMap::new();
    let peers = table.pod_peers.clone();
    for (atom, peer) in &peers {
        let namespaces: Vec<&str> = match &peer.namespaces {
            NamespaceScope::Own(ns) => vec![ns.as_str()],
            NamespaceScope::Selected(s) => ns_cache
                .entry(s)
                .or_insert_with(|| {
                    let empty = Default::default();
                    index
                        .by_ns
                        .keys()
                        .copied()
                        .filter(|ns| s.matches(cluster.namespace(ns).map_or(&empty, |n| &n.labels)))
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

    // Named ports egress rules refer to, as atoms of the pods that have them.
    if !table.egress_names.is_empty() {
        for (i, p) in index.pods.iter().enumerate() {
            for cp in &p.ports {
                let Some(name) = &cp.name else { continue };
                if table.egress_names.contains(&(name.clone(), cp.protocol)) {
                    let atom = Atom::NamedPort {
                        name: name.clone(),
                        protocol: cp.protocol,
                        port: cp.port,
                    };
                    pod_atoms[i].push(table.intern(atom_alloc, &atom));
                }
            }
        }
    }

    let blocks = BlockIndex::new(&table.blocks);
    let mut out = Identities::default();
    let mut identity_of = |key: Vec<u32>, out: &mut Identities| -> IdentityId {
        if key.is_empty() {
            return IdentityId::WORLD;
        }
        let id = IdentityId(id_alloc.get(&key));
        out.atoms_of.entry(id).or_insert(key);
        id
    };
    let normalize = |mut v: Vec<u32>| {
        v.sort_unstable();
        v.dedup();
        v
    };

    for (net, members) in &blocks.prefixes {
        let id = identity_of(members.clone(), &mut out);
        out.ipcache.insert(*net, id);
    }
    for svc in services {
        let atom = Atom::Service {
            namespace: svc.namespace.clone(),
            name: svc.name.clone(),
        };
        let a = table.intern(atom_alloc, &atom);
        for ip in &svc.cluster_ips {
            let mut key = vec![a];
            key.extend_from_slice(blocks.membership(*ip));
            let id = identity_of(normalize(key), &mut out);
            out.ipcache.insert(IpNet::from(*ip), id);
            out.service_ips
                .entry((svc.namespace.clone(), svc.name.clone()))
                .or_default()
                .push((*ip, id));
        }
    }
    for (i, p) in index.pods.iter().enumerate() {
        for ip in &p.ips {
            let mut key = pod_atoms[i].clone();
            key.extend_from_slice(blocks.membership(*ip));
            let id = identity_of(normalize(key), &mut out);
            out.ipcache.insert(IpNet::from(*ip), id);
        }
    }
    // The node's addresses keep their ipBlock membership: egress to them is
    // policed like any address (the datapath lets connections *from* them in
    // by a flag, see `DatapathPlan::host_addresses`).
    for ip in host {
        let key = blocks.membership(*ip).to_vec();
        let id = identity_of(normalize(key), &mut out);
        out.ipcache.insert(IpNet::from(*ip), id);
    }

    // Only identities still present in the ipcache count.
    let live: BTreeSet<IdentityId> = out.ipcache.values().copied().collect();
    out.atoms_of.retain(|id, _| live.contains(id));
    for (id, atoms) in &out.atoms_of {
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
