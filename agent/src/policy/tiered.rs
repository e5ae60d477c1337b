//! Entries for endpoints a ClusterNetworkPolicy applies to: the tiered
//! decision (Admin, NetworkPolicy, Baseline, default; see [`super::tiers`])
//! worked out per remote identity in userspace and written as allow and deny
//! entries, so the datapath keeps its two lookups whatever the number of
//! policies, tiers or rules.
//!
//! The identities that any rule of the group names get a decision of their
//! own; every other address gets the decision of ANY (no listed peer matches
//! it, only rules that match every address and NetworkPolicy rules without
//! peers). Each identity's entries are only where its decision differs from
//! ANY's ([`super::l4fn::emit`]), so the kernel's fallback from the identity
//! lookup to the ANY lookup is always right.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

use palisade_common::ids::{IdentityId, RuleId};

use super::identity::{AtomId, Identities};
use super::l4fn::{Decision, MISS, Outcome, PORTED, Paint, emit};
use super::plan::L4Match;
use crate::state::Direction;
use crate::state::cnp::{Action, Peers, Port, Rule, Tier};
use crate::state::model::{Pod, Protocol};

/// One allow or deny entry of a group: identity, L4, rule.
pub(super) type Entry = (IdentityId, L4Match, RuleId);

/// A ClusterNetworkPolicy rule of a group, in precedence order.
#[derive(Debug)]
pub(super) struct TierRule<'a> {
    pub(super) tier: Tier,
    pub(super) rule: &'a Rule,
    /// The id credited with its hits (Accept and Deny rules).
    pub(super) id: RuleId,
    /// The identities its listed peers hold ([`targets`]).
    pub(super) targets: Arc<[IdentityId]>,
    /// Its [`RuleContents`] number: rules with the same number decide alike.
    pub(super) content: u32,
}

/// What a rule's part of a decision reads besides which identities its
/// peers hold: tier, action, credited id, ports, and whether it matches
/// every address.
type RuleContent = (Tier, Action, RuleId, Option<Vec<Port>>, bool);

/// Numbers rule contents across compiles. A number is never given to other
/// content, so a [`Memo`] keyed by numbers stays right; contents no compile
/// looked up are forgotten at [`RuleContents::finish`].
#[derive(Debug, Default)]
pub(super) struct RuleContents {
    numbers: HashMap<RuleContent, (u32, bool)>,
    /// Numbers looked up in the previous compile and kept by number.
    held: Vec<u32>,
    next: u32,
}

impl RuleContents {
    /// The number of `rule`'s content as a rule of `tier` credited to `id`.
    pub(super) fn number(&mut self, tier: Tier, rule: &Rule, id: RuleId) -> u32 {
        let key = (
            tier,
            rule.action,
            id,
            rule.ports.clone(),
            matches!(rule.peers, Peers::All),
        );
        let next = &mut self.next;
        let slot = self.numbers.entry(key).or_insert_with(|| {
            *next += 1;
            (*next, true)
        });
        slot.1 = true;
        slot.0
    }

    /// Keeps number `n`, looked up in the previous compile, as
    /// [`RuleContents::number`] of its content would.
    pub(super) fn hold(&mut self, n: u32) {
        self.held.push(n);
    }

    /// Forgets the contents neither looked up nor held since the last call.
    pub(super) fn finish(&mut self) {
        let mut held = std::mem::take(&mut self.held);
        held.sort_unstable();
        self.numbers
            .retain(|_, (n, seen)| std::mem::take(seen) || held.binary_search(n).is_ok());
    }
}

/// What decides an identity in a group, by content: the [`RuleContents`]
/// numbers of the rules matching it in precedence order, its own
/// NetworkPolicy entries and its egress named ports.
type ContentKey = (Vec<u32>, Vec<(L4Match, RuleId)>, Vec<(String, u8, u16)>);

/// The direction and, when NetworkPolicy isolates the group, ANY's
/// NetworkPolicy entries (sorted): what every decision of a group reads.
type MemoContext = (Direction, Option<Vec<(L4Match, RuleId)>>);

/// A group's decisions and emissions kept across compiles, by content. It
/// holds while the group's direction, NetworkPolicy isolation and ANY's
/// NetworkPolicy entries (and, for ingress, its members' ports: part of the
/// group's key) are the same.
#[derive(Debug, Default)]
pub(super) struct Memo {
    context: Option<MemoContext>,
    decisions: HashMap<ContentKey, Decision>,
    /// Emissions against [`Memo::any`]'s decision.
    emitted: HashMap<ContentKey, Vec<(L4Match, Outcome)>>,
    any: Option<Decision>,
    numbering: Option<Numbering>,
}

/// What a group's [`Numbering`] is worked out from: the identities each
/// rule's listed peers hold, NetworkPolicy's entries when it isolates the
/// group, and the egress named ports' holders (sorted).
#[derive(Debug)]
struct NumberingInputs {
    targets: Vec<Arc<[IdentityId]>>,
    network_policy: Vec<Entry>,
    named: Vec<((IdentityId, String, u8), u16)>,
}

/// Which identities share a signature.
#[derive(Debug)]
struct Numbering {
    inputs: NumberingInputs,
    /// The identities with a signature, ascending.
    universe: Vec<IdentityId>,
    /// Each one's index in `distinct`.
    number_of: IdMap<usize>,
    /// The distinct signatures (0: ANY's, no listed peer holds it), each
    /// with the first identity that has it.
    distinct: Vec<(Signature, IdentityId)>,
}

impl Numbering {
    /// The numbering for `inputs`, from this one for other inputs: only
    /// the identities whose rules, NetworkPolicy entries or named ports
    /// differ are signed again (a new identity changes a few of them).
    fn update(self, inputs: NumberingInputs) -> Numbering {
        if self.inputs.targets.len() != inputs.targets.len() {
            return Numbering::of(inputs);
        }
        // One merge per list: comparing the lists first would read them twice.
        let mut changed: BTreeSet<IdentityId> = BTreeSet::new();
        for (old, new) in self.inputs.targets.iter().zip(&inputs.targets) {
            if !Arc::ptr_eq(old, new) {
                merge_differences(old, new, |identity| {
                    changed.insert(*identity);
                });
            }
        }
        // An identity's entries differ exactly when one of them is in only
        // one of the (sorted) lists.
        merge_differences(
            &self.inputs.network_policy,
            &inputs.network_policy,
            |entry| {
                changed.insert(entry.0);
            },
        );
        let named_of = |named: &[((IdentityId, String, u8), u16)]| {
            let mut by: BTreeMap<IdentityId, Vec<(String, u8, u16)>> = BTreeMap::new();
            for ((identity, name, protocol), number) in named {
                by.entry(*identity)
                    .or_default()
                    .push((name.clone(), *protocol, *number));
            }
            for list in by.values_mut() {
                list.sort_unstable();
            }
            by
        };
        let new_named = named_of(&inputs.named);
        if self.inputs.named != inputs.named {
            changed.extend(differing_keys(&named_of(&self.inputs.named), &new_named));
        }
        changed.remove(&IdentityId::ANY);
        if changed.is_empty() {
            // Every identity's signature is as it was.
            return Numbering { inputs, ..self };
        }
        if changed.len() * 2 > self.universe.len() {
            return Numbering::of(inputs);
        }
        let Numbering {
            universe,
            mut number_of,
            distinct,
            ..
        } = self;
        let mut numbers: HashMap<Signature, usize, BuildHasherDefault<IdHasher>> =
            HashMap::default();
        let mut signatures: Vec<Signature> = Vec::with_capacity(distinct.len());
        for (n, (signature, _)) in distinct.into_iter().enumerate() {
            numbers.insert(signature.clone(), n);
            signatures.push(signature);
        }
        for identity in &changed {
            let signature: Signature = (
                (0..inputs.targets.len())
                    .filter(|&i| inputs.targets[i].binary_search(identity).is_ok())
                    .collect(),
                entries_of(&inputs.network_policy, *identity),
                new_named.get(identity).cloned().unwrap_or_default(),
            );
            if signature == Signature::default() {
                number_of.remove(identity);
                continue;
            }
            let n = *numbers.entry(signature.clone()).or_insert_with(|| {
                signatures.push(signature);
                signatures.len() - 1
            });
            number_of.insert(*identity, n);
        }
        let mut universe: Vec<IdentityId> = universe
            .into_iter()
            .filter(|i| !changed.contains(i))
            .chain(
                changed
                    .iter()
                    .copied()
                    .filter(|i| number_of.contains_key(i)),
            )
            .collect();
        universe.sort_unstable();
        // Renumbered densely over the signatures some identity has, each
        // with an identity that has it (ANY's stays 0).
        let mut renumber: Vec<Option<usize>> = vec![None; signatures.len()];
        renumber[0] = Some(0);
        let mut representatives: Vec<IdentityId> = vec![IdentityId::ANY];
        for identity in &universe {
            let n = number_of[identity];
            if renumber[n].is_none() {
                renumber[n] = Some(representatives.len());
                representatives.push(*identity);
            }
        }
        let mut distinct: Vec<(Signature, IdentityId)> =
            vec![(Signature::default(), IdentityId::ANY); representatives.len()];
        for (n, signature) in signatures.into_iter().enumerate() {
            if let Some(m) = renumber[n] {
                distinct[m] = (signature, representatives[m]);
            }
        }
        for n in number_of.values_mut() {
            *n = renumber[*n].expect("every identity's signature is numbered");
        }
        Numbering {
            inputs,
            universe,
            number_of,
            distinct,
        }
    }

    fn of(inputs: NumberingInputs) -> Numbering {
        // What each identity's decision depends on; identities with equal
        // signatures (most of them) share one decision and one emission.
        let mut signatures: IdMap<Signature> = IdMap::default();
        for (i, ids) in inputs.targets.iter().enumerate() {
            for identity in ids.iter() {
                signatures.entry(*identity).or_default().0.push(i);
            }
        }
        for (identity, l4, rule) in &inputs.network_policy {
            if *identity != IdentityId::ANY {
                signatures
                    .entry(*identity)
                    .or_default()
                    .1
                    .push((*l4, *rule));
            }
        }
        for ((identity, name, protocol), number) in &inputs.named {
            signatures
                .entry(*identity)
                .or_default()
                .2
                .push((name.clone(), *protocol, *number));
        }
        signatures.remove(&IdentityId::ANY);
        let mut universe: Vec<IdentityId> = signatures.keys().copied().collect();
        universe.sort_unstable();
        let mut numbers: HashMap<Signature, usize, BuildHasherDefault<IdHasher>> =
            HashMap::default();
        numbers.insert(Signature::default(), 0);
        let mut distinct: Vec<(Signature, IdentityId)> =
            vec![(Signature::default(), IdentityId::ANY)];
        let mut number_of: IdMap<usize> = IdMap::default();
        for identity in &universe {
            let mut signature = signatures.remove(identity).unwrap_or_default();
            signature.1.sort_unstable();
            signature.2.sort_unstable();
            let n = match numbers.get(&signature) {
                Some(n) => *n,
                None => {
                    numbers.insert(signature.clone(), distinct.len());
                    distinct.push((signature, *identity));
                    distinct.len() - 1
                }
            };
            number_of.insert(*identity, n);
        }
        Numbering {
            inputs,
            universe,
            number_of,
            distinct,
        }
    }
}

/// A ClusterIP's service port with ready backends: its identity and the
/// backends' addresses, identities and target ports.
#[derive(Debug, Hash)]
pub(super) struct ServicePort {
    pub(super) identity: IdentityId,
    pub(super) protocol: u8,
    pub(super) port: u16,
    pub(super) backends: Vec<(IpAddr, IdentityId, u16)>,
}

/// A service port denied only because a backend is the client itself (not
/// subject to policy): allowed for an endpoint whose addresses hold every
/// denied backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct SelfFix {
    pub(super) identity: IdentityId,
    pub(super) protocol: u8,
    pub(super) port: u16,
    pub(super) denied: Vec<IpAddr>,
    /// The rule credited with the allow.
    pub(super) rule: RuleId,
}

/// A group's entries.
#[derive(Debug, Default)]
pub(super) struct TieredEntries {
    pub(super) allows: Vec<Entry>,
    pub(super) denies: Vec<Entry>,
    pub(super) self_fixes: Vec<SelfFix>,
}

/// What an identity's decision depends on besides the rules matching every
/// address: the rules whose listed peers hold it (by index), its own
/// NetworkPolicy entries, and its egress named ports.
type Signature = (Vec<usize>, Vec<(L4Match, RuleId)>, Vec<(String, u8, u16)>);

/// What one tier's matching rule does at a point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Decide(Outcome),
    Pass,
}

/// What the group's decision reads.
pub(super) struct Group<'a> {
    pub(super) direction: Direction,
    /// The ClusterNetworkPolicy rules of this direction, in precedence order.
    pub(super) rules: &'a [TierRule<'a>],
    /// NetworkPolicy's allow entries when it isolates the group, else `None`:
    /// sorted, one per identity and L4 match (its lowest rule).
    pub(super) network_policy: Option<&'a [Entry]>,
    /// A member (ingress named ports are its own).
    pub(super) pod: &'a Pod,
    pub(super) ids: &'a Identities,
    /// Egress: the Service ports whose ClusterIPs take their backends' decision.
    pub(super) services: &'a [ServicePort],
}

impl Group<'_> {
    /// The group's allow and deny entries. `memo` holds the decisions and
    /// emissions of an earlier compile of the group; it is left holding
    /// this compile's.
    pub(super) fn entries(&self, memo: &mut Memo) -> TieredEntries {
        debug_assert!(
            self.network_policy
                .is_none_or(|e| e.windows(2).all(|w| (w[0].0, w[0].1) < (w[1].0, w[1].1)))
        );
        let targets: Vec<Arc<[IdentityId]>> =
            self.rules.iter().map(|r| Arc::clone(&r.targets)).collect();
        let named = self.named_holders();
        let mut named_list: Vec<((IdentityId, String, u8), u16)> =
            named.iter().map(|(k, v)| (k.clone(), *v)).collect();
        named_list.sort_unstable();
        let inputs = NumberingInputs {
            targets,
            network_policy: self
                .network_policy
                .map(<[Entry]>::to_vec)
                .unwrap_or_default(),
            named: named_list,
        };
        // A ClusterNetworkPolicy change that keeps its rules' peers leaves
        // which identities share a signature as it was.
        let numbering = match memo.numbering.take() {
            Some(n) => n.update(inputs),
            None => Numbering::of(inputs),
        };
        let distinct = &numbering.distinct;
        let number_of = &numbering.number_of;
        let context = (
            self.direction,
            self.network_policy.map(|entries| {
                let mut any: Vec<(L4Match, RuleId)> = entries
                    .iter()
                    .filter(|(i, _, _)| *i == IdentityId::ANY)
                    .map(|(_, l4, r)| (*l4, *r))
                    .collect();
                any.sort_unstable();
                any
            }),
        );
        if memo.context.as_ref() != Some(&context) {
            *memo = Memo {
                context: Some(context),
                ..Memo::default()
            };
        }
        // Rules matching every address are in every key (usually none).
        let all: Vec<usize> = (0..self.rules.len())
            .filter(|&i| matches!(self.rules[i].rule.peers, Peers::All))
            .collect();
        // The rules matching each signature, in precedence order.
        let matching: Vec<Vec<usize>> = distinct
            .iter()
            .map(|(signature, _)| {
                let mut matching: Vec<usize> = signature.0.clone();
                if !all.is_empty() {
                    matching.extend(&all);
                    matching.sort_unstable();
                }
                matching
            })
            .collect();
        let keys: Vec<ContentKey> = distinct
            .iter()
            .zip(&matching)
            .map(|((signature, _), matching)| {
                let contents = matching.iter().map(|&i| self.rules[i].content).collect();
                (contents, signature.1.clone(), signature.2.clone())
            })
            .collect();
        let mut kept = Memo {
            context: memo.context.take(),
            ..Memo::default()
        };
        let decisions: Vec<Decision> = distinct
            .iter()
            .zip(&keys)
            .zip(&matching)
            .map(|(((_, identity), key), matching)| {
                let decision = memo
                    .decisions
                    .remove(key)
                    .or_else(|| kept.decisions.get(key).cloned())
                    .unwrap_or_else(|| self.decide(*identity, matching, &named));
                kept.decisions.insert(key.clone(), decision.clone());
                decision
            })
            .collect();
        let decision_of = |identity: IdentityId| -> &Decision {
            &decisions[number_of.get(&identity).copied().unwrap_or(0)]
        };
        let any = decisions[0].clone();
        let mut out = TieredEntries::default();
        push(
            &mut out,
            IdentityId::ANY,
            &emit(&any, &Decision::constant(MISS)),
        );
        let mut services: HashMap<IdentityId, Decision> = HashMap::new();
        if self.direction == Direction::Egress {
            for sp in self.services {
                let mut allowed: Option<RuleId> = None;
                let mut denial: Option<Outcome> = None;
                let mut denied = Vec::new();
                for (addr, identity, port) in &sp.backends {
                    match decision_of(*identity).at(sp.protocol, *port) {
                        Outcome::Allow(r) => {
                            allowed = Some(allowed.map_or(r, |a| lowest_credited(a, r)));
                        }
                        o @ Outcome::Deny(_) => {
                            denial.get_or_insert(o);
                            denied.push(*addr);
                        }
                    }
                }
                let credited = allowed.unwrap_or(RuleId::NONE);
                let outcome = denial.unwrap_or(Outcome::Allow(credited));
                let decision = services
                    .entry(sp.identity)
                    .or_insert_with(|| decision_of(sp.identity).clone());
                decision.set(sp.protocol, sp.port, outcome);
                if !denied.is_empty() {
                    out.self_fixes.push(SelfFix {
                        identity: sp.identity,
                        protocol: sp.protocol,
                        port: sp.port,
                        denied,
                        rule: credited,
                    });
                }
            }
        }
        if memo.any.as_ref() != Some(&any) {
            memo.emitted.clear();
        }
        let mut emitted: Vec<Option<Vec<(L4Match, Outcome)>>> = vec![None; distinct.len()];
        for identity in numbering
            .universe
            .iter()
            .filter(|i| !services.contains_key(i))
        {
            let n = number_of[identity];
            let entries = emitted[n].get_or_insert_with(|| {
                memo.emitted
                    .remove(&keys[n])
                    .unwrap_or_else(|| emit(&decisions[n], &any))
            });
            push(&mut out, *identity, entries);
        }
        for (identity, decision) in &services {
            push(&mut out, *identity, &emit(decision, &any));
        }
        kept.emitted = keys
            .into_iter()
            .zip(emitted)
            .filter_map(|(key, e)| Some((key, e?)))
            .collect();
        kept.any = Some(any);
        kept.numbering = Some(numbering);
        *memo = kept;
        out
    }

    /// The tiered decision for `identity` (ANY: an address no listed peer
    /// matches), which the rules `matching` (ascending) match.
    fn decide(
        &self,
        identity: IdentityId,
        matching: &[usize],
        named: &HashMap<(IdentityId, String, u8), u16>,
    ) -> Decision {
        let tier = |tier: Tier| {
            let mut paint = Paint::new();
            for rule in matching.iter().map(|&i| &self.rules[i]) {
                if rule.tier != tier {
                    continue;
                }
                let step = match rule.rule.action {
                    Action::Accept => Step::Decide(Outcome::Allow(rule.id)),
                    Action::Deny => Step::Decide(Outcome::Deny(rule.id)),
                    Action::Pass => Step::Pass,
                };
                for l4 in self.l4_of(rule.rule, identity, named) {
                    paint.fill(l4, step);
                }
            }
            paint.map(|s| match s {
                Some(Step::Decide(o)) => Some(o),
                Some(Step::Pass) | None => None,
            })
        };
        let mut paint = tier(Tier::Admin);
        match self.network_policy {
            Some(entries) => {
                let mut allows: Vec<&Entry> = entries
                    .iter()
                    .filter(|(i, _, _)| *i == identity || *i == IdentityId::ANY)
                    .collect();
                allows.sort_unstable_by_key(|(_, _, r)| *r);
                for (_, l4, rule) in allows {
                    paint.fill(*l4, Outcome::Allow(*rule));
                }
                paint.complete(MISS)
            }
            None => {
                paint.fill_from(&tier(Tier::Baseline));
                paint.complete(Outcome::Allow(RuleId::NONE))
            }
        }
    }

    /// Egress named ports of the rules: (identity, name, protocol) -> number.
    fn named_holders(&self) -> HashMap<(IdentityId, String, u8), u16> {
        let mut out = HashMap::new();
        if self.direction != Direction::Egress {
            return out;
        }
        for rule in self.rules {
            for port in rule.rule.ports.iter().flatten() {
                let Port::Named(name) = port else { continue };
                for protocol in Protocol::ALL {
                    let holders = self.ids.named.get(&(name.clone(), protocol));
                    for (identity, number) in holders.into_iter().flatten() {
                        out.insert((*identity, name.clone(), protocol.number()), *number);
                    }
                }
            }
        }
        out
    }

    /// The L4 matches of `rule` for traffic with `identity`.
    fn l4_of(
        &self,
        rule: &Rule,
        identity: IdentityId,
        named: &HashMap<(IdentityId, String, u8), u16>,
    ) -> Vec<L4Match> {
        let Some(ports) = &rule.ports else {
            return vec![L4Match::Any];
        };
        let mut out = Vec::new();
        for port in ports {
            match port {
                Port::Range {
                    protocol,
                    first,
                    last,
                } => out.push(L4Match::Ports {
                    protocol: protocol.number(),
                    first: *first,
                    last: *last,
                }),
                Port::Named(name) => {
                    for protocol in Protocol::ALL {
                        let number = match self.direction {
                            Direction::Ingress => self.pod.named_port(name, protocol),
                            Direction::Egress => named
                                .get(&(identity, name.clone(), protocol.number()))
                                .copied(),
                        };
                        if let Some(n) = number {
                            out.push(L4Match::Ports {
                                protocol: protocol.number(),
                                first: n,
                                last: n,
                            });
                        }
                    }
                }
            }
        }
        debug_assert!(out.iter().all(|l4| match l4 {
            L4Match::Ports { protocol, .. } => PORTED.contains(protocol),
            _ => true,
        }));
        out
    }
}

/// The identities that atoms `atoms` (a rule's listed peers) hold, sorted.
pub(super) fn targets(ids: &Identities, atoms: &[AtomId]) -> Arc<[IdentityId]> {
    if let [atom] = atoms {
        // `by_atom` lists are built in identity order.
        let held = ids.by_atom.get(atom).map_or(&[][..], Vec::as_slice);
        debug_assert!(held.windows(2).all(|w| w[0] < w[1]));
        return held.into();
    }
    let mut v: Vec<IdentityId> = atoms
        .iter()
        .filter_map(|a| ids.by_atom.get(a))
        .flatten()
        .copied()
        .collect();
    v.sort_unstable();
    v.dedup();
    v.into()
}

/// A map by identity. Building a group's signatures looks up an identity
/// for every (rule, identity the rule names) pair, hundreds of thousands per
/// group under broad ClusterNetworkPolicies: the std SipHash was most of it.
type IdMap<V> = HashMap<IdentityId, V, BuildHasherDefault<IdHasher>>;

/// Hashes an identity number by one multiplication (Fibonacci hashing): ids
/// are small dense numbers, not chosen by anyone who could collide them.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Slices of integers (a signature's rule indices) come as one write.
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
        for b in chunks.remainder() {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Calls `differs` with each element that is in only one of two sorted
/// lists (one merge).
fn merge_differences<T: Ord>(a: &[T], b: &[T], mut differs: impl FnMut(&T)) {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Equal => {
                i += 1;
                j += 1;
            }
            std::cmp::Ordering::Less => {
                differs(&a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                differs(&b[j]);
                j += 1;
            }
        }
    }
    a[i..].iter().chain(&b[j..]).for_each(differs);
}

/// `identity`'s L4 matches and rules in a sorted entry list, sorted.
fn entries_of(entries: &[Entry], identity: IdentityId) -> Vec<(L4Match, RuleId)> {
    let first = entries.partition_point(|e| e.0 < identity);
    let last = first + entries[first..].partition_point(|e| e.0 == identity);
    entries[first..last].iter().map(|e| (e.1, e.2)).collect()
}

/// The keys whose values differ between two maps (or that one lacks).
fn differing_keys<V: PartialEq>(
    a: &BTreeMap<IdentityId, V>,
    b: &BTreeMap<IdentityId, V>,
) -> Vec<IdentityId> {
    a.keys()
        .chain(b.keys())
        .filter(|k| a.get(k) != b.get(k))
        .copied()
        .collect()
}

/// The lower of two credited rules, a real rule before none.
fn lowest_credited(a: RuleId, b: RuleId) -> RuleId {
    match (a, b) {
        (RuleId::NONE, r) | (r, RuleId::NONE) => r,
        (a, b) => a.min(b),
    }
}

fn push(out: &mut TieredEntries, identity: IdentityId, entries: &[(L4Match, Outcome)]) {
    for &(l4, outcome) in entries {
        match outcome {
            Outcome::Allow(r) => out.allows.push((identity, l4, r)),
            Outcome::Deny(r) => out.denies.push((identity, l4, r)),
        }
    }
}
