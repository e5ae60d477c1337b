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

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;

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
    /// The atoms of its listed peers.
    pub(super) atoms: &'a [AtomId],
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
    /// NetworkPolicy's allow entries when it isolates the group, else `None`.
    pub(super) network_policy: Option<&'a [Entry]>,
    /// A member (ingress named ports are its own).
    pub(super) pod: &'a Pod,
    pub(super) ids: &'a Identities,
    /// Egress: the Service ports whose ClusterIPs take their backends' decision.
    pub(super) services: &'a [ServicePort],
}

impl Group<'_> {
    /// The group's allow and deny entries.
    pub(super) fn entries(&self) -> TieredEntries {
        let targets: Vec<Vec<IdentityId>> = self.rules.iter().map(|r| self.targets(r)).collect();
        let named = self.named_holders();
        // What each identity's decision depends on; identities with equal
        // signatures (most of them) share one decision and one emission.
        let mut signatures: IdMap<Signature> = IdMap::default();
        for (i, ids) in targets.iter().enumerate() {
            for identity in ids {
                signatures.entry(*identity).or_default().0.push(i);
            }
        }
        for (identity, l4, rule) in self.network_policy.into_iter().flatten() {
            if *identity != IdentityId::ANY {
                signatures
                    .entry(*identity)
                    .or_default()
                    .1
                    .push((*l4, *rule));
            }
        }
        for ((identity, name, protocol), number) in &named {
            signatures
                .entry(*identity)
                .or_default()
                .2
                .push((name.clone(), *protocol, *number));
        }
        signatures.remove(&IdentityId::ANY);
        for signature in signatures.values_mut() {
            signature.1.sort_unstable();
            signature.2.sort_unstable();
        }
        let universe: BTreeSet<IdentityId> = signatures.keys().copied().collect();
        let mut memo: HashMap<Signature, Decision> = HashMap::new();
        let mut decision_of = |identity: IdentityId| -> Decision {
            let (identity, signature) = match signatures.get(&identity) {
                Some(s) => (identity, s.clone()),
                None => (IdentityId::ANY, Signature::default()),
            };
            memo.entry(signature)
                .or_insert_with(|| self.decide(identity, &targets, &named))
                .clone()
        };
        let any = decision_of(IdentityId::ANY);
        let mut out = TieredEntries::default();
        push(
            &mut out,
            IdentityId::ANY,
            emit(&any, &Decision::constant(MISS)),
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
                    .or_insert_with(|| decision_of(sp.identity));
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
        let mut emitted: HashMap<Signature, Vec<(L4Match, Outcome)>> = HashMap::new();
        for identity in universe.iter().filter(|i| !services.contains_key(i)) {
            let signature = signatures.get(identity).cloned().unwrap_or_default();
            let decision = decision_of(*identity);
            let entries = emitted
                .entry(signature)
                .or_insert_with(|| emit(&decision, &any));
            push(&mut out, *identity, entries.clone());
        }
        for (identity, decision) in &services {
            push(&mut out, *identity, emit(decision, &any));
        }
        out
    }

    /// The tiered decision for `identity` (ANY: an address no listed peer
    /// matches).
    fn decide(
        &self,
        identity: IdentityId,
        targets: &[Vec<IdentityId>],
        named: &HashMap<(IdentityId, String, u8), u16>,
    ) -> Decision {
        let tier = |tier: Tier| {
            let mut paint = Paint::new();
            for (rule, targets) in self.rules.iter().zip(targets) {
                if rule.tier != tier || !matches(rule.rule, targets, identity) {
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

    /// The identities a rule's listed peers cover (sorted).
    fn targets(&self, rule: &TierRule<'_>) -> Vec<IdentityId> {
        let mut v: Vec<IdentityId> = rule
            .atoms
            .iter()
            .filter_map(|a| self.ids.by_atom.get(a))
            .flatten()
            .copied()
            .collect();
        v.sort_unstable();
        v.dedup();
        v
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

fn matches(rule: &Rule, targets: &[IdentityId], identity: IdentityId) -> bool {
    match &rule.peers {
        Peers::All => true,
        Peers::Listed(_) => identity != IdentityId::ANY && targets.binary_search(&identity).is_ok(),
    }
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
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The lower of two credited rules, a real rule before none.
fn lowest_credited(a: RuleId, b: RuleId) -> RuleId {
    match (a, b) {
        (RuleId::NONE, r) | (r, RuleId::NONE) => r,
        (a, b) => a.min(b),
    }
}

fn push(out: &mut TieredEntries, identity: IdentityId, entries: Vec<(L4Match, Outcome)>) {
    for (l4, outcome) in entries {
        match outcome {
            Outcome::Allow(r) => out.allows.push((identity, l4, r)),
            Outcome::Deny(r) => out.denies.push((identity, l4, r)),
        }
    }
}
