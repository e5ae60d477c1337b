//! What the loop tells the status (`/status`, `/readyz`, `palisade status`).

use std::collections::BTreeMap;
use std::time::SystemTime;

use crate::observe::{ClusterPolicyStatus, EndpointStatus, SharedStatus};
use crate::policy::plan::DatapathPlan;
use crate::state::PodRef;

use super::interfaces::PodInterface;

/// The outcome of one reconcile, as the status shows it.
pub struct Outcome<'a> {
    /// The node.
    pub node: &'a str,
    /// The plan now in the kernel.
    pub plan: &'a DatapathPlan,
    /// Pods whose interface carries the programs.
    pub attached: &'a BTreeMap<PodRef, PodInterface>,
    /// Why each unenforced pod is not enforced.
    pub reasons: &'a BTreeMap<PodRef, String>,
    /// Interfaces kept closed for a previous agent (names).
    pub held_closed: Vec<String>,
    /// NetworkPolicies known.
    pub policies: usize,
    /// ClusterNetworkPolicies known, in precedence order.
    pub cluster_policies: Vec<ClusterPolicyStatus>,
    /// The policy revision written.
    pub revision: u32,
    /// Why the agent is not ready, when it is not.
    pub unready: Option<String>,
}

/// Writes the loop's view into the shared status. A poisoned lock (a panic
/// elsewhere while writing) leaves the status as it was.
#[derive(Clone)]
pub struct Board {
    status: SharedStatus,
}

impl Board {
    pub fn new(status: SharedStatus) -> Board {
        Board { status }
    }

    fn with(&self, change: impl FnOnce(&mut crate::observe::Status)) {
        if let Ok(mut s) = self.status.write() {
            change(&mut s);
        }
    }

    pub fn not_ready(&self, reason: &str) {
        self.with(|s| {
            s.ready = false;
            s.not_ready_reason = Some(reason.to_string());
        });
    }

    /// A source event arrived (sync lag in status).
    pub fn event_arrived(&self) {
        self.with(|s| {
            let now = SystemTime::now();
            s.last_source_event = Some(now);
            s.pending_since.get_or_insert(now);
        });
    }

    /// The kinds that still lack their initial list.
    pub fn waiting_for(&self, kinds: Vec<String>) {
        self.with(|s| {
            s.source_synced = kinds.is_empty();
            s.waiting_for = kinds;
        });
    }

    /// Nothing is pending: the kernel already has the state.
    pub fn caught_up(&self) {
        self.with(|s| s.pending_since = None);
    }

    /// The source's health changed.
    pub fn source_health(&self, up: bool, detail: &str) {
        if up {
            tracing::info!(%detail, "source is up to date");
        } else {
            tracing::warn!(%detail, "source problem; the last good state stays enforced");
        }
        self.with(|s| {
            s.source_up = up;
            if up {
                s.source_down_since = None;
            } else if s.source_down_since.is_none() {
                s.source_down_since = Some(SystemTime::now());
            }
            s.source_detail = (!detail.is_empty()).then(|| detail.to_string());
            if !up {
                s.error("source", detail.to_string());
            }
        });
    }

    /// An error to list in the status and count by `label`.
    pub fn error(&self, label: &'static str, message: String) {
        self.with(|s| s.error(label, message));
    }

    /// The outcome of a reconcile.
    pub fn reconciled(&self, outcome: Outcome<'_>) {
        self.with(|s| {
            s.node = outcome.node.to_string();
            s.endpoints = outcome
                .plan
                .endpoints
                .iter()
                .map(|(pod, ep)| EndpointStatus {
                    pod: pod.to_string(),
                    interface: outcome.attached.get(pod).map(|i| i.name.clone()),
                    enforced: outcome.attached.contains_key(pod),
                    reason: outcome.reasons.get(pod).cloned(),
                    ingress_isolated: ep.ingress_isolated,
                    egress_isolated: ep.egress_isolated,
                    audit: ep.audit,
                    policies: ep.policies.iter().map(ToString::to_string).collect(),
                })
                .collect();
            s.held_closed = outcome.held_closed;
            s.policies = outcome.policies;
            s.cluster_policies = outcome.cluster_policies;
            s.identities = outcome.plan.identities.len();
            s.rejections = outcome.plan.rejections.clone();
            s.revision = outcome.revision;
            s.last_applied = Some(SystemTime::now());
            s.pending_since = None;
            s.ready = outcome.unready.is_none();
            s.not_ready_reason = outcome.unready;
        });
    }
}
