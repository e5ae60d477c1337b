//! ClusterNetworkPolicy rules numbered and their peers interned, kept from
//! compile to compile while the policy stays the same.
//!
//! Indexing a policy clones and hashes every peer's selectors and every
//! rule's ports; with a hundred policies of 25 rules that is most of a
//! re-plan. A policy the journal says is unchanged keeps last compile's
//! work: its ids are still allocated (they were looked up then), so keeping
//! them is one hold per rule and one table check per distinct peer. The
//! rules' targets are kept the same way, until their atoms' identities
//! change ([`RuleTargets`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use palisade_common::ids::{IdentityId, RuleId};

use super::identity::{Atom, AtomId, AtomTable, Identities};
use super::ids::IdAllocator;
use super::plan::{ClusterRuleOrigin, RuleOrigin};
use super::tiered::{self, RuleContents};
use crate::state::cnp::{self, Action, ClusterNetworkPolicy};
use crate::state::model::Protocol;
use crate::state::netpol::{IpBlock, NamespaceScope, PodPeer};
use crate::state::{Direction, PolicyRef};

/// Key of a rule id: policy, direction, index in its rule list.
pub(super) type RuleSlot = (PolicyRef, Direction, u32);

/// The allocators a policy's index takes ids from.
pub(super) struct Allocators<'a> {
    pub(super) atoms: &'a mut IdAllocator<Atom>,
    pub(super) rules: &'a mut IdAllocator<RuleSlot>,
    pub(super) contents: &'a mut RuleContents,
}

/// One rule of an indexed policy.
#[derive(Debug)]
pub(super) struct IndexedRule {
    pub(super) direction: Direction,
    /// Its index in the policy's rules of that direction.
    pub(super) position: usize,
    /// The id credited with its hits; NONE for Pass.
    pub(super) id: RuleId,
    /// The atoms of its listed peers.
    pub(super) atoms: Arc<[AtomId]>,
    /// Its [`RuleContents`] number.
    pub(super) content: u32,
    /// What its id stands for (Accept and Deny rules).
    pub(super) origin: Option<RuleOrigin>,
}

/// A policy's rules, and what keeping them must look up again.
#[derive(Debug)]
pub(super) struct IndexedPolicy {
    pub(super) rules: Vec<IndexedRule>,
    /// Its distinct peer atoms.
    atoms: Vec<(AtomId, Atom)>,
    /// Port names (with protocol) its egress rules refer to.
    egress_names: Vec<(String, Protocol)>,
}

/// The indexed policies of the last compile, by name.
#[derive(Debug, Default)]
pub(super) struct ClusterRules {
    kept: HashMap<String, Arc<IndexedPolicy>>,
}

impl ClusterRules {
    /// The index of each of `policies`, into `table`: kept when the policy
    /// is not in `changed` (`None`: unknown, so every policy is indexed
    /// again). Only these policies are kept for the next compile.
    pub(super) fn index<'p>(
        &mut self,
        policies: impl Iterator<Item = (usize, &'p ClusterNetworkPolicy)>,
        changed: Option<&HashSet<&str>>,
        alloc: &mut Allocators<'_>,
        table: &mut AtomTable,
    ) -> Vec<(usize, Arc<IndexedPolicy>)> {
        let mut previous = std::mem::take(&mut self.kept);
        let mut out = Vec::new();
        for (ci, policy) in policies {
            let kept = changed
                .filter(|c| !c.contains(policy.name.as_str()))
                .and_then(|_| previous.remove(&policy.name));
            let indexed = match kept {
                Some(indexed) => {
                    keep(&indexed, alloc, table);
                    indexed
                }
                None => Arc::new(index_policy(policy, alloc, table)),
            };
            self.kept.insert(policy.name.clone(), Arc::clone(&indexed));
            out.push((ci, indexed));
        }
        out
    }
}

/// Looks up again what `indexed` holds, so this compile keeps its ids.
fn keep(indexed: &IndexedPolicy, alloc: &mut Allocators<'_>, table: &mut AtomTable) {
    for rule in &indexed.rules {
        if rule.origin.is_some() {
            alloc.rules.hold(rule.id.0);
        }
        alloc.contents.hold(rule.content);
    }
    table.keep(alloc.atoms, &indexed.atoms, &indexed.egress_names);
}

/// Numbers `policy`'s rules and interns their peers.
fn index_policy(
    policy: &ClusterNetworkPolicy,
    alloc: &mut Allocators<'_>,
    table: &mut AtomTable,
) -> IndexedPolicy {
    let policy_ref = policy_ref(policy);
    let mut out = IndexedPolicy {
        rules: Vec::new(),
        atoms: Vec::new(),
        egress_names: Vec::new(),
    };
    let mut seen: HashSet<AtomId> = HashSet::new();
    for d in Direction::ALL {
        for (ri, rule) in policy.rules(d).iter().enumerate() {
            let index = position(rule.index);
            let (id, origin) = match rule.action {
                Action::Pass => (RuleId::NONE, None),
                Action::Accept | Action::Deny => {
                    let id = RuleId(alloc.rules.get(&(policy_ref.clone(), d, index)));
                    let origin = RuleOrigin {
                        cluster: Some(ClusterRuleOrigin {
                            tier: policy.tier,
                            action: rule.action,
                            name: rule.name.clone(),
                        }),
                        ..RuleOrigin::network_policy(policy_ref.clone(), d, index)
                    };
                    (id, Some(origin))
                }
            };
            let mut atoms = Vec::new();
            for atom in peer_atoms(rule) {
                let id = table.intern(alloc.atoms, &atom);
                if seen.insert(id) {
                    out.atoms.push((id, atom));
                }
                atoms.push(id);
            }
            let content = alloc.contents.number(policy.tier, rule, id);
            if d == Direction::Egress {
                for port in rule.ports.iter().flatten() {
                    if let cnp::Port::Named(n) = port {
                        for protocol in Protocol::ALL {
                            out.egress_names.push((n.clone(), protocol));
                        }
                    }
                }
            }
            out.rules.push(IndexedRule {
                direction: d,
                position: ri,
                id,
                atoms: atoms.into(),
                content,
                origin,
            });
        }
    }
    table.egress_names.extend(out.egress_names.iter().cloned());
    out
}

/// The atoms of a rule's listed peers, in peer order.
fn peer_atoms(rule: &cnp::Rule) -> Vec<Atom> {
    let cnp::Peers::Listed(peers) = &rule.peers else {
        return Vec::new();
    };
    let mut atoms = Vec::new();
    for peer in peers {
        match peer {
            cnp::Peer::Pods(set) => atoms.push(Atom::Pods(PodPeer {
                namespaces: NamespaceScope::Selected(set.namespaces.clone()),
                pods: set.pods.clone(),
            })),
            cnp::Peer::Networks(nets) => atoms.extend(nets.iter().map(|net| {
                Atom::IpBlock(IpBlock {
                    cidr: net.trunc(),
                    except: Vec::new(),
                })
            })),
            cnp::Peer::Nodes(selector) => atoms.push(Atom::Nodes(selector.clone())),
        }
    }
    atoms
}

/// A ClusterNetworkPolicy's ref has no namespace.
fn policy_ref(policy: &ClusterNetworkPolicy) -> PolicyRef {
    PolicyRef {
        namespace: String::new(),
        name: policy.name.clone(),
    }
}

fn position(index: usize) -> u32 {
    u32::try_from(index).unwrap_or(u32::MAX)
}

/// The identities each set of rule atoms holds ([`tiered::targets`]), kept
/// from compile to compile while none of those atoms gains or loses an
/// identity: a group comparing its rules' targets with its last ones then
/// finds the same allocation and compares no identity.
#[derive(Debug, Default)]
pub(super) struct RuleTargets {
    kept: HashMap<Arc<[AtomId]>, Arc<[IdentityId]>>,
    used: HashMap<Arc<[AtomId]>, Arc<[IdentityId]>>,
}

impl RuleTargets {
    /// Forgets the targets of atoms in `changed`; all of them when that is
    /// unknown (`None`).
    pub(super) fn forget(&mut self, changed: Option<&HashSet<AtomId>>) {
        match changed {
            Some(changed) => self
                .kept
                .retain(|atoms, _| atoms.iter().all(|a| !changed.contains(a))),
            None => self.kept.clear(),
        }
    }

    /// The targets of `atoms` under `ids`.
    pub(super) fn of(&mut self, atoms: &Arc<[AtomId]>, ids: &Identities) -> Arc<[IdentityId]> {
        if let Some(targets) = self.used.get(atoms) {
            return Arc::clone(targets);
        }
        let targets = self
            .kept
            .remove(atoms)
            .unwrap_or_else(|| tiered::targets(ids, atoms));
        self.used.insert(Arc::clone(atoms), Arc::clone(&targets));
        targets
    }

    /// Ends a compile: only the targets it looked up are kept.
    pub(super) fn finish(&mut self) {
        self.kept = std::mem::take(&mut self.used);
    }
}
