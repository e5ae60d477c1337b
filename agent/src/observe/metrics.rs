//! The Prometheus registry: one `Metrics` (prefix `palisade`) of the agent's
//! own gauges and histograms. Kernel counters are read at scrape time by the
//! [`super::counters::Counters`] collector registered with it.

use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::state::cnp::Unsupported;

/// `palisade_endpoints{state}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointState {
    /// `enforced`, `unenforced` or `audit`.
    pub state: &'static str,
}

/// `palisade_errors_total{error}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    /// What kind of error (`Status::errors_total`'s key).
    pub error: String,
}

/// `palisade_cluster_network_policies{tier}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TierLabel {
    /// `admin` or `baseline`.
    pub tier: &'static str,
}

/// `palisade_cluster_network_policy_unsupported_fields{part}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UnsupportedLabel {
    /// `domain_names`.
    pub part: &'static str,
}

/// Build information.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildInfo {
    version: &'static str,
}

/// `palisade_attach_mode{mode}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttachModeLabel {
    /// `tcx` or `tc`.
    pub mode: String,
}

/// The agent's metrics.
pub struct Metrics {
    registry: Registry,
    /// Source event to maps written.
    pub programming_seconds: Histogram,
    /// 1 when the source is up to date.
    pub source_up: Gauge,
    /// Local endpoints by state.
    pub endpoints: Family<EndpointState, Gauge>,
    /// NetworkPolicies known.
    pub policies: Gauge,
    /// ClusterNetworkPolicies known, by tier.
    pub cluster_policies: Family<TierLabel, Gauge>,
    /// Unsupported fields of the ClusterNetworkPolicies known, by part.
    pub unsupported: Family<UnsupportedLabel, Gauge>,
    /// Identities in the current plan.
    pub identities: Gauge,
    /// Validation failures in the current plan.
    pub rejections: Gauge,
    /// Seconds the kernel lags behind the source.
    pub source_lag_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// 1 for the attach mode in use.
    pub attach_mode: Family<AttachModeLabel, Gauge>,
    /// Errors since the agent started, by kind.
    pub errors: Family<ErrorLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every family.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("palisade");
        let programming_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "policy_programming_seconds",
            "Time from a source event to the kernel's maps being written",
            programming_seconds.clone(),
        );
        let source_up = Gauge::default();
        registry.register(
            "source_up",
            "1 when the source (API server or manifests) is up to date",
            source_up.clone(),
        );
        let endpoints = Family::<EndpointState, Gauge>::default();
        registry.register(
            "endpoints",
            "Local endpoints by state: enforced and unenforced partition them; audit counts those in audit-mode namespaces",
            endpoints.clone(),
        );
        let policies = Gauge::default();
        registry.register(
            "policies",
            "NetworkPolicies known to the agent",
            policies.clone(),
        );
        let cluster_policies = Family::<TierLabel, Gauge>::default();
        for tier in ["admin", "baseline"] {
            cluster_policies.get_or_create(&TierLabel { tier }).set(0);
        }
        registry.register(
            "cluster_network_policies",
            "ClusterNetworkPolicies known to the agent, by tier (their rejected and unsupported fields count in palisade_rejections)",
            cluster_policies.clone(),
        );
        let unsupported = Family::<UnsupportedLabel, Gauge>::default();
        for part in Unsupported::ALL {
            unsupported
                .get_or_create(&UnsupportedLabel {
                    part: part.as_label(),
                })
                .set(0);
        }
        registry.register(
            "cluster_network_policy_unsupported_fields",
            "Fields of ClusterNetworkPolicies that Palisade reads but does not enforce (they match nothing; the policy is partly unsupported), by part; listed in /status and `palisade status`, and counted in palisade_rejections too",
            unsupported.clone(),
        );
        let identities = Gauge::default();
        registry.register(
            "identities",
            "Remote identities in the current plan",
            identities.clone(),
        );
        let rejections = Gauge::default();
        registry.register(
            "rejections",
            "Object fields rejected by validation (listed in /status and `palisade status`): each is a part of a policy or pod not enforced as written",
            rejections.clone(),
        );
        let source_lag_seconds = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "source_lag_seconds",
            "Age of the oldest source event not yet programmed into the kernel (0 when in step)",
            source_lag_seconds.clone(),
        );
        let attach_mode = Family::<AttachModeLabel, Gauge>::default();
        registry.register(
            "attach_mode",
            "1 for how the programs attach to pod interfaces on this node: tcx links or tc (netlink clsact) filters",
            attach_mode.clone(),
        );
        let errors = Family::<ErrorLabel, Counter>::default();
        // Exported at 0 from the start, so an alert's rate() has a series.
        for error in ["source", "object_rejected", "map_full"] {
            errors
                .get_or_create(&ErrorLabel {
                    error: error.into(),
                })
                .inc_by(0);
        }
        registry.register(
            "errors",
            "Errors since the agent started, by kind: source (the API server or manifest directory failed), object_rejected (an object the state refused), map_full (a map write that failed closed), and the datapath's own (attach, tc_filter, map, ...); the latest are listed in /status",
            errors.clone(),
        );
        registry.register(
            "build",
            "Build information",
            Info::new(BuildInfo {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        Metrics {
            registry,
            programming_seconds,
            source_up,
            endpoints,
            policies,
            cluster_policies,
            unsupported,
            identities,
            rejections,
            source_lag_seconds,
            attach_mode,
            errors,
        }
    }

    /// Adds the kernel counters, read on every scrape.
    pub fn register_counters(&mut self, counters: Arc<super::counters::Counters>) {
        self.registry.register_collector(Box::new(counters));
    }

    /// Sets the gauges that mirror the status.
    pub fn update(&self, s: &super::Status) {
        self.source_up.set(i64::from(s.source_up));
        if !s.attach_mode.is_empty() {
            self.attach_mode
                .get_or_create(&AttachModeLabel {
                    mode: s.attach_mode.clone(),
                })
                .set(1);
        }
        let enforced = s.endpoints.iter().filter(|e| e.enforced).count() as i64;
        let audit = s.endpoints.iter().filter(|e| e.audit).count() as i64;
        for (state, n) in [
            ("enforced", enforced),
            ("unenforced", s.endpoints.len() as i64 - enforced),
            ("audit", audit),
        ] {
            self.endpoints
                .get_or_create(&EndpointState { state })
                .set(n);
        }
        self.policies.set(s.policies as i64);
        for (tier, label) in [
            (crate::state::cnp::Tier::Admin, "admin"),
            (crate::state::cnp::Tier::Baseline, "baseline"),
        ] {
            let n = s.cluster_policies.iter().filter(|p| p.is_in(tier)).count();
            self.cluster_policies
                .get_or_create(&TierLabel { tier: label })
                .set(n as i64);
        }
        for part in Unsupported::ALL {
            let n = s
                .cluster_policies
                .iter()
                .flat_map(|p| &p.unsupported)
                .filter(|u| u.part == Some(part))
                .count();
            self.unsupported
                .get_or_create(&UnsupportedLabel {
                    part: part.as_label(),
                })
                .set(n as i64);
        }
        self.identities.set(s.identities as i64);
        self.rejections.set(s.rejections.len() as i64);
        for (error, total) in &s.errors_total {
            let counter = self.errors.get_or_create(&ErrorLabel {
                error: error.clone(),
            });
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        self.source_lag_seconds
            .set(s.lag_seconds(std::time::SystemTime::now()));
    }

    /// The text exposition of every family.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Metrics shared with the HTTP server.
pub type SharedMetrics = Arc<Mutex<Metrics>>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Rejection;

    #[test]
    fn the_errors_counter_follows_the_status_totals_by_label() {
        let metrics = Metrics::new();
        let mut status = super::super::Status::default();
        status.error("map_full", "map full, failing closed: POLICY".into());
        status.error("map_full", "map full, failing closed: POLICY".into());
        status.error("attach", "prod/web: attaching".into());
        metrics.update(&status);
        // A second scrape of the same status counts nothing twice.
        metrics.update(&status);
        let text = metrics.render();
        assert!(
            text.contains(r#"palisade_errors_total{error="map_full"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"palisade_errors_total{error="attach"} 1"#),
            "{text}"
        );
        status.error("attach", "prod/web: attaching".into());
        metrics.update(&status);
        assert!(
            metrics
                .render()
                .contains(r#"palisade_errors_total{error="attach"} 2"#)
        );
    }

    #[test]
    fn the_rejections_gauge_counts_the_status_rejections() {
        let metrics = Metrics::new();
        let mut status = super::super::Status::default();
        let rejection = |field: &str| Rejection {
            object: "NetworkPolicy x/bad".into(),
            field: field.into(),
            reason: "invalid".into(),
        };
        status.rejections = vec![rejection("spec.ingress[0]"), rejection("spec.egress[1]")];
        metrics.update(&status);
        let text = metrics.render();
        assert!(text.contains("\npalisade_rejections 2\n"), "{text}");
        status.rejections.clear();
        metrics.update(&status);
        assert!(metrics.render().contains("\npalisade_rejections 0\n"));
    }

    #[test]
    fn the_cluster_policy_gauge_counts_the_status_policies_by_tier() {
        let metrics = Metrics::new();
        let text = metrics.render();
        assert!(
            text.contains(r#"palisade_cluster_network_policies{tier="admin"} 0"#),
            "exported at 0 from the start: {text}"
        );
        let policy = |name: &str, tier: &str| super::super::ClusterPolicyStatus {
            name: name.into(),
            tier: tier.into(),
            priority: 1,
            ingress_rules: 1,
            egress_rules: 0,
            rejections: Vec::new(),
            unsupported: Vec::new(),
        };
        let status = super::super::Status {
            cluster_policies: vec![
                policy("a", "Admin"),
                policy("b", "Admin"),
                policy("c", "Baseline"),
            ],
            ..Default::default()
        };
        metrics.update(&status);
        let text = metrics.render();
        assert!(
            text.contains(r#"palisade_cluster_network_policies{tier="admin"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"palisade_cluster_network_policies{tier="baseline"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn the_unsupported_gauge_counts_the_typed_unsupported_parts() {
        let metrics = Metrics::new();
        let gauge = r#"palisade_cluster_network_policy_unsupported_fields{part="domain_names"}"#;
        assert!(
            metrics.render().contains(&format!("{gauge} 0")),
            "exported at 0 from the start"
        );
        let part = |field: &str, part| super::super::UnsupportedStatus {
            rejection: Rejection {
                object: "ClusterNetworkPolicy egress".into(),
                field: field.into(),
                reason: "not supported".into(),
            },
            part,
        };
        let status = super::super::Status {
            cluster_policies: vec![super::super::ClusterPolicyStatus {
                name: "egress".into(),
                tier: "Baseline".into(),
                priority: 1,
                ingress_rules: 0,
                egress_rules: 2,
                rejections: Vec::new(),
                unsupported: vec![
                    part(
                        "spec.egress[0].to[0].domainNames",
                        Some(Unsupported::DomainNames),
                    ),
                    part(
                        "spec.egress[1].to[0].domainNames",
                        Some(Unsupported::DomainNames),
                    ),
                    // From an agent that did not type its parts: not guessed.
                    part("spec.egress[2].to[0].domainNames", None),
                ],
            }],
            ..Default::default()
        };
        metrics.update(&status);
        assert!(
            metrics.render().contains(&format!("{gauge} 2")),
            "{}",
            metrics.render()
        );
        metrics.update(&super::super::Status::default());
        assert!(metrics.render().contains(&format!("{gauge} 0")));
    }
}
