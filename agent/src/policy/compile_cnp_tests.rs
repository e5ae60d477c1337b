//! The compiled plan under ClusterNetworkPolicies: what the tiered decision
//! becomes in allow and deny entries. (The semantics themselves are tested on
//! the reading, in `tiers_tests.rs`; the property tests compare the two.)

use serde_json::{Value, json};

use super::*;
use crate::policy::fixtures::{cluster, plan_all, plan_allows};
use crate::policy::lookup::{Flow, Reason, evaluate};
use crate::source::K8sObject;
use crate::source::fixtures::{
    cluster_network_policy, labels, namespace, namespaces, pod, policy, rule,
};

const TCP: u8 = 6;
const UDP: u8 = 17;

fn cnp(name: &str, tier: &str, priority: i32, subject: Value, rules: Value) -> K8sObject {
    let mut spec = json!({"tier": tier, "priority": priority, "subject": subject});
    for (k, v) in rules.as_object().expect("rules object") {
        spec[k] = v.clone();
    }
    cluster_network_policy(name, spec)
}

fn everyone() -> Value {
    json!({"namespaces": {}})
}

fn team(name: &str) -> Value {
    json!({"namespaces": {"matchLabels": {"team": name}}})
}

fn tcp_range(start: u16, end: u16) -> Value {
    json!({"tcp": {"destinationPort": {"range": {"start": start, "end": end}}}})
}

/// a/server (10.0.0.1), a/peer (10.0.0.2), b/client (10.0.1.1).
fn world(extra: Vec<K8sObject>) -> ClusterState {
    let mut objs: Vec<K8sObject> = vec![
        namespace("a").label("team", "a").into(),
        namespace("b").label("team", "b").into(),
        pod("server")
            .ns("a")
            .label("app", "server")
            .ip("10.0.0.1")
            .into(),
        pod("peer")
            .ns("a")
            .label("app", "peer")
            .ip("10.0.0.2")
            .into(),
        pod("client")
            .ns("b")
            .label("app", "client")
            .ip("10.0.1.1")
            .into(),
    ];
    objs.extend(extra);
    cluster(objs)
}

const SERVER: &str = "10.0.0.1";
const PEER: &str = "10.0.0.2";
const CLIENT: &str = "10.0.1.1";

/// The server's ingress verdict for a flow from `src`.
fn ingress(
    plan: &DatapathPlan,
    src: &str,
    protocol: u8,
    port: u16,
) -> crate::policy::lookup::Verdict {
    let ep = plan
        .endpoints
        .values()
        .find(|e| e.ipv4 == Some(SERVER.parse().expect("ip")))
        .expect("server endpoint");
    let flow = Flow {
        src: src.parse().expect("ip"),
        dst: SERVER.parse().expect("ip"),
        protocol,
        dst_port: port,
    };
    evaluate(plan, ep, Direction::Ingress, &flow)
}

#[test]
fn an_admin_deny_shadows_a_network_policy_allow_with_a_deny_entry_naming_its_rule() {
    let allow_all = policy("a", "allow-all").ingress(rule()).into();
    let plan = plan_all(&world(vec![
        allow_all,
        cnp(
            "no-b",
            "Admin",
            10,
            team("a"),
            json!({"ingress": [{"name": "deny-b", "action": "Deny", "from": [team("b")]}]}),
        ),
    ]));
    let denied = ingress(&plan, CLIENT, TCP, 80);
    assert!(!denied.allowed);
    assert_eq!(denied.reason, Reason::Denied);
    let origin = &plan.rule_origins[&denied.rule];
    assert_eq!(origin.policy.name, "no-b");
    assert_eq!(origin.rule_label(), "deny-b");
    assert_eq!(origin.tier_label(), "admin");
    // Control: the NetworkPolicy still allows what the Admin tier leaves.
    assert!(ingress(&plan, PEER, TCP, 80).allowed);
}

#[test]
fn a_pod_isolated_by_cluster_policy_alone_is_enforced_and_allows_the_rest_by_default() {
    let plan = plan_all(&world(vec![cnp(
        "no-b",
        "Baseline",
        10,
        team("a"),
        json!({"ingress": [{"action": "Deny", "from": [team("b")]}]}),
    )]));
    let server = plan
        .endpoints
        .values()
        .find(|e| e.ipv4 == Some(SERVER.parse().expect("ip")))
        .expect("server");
    assert!(
        server.ingress_isolated,
        "the policy map decides its ingress"
    );
    assert!(!server.egress_isolated, "no egress rules: egress untouched");
    assert!(!ingress(&plan, CLIENT, TCP, 80).allowed);
    assert!(ingress(&plan, PEER, TCP, 80).allowed);
    assert!(
        ingress(&plan, PEER, 1, 0).allowed,
        "ICMP too: default allow"
    );
}

#[test]
fn a_deny_carved_out_of_an_accepted_range_is_split_at_its_edges() {
    let plan = plan_all(&world(vec![
        policy("a", "allow-all").ingress(rule()).into(),
        cnp(
            "carve",
            "Admin",
            1,
            team("a"),
            json!({"ingress": [
                {"action": "Deny", "from": [team("b")], "protocols": [tcp_range(1500, 1600)]},
                {"action": "Accept", "from": [team("b")], "protocols": [tcp_range(1000, 2000)]},
                {"action": "Deny", "from": [team("b")]},
            ]}),
        ),
    ]));
    for (port, allowed) in [
        (999, false),
        (1000, true),
        (1499, true),
        (1500, false),
        (1600, false),
        (1601, true),
        (2000, true),
        (2001, false),
    ] {
        assert_eq!(
            ingress(&plan, CLIENT, TCP, port).allowed,
            allowed,
            "port {port}"
        );
    }
    assert!(!ingress(&plan, CLIENT, UDP, 1000).allowed);
    // The same ports from a peer the Admin tier does not name: NetworkPolicy
    // (allow all) decides.
    assert!(ingress(&plan, PEER, TCP, 1500).allowed);
}

#[test]
fn pass_hands_over_to_network_policy_and_baseline_is_skipped_for_isolated_pods() {
    let objs = |np: bool| {
        let mut v = vec![
            cnp(
                "pass-b",
                "Admin",
                1,
                team("a"),
                json!({"ingress": [{"action": "Pass", "from": [team("b")]},
                                   {"action": "Deny", "from": [everyone()]}]}),
            ),
            cnp(
                "baseline-deny",
                "Baseline",
                1,
                team("a"),
                json!({"ingress": [{"action": "Deny", "from": [team("b")]}]}),
            ),
        ];
        if np {
            v.push(
                policy("a", "from-b")
                    .ingress(rule().peer(namespaces(labels(&[("team", "b")]))))
                    .into(),
            );
        }
        v
    };
    let without = plan_all(&world(objs(false)));
    assert!(
        !ingress(&without, CLIENT, TCP, 80).allowed,
        "Baseline denies"
    );
    assert!(
        !ingress(&without, PEER, TCP, 80).allowed,
        "Admin denies the rest"
    );
    let with = plan_all(&world(objs(true)));
    assert!(
        ingress(&with, CLIENT, TCP, 80).allowed,
        "NetworkPolicy isolates and allows: Baseline not consulted"
    );
    assert!(!ingress(&with, PEER, TCP, 80).allowed);
}

#[test]
fn egress_accept_leaves_the_destination_ingress_in_force() {
    let plan = plan_all(&world(vec![
        cnp(
            "client-out",
            "Admin",
            1,
            team("b"),
            json!({"egress": [{"action": "Accept", "to": [team("a")]}]}),
        ),
        policy("a", "deny-in").into(),
    ]));
    assert!(
        !plan_allows(&plan, CLIENT, SERVER, TCP, 80),
        "the server's NetworkPolicy still denies"
    );
}

#[test]
fn a_cluster_policy_is_enforced_and_its_rejections_are_reported() {
    let plan = plan_all(&world(vec![cnp(
        "deny-x",
        "Admin",
        1,
        everyone(),
        json!({"ingress": [{"action": "Deny", "from": [everyone()],
                            "protocols": [{"tcp": {"destinationPort": {"number": 0}}}]}]}),
    )]));
    let fields: Vec<(&str, &str)> = plan
        .rejections
        .iter()
        .map(|r| (r.object.as_str(), r.field.as_str()))
        .collect();
    assert_eq!(
        fields,
        [(
            "ClusterNetworkPolicy deny-x",
            "spec.ingress[0].protocols[0].tcp.destinationPort.number"
        )]
    );
    // The invalid Deny rule fails closed: all traffic to every pod denied.
    assert!(!ingress(&plan, PEER, TCP, 80).allowed);
    assert!(!ingress(&plan, PEER, UDP, 53).allowed);
}

#[test]
fn a_cluster_policy_change_replans_like_from_scratch_and_cuts_what_it_now_denies() {
    let mut c = world(vec![]);
    let mut compiler = Compiler::new();
    assert!(
        ingress(
            &compiler.compile_for(&c, |_| true, &Default::default()),
            CLIENT,
            TCP,
            80
        )
        .allowed
    );
    c.apply(&cnp(
        "no-b",
        "Admin",
        1,
        team("a"),
        json!({"ingress": [{"action": "Deny", "from": [team("b")]}]}),
    ))
    .expect("apply");
    let after = compiler.compile_for(&c, |_| true, &Default::default());
    assert!(!ingress(&after, CLIENT, TCP, 80).allowed);
    assert_eq!(after, plan_all_with_ids_of(&c));
    c.delete_cluster_policy("no-b");
    let deleted = compiler.compile_for(&c, |_| true, &Default::default());
    assert!(ingress(&deleted, CLIENT, TCP, 80).allowed);
    assert!(deleted.denies.is_empty());
}

/// A from-scratch plan numbered like a fresh compiler that saw the same
/// history (here: one compile without the policy first).
fn plan_all_with_ids_of(c: &ClusterState) -> DatapathPlan {
    let mut before = c.clone();
    before.delete_cluster_policy("no-b");
    let mut compiler = Compiler::new();
    compiler.compile_for(&before, |_| true, &Default::default());
    compiler.forget_history();
    compiler.compile_for(c, |_| true, &Default::default())
}

#[test]
fn a_pod_relabelled_into_a_cluster_policy_peer_is_decided_by_its_rule_on_the_next_compile() {
    let deny_web = cnp(
        "no-web",
        "Admin",
        1,
        team("a"),
        json!({"ingress": [{"action": "Deny", "from": [
            {"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "web"}}}}
        ]}]}),
    );
    let mut c = world(vec![deny_web]);
    let relabel = |app: &str| -> K8sObject {
        pod("client")
            .ns("b")
            .label("app", app)
            .ip("10.0.1.1")
            .into()
    };
    let mut compiler = Compiler::new();
    let compile = |compiler: &mut Compiler, c: &ClusterState| {
        compiler.compile_for(c, |_| true, &Default::default())
    };
    assert!(ingress(&compile(&mut compiler, &c), CLIENT, TCP, 80).allowed);
    // Its rule's peer now holds the client: the kept rule's targets must not.
    c.apply(&relabel("web")).expect("apply");
    assert!(!ingress(&compile(&mut compiler, &c), CLIENT, TCP, 80).allowed);
    c.apply(&relabel("client")).expect("apply");
    assert!(ingress(&compile(&mut compiler, &c), CLIENT, TCP, 80).allowed);
}
