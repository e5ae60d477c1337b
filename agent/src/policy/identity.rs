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
//! prefix it is), one per address of a Node that a `nodes` atom selects,
//! and the node's own addresses as HOST.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use palisade_common::ids::IdentityId;

use super::ids::IdAllocator;
use super::plan::IdentityInfo;
use crate::state::model::Protocol;
use crate::state::netpol::{IpBlock, NamespaceScope, PodPeer};
use crate::state::selector::Selector;

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
    /// An address of a Node matching the selector (a ClusterNetworkPolicy
    /// `nodes` peer).
    Nodes(Selector),
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
            Atom::Nodes(s) => format!("nodes {s}"),
            Atom::Service { namespace, name } => format!("service {namespace}/{name}"),
        }
    }
}

/// An atom's id: stable while the atom stays in use across compiles. An
/// identity is the sorted set of atom ids its addresses satisfy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AtomId(pub u32);

/// The atoms rules ask about, with their ids for this compile.
#[derive(Debug, Default)]
pub struct AtomTable {
    /// Atom id -> atom.
    pub atoms: BTreeMap<AtomId, Atom>,
    /// Pod-peer atoms.
    pub pod_peers: Vec<(AtomId, PodPeer)>,
    /// ipBlock atoms.
    pub blocks: Vec<(AtomId, IpBlock)>,
    /// Node-selector atoms.
    pub node_selectors: Vec<(AtomId, Selector)>,
    /// Port names (with protocol) that egress rules refer to.
    pub egress_names: HashSet<(String, Protocol)>,
}

impl AtomTable {
    /// Interns `atom`, returning its stable id.
    pub fn intern(&mut self, alloc: &mut IdAllocator<Atom>, atom: &Atom) -> AtomId {
        let id = AtomId(alloc.get(atom));
        if !self.atoms.contains_key(&id) {
            match atom {
                Atom::Pods(p) => self.pod_peers.push((id, p.clone())),
                Atom::IpBlock(b) => self.blocks.push((id, b.clone())),
                Atom::Nodes(s) => self.node_selectors.push((id, s.clone())),
                Atom::NamedPort { .. } | Atom::Service { .. } => {}
            }
            self.atoms.insert(id, atom.clone());
        }
        id
    }

    /// What a rule index kept from the last compile holds: its `atoms`
    /// interned again (those not in the table yet, so this compile keeps
    /// their ids) and its `egress_names`.
    pub fn keep(
        &mut self,
        alloc: &mut IdAllocator<Atom>,
        atoms: &[(AtomId, Atom)],
        egress_names: &[(String, Protocol)],
    ) {
        for (id, atom) in atoms {
            if !self.atoms.contains_key(id) {
                self.intern(alloc, atom);
            }
        }
        self.egress_names.extend(egress_names.iter().cloned());
    }
}

/// Result of identity assignment.
#[derive(Debug, Default)]
pub struct Identities {
    /// The ipcache.
    pub ipcache: Arc<BTreeMap<IpNet, IdentityId>>,
    /// Atom id -> identities satisfying it (sorted, deduplicated).
    pub by_atom: HashMap<AtomId, Vec<IdentityId>>,
    /// (port name, protocol) -> identities whose pods have it, with the number.
    pub named: HashMap<(String, Protocol), Vec<(IdentityId, u16)>>,
    /// Every allocated identity in use and its atoms.
    pub atoms_of: BTreeMap<IdentityId, Vec<AtomId>>,
    /// ClusterIPs by (namespace, service name).
    pub service_ips: BTreeMap<(String, String), Vec<(IpAddr, IdentityId)>>,
}

/// Caches identity descriptions across compiles.
#[derive(Clone, Debug, Default)]
pub struct DescriptionCache {
    by_id: HashMap<IdentityId, (Vec<AtomId>, String)>,
    /// The last descriptions handed out: handed out again while no
    /// identity came, went or changed its atoms.
    last: Arc<BTreeMap<IdentityId, IdentityInfo>>,
}

impl DescriptionCache {
    /// Descriptions of the identities in use; drops the others.
    pub fn describe(
        &mut self,
        ids: &Identities,
        table: &AtomTable,
    ) -> Arc<BTreeMap<IdentityId, IdentityInfo>> {
        let mut changed = self.by_id.len() != ids.atoms_of.len();
        for (id, atoms) in &ids.atoms_of {
            let fresh = self.by_id.get(id).is_none_or(|(k, _)| k != atoms);
            if fresh {
                changed = true;
                let parts: Vec<String> = atoms
                    .iter()
                    .filter_map(|a| table.atoms.get(a))
                    .map(Atom::describe)
                    .collect();
                self.by_id.insert(*id, (atoms.clone(), parts.join("; ")));
            }
        }
        if changed {
            self.by_id.retain(|id, _| ids.atoms_of.contains_key(id));
            self.last = Arc::new(
                self.by_id
                    .iter()
                    .map(|(id, (_, d))| {
                        let info = IdentityInfo {
                            description: d.clone(),
                        };
                        (*id, info)
                    })
                    .collect(),
            );
        }
        Arc::clone(&self.last)
    }
}
