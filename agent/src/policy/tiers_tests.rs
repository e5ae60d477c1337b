//! One test per rule of the tiered reading.

use serde_json::{Value, json};

use super::*;
use crate::policy::fixtures::cluster;
use crate::source::fixtures::{namespace, pod};

const TCP: u8 = 6;
const UDP: u8 = 17;

fn node(name: &str, address: &str, role: &str) -> k8s_openapi::api::core::v1::Node {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"role": role}},
        "status": {"addresses": [{"type": "InternalIP", "address": address}]},
    }))
    .unwrap()
}

/// Namespaces a (team=a) and b (team=b); a/web (8080 "http"/TCP), a/db,
/// b/client, a host-network pod; node-1 (worker) and node-2 (control).
fn world() -> ClusterState {
    cluster(vec![
        namespace("a").label("team", "a").into(),
        namespace("b").label("team", "b").into(),
        pod("web")
            .ns("a")
            .label("app", "web")
            .ip("10.0.0.1")
            .port("http", 8080, "TCP")
            .into(),
        pod("db").ns("a").label("app", "db").ip("10.0.0.2").into(),
        pod("client")
            .ns("b")
            .label("app", "client")
            .ip("10.0.1.1")
            .into(),
        pod("agent")
            .ns("a")
            .label("app", "web")
            .ip("192.168.0.1")
            .host_network()
            .into(),
        node("node-1", "192.168.0.1", "worker").into(),
        node("node-2", "192.168.0.2", "control").into(),
    ])
}

fn cnp(
    name: &str,
    tier: &str,
    priority: i32,
    subject: Value,
    rules: Value,
) -> ClusterNetworkPolicy {
    let mut spec = json!({"tier": tier, "priority": priority, "subject": subject});
    for (k, v) in rules.as_object().unwrap() {
        spec[k] = v.clone();
    }
    let object = crate::source::fixtures::cluster_network_policy_object(name, spec);
    ClusterNetworkPolicy::from_k8s(&object).unwrap()
}

fn sorted(mut policies: Vec<ClusterNetworkPolicy>) -> Vec<ClusterNetworkPolicy> {
    policies.sort_by(|x, y| x.precedence().cmp(&y.precedence()));
    policies
}

fn app(name: &str) -> Value {
    json!({"pods": {"podSelector": {"matchLabels": {"app": name}}}})
}

fn team(name: &str) -> Value {
    json!({"namespaces": {"matchLabels": {"team": name}}})
}

fn rule(action: &str, peer: Value) -> Value {
    json!({"action": action, "from": [peer]})
}

fn egress_rule(action: &str, peer: Value) -> Value {
    json!({"action": action, "to": [peer]})
}

fn tcp(port: u16) -> Value {
    json!({"tcp": {"destinationPort": {"number": port}}})
}

struct Case<'a> {
    cluster: &'a ClusterState,
    policies: &'a [ClusterNetworkPolicy],
}

impl<'a> Case<'a> {
    fn ingress(
        &self,
        to: &str,
        from: &str,
        protocol: u8,
        port: u16,
        np: Option<bool>,
    ) -> Verdict<'a> {
        self.run(to, Direction::Ingress, from, protocol, port, np)
    }

    fn egress(
        &self,
        from: &str,
        to: &str,
        protocol: u8,
        port: u16,
        np: Option<bool>,
    ) -> Verdict<'a> {
        self.run(from, Direction::Egress, to, protocol, port, np)
    }

    fn run(
        &self,
        pod: &str,
        direction: Direction,
        remote: &str,
        protocol: u8,
        port: u16,
        np: Option<bool>,
    ) -> Verdict<'a> {
        let (namespace, name) = pod.split_once('/').unwrap();
        let pod = self
            .cluster
            .pod(&crate::state::PodRef {
                namespace: namespace.into(),
                name: name.into(),
            })
            .unwrap();
        let traffic = Traffic {
            pod,
            direction,
            remote: remote.parse().unwrap(),
            protocol,
            port,
        };
        verdict(self.cluster, self.policies, traffic, || np)
    }
}

fn decided_by(v: &Verdict<'_>) -> String {
    match v.decider {
        Decider::Rule { policy, rule } => format!("{}/{}", policy.name, rule.label()),
        other => format!("{other:?}"),
    }
}

const WEB: &str = "10.0.0.1";
const DB: &str = "10.0.0.2";
const CLIENT: &str = "10.0.1.1";

#[test]
fn admin_decides_before_network_policy_and_network_policy_before_baseline() {
    let c = world();
    let policies = sorted(vec![
        cnp(
            "admin-deny-b",
            "Admin",
            10,
            json!({"namespaces": {"matchLabels": {"team": "a"}}}),
            json!({"ingress": [rule("Deny", team("b"))]}),
        ),
        cnp(
            "baseline-deny-all",
            "Baseline",
            10,
            json!({"namespaces": {}}),
            json!({"ingress": [rule("Deny", json!({"namespaces": {}}))]}),
        ),
    ]);
    let case = Case {
        cluster: &c,
        policies: &policies,
    };
    // Admin Deny wins over a NetworkPolicy that allows.
    let v = case.ingress("a/web", CLIENT, TCP, 80, Some(true));
    assert!(!v.allowed);
    assert_eq!(decided_by(&v), "admin-deny-b/0");
    // Not matched by Admin: a NetworkPolicy-isolated pod is decided there,
    // Baseline's Deny is not consulted.
    let v = case.ingress("a/web", DB, TCP, 80, Some(true));
    assert!(v.allowed);
    assert_eq!(v.decider, Decider::NetworkPolicy);
    let v = case.ingress("a/web", DB, TCP, 80, Some(false));
    assert!(!v.allowed);
    assert_eq!(v.decider, Decider::NetworkPolicy);
    // Not isolated by NetworkPolicy: Baseline decides.
    let v = case.ingress("a/web", DB, TCP, 80, None);
    assert!(!v.allowed);
    assert_eq!(decided_by(&v), "baseline-deny-all/0");
    // Nothing at all: allowed by default.
    let none = Case {
        cluster: &c,
        policies: &[],
    };
    assert_eq!(
        none.ingress("a/web", DB, TCP, 80, None).decider,
        Decider::Default
    );
    assert!(none.ingress("a/web", DB, TCP, 80, None).allowed);
}

#[test]
fn lower_priority_values_go_first_and_equal_ones_by_name() {
    let c = world();
    let all = json!({"namespaces": {}});
    let policies = sorted(vec![
        cnp(
            "z-accept",
            "Admin",
            5,
            all.clone(),
            json!({"ingress": [rule("Accept", team("b"))]}),
        ),
        cnp(
            "y-deny",
            "Admin",
            7,
            all.clone(),
            json!({"ingress": [rule("Deny", team("b"))]}),
        ),
        cnp(
            "b-deny",
            "Admin",
            3,
            all.clone(),
            json!({"ingress": [rule("Deny", app("db"))]}),
        ),
        cnp(
            "a-accept",
            "Admin",
            3,
            all.clone(),
            json!({"ingress": [rule("Accept", app("db"))]}),
        ),
    ]);
    let case = Case {
        cluster: &c,
        policies: &policies,
    };
    assert_eq!(
        decided_by(&case.ingress("a/web", CLIENT, TCP, 80, None)),
        "z-accept/0"
    );
    assert!(case.ingress("a/web", CLIENT, TCP, 80, None).allowed);
    // Same priority: "a-accept" before "b-deny".
    let v = case.ingress("a/web", DB, TCP, 80, None);
    assert_eq!(decided_by(&v), "a-accept/0");
    assert!(v.allowed);
}

#[test]
fn within_a_policy_the_first_matching_rule_decides() {
    let c = world();
    let policies = vec![cnp(
        "ordered",
        "Admin",
        1,
        json!({"namespaces": {}}),
        json!({"ingress": [
            {"name": "web-port", "action": "Accept", "from": [team("b")], "protocols": [tcp(8080)]},
            {"name": "rest", "action": "Deny", "from": [team("b")]},
        ]}),
    )];
    let case = Case {
        cluster: &c,
        policies: &policies,
    };
    let v = case.ingress("a/web", CLIENT, TCP, 8080, Some(false));
    assert!(v.allowed);
    assert_eq!(decided_by(&v), "ordered/web-port");
    let v = case.ingress("a/web", CLIENT, TCP, 8081, Some(true));
    assert!(!v.allowed);
    assert_eq!(decided_by(&v), "ordered/rest");
}

#[test]
fn pass_skips_the_rest_of_the_admin_tier_to_network_policy_or_baseline() {
    let c = world();
    let all = json!({"namespaces": {}});
    let policies = sorted(vec![
        cnp(
            "pass-b",
            "Admin",
            1,
            all.clone(),
            json!({"ingress": [rule("Pass", team("b")), rule("Deny", team("b"))]}),
        ),
        cnp(
            "deny-b",
            "Admin",
            2,
            all.clone(),
            json!({"ingress": [rule("Deny", team("b"))]}),
        ),
        cnp(
            "baseline-deny-b",
            "Baseline",
            1,
            all.clone(),
            json!({"ingress": [rule("Deny", team("b"))]}),
        ),
    ]);
    let case = Case {
        cluster: &c,
        policies: &policies,
    };
    // The later rule of the same policy and the later Admin policy are skipped.
    let v = case.ingress("a/web", CLIENT, TCP, 80, Some(true));
    assert!(v.allowed);
    assert_eq!(v.decider, Decider::NetworkPolicy);
    assert_eq!(v.passed.len(), 1);
    assert_eq!(v.passed[0].0.name, "pass-b");
    // Not isolated by NetworkPolicy: on to Baseline.
    let v = case.ingress("a/web", CLIENT, TCP, 80, None);
    assert!(!v.allowed);
    assert_eq!(decided_by(&v), "baseline-deny-b/0");
}

#[test]
fn pass_in_baseline_decides_nothing_so_the_default_allows() {
    let c = world();
    let all = json!({"namespaces": {}});
    let policies = sorted(vec![
        cnp(
            "pass",
            "Baseline",
            1,
            all.clone(),
            json!({"ingress": [rule("Pass", team("b"))]}),
        ),
        cnp(
            "deny",
            "Baseline",
            2,
            all.clone(),
            json!({"ingress": [rule("Deny", team("b"))]}),
        ),
    ]);
    let case = Case {
        cluster: &c,
        policies: &policies,
    };
    let v = case.ingress("a/web", CLIENT, TCP, 80, None);
    assert!(v.allowed);
    assert_eq!(v.decider, Decider::Default);
    assert_eq!(v.passed.len(), 1);
    // Without the Pass, the Deny decides (the control).
    let only_deny = sorted(vec![cnp(
        "deny",
        "Baseline",
        2,
        all,
        json!({"ingress": [rule("Deny", team("b"))]}),
    )]);
    let case = Case {
        cluster: &c,
        policies: &only_deny,
    };
    assert!(!case.ingress("a/web", CLIENT, TCP, 80, None).allowed);
}

#[test]
fn accept_overrides_network_policy_only_for_its_own_direction() {
    let c = world();
    let policies = vec![cnp(
        "egress-accept",
        "Admin",
        1,
        json!({"namespaces": {"matchLabels": {"team": "b"}}}),
        json!({"egress": [egress_rule("Accept", app("web"))]}),
    )];
    let case = Case {
        cluster: &c,
        policies: &policies,
    };
    // client's egress is accepted though its NetworkPolicy would deny...
    let v = case.egress("b/client", WEB, TCP, 80, Some(false));
    assert!(v.allowed);
    // ...and web's ingress is still its own NetworkPolicy's to decide.
    let v = case.ingress("a/web", CLIENT, TCP, 80, Some(false));
    assert!(!v.allowed);
    assert_eq!(v.decider, Decider::NetworkPolicy);
}

#[test]
fn subjects_select_by_namespace_or_by_namespace_and_pod_and_never_host_network_pods() {
    let c = world();
    let deny_all = json!({"ingress": [rule("Deny", json!({"namespaces": {}}))]});
    let by_pods = vec![cnp(
        "db-only",
        "Admin",
        1,
        json!({"pods": {"namespaceSelector": {"matchLabels": {"team": "a"}}, "podSelector": {"matchLabels": {"app": "db"}}}}),
        deny_all.clone(),
    )];
    let case = Case {
        cluster: &c,
        policies: &by_pods,
    };
    assert!(!case.ingress("a/db", CLIENT, TCP, 80, None).allowed);
    assert!(case.ingress("a/web", CLIENT, TCP, 80, None).allowed);
    let by_namespace = vec![cnp(
        "team-b",
        "Admin",
        1,
        json!({"namespaces": {"matchLabels": {"team": "b"}}}),
        deny_all.clone(),
    )];
    let case = Case {
        cluster: &c,
        policies: &by_namespace,
    };
    assert!(!case.ingress("b/client", WEB, TCP, 80, None).allowed);
    assert!(case.ingress("a/web", CLIENT, TCP, 80, None).allowed);
    // The host-network pod matches the labels of a/web but is never a subject.
    let web_pods = vec![cnp(
        "web",
        "Admin",
        1,
        json!({"pods": {"podSelector": {"matchLabels": {"app": "web"}}}}),
        deny_all,
    )];
    let case = Case {
        cluster: &c,
        policies: &web_pods,
    };
    assert!(!case.ingress("a/web", CLIENT, TCP, 80, None).allowed);
    assert_eq!(
        case.ingress("a/agent", CLIENT, TCP, 80, None).decider,
        Decider::Default
    );
}

#[test]
fn each_peer_kind_matches_what_it_names() {
    let c = world();
    let subject = json!({"namespaces": {}});
    let check = |peer: Value, remote: &str| {
        let policies = vec![cnp(
            "p",
            "Admin",
            1,
            subject.clone(),
            json!({"egress": [egress_rule("Deny", peer)]}),
        )];
        let case = Case {
            cluster: &c,
            policies: &policies,
        };
        !case.egress("a/web", remote, TCP, 80, None).allowed
    };
    // namespaces: every pod in them.
    assert!(check(team("b"), CLIENT));
    assert!(!check(team("b"), DB));
    // pods: namespace and pod labels together (absent namespaceSelector: all).
    assert!(check(app("db"), DB));
    assert!(!check(app("db"), CLIENT));
    let in_b =
        json!({"pods": {"namespaceSelector": {"matchLabels": {"team": "b"}}, "podSelector": {}}});
    assert!(check(in_b.clone(), CLIENT));
    assert!(!check(in_b, DB));
    // networks: cluster-internal addresses too.
    assert!(check(json!({"networks": ["10.0.1.0/24"]}), CLIENT));
    assert!(check(
        json!({"networks": ["203.0.113.0/24"]}),
        "203.0.113.9"
    ));
    assert!(!check(json!({"networks": ["10.0.1.0/24"]}), DB));
    // nodes: the selected nodes' addresses only.
    assert!(check(
        json!({"nodes": {"matchLabels": {"role": "control"}}}),
        "192.168.0.2"
    ));
    assert!(!check(
        json!({"nodes": {"matchLabels": {"role": "control"}}}),
        "192.168.0.1"
    ));
    // A host-network pod is not a pod peer: its address is the node's.
    assert!(!check(app("web"), "192.168.0.1"));
}

#[test]
fn ports_ranges_and_named_ports_match_the_destination() {
    let c = world();
    let subject = json!({"namespaces": {"matchLabels": {"team": "b"}}});
    let check = |protocols: Value, protocol: u8, port: u16| {
        let policies = vec![cnp(
            "p",
            "Admin",
            1,
            subject.clone(),
            json!({"egress": [{"action": "Deny", "to": [app("web")], "protocols": protocols}]}),
        )];
        let case = Case {
            cluster: &c,
            policies: &policies,
        };
        !case.egress("b/client", WEB, protocol, port, None).allowed
    };
    let range = json!([{"tcp": {"destinationPort": {"range": {"start": 8000, "end": 8080}}}}]);
    assert!(check(range.clone(), TCP, 8000));
    assert!(check(range.clone(), TCP, 8080));
    assert!(!check(range.clone(), TCP, 8081));
    assert!(!check(range, UDP, 8000));
    // web's container port "http" is 8080/TCP.
    let named = json!([{"destinationNamedPort": "http"}]);
    assert!(check(named.clone(), TCP, 8080));
    assert!(!check(named.clone(), UDP, 8080));
    assert!(!check(named.clone(), TCP, 8081));
    // For ingress the named port is the subject's own.
    let policies = vec![cnp(
        "p",
        "Admin",
        1,
        json!({"pods": {"podSelector": {"matchLabels": {"app": "web"}}}}),
        json!({"ingress": [{"action": "Deny", "from": [team("b")], "protocols": named}]}),
    )];
    let case = Case {
        cluster: &c,
        policies: &policies,
    };
    assert!(!case.ingress("a/web", CLIENT, TCP, 8080, None).allowed);
    assert!(case.ingress("a/web", CLIENT, TCP, 9090, None).allowed);
}

#[test]
fn an_empty_peer_fails_closed_by_action() {
    let c = world();
    let subject = json!({"namespaces": {}});
    let deny = vec![cnp(
        "p",
        "Admin",
        1,
        subject.clone(),
        json!({"ingress": [{"action": "Deny", "from": [{}]}]}),
    )];
    let case = Case {
        cluster: &c,
        policies: &deny,
    };
    assert!(!case.ingress("a/web", CLIENT, TCP, 80, Some(true)).allowed);
    assert!(!case.ingress("a/web", "203.0.113.9", UDP, 53, None).allowed);
    let accept = vec![cnp(
        "p",
        "Admin",
        1,
        subject,
        json!({"ingress": [{"action": "Accept", "from": [{}]}]}),
    )];
    let case = Case {
        cluster: &c,
        policies: &accept,
    };
    assert!(!case.ingress("a/web", CLIENT, TCP, 80, Some(false)).allowed);
}

#[test]
fn hairpin_and_the_nodes_own_traffic_are_not_subject_to_cluster_policy() {
    let mut c = world();
    c.apply(
        &pod("web")
            .ns("a")
            .label("app", "web")
            .ip("10.0.0.1")
            .node("node-1")
            .port("http", 8080, "TCP")
            .into(),
    )
    .unwrap();
    let policies = vec![cnp(
        "deny-all",
        "Admin",
        1,
        json!({"namespaces": {}}),
        json!({
            "ingress": [rule("Deny", json!({"networks": ["0.0.0.0/0"]}))],
            "egress": [egress_rule("Deny", json!({"networks": ["0.0.0.0/0"]}))],
        }),
    )];
    let case = Case {
        cluster: &c,
        policies: &policies,
    };
    assert_eq!(
        case.egress("a/web", WEB, TCP, 80, None).decider,
        Decider::Exempt
    );
    assert_eq!(
        case.ingress("a/web", WEB, TCP, 80, None).decider,
        Decider::Exempt
    );
    // From its node (kubelet probes): exempt; from another node: denied.
    assert!(
        case.ingress("a/web", "192.168.0.1", TCP, 8080, None)
            .allowed
    );
    assert!(
        !case
            .ingress("a/web", "192.168.0.2", TCP, 8080, None)
            .allowed
    );
    // The pod's egress to its node is policed like any address.
    assert!(
        !case
            .egress("a/web", "192.168.0.1", TCP, 10250, None)
            .allowed
    );
}

#[test]
fn an_invalid_policy_fails_closed() {
    let c = world();
    // An unknown operator in the subject: applies to every pod, its Accept
    // matches nothing, its Pass denies.
    let broken = cnp(
        "broken",
        "Admin",
        1,
        json!({"namespaces": {"matchExpressions": [{"key": "team", "operator": "Near"}]}}),
        json!({"ingress": [rule("Accept", team("b")), rule("Pass", app("db"))]}),
    );
    assert!(!broken.rejections.is_empty());
    let policies = vec![broken];
    let case = Case {
        cluster: &c,
        policies: &policies,
    };
    assert_eq!(
        case.ingress("a/web", CLIENT, TCP, 80, Some(false)).decider,
        Decider::NetworkPolicy
    );
    let v = case.ingress("b/client", DB, TCP, 80, Some(true));
    assert!(!v.allowed);
    assert_eq!(decided_by(&v), "broken/1");
}
