//! NetworkPolicy rules numbered and their peers interned, kept from compile
//! to compile while the policy stays the same (as [`super::cluster_rules`]
//! keeps ClusterNetworkPolicies').
//!
//! Indexing a policy clones its ref for every rule id and origin and hashes
//! every peer's selectors; with a thousand policies that is a fifth of a
//! label re-plan. A policy the journal says is unchanged keeps last
//! compile's index: its ids are still allocated (they were looked up then),
//! so keeping it is one hold per rule and one table check per distinct peer.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use palisade_common::ids::RuleId;

use super::cluster_rules::RuleSlot;
use super::identity::{Atom, AtomId, AtomTable};
use super::ids::IdAllocator;
use super::plan::RuleOrigin;
use crate::state::model::Protocol;
use crate::state::netpol::{NetworkPolicy, Peer, PortRef};
use crate::state::{Direction, PolicyRef};

/// One allowing rule of an indexed policy.
#[derive(Debug)]
pub(super) struct IndexedRule {
    /// The id credited with its hits.
    pub(super) id: RuleId,
    /// The atoms of its peers, in peer order.
    pub(super) atoms: Vec<AtomId>,
}

/// A policy's allowing rules per direction, and what keeping them must
/// look up again.
#[derive(Debug)]
pub(super) struct IndexedNetworkPolicy {
    /// In [`Direction::ALL`] order, each in rule order.
    rules: [Vec<IndexedRule>; 2],
    /// What each rule id stands for.
    pub(super) origins: Vec<(RuleId, RuleOrigin)>,
    /// Its distinct peer atoms.
    atoms: Vec<(AtomId, Atom)>,
    /// Port names (with protocol) its egress rules refer to.
    egress_names: Vec<(String, Protocol)>,
}

impl IndexedNetworkPolicy {
    /// Its allowing rules in direction `d`, in rule order.
    pub(super) fn rules(&self, d: Direction) -> &[IndexedRule] {
        &self.rules[usize::from(d == Direction::Egress)]
    }
}

/// The indexed policies of the last compile, by ref.
#[derive(Debug, Default)]
pub(super) struct NetworkRules {
    kept: HashMap<PolicyRef, Arc<IndexedNetworkPolicy>>,
}

impl NetworkRules {
    /// The index of each of `policies`, into `table`: kept when the policy
    /// is not in `changed` (`None`: unknown, so every policy is indexed
    /// again). Only these policies are kept for the next compile.
    pub(super) fn index<'p>(
        &mut self,
        policies: impl Iterator<Item = (usize, &'p NetworkPolicy)>,
        changed: Option<&HashSet<&PolicyRef>>,
        atoms: &mut IdAllocator<Atom>,
        rules: &mut IdAllocator<RuleSlot>,
        table: &mut AtomTable,
    ) -> Vec<(usize, Arc<IndexedNetworkPolicy>)> {
        let mut previous = std::mem::take(&mut self.kept);
        let mut out = Vec::new();
        for (pi, policy) in policies {
            let policy_ref = policy.policy_ref();
            let kept = changed
                .filter(|c| !c.contains(&policy_ref))
                .and_then(|_| previous.remove(&policy_ref));
            let indexed = match kept {
                Some(indexed) => {
                    keep(&indexed, atoms, rules, table);
                    indexed
                }
                None => Arc::new(index_policy(policy, &policy_ref, atoms, rules, table)),
            };
            self.kept.insert(policy_ref, Arc::clone(&indexed));
            out.push((pi, indexed));
        }
        out
    }
}

/// Looks up again what `indexed` holds, so this compile keeps its ids.
fn keep(
    indexed: &IndexedNetworkPolicy,
    atoms: &mut IdAllocator<Atom>,
    rules: &mut IdAllocator<RuleSlot>,
    table: &mut AtomTable,
) {
    for rule in indexed.rules.iter().flatten() {
        rules.hold(rule.id.0);
    }
    table.keep(atoms, &indexed.atoms, &indexed.egress_names);
}

/// Numbers `policy`'s allowing rules and interns their peers.
fn index_policy(
    policy: &NetworkPolicy,
    policy_ref: &PolicyRef,
    atoms: &mut IdAllocator<Atom>,
    rules: &mut IdAllocator<RuleSlot>,
    table: &mut AtomTable,
) -> IndexedNetworkPolicy {
    let mut out = IndexedNetworkPolicy {
        rules: [Vec::new(), Vec::new()],
        origins: Vec::new(),
        atoms: Vec::new(),
        egress_names: Vec::new(),
    };
    let mut seen: HashSet<AtomId> = HashSet::new();
    for d in Direction::ALL {
        for (ri, rule) in policy.allowing_rules(d).iter().enumerate() {
            let position = u32::try_from(ri).unwrap_or(u32::MAX);
            let id = RuleId(rules.get(&(policy_ref.clone(), d, position)));
            out.origins.push((
                id,
                RuleOrigin::network_policy(policy_ref.clone(), d, position),
            ));
            let mut rule_atoms = Vec::new();
            for peer in rule.peers.iter().flatten() {
                let atom = match peer {
                    Peer::Pods(pp) => Atom::Pods(pp.clone()),
                    Peer::IpBlock(b) => Atom::IpBlock(b.clone()),
                };
                let atom_id = table.intern(atoms, &atom);
                if seen.insert(atom_id) {
                    out.atoms.push((atom_id, atom));
                }
                rule_atoms.push(atom_id);
            }
            if d == Direction::Egress {
                for spec in rule.ports.iter().flatten() {
                    if let Some(PortRef::Named(n)) = &spec.port {
                        out.egress_names.push((n.clone(), spec.protocol));
                    }
                }
            }
            out.rules[usize::from(d == Direction::Egress)].push(IndexedRule {
                id,
                atoms: rule_atoms,
            });
        }
    }
    table.egress_names.extend(out.egress_names.iter().cloned());
    out
}
