//! The agent's state as the HTTP server and `palisade status` see it.

use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::datapath::view::MapPressure;
use crate::state::Rejection;
use crate::state::cnp::{ClusterNetworkPolicy, Tier, Unsupported};

/// One local endpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EndpointStatus {
    /// `namespace/name`.
    pub pod: String,
    /// Host-side interface, when found.
    pub interface: Option<String>,
    /// Whether the programs are attached and its entry written.
    pub enforced: bool,
    /// Why not, when not.
    pub reason: Option<String>,
    /// Ingress isolated.
    pub ingress_isolated: bool,
    /// Egress isolated.
    pub egress_isolated: bool,
    /// Audit mode.
    pub audit: bool,
    /// Policies selecting the pod.
    pub policies: Vec<String>,
}

/// One ClusterNetworkPolicy as the agent read it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterPolicyStatus {
    /// Its name.
    pub name: String,
    /// `Admin` or `Baseline`.
    pub tier: String,
    /// 0-1000, lower first within the tier.
    pub priority: u16,
    /// Ingress rules that can match something.
    pub ingress_rules: usize,
    /// Egress rules that can match something.
    pub egress_rules: usize,
    /// Fields that failed validation: the policy fails closed there (see
    /// `state::cnp`).
    pub rejections: Vec<Rejection>,
    /// Parts Palisade reads but does not support (`domainNames` peers):
    /// they match nothing.
    pub unsupported: Vec<UnsupportedStatus>,
}

/// An unsupported part of a ClusterNetworkPolicy: its rejection, and which
/// part it is. The JSON is a [`Rejection`]'s with `part` added, so a CLI
/// that knows only rejections still reads it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnsupportedStatus {
    /// Object, field and reason.
    #[serde(flatten)]
    pub rejection: Rejection,
    /// Which part (absent from an agent built before it was reported).
    #[serde(default)]
    pub part: Option<Unsupported>,
}

impl ClusterPolicyStatus {
    /// The status of a parsed policy.
    pub fn of(policy: &ClusterNetworkPolicy) -> ClusterPolicyStatus {
        let mut rejections = Vec::new();
        let mut unsupported = Vec::new();
        for r in &policy.rejections {
            match policy.unsupported.iter().find(|u| u.field == r.field) {
                Some(u) => unsupported.push(UnsupportedStatus {
                    rejection: r.clone(),
                    part: Some(u.part),
                }),
                None => rejections.push(r.clone()),
            }
        }
        ClusterPolicyStatus {
            name: policy.name.clone(),
            tier: format!("{:?}", policy.tier),
            priority: policy.priority,
            ingress_rules: policy.ingress.len(),
            egress_rules: policy.egress.len(),
            rejections,
            unsupported,
        }
    }

    /// Whether it sits in `tier`.
    pub fn is_in(&self, tier: Tier) -> bool {
        self.tier == format!("{tier:?}")
    }
}

/// Everything the agent reports about itself.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Status {
    /// The node this agent enforces.
    pub node: String,
    /// How the programs attach to pod interfaces: `tcx` or `tc`.
    #[serde(default)]
    pub attach_mode: String,
    /// Ready: the initial sync is applied, every map write succeeded and
    /// every pod interface found carries the programs. Pods whose interface
    /// is not found do not count (they show in `endpoints`), so one cannot
    /// block a rollout.
    pub ready: bool,
    /// Why not ready.
    pub not_ready_reason: Option<String>,
    /// Whether the source is up to date.
    pub source_up: bool,
    /// Last source problem.
    pub source_detail: Option<String>,
    /// When the kernel last received a plan.
    pub last_applied: Option<SystemTime>,
    /// Policy revision in the kernel.
    pub revision: u32,
    /// Local endpoints.
    pub endpoints: Vec<EndpointStatus>,
    /// Number of policies known.
    pub policies: usize,
    /// ClusterNetworkPolicies known, in precedence order (tier, priority, name).
    #[serde(default)]
    pub cluster_policies: Vec<ClusterPolicyStatus>,
    /// Number of identities in the plan.
    pub identities: usize,
    /// Policies (or parts) rejected by validation.
    pub rejections: Vec<Rejection>,
    /// Recent errors (newest last, bounded).
    pub errors: Vec<String>,
    /// When the newest error happened.
    #[serde(default)]
    pub last_error_at: Option<SystemTime>,
    /// Errors since the agent started, by label (`palisade_errors_total`).
    #[serde(default)]
    pub errors_total: std::collections::BTreeMap<String, u64>,
    /// Every watched kind has delivered its initial list.
    #[serde(default)]
    pub source_synced: bool,
    /// Kinds whose initial list has not arrived yet.
    #[serde(default)]
    pub waiting_for: Vec<String>,
    /// When the source last sent an event.
    #[serde(default)]
    pub last_source_event: Option<SystemTime>,
    /// Arrival of the oldest source event not yet in the kernel (`None` when
    /// everything received is programmed).
    #[serde(default)]
    pub pending_since: Option<SystemTime>,
    /// Seconds the kernel lags behind the source (from `pending_since`),
    /// filled in when served.
    #[serde(default)]
    pub source_lag_seconds: f64,
    /// Entries and capacity per map, filled in when served.
    #[serde(default)]
    pub maps: Vec<MapPressure>,
    /// Since when the source has been failing (`None` while it is up).
    #[serde(default)]
    pub source_down_since: Option<SystemTime>,
    /// Interfaces a previous agent enforced that no pod resolves to yet: their
    /// programs stay attached and drop everything until one does.
    #[serde(default)]
    pub held_closed: Vec<String>,
}

/// How long the source may fail before `/readyz` reports the agent not ready
/// (it keeps enforcing the last state throughout).
pub const SOURCE_STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

impl Status {
    /// Why the agent is not ready, if it is not: not synced yet, or its
    /// source has been failing for longer than [`SOURCE_STALE_AFTER`].
    pub fn unready_reason(&self, now: SystemTime) -> Option<String> {
        if !self.ready {
            return Some(
                self.not_ready_reason
                    .clone()
                    .unwrap_or_else(|| "starting".into()),
            );
        }
        let down = self.source_down_since?;
        let for_how_long = now.duration_since(down).unwrap_or_default();
        (for_how_long > SOURCE_STALE_AFTER).then(|| {
            format!(
                "source failing for {}s ({}); the last good state stays enforced",
                for_how_long.as_secs(),
                self.source_detail.as_deref().unwrap_or("no detail")
            )
        })
    }

    /// Records an error, keeping the last few, and counts it by `label`
    /// (what kind of error it is: a metric label, so a short fixed word).
    pub fn error(&mut self, label: &'static str, message: String) {
        const KEEP: usize = 20;
        *self.errors_total.entry(label.to_string()).or_default() += 1;
        self.errors.push(message);
        self.last_error_at = Some(SystemTime::now());
        if self.errors.len() > KEEP {
            let excess = self.errors.len() - KEEP;
            self.errors.drain(..excess);
        }
    }
}

impl Status {
    /// Seconds from `pending_since` to `now` (0 when nothing is pending).
    pub fn lag_seconds(&self, now: SystemTime) -> f64 {
        self.pending_since
            .and_then(|t| now.duration_since(t).ok())
            .map_or(0.0, |d| d.as_secs_f64())
    }
}

/// Status shared between the reconcile loop and the HTTP server.
pub type SharedStatus = Arc<RwLock<Status>>;

#[cfg(test)]
mod readiness_tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    #[test]
    fn ready_until_the_source_has_failed_longer_than_the_threshold() {
        let now = SystemTime::now();
        let mut s = Status {
            ready: true,
            ..Status::default()
        };
        assert_eq!(s.unready_reason(now), None);
        s.source_down_since = Some(now - Duration::from_secs(5));
        assert_eq!(
            s.unready_reason(now),
            None,
            "a short outage keeps the agent ready"
        );
        s.source_down_since = Some(now - SOURCE_STALE_AFTER - Duration::from_secs(1));
        let why = s.unready_reason(now).expect("stale source");
        assert!(why.contains("last good state stays enforced"), "{why}");
    }

    #[test]
    fn not_ready_before_the_first_sync() {
        let s = Status {
            not_ready_reason: Some("waiting for the source's initial state".into()),
            ..Status::default()
        };
        assert!(
            s.unready_reason(SystemTime::now())
                .expect("not ready")
                .contains("initial state")
        );
    }
}

#[cfg(test)]
mod cluster_policy_tests {
    use serde_json::json;

    use super::*;
    use crate::source::fixtures::cluster_network_policy_object;

    #[test]
    fn a_cluster_policy_lists_its_rejections_and_unsupported_parts_apart() {
        let object = cluster_network_policy_object(
            "egress-guard",
            json!({
                "tier": "Baseline",
                "priority": 30,
                "subject": {"namespaces": {}},
                "egress": [
                    {"action": "Accept", "to": [{"domainNames": ["example.com"]}]},
                    {"action": "Deny", "to": [{"networks": ["10.0.0.0/33"]}]},
                    {"action": "Deny", "to": [{"networks": ["10.9.0.0/16"]}]},
                ],
            }),
        );
        let policy = ClusterNetworkPolicy::from_k8s(&object).expect("parses");
        let s = ClusterPolicyStatus::of(&policy);
        assert_eq!((s.tier.as_str(), s.priority), ("Baseline", 30));
        assert!(s.is_in(Tier::Baseline) && !s.is_in(Tier::Admin));
        assert_eq!(s.unsupported.len(), 1, "{:?}", s.unsupported);
        assert_eq!(
            s.unsupported[0].rejection.field,
            "spec.egress[0].to[0].domainNames"
        );
        assert_eq!(s.unsupported[0].part, Some(Unsupported::DomainNames));
        assert_eq!(s.rejections.len(), 1, "{:?}", s.rejections);
        assert!(
            s.rejections[0].field.contains("networks"),
            "{:?}",
            s.rejections
        );
        assert_eq!(s.ingress_rules, 0);
        // The parser's marker decides, not the field's name: a rejection the
        // parser did not mark stays a rejection.
        let mut marked_by_name_only = policy.clone();
        marked_by_name_only.rejections.push(Rejection {
            object: "ClusterNetworkPolicy egress-guard".into(),
            field: "spec.egress[7].to[0].domainNames".into(),
            reason: "some validation failure".into(),
        });
        let s2 = ClusterPolicyStatus::of(&marked_by_name_only);
        assert_eq!((s2.rejections.len(), s2.unsupported.len()), (2, 1));
        assert!(
            s.egress_rules >= 2,
            "the Deny rules stay: {}",
            s.egress_rules
        );
    }

    #[test]
    fn status_json_stays_readable_across_versions() {
        let object = cluster_network_policy_object(
            "docs",
            json!({
                "tier": "Admin",
                "priority": 3,
                "subject": {"namespaces": {}},
                "egress": [{"action": "Accept", "to": [{"domainNames": ["docs.example.com"]}]}],
            }),
        );
        let status =
            ClusterPolicyStatus::of(&ClusterNetworkPolicy::from_k8s(&object).expect("parses"));
        let encoded = serde_json::to_value(&status).expect("encodes");
        assert_eq!(encoded["unsupported"][0]["part"], "domain_names");
        // An older CLI reads the unsupported parts as plain rejections.
        let old: Vec<Rejection> =
            serde_json::from_value(encoded["unsupported"].clone()).expect("as rejections");
        assert_eq!(old, [status.unsupported[0].rejection.clone()]);
        // This CLI reads an older agent's, which has no `part`.
        let mut older = encoded.clone();
        older["unsupported"][0]
            .as_object_mut()
            .expect("object")
            .remove("part");
        let read: ClusterPolicyStatus = serde_json::from_value(older).expect("decodes");
        assert_eq!(read.unsupported[0].part, None);
        assert_eq!(
            read.unsupported[0].rejection,
            status.unsupported[0].rejection
        );
        assert_eq!(
            serde_json::from_value::<ClusterPolicyStatus>(encoded).expect("round trip"),
            status
        );
    }
}
