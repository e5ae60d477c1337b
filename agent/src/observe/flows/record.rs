//! One denied (or audited) flow, as `/flows` serves it.

use palisade_common::verdict::Direction;
use serde::{Deserialize, Serialize};

/// What happened to the flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Dropped.
    Drop,
    /// Would have been dropped; passed because the namespace is in audit mode.
    Audit,
}

impl Verdict {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Drop => "drop",
            Verdict::Audit => "audit",
        }
    }
}

/// What denied a flow (or would have, under audit), read from the plan in
/// force when the agent reported it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum DeniedBy {
    /// A rule's deny entry: a ClusterNetworkPolicy `Deny` rule.
    Rule {
        /// `admin`, `network_policy` or `baseline`.
        tier: String,
        /// The policy's namespace (empty for a ClusterNetworkPolicy).
        namespace: String,
        /// The policy's name.
        policy: String,
        /// The rule's `name`, else its index.
        rule: String,
    },
    /// The endpoint is isolated in this direction and no rule allowed the
    /// flow (the policies isolating it are in [`FlowRecord::policies`]).
    Isolation,
}

impl DeniedBy {
    /// For people: `admin policy block-db rule no-db`, or the isolation.
    pub fn text(&self) -> String {
        match self {
            DeniedBy::Rule {
                tier,
                namespace,
                policy,
                rule,
            } if namespace.is_empty() => format!("{tier} policy {policy} rule {rule}"),
            DeniedBy::Rule {
                tier,
                namespace,
                policy,
                rule,
            } => format!("{tier} policy {namespace}/{policy} rule {rule}"),
            DeniedBy::Isolation => "isolation, no rule allowed".into(),
        }
    }
}

/// One denied (or audited) flow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowRecord {
    /// Position in the agent's flow log (increasing, for `since`).
    pub seq: u64,
    /// Wall-clock time, RFC 3339 UTC.
    pub time: String,
    /// Direction from the local endpoint's point of view.
    pub direction: Direction,
    /// `namespace/pod`, or the address when no pod has it.
    pub source: String,
    /// `namespace/pod`, or the address when no pod has it.
    pub destination: String,
    /// Source port (0 when the protocol has none).
    pub source_port: u16,
    /// Destination port (0 when the protocol has none).
    pub destination_port: u16,
    /// `TCP`, `UDP`, `SCTP`, `ICMP`, `ICMPv6` or the protocol number.
    pub protocol: String,
    /// Why it was (or would have been) dropped.
    pub reason: String,
    /// The local endpoint, `namespace/pod` (empty when unknown).
    pub endpoint: String,
    /// Policies isolating the endpoint in this direction.
    pub policies: Vec<String>,
    /// Which rule denied it, or isolation; `None` for drops that are no
    /// policy decision (malformed, spoofed, ...) or that the current plan no
    /// longer denies.
    #[serde(default)]
    pub denied_by: Option<DeniedBy>,
    /// `drop` or `audit`.
    pub verdict: Verdict,
}

impl FlowRecord {
    /// Whether the flow involves `namespace` (and `pod` in it, when given) as
    /// source, destination or the endpoint it was seen at.
    pub fn matches(&self, namespace: Option<&str>, pod: Option<&str>) -> bool {
        [&self.source, &self.destination, &self.endpoint]
            .iter()
            .any(|end| {
                let (ns, name) = end.split_once('/').unwrap_or(("", end.as_str()));
                namespace.is_none_or(|n| n == ns) && pod.is_none_or(|p| p == name)
            })
    }

    /// One line for people.
    pub fn text(&self) -> String {
        let port = |p: u16| {
            if p == 0 {
                String::new()
            } else {
                format!(":{p}")
            }
        };
        let by = self
            .denied_by
            .as_ref()
            .map(|b| format!(" by {}", b.text()))
            .unwrap_or_default();
        format!(
            "{} {:<5} {:<7} {}{} -> {}{} {} {}{by} [{}]",
            self.time,
            self.verdict.as_str().to_uppercase(),
            self.direction.as_label(),
            self.source,
            port(self.source_port),
            self.destination,
            port(self.destination_port),
            self.protocol,
            self.reason,
            self.policies.join(",")
        )
    }
}
