//! Per-rule counters that never go backwards.
//!
//! The kernel counts allowed flows per rule id (`RULE_COUNTERS`, pinned, never
//! reset). Rule ids are stable per (policy, direction, rule index) while the
//! agent runs, but an id freed by one policy may be handed to another later,
//! and a restarted agent allocates ids afresh. The ledger therefore remembers
//! which label set owns each id and the kernel value when it took the id over
//! (its base); when ownership changes, the old owner's share is folded into a
//! per-label total. A label's value is its folded total plus, for every id it
//! owns now, the kernel value minus the base. The ledger is persisted (see
//! [`crate::datapath::ledger_store`]) after every change of ownership, so a restarted agent
//! credits packets the kernel counted while it was away to the owners the
//! kernel was still enforcing.
//!
//! Audited flows are counted here too (from flow events: per ClusterNetworkPolicy
//! rule that would have denied them, else per isolating NetworkPolicy), since
//! nothing in the kernel counts them per policy.

use std::collections::BTreeMap;

use palisade_common::verdict::Direction;
use serde::{Deserialize, Serialize};

use crate::policy::plan::RuleOrigin;
use crate::state::PolicyRef;
use crate::state::cnp::Action;

/// Labels of one rule: `palisade_policy_rule_{hits,bytes}_total`.
///
/// Ledgers of format version 1 knew only NetworkPolicy rules, labelled by
/// index: they read back as `tier` `network_policy`, `rule` the index as
/// text and `verdict` `allow`, which are the labels those rules carry now, so
/// no series loses its count across the upgrade.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RuleLabels {
    /// Namespace of the policy (empty for a ClusterNetworkPolicy).
    pub namespace: String,
    /// Name of the policy.
    pub policy: String,
    /// `spec.ingress` or `spec.egress`.
    pub direction: Direction,
    /// `admin`, `network_policy` or `baseline` ([`RuleOrigin::tier_label`]).
    #[serde(default = "network_policy_tier")]
    pub tier: String,
    /// The rule's name, else its index in that list ([`RuleOrigin::rule_label`]).
    #[serde(deserialize_with = "rule_label")]
    pub rule: String,
    /// What the rule's entries do with a first packet.
    #[serde(default)]
    pub verdict: RuleVerdict,
}

/// What a rule's kernel entries do: the `verdict` label of its counters.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum RuleVerdict {
    /// An allow entry (a NetworkPolicy rule, a ClusterNetworkPolicy Accept).
    #[default]
    Allow,
    /// A deny entry (a ClusterNetworkPolicy Deny).
    Deny,
}

impl RuleVerdict {
    /// Label value.
    pub fn as_label(self) -> &'static str {
        match self {
            RuleVerdict::Allow => "allow",
            RuleVerdict::Deny => "deny",
        }
    }
}

fn network_policy_tier() -> String {
    "network_policy".into()
}

/// A rule label: text, or (format version 1) the rule's index.
fn rule_label<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Label {
        Text(String),
        Index(u32),
    }
    Ok(match Label::deserialize(d)? {
        Label::Text(s) => s,
        Label::Index(i) => i.to_string(),
    })
}

impl RuleLabels {
    /// The labels of a rule origin.
    pub fn of(origin: &RuleOrigin) -> RuleLabels {
        let deny = origin
            .cluster
            .as_ref()
            .is_some_and(|c| c.action == Action::Deny);
        RuleLabels {
            namespace: origin.policy.namespace.clone(),
            policy: origin.policy.name.clone(),
            direction: origin.direction,
            tier: origin.tier_label().into(),
            rule: origin.rule_label(),
            verdict: if deny {
                RuleVerdict::Deny
            } else {
                RuleVerdict::Allow
            },
        }
    }

    fn policy_ref(&self) -> PolicyRef {
        PolicyRef {
            namespace: self.namespace.clone(),
            name: self.policy.clone(),
        }
    }
}

/// Labels of audited flows: the policy and, when one would have denied the
/// flow, its rule; else (`rule` `None`) a NetworkPolicy isolating the
/// endpoint that no rule allowed the flow through. Version 1 ledgers read
/// back as the latter, in the `network_policy` tier.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AuditLabels {
    /// Namespace of the policy (empty for a ClusterNetworkPolicy).
    pub namespace: String,
    /// Name of the policy.
    pub policy: String,
    /// Direction the policy isolates the endpoint in.
    pub direction: Direction,
    /// `admin`, `network_policy` or `baseline`.
    #[serde(default = "network_policy_tier")]
    pub tier: String,
    /// The rule that would have denied the flow (label `rule`; `none`
    /// when isolation did).
    #[serde(default)]
    pub rule: Option<String>,
}

impl AuditLabels {
    /// A flow no rule of the isolating NetworkPolicy `policy` allowed.
    pub fn isolation(policy: PolicyRef, direction: Direction) -> AuditLabels {
        AuditLabels {
            namespace: policy.namespace,
            policy: policy.name,
            direction,
            tier: network_policy_tier(),
            rule: None,
        }
    }

    fn policy_ref(&self) -> PolicyRef {
        PolicyRef {
            namespace: self.namespace.clone(),
            name: self.policy.clone(),
        }
    }
}

/// Packets and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

impl From<palisade_common::stats::RuleCounter> for Count {
    fn from(c: palisade_common::stats::RuleCounter) -> Count {
        Count {
            packets: c.packets,
            bytes: c.bytes,
        }
    }
}

impl From<palisade_common::stats::StatCounter> for Count {
    fn from(c: palisade_common::stats::StatCounter) -> Count {
        Count {
            packets: c.packets,
            bytes: c.bytes,
        }
    }
}

impl Count {
    fn plus(self, other: Count) -> Count {
        Count {
            packets: self.packets.saturating_add(other.packets),
            bytes: self.bytes.saturating_add(other.bytes),
        }
    }

    /// `self - base`, or `self` when the slot restarted below its base
    /// (a recreated map).
    fn since(self, base: Count) -> Count {
        if self.packets < base.packets || self.bytes < base.bytes {
            return self;
        }
        Count {
            packets: self.packets - base.packets,
            bytes: self.bytes - base.bytes,
        }
    }
}

/// Who owns a rule id and from which kernel value on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Owned {
    labels: RuleLabels,
    base: Count,
}

/// The persisted form (a list of pairs: JSON keys must be strings).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Persisted {
    version: u32,
    owners: Vec<(u32, Owned)>,
    folded: Vec<(RuleLabels, Count)>,
    audit: Vec<(AuditLabels, u64)>,
}

/// 2: rule labels carry `tier`, `verdict` and `rule` as text; audit labels
/// `tier` and `rule`. Version 1 (NetworkPolicy only) reads back as well.
const VERSION: u32 = 2;
const OLDEST_READABLE: u32 = 1;

/// The ledger. Pure: kernel values are passed in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ledger {
    owners: BTreeMap<u32, Owned>,
    folded: BTreeMap<RuleLabels, Count>,
    audit: BTreeMap<AuditLabels, u64>,
}

impl Ledger {
    /// Rule ids whose kernel counters matter now.
    pub fn owned_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.owners.keys().copied()
    }

    /// Gives the rule ids of a plan about to be written their owners in
    /// `origins`, so packets the new entries count from their first moment are
    /// credited to them. Ids missing from `origins` keep their owners until
    /// [`Ledger::reassign`] after the write (their old entries still count).
    /// Returns whether anything changed.
    pub fn adopt(
        &mut self,
        origins: &BTreeMap<u32, RuleLabels>,
        kernel: impl Fn(u32) -> Count,
    ) -> bool {
        let mut changed = false;
        for (id, labels) in origins {
            if self.owners.get(id).is_none_or(|o| o.labels != *labels) {
                self.move_owner(*id, Some(labels), kernel(*id));
                changed = true;
            }
        }
        changed
    }

    /// Moves every rule id to its owner in `origins` (the plan now written),
    /// folding what the previous owner counted so far. `kernel` reads an id's
    /// counter; `live` tells whether a policy still exists (history of
    /// deleted policies is forgotten, so label cardinality stays bounded by
    /// the policies). Returns whether anything changed (and so needs
    /// persisting).
    pub fn reassign(
        &mut self,
        origins: &BTreeMap<u32, RuleLabels>,
        kernel: impl Fn(u32) -> Count,
        live: impl Fn(&PolicyRef) -> bool,
    ) -> bool {
        let mut changed = self.adopt(origins, &kernel);
        let gone: Vec<u32> = self
            .owners
            .keys()
            .filter(|id| !origins.contains_key(id))
            .copied()
            .collect();
        for id in gone {
            self.move_owner(id, None, kernel(id));
            changed = true;
        }
        let before = (self.folded.len(), self.audit.len());
        self.folded.retain(|l, _| live(&l.policy_ref()));
        self.audit.retain(|l, _| live(&l.policy_ref()));
        changed || before != (self.folded.len(), self.audit.len())
    }

    /// Folds what `id` counted for its owner (if any) up to `now` and hands
    /// it to `new` from `now` on.
    fn move_owner(&mut self, id: u32, new: Option<&RuleLabels>, now: Count) {
        if let Some(old) = self.owners.remove(&id) {
            let total = self.folded.entry(old.labels).or_default();
            *total = total.plus(now.since(old.base));
        }
        if let Some(labels) = new {
            let owned = Owned {
                labels: labels.clone(),
                base: now,
            };
            self.owners.insert(id, owned);
        }
    }

    /// The value of every label set: folded history plus what its current ids
    /// counted since they became its own (several ids of one label are summed).
    pub fn totals(&self, kernel: impl Fn(u32) -> Count) -> BTreeMap<RuleLabels, Count> {
        let mut out = self.folded.clone();
        for (id, owned) in &self.owners {
            let total = out.entry(owned.labels.clone()).or_default();
            *total = total.plus(kernel(*id).since(owned.base));
        }
        out
    }

    /// Counts `n` audited flows for a policy.
    pub fn audit(&mut self, labels: AuditLabels, n: u64) {
        let c = self.audit.entry(labels).or_default();
        *c = c.saturating_add(n);
    }

    /// Audited flows per policy and direction.
    pub fn audited(&self) -> &BTreeMap<AuditLabels, u64> {
        &self.audit
    }

    /// Serialises the ledger.
    pub fn to_bytes(&self) -> Vec<u8> {
        let p = Persisted {
            version: VERSION,
            owners: self.owners.iter().map(|(k, v)| (*k, v.clone())).collect(),
            folded: self.folded.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            audit: self.audit.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        };
        serde_json::to_vec(&p).unwrap_or_default()
    }

    /// Reads what [`Ledger::to_bytes`] wrote.
    pub fn from_bytes(bytes: &[u8]) -> Result<Ledger, LedgerError> {
        let p: Persisted = serde_json::from_slice(bytes).map_err(LedgerError::Decode)?;
        if !(OLDEST_READABLE..=VERSION).contains(&p.version) {
            return Err(LedgerError::Version(p.version));
        }
        Ok(Ledger {
            owners: p.owners.into_iter().collect(),
            folded: p.folded.into_iter().collect(),
            audit: p.audit.into_iter().collect(),
        })
    }
}

/// Why a persisted ledger cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// Not the JSON this build writes.
    #[error("the counter ledger does not decode")]
    Decode(#[source] serde_json::Error),
    /// Written by a build with another format.
    #[error("unknown counter ledger version {0}")]
    Version(u32),
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    fn labels(policy: &str, rule: u32) -> RuleLabels {
        RuleLabels {
            namespace: "ns".into(),
            policy: policy.into(),
            direction: Direction::Ingress,
            tier: "network_policy".into(),
            rule: rule.to_string(),
            verdict: RuleVerdict::Allow,
        }
    }

    /// A fake kernel: packets per id (bytes = 100 * packets).
    struct Kernel(RefCell<BTreeMap<u32, u64>>);

    impl Kernel {
        fn new() -> Kernel {
            Kernel(RefCell::new(BTreeMap::new()))
        }
        fn hit(&self, id: u32, n: u64) {
            *self.0.borrow_mut().entry(id).or_default() += n;
        }
        fn read(&self) -> impl Fn(u32) -> Count + '_ {
            |id| {
                let p = self.0.borrow().get(&id).copied().unwrap_or(0);
                Count {
                    packets: p,
                    bytes: p * 100,
                }
            }
        }
    }

    fn packets(l: &Ledger, k: &Kernel, policy: &str, rule: u32) -> u64 {
        l.totals(k.read())
            .get(&labels(policy, rule))
            .map_or(0, |c| c.packets)
    }

    #[test]
    fn a_reused_id_credits_each_owner_only_its_own_packets() {
        let k = Kernel::new();
        let mut l = Ledger::default();
        let all = |_: &PolicyRef| true;
        l.reassign(&BTreeMap::from([(1, labels("a", 0))]), k.read(), all);
        k.hit(1, 5);
        assert_eq!(packets(&l, &k, "a", 0), 5);
        // Policy a goes away from the plan, b takes id 1 over.
        l.reassign(&BTreeMap::from([(1, labels("b", 0))]), k.read(), all);
        k.hit(1, 3);
        assert_eq!(packets(&l, &k, "a", 0), 5);
        assert_eq!(packets(&l, &k, "b", 0), 3);
        // Ids permuted (as after a restart): still no label moves backwards.
        l.reassign(
            &BTreeMap::from([(2, labels("b", 0)), (1, labels("a", 0))]),
            k.read(),
            all,
        );
        k.hit(2, 1);
        k.hit(1, 2);
        assert_eq!(packets(&l, &k, "a", 0), 7);
        assert_eq!(packets(&l, &k, "b", 0), 4);
        assert_eq!(
            l.totals(k.read())[&labels("b", 0)].bytes,
            400,
            "bytes follow packets"
        );
    }

    #[test]
    fn packets_counted_between_writing_a_plan_and_reassigning_are_kept() {
        let k = Kernel::new();
        let mut l = Ledger::default();
        let all = |_: &PolicyRef| true;
        l.reassign(&BTreeMap::from([(1, labels("a", 0))]), k.read(), all);
        k.hit(1, 2);
        // The next plan moves a to id 2: adopted before the write, so the
        // packets id 2 counts right after it are a's, while id 1's old entries
        // still count for a until the plan is written.
        let next = BTreeMap::from([(2, labels("a", 0))]);
        assert!(l.adopt(&next, k.read()));
        k.hit(2, 1);
        k.hit(1, 1);
        l.reassign(&next, k.read(), all);
        k.hit(2, 3);
        assert_eq!(packets(&l, &k, "a", 0), 7);
        assert!(!l.adopt(&next, k.read()), "nothing left to adopt");
    }

    #[test]
    fn several_ids_of_one_label_are_summed_and_deleted_policies_forgotten() {
        let k = Kernel::new();
        let mut l = Ledger::default();
        l.reassign(
            &BTreeMap::from([(1, labels("a", 0)), (2, labels("a", 0))]),
            k.read(),
            |_| true,
        );
        k.hit(1, 2);
        k.hit(2, 3);
        assert_eq!(packets(&l, &k, "a", 0), 5);
        l.audit(
            AuditLabels::isolation(
                PolicyRef {
                    namespace: "ns".into(),
                    name: "a".into(),
                },
                Direction::Ingress,
            ),
            4,
        );
        assert!(l.reassign(&BTreeMap::new(), k.read(), |p| p.name != "a"));
        assert!(l.totals(k.read()).is_empty());
        assert!(l.audited().is_empty());
    }

    #[test]
    fn a_persisted_ledger_picks_up_what_the_kernel_counted_meanwhile() {
        let k = Kernel::new();
        let mut l = Ledger::default();
        l.reassign(&BTreeMap::from([(7, labels("a", 1))]), k.read(), |_| true);
        k.hit(7, 10);
        l.reassign(&BTreeMap::from([(7, labels("b", 0))]), k.read(), |_| true);
        let bytes = l.to_bytes();
        k.hit(7, 4); // counted while no agent runs: still b's
        let mut back = Ledger::from_bytes(&bytes).expect("parses");
        assert_eq!(back, l);
        assert_eq!(packets(&back, &k, "a", 1), 10);
        assert_eq!(packets(&back, &k, "b", 0), 4);
        // The new agent numbers rules differently.
        back.reassign(
            &BTreeMap::from([(1, labels("a", 1)), (2, labels("b", 0))]),
            k.read(),
            |_| true,
        );
        assert_eq!(packets(&back, &k, "a", 1), 10);
        assert_eq!(packets(&back, &k, "b", 0), 4);
        assert!(Ledger::from_bytes(b"{\"version\":99}").is_err());
    }

    #[test]
    fn a_version_1_ledger_reads_back_as_network_policy_allow_labels() {
        // What the agent wrote before ClusterNetworkPolicy: rule indexes, no
        // tier, no verdict, audit labels without a rule.
        let v1 = br#"{"version":1,
            "owners":[[7,{"labels":{"namespace":"ns","policy":"b","direction":"ingress","rule":0},
                          "base":{"packets":10,"bytes":1000}}]],
            "folded":[[{"namespace":"ns","policy":"a","direction":"ingress","rule":1},
                       {"packets":10,"bytes":1000}]],
            "audit":[[{"namespace":"ns","policy":"a","direction":"ingress"},3]]}"#;
        let l = Ledger::from_bytes(v1).expect("a version 1 ledger reads");
        let k = Kernel::new();
        k.hit(7, 14);
        assert_eq!(packets(&l, &k, "a", 1), 10);
        assert_eq!(packets(&l, &k, "b", 0), 4, "the owner keeps its base");
        let audit = AuditLabels::isolation(
            PolicyRef {
                namespace: "ns".into(),
                name: "a".into(),
            },
            Direction::Ingress,
        );
        assert_eq!(l.audited().get(&audit), Some(&3));
        // Rewritten as the current version, it reads back the same.
        let again = Ledger::from_bytes(&l.to_bytes()).expect("reads");
        assert_eq!(again, l);
        assert!(String::from_utf8_lossy(&l.to_bytes()).contains("\"version\":2"));
    }

    #[test]
    fn cluster_rules_are_labelled_by_tier_name_and_action() {
        use crate::policy::plan::ClusterRuleOrigin;
        use crate::state::cnp::Tier;
        let origin = |action, name: Option<&str>| RuleOrigin {
            policy: PolicyRef {
                namespace: String::new(),
                name: "guard".into(),
            },
            direction: Direction::Egress,
            index: 2,
            cluster: Some(ClusterRuleOrigin {
                tier: Tier::Baseline,
                action,
                name: name.map(Into::into),
            }),
        };
        let deny = RuleLabels::of(&origin(Action::Deny, Some("no-db")));
        assert_eq!(
            (deny.tier.as_str(), deny.rule.as_str(), deny.verdict),
            ("baseline", "no-db", RuleVerdict::Deny)
        );
        assert!(deny.namespace.is_empty());
        let accept = RuleLabels::of(&origin(Action::Accept, None));
        assert_eq!(
            (accept.rule.as_str(), accept.verdict),
            ("2", RuleVerdict::Allow)
        );
        let np = RuleLabels::of(&RuleOrigin::network_policy(
            PolicyRef {
                namespace: "ns".into(),
                name: "a".into(),
            },
            Direction::Ingress,
            1,
        ));
        assert_eq!(np, labels("a", 1));
        // An Accept rule edited into a Deny is a new series, not a reset of the old.
        let k = Kernel::new();
        let mut l = Ledger::default();
        l.reassign(&BTreeMap::from([(1, accept.clone())]), k.read(), |_| true);
        k.hit(1, 3);
        let denied = RuleLabels {
            verdict: RuleVerdict::Deny,
            ..accept.clone()
        };
        l.reassign(&BTreeMap::from([(1, denied.clone())]), k.read(), |_| true);
        k.hit(1, 2);
        let totals = l.totals(k.read());
        assert_eq!(totals[&accept].packets, 3);
        assert_eq!(totals[&denied].packets, 2);
    }
}
