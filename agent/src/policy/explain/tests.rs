//! explain: the NetworkPolicy part, the tiered reading, and their agreement
//! with the compiled plan.

use serde_json::{Value, json};

use super::*;
use crate::policy::fixtures::*;
use crate::source::K8sObject;

fn key(ns: &str, n: &str) -> PodRef {
    PodRef {
        namespace: ns.into(),
        name: n.into(),
    }
}

/// x/a (10.0.0.1) and y/b (10.0.1.2, node-2, 8080 named "http"), namespaces
/// labelled team=x and team=y.
fn world(extra: Vec<K8sObject>) -> ClusterState {
    let mut v = objs![
        namespace("x").label("team", "x"),
        namespace("y").label("team", "y"),
        pod("a").ns("x").label("pod", "a").ip("10.0.0.1"),
        pod("b")
            .ns("y")
            .label("pod", "b")
            .ip("10.0.1.2")
            .port("http", 8080, "TCP")
            .node("node-2"),
    ];
    v.extend(extra);
    cluster(v)
}

/// A ClusterNetworkPolicy selecting namespace `team`.
fn cnp(name: &str, tier: &str, priority: i32, team: &str, rules: Value) -> K8sObject {
    let mut spec = json!({
        "tier": tier,
        "priority": priority,
        "subject": {"namespaces": {"matchLabels": {"team": team}}},
    });
    for (k, v) in rules.as_object().expect("rules object") {
        spec[k] = v.clone();
    }
    crate::source::fixtures::cluster_network_policy(name, spec)
}

fn from_team(name: Option<&str>, action: &str, team: &str, ports: Value) -> Value {
    let mut r =
        json!({"action": action, "from": [{"namespaces": {"matchLabels": {"team": team}}}]});
    if let Some(n) = name {
        r["name"] = json!(n);
    }
    if !ports.is_null() {
        r["protocols"] = ports;
    }
    r
}

fn tcp_port(port: u16) -> Value {
    json!([{"tcp": {"destinationPort": {"number": port}}}])
}

fn explain_tcp(c: &ClusterState, port: u16) -> Explanation {
    explain(c, &key("x", "a"), &key("y", "b"), Protocol::Tcp, port).expect("explains")
}

fn allow_from_everywhere() -> K8sObject {
    K8sObject::from(policy("y", "allow-a").ingress(rule().peer(namespaces(all())).port(tcp(80))))
}

#[test]
fn explains_the_allowing_rule() {
    let c = world(vec![allow_from_everywhere()]);
    let e = explain_tcp(&c, 80);
    assert!(e.allowed());
    assert!(!e.egress.isolated);
    assert_eq!(e.egress.tiers.decided_by, DecidedBy::Default);
    assert_eq!(e.ingress.tiers.decided_by, DecidedBy::NetworkPolicy);
    assert!(e.ingress.consistent);
    assert_eq!(e.ingress.allowing_rules[0].policy.name, "allow-a");
    assert_eq!(
        e.ingress.datapath_rule,
        Some(e.ingress.allowing_rules[0].clone())
    );
    let text = e.to_string();
    assert!(
        text.contains("allowed by y/allow-a ingress rule #0"),
        "{text}"
    );
    assert!(text.contains("decided by NetworkPolicy"), "{text}");
    let json = serde_json::to_value(&e).expect("json");
    assert_eq!(json["ingress"]["allowed"], true);
    assert_eq!(
        json["ingress"]["tiers"]["decided_by"]["by"],
        "network_policy"
    );
}

#[test]
fn explains_a_denial_with_an_actionable_hint() {
    let c = world(objs![policy("y", "deny").ingress_none()]);
    let e = explain_tcp(&c, 80);
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
    assert!(e.ingress.allowing_rules.is_empty());
    assert!(e.to_string().contains("DENIED"));
}

#[test]
fn explains_rejected_policies() {
    let c = world(objs![
        policy("y", "bad").ingress(rule().port(range(90, 80)))
    ]);
    let e = explain_tcp(&c, 85);
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

#[test]
fn the_tier_walk_names_the_admin_rule_that_decides_before_network_policy() {
    let c = world(vec![
        allow_from_everywhere(),
        cnp(
            "block",
            "Admin",
            5,
            "y",
            json!({"ingress": [from_team(Some("no-web"), "Deny", "x", tcp_port(80))]}),
        ),
    ]);
    let e = explain_tcp(&c, 80);
    let walk = &e.ingress.tiers;
    assert!(!walk.allowed);
    assert_eq!(
        walk.decided_by,
        DecidedBy::ClusterRule(ClusterRuleRef {
            tier: "admin",
            policy: "block".into(),
            priority: 5,
            rule: "no-web".into(),
            index: 0,
            action: Action::Deny,
        })
    );
    assert!(walk.passed.is_empty());
    // NetworkPolicy alone would allow it: its part still says by which rule.
    assert_eq!(e.ingress.allowing_rules[0].policy.name, "allow-a");
    assert!(e.ingress.isolated);
    let json = serde_json::to_value(&e).expect("json");
    assert_eq!(json["ingress"]["tiers"]["decided_by"]["by"], "cluster_rule");
    assert_eq!(json["ingress"]["tiers"]["decided_by"]["rule"], "no-web");
    assert_eq!(json["ingress"]["tiers"]["decided_by"]["action"], "Deny");
    // Another port: no Admin rule matches, NetworkPolicy decides.
    let e = explain_tcp(&c, 81);
    assert_eq!(e.ingress.tiers.decided_by, DecidedBy::NetworkPolicy);
    assert!(!e.ingress.tiers.allowed);
}

#[test]
fn the_tier_walk_reports_each_pass_and_skips_baseline_for_isolated_pods() {
    let pass = |isolate: bool| {
        let mut objects = vec![
            cnp(
                "delegate",
                "Admin",
                1,
                "y",
                json!({"ingress": [from_team(None, "Pass", "x", Value::Null)]}),
            ),
            cnp(
                "admin-deny",
                "Admin",
                2,
                "y",
                json!({"ingress": [from_team(Some("never"), "Deny", "x", Value::Null)]}),
            ),
            cnp(
                "baseline-deny",
                "Baseline",
                1,
                "y",
                json!({"ingress": [from_team(Some("default-deny"), "Deny", "x", Value::Null)]}),
            ),
        ];
        if isolate {
            objects.push(allow_from_everywhere());
        }
        explain_tcp(&world(objects), 80)
    };
    // The Pass skips admin-deny; NetworkPolicy isolates and allows.
    let e = pass(true);
    let walk = &e.ingress.tiers;
    assert_eq!(
        walk.passed
            .iter()
            .map(|p| (p.policy.as_str(), p.rule.as_str(), p.action))
            .collect::<Vec<_>>(),
        vec![("delegate", "0", Action::Pass)]
    );
    assert_eq!(walk.decided_by, DecidedBy::NetworkPolicy);
    assert!(walk.allowed);
    let text = e.to_string();
    assert!(
        text.contains(
            "passed by admin policy delegate (priority 1) rule 0: Pass (skips the rest of the admin tier)"
        ),
        "{text}"
    );
    // Not isolated by NetworkPolicy: Baseline decides after the Pass.
    let e = pass(false);
    let walk = &e.ingress.tiers;
    assert_eq!(walk.passed.len(), 1);
    assert!(!walk.allowed);
    assert!(
        matches!(&walk.decided_by, DecidedBy::ClusterRule(r)
            if r.tier == "baseline" && r.policy == "baseline-deny" && r.rule == "default-deny"),
        "{:?}",
        walk.decided_by
    );
    // The client's egress is no subject of any of them.
    assert_eq!(e.egress.tiers.decided_by, DecidedBy::Default);
    assert!(e.egress.allowed && e.egress.consistent);
}

/// Needs the ClusterNetworkPolicy compiler: on a build whose compiler does
/// not yet turn CNPs into plan entries, every CNP-decided case here differs.
#[test]
fn the_plan_verdict_is_the_tier_walk_verdict_on_clusters_with_cluster_policies() {
    let admin_deny = cnp(
        "block",
        "Admin",
        5,
        "y",
        json!({"ingress": [from_team(Some("no-web"), "Deny", "x", tcp_port(80))]}),
    );
    let admin_accept_named = cnp(
        "open-http",
        "Admin",
        3,
        "y",
        json!({"ingress": [{
            "name": "http", "action": "Accept",
            "from": [{"namespaces": {"matchLabels": {"team": "x"}}}],
            "protocols": [{"destinationNamedPort": "http"}],
        }]}),
    );
    let delegate = cnp(
        "delegate",
        "Admin",
        1,
        "y",
        json!({"ingress": [from_team(None, "Pass", "x", tcp_port(80))]}),
    );
    let baseline_deny = cnp(
        "isolate-namespaces",
        "Baseline",
        10,
        "y",
        json!({"ingress": [from_team(Some("default-deny"), "Deny", "x", Value::Null)]}),
    );
    let egress_deny = cnp(
        "no-egress-to-y",
        "Admin",
        7,
        "x",
        json!({"egress": [{
            "action": "Deny",
            "to": [{"networks": ["10.0.1.0/24"]}],
            "protocols": [{"tcp": {"destinationPort": {"range": {"start": 9000, "end": 9100}}}}],
        }]}),
    );
    let clusters: Vec<(&str, Vec<K8sObject>)> = vec![
        (
            "admin deny over an allowing NetworkPolicy",
            vec![allow_from_everywhere(), admin_deny.clone()],
        ),
        (
            "admin accept by named port",
            vec![
                objs![policy("y", "deny").ingress_none()].remove(0),
                admin_accept_named.clone(),
            ],
        ),
        (
            "pass to NetworkPolicy over an admin deny",
            vec![
                delegate.clone(),
                admin_deny.clone(),
                allow_from_everywhere(),
            ],
        ),
        ("baseline deny, not isolated", vec![baseline_deny.clone()]),
        (
            "baseline skipped for an isolated pod",
            vec![baseline_deny, allow_from_everywhere()],
        ),
        (
            "egress deny by network and range",
            vec![egress_deny, admin_accept_named],
        ),
    ];
    let mut disagreements = Vec::new();
    let mut decided_by_cluster_rules = 0;
    for (name, objects) in clusters {
        let c = world(objects);
        for port in [79, 80, 81, 8080, 9000, 9050, 9100, 9101] {
            let e = explain_tcp(&c, port);
            for r in [&e.egress, &e.ingress] {
                if matches!(r.tiers.decided_by, DecidedBy::ClusterRule(_)) {
                    decided_by_cluster_rules += 1;
                }
                if r.allowed != r.tiers.allowed || !r.consistent {
                    disagreements.push(format!(
                        "{name}: port {port} {}: plan {} ({:?}), tiers {} ({:?})",
                        r.direction.as_label(),
                        r.allowed,
                        r.reason,
                        r.tiers.allowed,
                        r.tiers.decided_by
                    ));
                }
            }
        }
    }
    assert!(
        decided_by_cluster_rules > 10,
        "the cases exercise the tiers"
    );
    assert!(
        disagreements.is_empty(),
        "the compiled plan and the tiered reading disagree:\n{}",
        disagreements.join("\n")
    );
}

/// Also needs the ClusterNetworkPolicy compiler (the hint is the datapath's
/// denial explained).
#[test]
fn an_admin_deny_is_explained_with_the_rule_to_change() {
    let c = world(vec![
        allow_from_everywhere(),
        cnp(
            "block",
            "Admin",
            5,
            "y",
            json!({"ingress": [from_team(Some("no-web"), "Deny", "x", tcp_port(80))]}),
        ),
    ]);
    let e = explain_tcp(&c, 80);
    assert!(!e.allowed(), "{e}");
    assert_eq!(e.ingress.reason, Reason::Denied);
    let origin = e
        .ingress
        .datapath_rule
        .as_ref()
        .expect("a deny entry's rule");
    assert_eq!(
        (origin.tier_label(), origin.rule_label().as_str()),
        ("admin", "no-web")
    );
    assert!(
        e.ingress
            .hint
            .contains("rule no-web of the Admin tier ClusterNetworkPolicy block"),
        "{}",
        e.ingress.hint
    );
    let text = e.to_string();
    assert!(
        text.contains("decided by admin policy block (priority 5) rule no-web: Deny"),
        "{text}"
    );
    assert!(
        text.contains("datapath entry: admin policy block rule no-web: Deny"),
        "{text}"
    );
    assert!(!text.contains("WARNING"), "{text}");
}
