//! `explain`: why is a connection between two pods allowed or denied?
//!
//! Per direction (the client's egress, the server's ingress), three readings:
//! - the datapath's: a plan compiled from the whole cluster with both pods as
//!   local endpoints (the same [`Compiler`] path as the agent), evaluated with
//!   [`super::lookup`]. Its verdict is the one reported;
//! - the tiered one ([`super::tiers::verdict`]): Admin tier, NetworkPolicy,
//!   Baseline tier, default; it names the deciding rule and every `Pass` on
//!   the way;
//! - the NetworkPolicy part the tiered reading consults: a plan compiled
//!   from a copy of the cluster without its ClusterNetworkPolicies, evaluated
//!   the same way: which policies isolate the pod, which rules allow the flow,
//!   or why none does.
//!
//! The datapath's and the tiered verdicts must agree; a report says so when
//! they do not (a compiler bug).
//!
//! - `hint`: what a person can change to allow a denied flow.
//! - `text`: the human output.

mod hint;
#[cfg(test)]
mod tests;
mod text;

use std::net::IpAddr;

use palisade_common::ids::IdentityId;
use serde::Serialize;
use thiserror::Error;

use super::compile::Compiler;
use super::lookup::{Flow, Reason, Verdict, evaluate, l4_matches};
use super::plan::{DatapathPlan, RuleOrigin};
use super::tiers::{self, Decider, Traffic};
use crate::state::ClusterState;
use crate::state::cnp::{Action, ClusterNetworkPolicy, Rule, Tier};
use crate::state::model::{Pod, Protocol};
use crate::state::{Direction, PodRef, PolicyRef, Rejection};

/// Why a connection cannot be explained.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ExplainError {
    /// The pod does not exist (or has terminated).
    #[error("pod {0} not found")]
    PodNotFound(PodRef),
    /// The pod has no IP, or uses the host network: policy does not apply to it.
    #[error("pod {0} is not a policy endpoint (no IP yet, or hostNetwork)")]
    NotAnEndpoint(PodRef),
    /// The pods share no address family.
    #[error("pods {0} and {1} have no address family in common")]
    NoCommonFamily(PodRef, PodRef),
}

/// A ClusterNetworkPolicy rule, as explain names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClusterRuleRef {
    /// `admin` or `baseline`.
    pub tier: &'static str,
    /// The policy's name.
    pub policy: String,
    /// The policy's priority (lower first within its tier).
    pub priority: u16,
    /// The rule's `name`, else its index.
    pub rule: String,
    /// Its index in `spec.ingress` / `spec.egress`.
    pub index: usize,
    /// `Accept`, `Deny` or `Pass`.
    pub action: Action,
}

impl ClusterRuleRef {
    fn of(policy: &ClusterNetworkPolicy, rule: &Rule) -> ClusterRuleRef {
        ClusterRuleRef {
            tier: match policy.tier {
                Tier::Admin => "admin",
                Tier::Baseline => "baseline",
            },
            policy: policy.name.clone(),
            priority: policy.priority,
            rule: rule.label(),
            index: rule.index,
            action: rule.action,
        }
    }
}

/// Who decided a direction in the tiered reading.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum DecidedBy {
    /// A ClusterNetworkPolicy `Accept` or `Deny` rule.
    ClusterRule(ClusterRuleRef),
    /// The NetworkPolicies isolating the pod (see the report's NetworkPolicy part).
    NetworkPolicy,
    /// No tier decided: allowed by default.
    Default,
    /// Not subject to policy: the pod's own address, or its node's traffic to it.
    Exempt,
}

/// The tiered reading of one direction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TierWalk {
    /// Whether the tiers allow the direction.
    pub allowed: bool,
    /// Who decided.
    pub decided_by: DecidedBy,
    /// The `Pass` rules that skipped the rest of their tier, in order.
    pub passed: Vec<ClusterRuleRef>,
}

/// The verdict of one side of the connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DirectionReport {
    /// The pod whose policy decides this side.
    pub pod: PodRef,
    /// Egress (of the client) or ingress (of the server).
    pub direction: Direction,
    /// Whether this side allows the connection: the datapath plan's verdict.
    pub allowed: bool,
    /// Why, in the datapath's terms.
    pub reason: Reason,
    /// The rule of the datapath entry that decided (an allow or a deny),
    /// when one did.
    pub datapath_rule: Option<RuleOrigin>,
    /// Admin -> NetworkPolicy -> Baseline -> default.
    pub tiers: TierWalk,
    /// Whether the datapath's and the tiered verdicts agree (they must).
    pub consistent: bool,
    /// Whether some NetworkPolicy isolates the pod in this direction.
    pub isolated: bool,
    /// The NetworkPolicies that isolate it (selecting it with this direction in policyTypes).
    pub isolating_policies: Vec<PolicyRef>,
    /// The NetworkPolicy rules that allow the connection, NetworkPolicy alone
    /// considered (the first is the one its datapath would credit).
    pub allowing_rules: Vec<RuleOrigin>,
    /// What the datapath knows the remote address as.
    pub remote_identity: IdentityId,
    /// Human description of that identity.
    pub remote_identity_description: String,
    /// Validation failures of the isolating NetworkPolicies and of the
    /// ClusterNetworkPolicies whose rules decided or passed.
    pub rejections: Vec<Rejection>,
    /// What to change when denied (empty when allowed).
    pub hint: String,
}

/// Why a connection from one pod to another is allowed or denied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// Client pod.
    pub from: PodRef,
    /// Server pod.
    pub to: PodRef,
    /// Client address used.
    pub src: IpAddr,
    /// Server address used.
    pub dst: IpAddr,
    /// IP protocol number.
    pub protocol: u8,
    /// Destination port.
    pub port: u16,
    /// The client's egress.
    pub egress: DirectionReport,
    /// The server's ingress.
    pub ingress: DirectionReport,
}

impl Explanation {
    /// Whether both sides allow the connection.
    pub fn allowed(&self) -> bool {
        self.egress.allowed && self.ingress.allowed
    }
}

/// The plans and policies one explanation reads.
struct Readings<'a> {
    cluster: &'a ClusterState,
    /// Compiled from the whole cluster: what the datapath enforces.
    plan: DatapathPlan,
    /// Compiled without the ClusterNetworkPolicies: the NetworkPolicy part.
    network_policy: DatapathPlan,
    /// The ClusterNetworkPolicies in precedence order.
    cluster_policies: Vec<ClusterNetworkPolicy>,
    flow: Flow,
}

/// Explains the connection `from` -> `to` on `protocol`/`port`.
pub fn explain(
    cluster: &ClusterState,
    from: &PodRef,
    to: &PodRef,
    protocol: Protocol,
    port: u16,
) -> Result<Explanation, ExplainError> {
    let protocol = protocol.number();
    let pod_of = |r: &PodRef| -> Result<&Pod, ExplainError> {
        let p = cluster
            .pod(r)
            .ok_or_else(|| ExplainError::PodNotFound(r.clone()))?;
        if p.is_endpoint() {
            Ok(p)
        } else {
            Err(ExplainError::NotAnEndpoint(r.clone()))
        }
    };
    let (client, server) = (pod_of(from)?, pod_of(to)?);
    let (src, dst) = client
        .ips
        .iter()
        .find_map(|s| {
            server
                .ips
                .iter()
                .find(|d| d.is_ipv4() == s.is_ipv4())
                .map(|d| (*s, *d))
        })
        .ok_or_else(|| ExplainError::NoCommonFamily(from.clone(), to.clone()))?;
    let both = |p: &Pod| p.pod_ref() == *from || p.pod_ref() == *to;
    let plan = Compiler::new().compile_for(cluster, both, &Default::default());
    let cluster_policies: Vec<ClusterNetworkPolicy> =
        cluster.cluster_policies().into_iter().cloned().collect();
    let mut without = cluster.clone();
    for p in &cluster_policies {
        without.delete_cluster_policy(&p.name);
    }
    let network_policy = Compiler::new().compile_for(&without, both, &Default::default());
    let readings = Readings {
        cluster,
        plan,
        network_policy,
        cluster_policies,
        flow: Flow {
            src,
            dst,
            protocol,
            dst_port: port,
        },
    };
    Ok(Explanation {
        from: from.clone(),
        to: to.clone(),
        src,
        dst,
        protocol,
        port,
        egress: readings.report(client, Direction::Egress, server),
        ingress: readings.report(server, Direction::Ingress, client),
    })
}

impl Readings<'_> {
    /// `plan`'s verdict for `pod` in `d`, `None` when the pod is not in it
    /// (unreachable for endpoint pods).
    fn evaluate(&self, plan: &DatapathPlan, pod: &Pod, d: Direction) -> Option<Verdict> {
        let ep = plan.endpoints.get(&pod.pod_ref())?;
        Some(evaluate(plan, ep, d, &self.flow))
    }

    fn report(&self, pod: &Pod, d: Direction, remote: &Pod) -> DirectionReport {
        let cluster = self.cluster;
        let isolating: Vec<PolicyRef> = cluster
            .policies()
            .filter(|p| p.selects(&pod.namespace, &pod.labels) && p.policy_types.has(d))
            .map(|p| p.policy_ref())
            .collect();
        let np = self.evaluate(&self.network_policy, pod, d);
        let tiered = tiers::verdict(
            cluster,
            &self.cluster_policies,
            Traffic {
                pod,
                direction: d,
                remote: self.flow.remote(d),
                protocol: self.flow.protocol,
                port: if super::lookup::has_ports(self.flow.protocol) {
                    self.flow.dst_port
                } else {
                    0
                },
            },
            || {
                np.filter(|v| v.reason != Reason::NotIsolated)
                    .map(|v| v.allowed)
            },
        );
        let mut rejections: Vec<Rejection> = isolating
            .iter()
            .filter_map(|r| cluster.policy(r))
            .flat_map(|p| p.rejections.iter().cloned())
            .collect();
        let mut seen = Vec::new();
        let deciding = match tiered.decider {
            Decider::Rule { policy, .. } => Some(policy),
            _ => None,
        };
        for policy in deciding
            .into_iter()
            .chain(tiered.passed.iter().map(|(p, _)| *p))
        {
            if !seen.contains(&&policy.name) {
                seen.push(&policy.name);
                rejections.extend(policy.rejections.iter().cloned());
            }
        }
        let walk = TierWalk {
            allowed: tiered.allowed,
            decided_by: match tiered.decider {
                Decider::Rule { policy, rule } => {
                    DecidedBy::ClusterRule(ClusterRuleRef::of(policy, rule))
                }
                Decider::NetworkPolicy => DecidedBy::NetworkPolicy,
                Decider::Default => DecidedBy::Default,
                Decider::Exempt => DecidedBy::Exempt,
            },
            passed: tiered
                .passed
                .iter()
                .map(|(p, r)| ClusterRuleRef::of(p, r))
                .collect(),
        };
        let Some(v) = self.evaluate(&self.plan, pod, d) else {
            return DirectionReport {
                pod: pod.pod_ref(),
                direction: d,
                allowed: false,
                reason: Reason::NoRule,
                datapath_rule: None,
                consistent: !walk.allowed,
                tiers: walk,
                isolated: !isolating.is_empty(),
                isolating_policies: isolating,
                allowing_rules: Vec::new(),
                remote_identity: IdentityId::WORLD,
                remote_identity_description: String::new(),
                rejections,
                hint: "the pod is not in the compiled plan".into(),
            };
        };
        let allowing = match np {
            Some(np) if np.allowed => self.allowing_rules(pod, d, np),
            _ => Vec::new(),
        };
        let hint = if v.allowed {
            String::new()
        } else {
            hint::hint(cluster, pod, d, &self.flow, remote, &isolating, &walk)
        };
        DirectionReport {
            pod: pod.pod_ref(),
            direction: d,
            allowed: v.allowed,
            reason: v.reason,
            datapath_rule: self.plan.rule_origins.get(&v.rule).cloned(),
            consistent: v.allowed == walk.allowed,
            tiers: walk,
            isolated: !isolating.is_empty(),
            isolating_policies: isolating,
            allowing_rules: allowing,
            remote_identity: v.remote_identity,
            remote_identity_description: describe(&self.plan, v.remote_identity),
            rejections,
            hint,
        }
    }

    /// The NetworkPolicy rules allowing the flow in the plan without
    /// ClusterNetworkPolicies, the one its lookup credits first.
    fn allowing_rules(&self, pod: &Pod, d: Direction, v: Verdict) -> Vec<RuleOrigin> {
        let plan = &self.network_policy;
        let Some(ep) = plan.endpoints.get(&pod.pod_ref()) else {
            return Vec::new();
        };
        let mut allowing: Vec<RuleOrigin> = plan
            .rule_origins
            .get(&v.rule)
            .cloned()
            .into_iter()
            .collect();
        for (k, r) in &plan.rules {
            if k.endpoint == ep.id
                && k.direction == d
                && (k.identity == v.remote_identity || k.identity == IdentityId::ANY)
                && l4_matches(k.l4, self.flow.protocol, self.flow.dst_port)
                && let Some(o) = plan.rule_origins.get(r)
                && !allowing.contains(o)
            {
                allowing.push(o.clone());
            }
        }
        allowing
    }
}

fn describe(plan: &DatapathPlan, identity: IdentityId) -> String {
    match identity {
        IdentityId::WORLD => {
            "WORLD (answers no peer selector or ipBlock of the policies in play)".to_string()
        }
        id => plan
            .identities
            .get(&id)
            .map(|i| i.description.clone())
            .unwrap_or_default(),
    }
}
