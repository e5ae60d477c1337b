//! Kernel counters as Prometheus families, read at scrape time through
//! handles on the pinned maps (a prometheus-client [`Collector`]).
//!
//! Exported (prefix `palisade_`):
//! - `policy_rule_hits_total` / `policy_rule_bytes_total`
//!   {namespace, policy, direction, tier, rule, verdict}: see [`HITS_HELP`];
//! - `drops_total` / `drop_bytes_total` {direction, reason}, `forwarded_total`
//!   {direction}, `audited_total` {direction, reason}: every packet the
//!   programs saw, per outcome (`STATS`);
//! - `flow_events_lost_total`, `conntrack_insert_failures_total`;
//! - `bpf_map_entries` / `bpf_map_capacity` {map}, `conntrack_entries`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use palisade_common::stats::StatIndex;
use palisade_common::verdict::{Direction, DropReason};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::flows::{DeniedBy, Directory, FlowRecord, Verdict};
use super::ledger::{AuditLabels, Count, Ledger, RuleLabels};
use crate::datapath::ledger_store::Store;
use crate::datapath::view::{KernelView, MapPressure};
use crate::policy::plan::DatapathPlan;
use crate::state::PolicyRef;

/// HELP of the rule families.
pub const HITS_HELP: &str = "Flows per policy rule. tier: admin or baseline (a \
ClusterNetworkPolicy, namespace empty) or network_policy; rule: the rule's name, else its index in \
spec.ingress/spec.egress. verdict=allow: connections (first packets) a NetworkPolicy rule or a \
ClusterNetworkPolicy Accept rule allowed, counted exactly in the kernel. verdict=deny: first packets \
a ClusterNetworkPolicy Deny rule matched, counted exactly in the kernel (in an audit-mode namespace \
such a packet passes, and its flow also counts in verdict=audit). verdict=audit: flows to or \
from an endpoint in an audit-mode namespace that policy would have dropped and that passed instead, \
counted from flow events (subject to the event rate limit, see palisade_flow_events_lost_total): \
once for the ClusterNetworkPolicy Deny rule that would have dropped the flow, else (rule=none) once \
for each NetworkPolicy isolating the endpoint in that direction. Never decreases across recompiles \
or agent restarts";
const BYTES_HELP: &str = "Bytes (L2 length) of the first packets counted in \
palisade_policy_rule_hits_total{verdict=\"allow\"} and {verdict=\"deny\"}; audited flows carry no \
length and are not counted here";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleSet {
    namespace: String,
    policy: String,
    direction: &'static str,
    tier: String,
    rule: String,
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionSet {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonSet {
    direction: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MapSet {
    map: String,
}

/// The counters: kernel handles plus the ledger that keeps rule counters
/// monotonic per label set.
#[derive(Debug)]
pub struct Counters {
    kernel: KernelView,
    ledger: Mutex<Ledger>,
    store: Mutex<Option<Store>>,
    dirty: AtomicBool,
}

impl Counters {
    /// Opens the pinned maps under `maps_dir` and the ledger pinned beside
    /// them (created when absent). A ledger that cannot be kept only costs
    /// continuity across restarts, so that is logged, not fatal.
    pub fn open(maps_dir: &Path) -> Result<Counters, crate::datapath::Error> {
        let kernel = KernelView::open(maps_dir)?;
        let (ledger, store) = match Store::open(maps_dir) {
            Ok(store) => {
                let ledger = match store.read() {
                    Some(bytes) => Ledger::from_bytes(&bytes).unwrap_or_else(|e| {
                        tracing::warn!(error = %crate::errors::chain(&e), "unreadable counter ledger; starting afresh");
                        Ledger::default()
                    }),
                    None => Ledger::default(),
                };
                (ledger, Some(store))
            }
            Err(e) => {
                tracing::warn!(error = %crate::errors::chain(&e), "no counter ledger: rule counters restart with the agent");
                (Ledger::default(), None)
            }
        };
        Ok(Counters {
            kernel,
            ledger: Mutex::new(ledger),
            store: Mutex::new(store),
            dirty: AtomicBool::new(false),
        })
    }

    /// Takes a plan about to be written: its rule ids start counting for
    /// their new owners before the first packet can hit them.
    pub fn before_plan(&self, plan: &DatapathPlan) {
        let origins = origins(plan);
        let changed = match self.ledger.lock() {
            Ok(mut l) => l.adopt(&origins, |id| self.kernel.rule(id).into()),
            Err(_) => false,
        };
        if changed {
            self.dirty.store(true, Ordering::Release);
        }
    }

    /// Takes a newly programmed plan: ids it no longer uses give up their
    /// owners. Persists at once.
    pub fn on_plan(&self, plan: &DatapathPlan, live: impl Fn(&PolicyRef) -> bool) {
        let origins = origins(plan);
        let changed = match self.ledger.lock() {
            Ok(mut l) => l.reassign(&origins, |id| self.kernel.rule(id).into(), live),
            Err(_) => false,
        };
        if changed {
            self.dirty.store(true, Ordering::Release);
            self.persist();
        }
    }

    /// Counts the audited flows of a batch (see `audit_labels`).
    pub fn on_flows(&self, batch: &[FlowRecord]) {
        let Ok(mut l) = self.ledger.lock() else {
            return;
        };
        let mut any = false;
        for labels in batch.iter().flat_map(audit_labels) {
            l.audit(labels, 1);
            any = true;
        }
        if any {
            self.dirty.store(true, Ordering::Release);
        }
    }

    /// Writes the ledger if it changed since the last write.
    pub fn persist(&self) {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return;
        }
        let bytes = match self.ledger.lock() {
            Ok(l) => l.to_bytes(),
            Err(_) => return,
        };
        if let Ok(mut store) = self.store.lock()
            && let Some(store) = store.as_mut()
            && let Err(e) = store.write(&bytes)
        {
            tracing::warn!(error = %crate::errors::chain(&e), "cannot persist the counter ledger");
        }
    }

    /// Entries and capacity per map.
    pub fn pressure(&self) -> Vec<MapPressure> {
        self.kernel.pressure()
    }

    /// The value of every rule label set now (allow and deny verdicts).
    pub fn rule_totals(&self) -> BTreeMap<RuleLabels, Count> {
        match self.ledger.lock() {
            Ok(l) => l.totals(|id| self.kernel.rule(id).into()),
            Err(_) => BTreeMap::new(),
        }
    }

    fn sum(&self, stat: impl Fn(Direction) -> StatIndex) -> Count {
        Direction::ALL
            .iter()
            .map(|d| self.kernel.stat(stat(*d), *d))
            .fold(Count::default(), |a, c| Count {
                packets: a.packets.wrapping_add(c.packets),
                bytes: a.bytes.wrapping_add(c.bytes),
            })
    }
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (impl EncodeLabelSet, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in series {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (impl EncodeLabelSet, i64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in series {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NoLabels {}

impl Collector for Counters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Whatever a scrape shows is persisted first, so no later agent shows less.
        self.persist();
        let totals = self.rule_totals();
        let audited: Vec<(AuditLabels, u64)> = match self.ledger.lock() {
            Ok(l) => l.audited().iter().map(|(k, v)| (k.clone(), *v)).collect(),
            Err(_) => Vec::new(),
        };
        let kernel = totals.iter().map(|(l, c)| {
            let set = RuleSet {
                namespace: l.namespace.clone(),
                policy: l.policy.clone(),
                direction: l.direction.as_label(),
                tier: l.tier.clone(),
                rule: l.rule.clone(),
                verdict: l.verdict.as_label(),
            };
            (set, c)
        });
        let audit = audited.iter().map(|(l, n)| {
            let set = RuleSet {
                namespace: l.namespace.clone(),
                policy: l.policy.clone(),
                direction: l.direction.as_label(),
                tier: l.tier.clone(),
                rule: l.rule.clone().unwrap_or_else(|| "none".into()),
                verdict: "audit",
            };
            (set, *n)
        });
        counter(
            &mut encoder,
            "policy_rule_hits",
            HITS_HELP,
            kernel.clone().map(|(s, c)| (s, c.packets)).chain(audit),
        )?;
        counter(
            &mut encoder,
            "policy_rule_bytes",
            BYTES_HELP,
            kernel.map(|(s, c)| (s, c.bytes)),
        )?;

        let per_reason = |audit: bool| {
            Direction::ALL.iter().flat_map(move |d| {
                DropReason::ALL.iter().map(move |r| {
                    let idx = if audit {
                        StatIndex::Audited(*r)
                    } else {
                        StatIndex::Dropped(*r)
                    };
                    (
                        ReasonSet {
                            direction: d.as_label(),
                            reason: r.as_label(),
                        },
                        self.kernel.stat(idx, *d),
                    )
                })
            })
        };
        counter(
            &mut encoder,
            "drops",
            "Packets dropped, by direction (from the pod's view) and reason",
            per_reason(false).map(|(s, c)| (s, c.packets)),
        )?;
        counter(
            &mut encoder,
            "drop_bytes",
            "Bytes (L2 length) of the packets in palisade_drops_total",
            per_reason(false).map(|(s, c)| (s, c.bytes)),
        )?;
        counter(
            &mut encoder,
            "audited",
            "Packets of audit-mode endpoints that would have been dropped for the reason and \
             passed instead (every packet; flows are in palisade_policy_rule_hits_total{verdict=\"audit\"})",
            per_reason(true).map(|(s, c)| (s, c.packets)),
        )?;
        let per_direction = |stat: StatIndex| {
            Direction::ALL.iter().map(move |d| {
                (
                    DirectionSet {
                        direction: d.as_label(),
                    },
                    self.kernel.stat(stat, *d).packets,
                )
            })
        };
        counter(
            &mut encoder,
            "forwarded",
            "Packets the programs let pass (allowed, established, unisolated and audited), by direction",
            per_direction(StatIndex::Forwarded),
        )?;
        counter(
            &mut encoder,
            "conntrack_insert_failures",
            "Allowed connections whose conntrack entry could not be created, by direction",
            per_direction(StatIndex::CtInsertFailed),
        )?;
        counter(
            &mut encoder,
            "flow_events_lost",
            "Denied or audited flows not reported as events (kernel rate limit or full ring buffer)",
            [(NoLabels {}, self.sum(|_| StatIndex::EventsLost).packets)],
        )?;

        let pressure = self.kernel.pressure();
        gauge(
            &mut encoder,
            "bpf_map_entries",
            "Entries in each capacity-bound BPF map",
            pressure.iter().map(|p| {
                (
                    MapSet { map: p.map.clone() },
                    i64::try_from(p.entries).unwrap_or(i64::MAX),
                )
            }),
        )?;
        gauge(
            &mut encoder,
            "bpf_map_capacity",
            "Capacity (max_entries) of each capacity-bound BPF map; a full map fails closed",
            pressure.iter().map(|p| {
                (
                    MapSet { map: p.map.clone() },
                    i64::try_from(p.capacity).unwrap_or(i64::MAX),
                )
            }),
        )?;
        let ct: u64 = pressure
            .iter()
            .filter(|p| {
                p.map == palisade_common::maps::CONNTRACK_V4
                    || p.map == palisade_common::maps::CONNTRACK
            })
            .map(|p| p.entries)
            .sum();
        gauge(
            &mut encoder,
            "conntrack_entries",
            "Connections tracked in the kernel (IPv4 and IPv6)",
            [(NoLabels {}, i64::try_from(ct).unwrap_or(i64::MAX))],
        )?;
        Ok(())
    }
}

/// Rule id -> the labels its counters carry.
fn origins(plan: &DatapathPlan) -> BTreeMap<u32, RuleLabels> {
    plan.rule_origins
        .iter()
        .map(|(id, o)| (id.0, RuleLabels::of(o)))
        .collect()
}

/// What one flow record adds to `verdict=audit`: nothing unless audited; the
/// ClusterNetworkPolicy rule that would have denied it; else one count for
/// each NetworkPolicy isolating the endpoint (`rule=none`).
fn audit_labels(record: &FlowRecord) -> Vec<AuditLabels> {
    if record.verdict != Verdict::Audit {
        return Vec::new();
    }
    match &record.denied_by {
        Some(DeniedBy::Rule {
            tier,
            namespace,
            policy,
            rule,
        }) => vec![AuditLabels {
            namespace: namespace.clone(),
            policy: policy.clone(),
            direction: record.direction,
            tier: tier.clone(),
            rule: Some(rule.clone()),
        }],
        Some(DeniedBy::Isolation) | None => Directory::policies_of(record)
            .into_iter()
            .map(|p| AuditLabels::isolation(p, record.direction))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(verdict: Verdict, denied_by: Option<DeniedBy>) -> FlowRecord {
        FlowRecord {
            seq: 1,
            time: String::new(),
            direction: Direction::Ingress,
            source: "x/client".into(),
            destination: "ns/server".into(),
            source_port: 4000,
            destination_port: 53,
            protocol: "UDP".into(),
            reason: "policy_denied".into(),
            endpoint: "ns/server".into(),
            policies: vec!["ns/lockdown".into(), "ns/other".into()],
            denied_by,
            verdict,
        }
    }

    #[test]
    fn an_audited_flow_counts_for_the_cluster_rule_that_would_have_denied_it() {
        let by_rule = Some(DeniedBy::Rule {
            tier: "admin".into(),
            namespace: String::new(),
            policy: "block".into(),
            rule: "no-dns".into(),
        });
        assert_eq!(
            audit_labels(&record(Verdict::Audit, by_rule.clone())),
            vec![AuditLabels {
                namespace: String::new(),
                policy: "block".into(),
                direction: Direction::Ingress,
                tier: "admin".into(),
                rule: Some("no-dns".into()),
            }]
        );
        assert!(audit_labels(&record(Verdict::Drop, by_rule)).is_empty());
        // Isolation: each isolating NetworkPolicy, rule=none.
        let isolated = audit_labels(&record(Verdict::Audit, Some(DeniedBy::Isolation)));
        assert_eq!(
            isolated
                .iter()
                .map(|l| (l.policy.as_str(), l.tier.as_str(), l.rule.clone()))
                .collect::<Vec<_>>(),
            vec![
                ("lockdown", "network_policy", None),
                ("other", "network_policy", None)
            ]
        );
    }
}
