//! The human output of `palisade explain`.

use std::fmt;

use super::{ClusterRuleRef, DecidedBy, DirectionReport, Explanation};
use crate::policy::lookup::Reason;
use crate::policy::plan::RuleOrigin;

impl fmt::Display for ClusterRuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} policy {} (priority {}) rule {}: {:?}",
            self.tier, self.policy, self.priority, self.rule, self.action
        )
    }
}

/// A rule as a datapath entry credits it.
fn origin(o: &RuleOrigin) -> String {
    match &o.cluster {
        Some(c) => format!(
            "{} policy {} rule {}: {:?}",
            o.tier_label(),
            o.policy.name,
            o.rule_label(),
            c.action
        ),
        None => format!("{} {} rule #{}", o.policy, o.direction.as_label(), o.index),
    }
}

impl fmt::Display for DirectionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.allowed { "ALLOWED" } else { "DENIED" };
        let dir = self.direction.as_label();
        writeln!(f, "  {dir} of {}: {verdict}", self.pod)?;
        for p in &self.tiers.passed {
            writeln!(
                f,
                "    passed by {p} (skips the rest of the {} tier)",
                p.tier
            )?;
        }
        match &self.tiers.decided_by {
            DecidedBy::ClusterRule(r) => writeln!(f, "    decided by {r}")?,
            DecidedBy::NetworkPolicy => writeln!(f, "    decided by NetworkPolicy")?,
            DecidedBy::Default => writeln!(
                f,
                "    decided by no tier: allowed by default (no ClusterNetworkPolicy rule matched, no NetworkPolicy isolates)"
            )?,
            DecidedBy::Exempt => writeln!(
                f,
                "    not subject to policy (the pod's own address, or its node)"
            )?,
        }
        if let Some(o) = &self.datapath_rule {
            writeln!(f, "    datapath entry: {}", origin(o))?;
        }
        match self.reason {
            Reason::SelfTraffic => writeln!(f, "    a pod may always reach itself")?,
            Reason::Host => writeln!(f, "    traffic with the local node is always allowed")?,
            _ => {}
        }
        if self.isolated {
            let names: Vec<String> = self
                .isolating_policies
                .iter()
                .map(ToString::to_string)
                .collect();
            writeln!(f, "    NetworkPolicy: isolated by {}", names.join(", "))?;
        } else {
            writeln!(f, "    NetworkPolicy: none isolates {} for {dir}", self.pod)?;
        }
        writeln!(
            f,
            "    remote identity {}: {}",
            self.remote_identity.0, self.remote_identity_description
        )?;
        for r in &self.allowing_rules {
            writeln!(
                f,
                "    allowed by {} {} rule #{}",
                r.policy,
                r.direction.as_label(),
                r.index
            )?;
        }
        for r in &self.rejections {
            writeln!(f, "    rejected: {r}")?;
        }
        if !self.hint.is_empty() {
            writeln!(f, "    why: {}", self.hint)?;
        }
        if !self.consistent {
            writeln!(
                f,
                "    WARNING: the compiled plan says {verdict}, the tiered reading says {} (a Palisade bug)",
                if self.tiers.allowed {
                    "ALLOWED"
                } else {
                    "DENIED"
                }
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.allowed() { "ALLOWED" } else { "DENIED" };
        writeln!(
            f,
            "{} ({}) -> {} ({}) protocol {} port {}: {verdict}",
            self.from, self.src, self.to, self.dst, self.protocol, self.port
        )?;
        write!(f, "{}{}", self.egress, self.ingress)
    }
}
