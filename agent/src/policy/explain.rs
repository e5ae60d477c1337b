//! `explain`: why is a connection between two pods allowed or denied?
//!
//! Compiles a plan with both pods as local endpoints (the same [`Compiler`]
//! path as the agent), evaluates it with [`super::lookup`] at the client's
//! egress and the server's ingress, and reports per direction: the verdict,
//! which policies isolate the pod, which rules allow the flow, or why none does.

use std::fmt;
use std::net::IpAddr;

use palisade_common::ids::IdentityId;
use serde::Serialize;
use thiserror::Error;

use super::compile::Compiler;
use super::lookup::{Flow, Reason, evaluate, l4_matches};
use super::plan::{DatapathPlan, RuleOrigin};
use crate::state::ClusterState;
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

/// The verdict of one side of the connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DirectionReport {
    /// The pod whose policy decides this side.
    pub pod: PodRef,
    /// Egress (of the client) or ingress (of the server).
    pub direction: Direction,
    /// Whether this side allows the connection.
    pub allowed: bool,
    /// Why, in the datapath's terms.
    pub reason: Reason,
    /// Whether some policy isolates the pod in this direction.
    pub isolated: bool,
    /// The policies that isolate it (selecting it with this direction in policyTypes).
    pub isolating_policies: Vec<PolicyRef>,
    /// The rules that allow the connection (the first is the one the datapath credits).
    pub allowing_rules: Vec<RuleOrigin>,
    /// What the datapath knows the remote address as.
    pub remote_identity: IdentityId,
    /// Human description of that identity.
    pub remote_identity_description: String,
    /// Validation failures of the isolating policies.
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
    let plan = Compiler::new().compile_for(
        cluster,
        |p| p.pod_ref() == *from || p.pod_ref() == *to,
        &Default::default(),
    );
    let flow = Flow {
        src,
        dst,
        protocol,
        dst_port: port,
    };
    Ok(Explanation {
        from: from.clone(),
        to: to.clone(),
        src,
        dst,
        protocol,
        port,
        egress: report(cluster, &plan, client, Direction::Egress, &flow, server),
        ingress: report(cluster, &plan, server, Direction::Ingress, &flow, client),
    })
}

fn report(
    cluster: &ClusterState,
    plan: &DatapathPlan,
    pod: &Pod,
    d: Direction,
    flow: &Flow,
    remote: &Pod,
) -> DirectionReport {
    let key = pod.pod_ref();
    let isolating: Vec<PolicyRef> = cluster
        .policies()
        .filter(|p| p.selects(&pod.namespace, &pod.labels) && p.policy_types.has(d))
        .map(|p| p.policy_ref())
        .collect();
    let rejections: Vec<Rejection> = isolating
        .iter()
        .filter_map(|r| cluster.policy(r))
        .flat_map(|p| p.rejections.iter().cloned())
        .collect();
    let Some(ep) = plan.endpoints.get(&key) else {
        // Unreachable for endpoint pods; report conservatively.
        return DirectionReport {
            pod: key,
            direction: d,
            allowed: false,
            reason: Reason::NoRule,
            isolated: !isolating.is_empty(),
            isolating_policies: isolating,
            allowing_rules: Vec::new(),
            remote_identity: IdentityId::WORLD,
            remote_identity_description: String::new(),
            rejections,
            hint: "the pod is not in the compiled plan".into(),
        };
    };
    let v = evaluate(plan, ep, d, flow);
    let mut allowing: Vec<RuleOrigin> = Vec::new();
    if let Some(o) = plan.rule_origins.get(&v.rule) {
        allowing.push(o.clone());
    }
    let port = flow.dst_port;
    for (k, r) in &plan.rules {
        if k.endpoint == ep.id
            && k.direction == d
            && (k.identity == v.remote_identity || k.identity == IdentityId::ANY)
            && l4_matches(k.l4, flow.protocol, port)
            && let Some(o) = plan.rule_origins.get(r)
            && !allowing.contains(o)
        {
            allowing.push(o.clone());
        }
    }
    if !v.allowed {
        allowing.clear();
    }
    let description = match v.remote_identity {
        IdentityId::WORLD => {
            "WORLD (answers no peer selector or ipBlock of the policies in play)".to_string()
        }
        id => plan
            .identities
            .get(&id)
            .map(|i| i.description.clone())
            .unwrap_or_default(),
    };
    let hint = if v.allowed {
        String::new()
    } else {
        hint(cluster, pod, d, flow, remote, &isolating)
    };
    DirectionReport {
        pod: key,
        direction: d,
        allowed: v.allowed,
        reason: v.reason,
        isolated: !isolating.is_empty(),
        isolating_policies: isolating,
        allowing_rules: allowing,
        remote_identity: v.remote_identity,
        remote_identity_description: description,
        rejections,
        hint,
    }
}

/// What a person can change to allow the flow.
fn hint(
    cluster: &ClusterState,
    pod: &Pod,
    d: Direction,
    flow: &Flow,
    remote: &Pod,
    isolating: &[PolicyRef],
) -> String {
    let (rules, peer_field) = match d {
        Direction::Ingress => ("ingress", "from"),
        Direction::Egress => ("egress", "to"),
    };
    let mut lines = Vec::new();
    for r in isolating {
        let Some(p) = cluster.policy(r) else { continue };
        if !p.rejections.is_empty() {
            lines.push(format!(
                "policy {r} was rejected ({} problem(s)) and allows nothing until fixed",
                p.rejections.len()
            ));
        } else if p.allowing_rules(d).is_empty() {
            lines.push(format!(
                "policy {r} has no {rules} rules: it only isolates {}",
                pod.pod_ref()
            ));
        } else {
            lines.push(format!(
                "none of the {} {rules} rule(s) of policy {r} matches",
                p.allowing_rules(d).len()
            ));
        }
    }
    let labels: Vec<String> = remote
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let l4 = match Protocol::from_number(flow.protocol) {
        Some(p) => format!("{p}/{}", flow.dst_port),
        None => format!(
            "IP protocol {} (only a rule without ports can allow it)",
            flow.protocol
        ),
    };
    lines.push(format!(
        "to allow it, add to a policy selecting {} an {rules} rule with {peer_field}: podSelector {{{}}}{} and ports {l4}",
        pod.pod_ref(),
        labels.join(","),
        if remote.namespace == pod.namespace {
            String::new()
        } else {
            format!(" with a namespaceSelector matching namespace {}", remote.namespace)
        },
    ));
    lines.join("; ")
}

impl fmt::Display for DirectionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.allowed { "ALLOWED" } else { "DENIED" };
        writeln!(
            f,
            "  {} of {}: {verdict}",
            self.direction.as_label(),
            self.pod
        )?;
        if !self.isolated {
            return writeln!(
                f,
                "    no policy isolates {} for {}",
                self.pod,
                self.direction.as_label()
            );
        }
        let names: Vec<String> = self
            .isolating_policies
            .iter()
            .map(|p| p.to_string())
            .collect();
        writeln!(f, "    isolated by: {}", names.join(", "))?;
        writeln!(
            f,
            "    remote identity {}: {}",
            self.remote_identity.0, self.remote_identity_description
        )?;
        match self.reason {
            Reason::SelfTraffic => writeln!(f, "    a pod may always reach itself")?,
            Reason::Host => writeln!(f, "    traffic with the local node is always allowed")?,
            _ => {}
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::fixtures::*;

    fn key(ns: &str, n: &str) -> PodRef {
        PodRef {
            namespace: ns.into(),
            name: n.into(),
        }
    }

    fn world(extra: Vec<crate::source::K8sObject>) -> ClusterState {
        let mut v = objs![
            pod("a").ns("x").label("pod", "a").ip("10.0.0.1"),
            pod("b")
                .ns("y")
                .label("pod", "b")
                .ip("10.0.1.2")
                .node("node-2"),
        ];
        v.extend(extra);
        cluster(v)
    }

    #[test]
    fn explains_the_allowing_rule() {
        let c = world(objs![
            policy("y", "allow-a").ingress(rule().peer(namespaces(all())).port(tcp(80)))
        ]);
        let e = explain(&c, &key("x", "a"), &key("y", "b"), Protocol::Tcp, 80).expect("explains");
        assert!(e.allowed());
        assert!(!e.egress.isolated);
        assert_eq!(e.ingress.allowing_rules[0].policy.name, "allow-a");
        let text = e.to_string();
        assert!(
            text.contains("allowed by y/allow-a ingress rule #0"),
            "{text}"
        );
        let json = serde_json::to_value(&e).expect("json");
        assert_eq!(json["ingress"]["allowed"], true);
    }

    #[test]
    fn explains_a_denial_with_an_actionable_hint() {
        let c = world(objs![policy("y", "deny").ingress_none()]);
        let e = explain(&c, &key("x", "a"), &key("y", "b"), Protocol::Tcp, 80).expect("explains");
        assert!(!e.allowed());
        assert_eq!(
            e.ingress.isolating_policies,
            vec![PolicyRef {
                namespace: "y".into(),
                name: "deny".into()
            }]
        );
        assert!(
            e.ingress
                .hint
                .contains("policy y/deny has no ingress rules"),
            "{}",
            e.ingress.hint
        );
        assert!(
            e.ingress.hint.contains("podSelector {pod=a}"),
            "{}",
            e.ingress.hint
        );
        assert!(e.ingress.hint.contains("namespace x"), "{}", e.ingress.hint);
        assert!(e.to_string().contains("DENIED"));
    }

    #[test]
    fn explains_rejected_policies() {
        let c = world(objs![
            policy("y", "bad").ingress(rule().port(range(90, 80)))
        ]);
        let e = explain(&c, &key("x", "a"), &key("y", "b"), Protocol::Tcp, 85).expect("explains");
        assert!(!e.allowed());
        assert_eq!(e.ingress.rejections.len(), 1);
        assert!(e.ingress.hint.contains("rejected"));
    }

    #[test]
    fn unknown_pods_are_errors() {
        let c = world(vec![]);
        assert_eq!(
            explain(&c, &key("x", "nope"), &key("y", "b"), Protocol::Tcp, 80),
            Err(ExplainError::PodNotFound(key("x", "nope")))
        );
    }
}
