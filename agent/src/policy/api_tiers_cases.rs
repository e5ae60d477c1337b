//! Hand-picked ClusterNetworkPolicy cases, one per rule of the API reading
//! ([`eval::api`]): the verdicts the reference gives (written out here, so
//! the reading is checked against the reference and not only against the
//! agent), and the whole path (objects -> state -> compile -> plan lookup)
//! agreeing with the reading on every flow of the cluster. Most are objects
//! the CRD would refuse, which the property test's strategies make rarely
//! or never (past 25 rules, long names, empty lists, bad port entries).

use std::net::IpAddr;

use serde_json::{Value, json};

use super::eval;
use super::fixtures::*;
use super::proptests_api_tiers::agree;
use crate::source::K8sObject;

const A: &str = "10.0.0.1";
const B: &str = "10.0.0.2";
const C: &str = "10.0.0.3";
/// The pods' own Node.
const OWN_NODE: &str = "10.0.0.200";
/// Another Node's ExternalIP.
const OTHER_NODE: &str = "192.168.1.1";
const OUTSIDE: &str = "8.8.8.8";

/// ns0 {team: x}: a (app=x; web 80/TCP, dns 53/UDP), b (app=y; web
/// 81/TCP); ns1 {team: y}: c (app=x). Nodes: node-1 (the pods', zone a,
/// InternalIP), n2 (zone b, ExternalIP).
fn base() -> Vec<K8sObject> {
    let mut own = node("node-1", &[("InternalIP", OWN_NODE)]);
    own.metadata.labels = Some([("zone".to_string(), "a".to_string())].into());
    let mut other = node("n2", &[("ExternalIP", OTHER_NODE)]);
    other.metadata.labels = Some([("zone".to_string(), "b".to_string())].into());
    vec![
        namespace("ns0").label("team", "x").into(),
        namespace("ns1").label("team", "y").into(),
        pod("a")
            .ns("ns0")
            .ip(A)
            .label("app", "x")
            .port("web", 80, "TCP")
            .port("dns", 53, "UDP")
            .into(),
        pod("b")
            .ns("ns0")
            .ip(B)
            .label("app", "y")
            .port("web", 81, "TCP")
            .into(),
        pod("c").ns("ns1").ip(C).label("app", "x").into(),
        own.into(),
        other.into(),
    ]
}

fn cnp(name: &str, spec: Value) -> K8sObject {
    cluster_network_policy(name, spec)
}

/// Every pod of every namespace.
fn all() -> Value {
    json!({"namespaces": {}})
}

fn app(v: &str) -> Value {
    json!({"pods": {"podSelector": {"matchLabels": {"app": v}}}})
}

fn tcp(port: u16) -> Value {
    json!({"tcp": {"destinationPort": {"number": port}}})
}

/// A NetworkPolicy isolating every pod of ns0 in `types`, allowing nothing.
fn isolate_ns0(types: &[&str]) -> K8sObject {
    policy("ns0", "isolate").types(types).into()
}

/// A NetworkPolicy allowing every pod of ns0 ingress from anywhere.
fn allow_ns0_ingress() -> K8sObject {
    policy("ns0", "open").ingress(rule()).into()
}

type Expect = (&'static str, &'static str, u8, u16, bool);

/// `objects` beside the base cluster: the reading gives the `expected`
/// verdicts (both ends), and the plan agrees with it on every flow.
#[track_caller]
fn case(name: &str, objects: Vec<K8sObject>, expected: &[Expect]) {
    let mut objs = base();
    objs.extend(objects);
    let read = eval::api::Objects::new(&objs);
    for &(src, dst, protocol, port, allowed) in expected {
        let (s, d): (IpAddr, IpAddr) = (src.parse().expect("ip"), dst.parse().expect("ip"));
        assert_eq!(
            read.allowed(s, d, protocol, port),
            allowed,
            "{name}: {src} -> {dst} {protocol}/{port}"
        );
    }
    let addrs: Vec<IpAddr> = [A, B, C, OWN_NODE, OTHER_NODE, OUTSIDE]
        .iter()
        .map(|a| a.parse().expect("ip"))
        .collect();
    let mut flows = Vec::new();
    for &s in &addrs {
        for &d in &addrs {
            for (protocol, port) in [(6, 80), (6, 81), (17, 53), (132, 80), (1, 0)] {
                flows.push((s, d, protocol, port));
            }
        }
    }
    if let Err(e) = agree(&objs, &flows) {
        panic!("{name}: {e}");
    }
}

#[test]
fn the_admin_tier_overrides_network_policy() {
    let deny_b = cnp(
        "deny-b",
        json!({"tier": "Admin", "priority": 0, "subject": app("y"),
               "ingress": [{"action": "Deny", "from": [all()]}]}),
    );
    case(
        "admin deny",
        vec![deny_b, allow_ns0_ingress()],
        &[(A, B, 6, 80, false), (C, A, 6, 80, true)],
    );
}

#[test]
fn pass_skips_the_rest_of_the_admin_tier_to_network_policy() {
    let pass = cnp(
        "pass",
        json!({"tier": "Admin", "priority": 0, "subject": all(),
               "ingress": [{"action": "Pass", "from": [all()]}]}),
    );
    let accept = cnp(
        "accept",
        json!({"tier": "Admin", "priority": 1, "subject": all(),
               "ingress": [{"action": "Accept", "from": [all()]}]}),
    );
    case(
        "admin pass",
        vec![pass, accept, isolate_ns0(&["Ingress"])],
        &[(C, B, 6, 80, false), (A, C, 6, 80, true)],
    );
}

#[test]
fn pass_in_the_baseline_tier_allows_by_default() {
    let pass = cnp(
        "pass",
        json!({"tier": "Baseline", "priority": 0, "subject": all(),
               "ingress": [{"action": "Pass", "from": [app("x")]}]}),
    );
    let deny = cnp(
        "deny",
        json!({"tier": "Baseline", "priority": 1, "subject": all(),
               "ingress": [{"action": "Deny", "from": [all()]}]}),
    );
    case(
        "baseline pass",
        vec![pass, deny],
        &[(A, B, 6, 80, true), (B, A, 6, 80, false)],
    );
}

#[test]
fn a_pod_network_policy_isolates_is_not_read_by_the_baseline_tier() {
    let deny = cnp(
        "deny",
        json!({"tier": "Baseline", "priority": 0, "subject": all(),
               "ingress": [{"action": "Deny", "from": [all()]}]}),
    );
    case(
        "baseline under network policy",
        vec![deny, allow_ns0_ingress()],
        &[(C, A, 6, 80, true), (A, C, 6, 80, false)],
    );
}

#[test]
fn equal_priorities_go_by_name_and_lower_priorities_first() {
    let accept = |name: &str, priority: i32| {
        cnp(
            name,
            json!({"tier": "Admin", "priority": priority, "subject": all(),
                   "ingress": [{"action": "Accept", "from": [all()]}]}),
        )
    };
    let deny = |name: &str, priority: i32| {
        cnp(
            name,
            json!({"tier": "Admin", "priority": priority, "subject": all(),
                   "ingress": [{"action": "Deny", "from": [all()]}]}),
        )
    };
    case(
        "name ties",
        vec![accept("b", 3), deny("a", 3)],
        &[(A, B, 6, 80, false)],
    );
    case(
        "priority",
        vec![accept("b", 2), deny("a", 3)],
        &[(A, B, 6, 80, true)],
    );
}

#[test]
fn an_egress_accept_leaves_the_destination_s_ingress_in_force() {
    let accept = cnp(
        "accept",
        json!({"tier": "Admin", "priority": 0, "subject": app("x"),
               "egress": [{"action": "Accept", "to": [all()]}]}),
    );
    case(
        "egress accept",
        vec![accept, isolate_ns0(&["Ingress"])],
        &[(A, B, 6, 80, false), (A, C, 6, 80, true)],
    );
}

#[test]
fn a_pod_s_own_address_and_its_node_are_not_subject_to_policy() {
    let deny_all = cnp(
        "deny-all",
        json!({"tier": "Admin", "priority": 0, "subject": all(),
               "ingress": [{"action": "Deny", "from": [{}]}],
               "egress": [{"action": "Deny", "to": [{}]}]}),
    );
    case(
        "exempt",
        vec![deny_all],
        &[
            (A, A, 6, 80, true),
            (OWN_NODE, A, 6, 80, true),
            (A, OWN_NODE, 6, 80, false),
            (OTHER_NODE, A, 6, 80, false),
            (A, B, 6, 80, false),
        ],
    );
}

#[test]
fn nodes_peers_match_node_addresses_and_networks_match_pods() {
    let nodes = cnp(
        "nodes",
        json!({"tier": "Admin", "priority": 0, "subject": app("x"),
               "egress": [{"action": "Deny", "to": [{"nodes": {"matchLabels": {"zone": "b"}}}]},
                          {"action": "Deny", "to": [{"networks": ["10.0.0.2/32"]}]}]}),
    );
    case(
        "nodes and networks",
        vec![nodes],
        &[
            (A, OTHER_NODE, 6, 80, false),
            (A, OWN_NODE, 6, 80, true),
            (A, OUTSIDE, 6, 80, true),
            (A, B, 6, 80, false),
            (A, C, 6, 80, true),
        ],
    );
}

#[test]
fn named_ports_are_the_destination_pod_s() {
    let ingress = cnp(
        "ingress",
        json!({"tier": "Admin", "priority": 0, "subject": all(),
               "ingress": [{"action": "Deny", "from": [all()],
                            "protocols": [{"destinationNamedPort": "web"}]}]}),
    );
    case(
        "named ingress",
        vec![ingress],
        &[
            (C, A, 6, 80, false),
            (C, A, 6, 81, true),
            (C, B, 6, 81, false),
            (C, A, 17, 80, true),
        ],
    );
    let egress = cnp(
        "egress",
        json!({"tier": "Admin", "priority": 0, "subject": app("x"),
               "egress": [{"action": "Deny", "to": [all()],
                           "protocols": [{"destinationNamedPort": "web"}, {"destinationNamedPort": "dns"}]}]}),
    );
    case(
        "named egress",
        vec![egress],
        &[
            (A, B, 6, 81, false),
            (A, B, 6, 80, true),
            (C, A, 6, 80, false),
            (C, A, 17, 53, false),
            (C, A, 6, 53, true),
        ],
    );
}

#[test]
fn protocols_match_their_protocol_and_ports_ranges_inclusive() {
    let ranges = cnp(
        "ranges",
        json!({"tier": "Admin", "priority": 0, "subject": all(),
               "ingress": [{"action": "Deny", "from": [all()], "protocols": [
                   {"tcp": {"destinationPort": {"range": {"start": 79, "end": 80}}}},
                   {"udp": {"destinationPort": {"number": 53}}},
                   {"sctp": {"destinationPort": {"number": 80}}}]}]}),
    );
    case(
        "ranges",
        vec![ranges],
        &[
            (A, B, 6, 80, false),
            (A, B, 6, 81, true),
            (A, B, 17, 53, false),
            (A, B, 17, 80, true),
            (A, B, 132, 80, false),
            (A, B, 1, 0, true),
        ],
    );
}

#[test]
fn rules_past_the_crd_s_limit_fail_closed() {
    let outside = json!({"action": "Accept", "to": [{"networks": ["8.8.8.8/32"]}]});
    let mut rules = vec![outside; 25];
    rules.push(json!({"action": "Deny", "to": [{"networks": ["1.1.1.1/32"]}]}));
    case(
        "26th deny",
        vec![cnp(
            "many",
            json!({"tier": "Admin", "priority": 0, "subject": all(), "egress": rules}),
        )],
        &[(A, OUTSIDE, 6, 80, true), (A, B, 6, 80, false)],
    );
    rules[25] = json!({"action": "Accept", "to": [all()]});
    let deny = cnp(
        "deny",
        json!({"tier": "Baseline", "priority": 0, "subject": all(),
               "egress": [{"action": "Deny", "to": [all()]}]}),
    );
    case(
        "26th accept",
        vec![
            cnp(
                "many",
                json!({"tier": "Admin", "priority": 0, "subject": all(), "egress": rules}),
            ),
            deny,
        ],
        &[(A, B, 6, 80, false)],
    );
}

/// An Admin policy of `rule` (egress) over every pod, over a Baseline
/// policy denying all egress to pods: an Accept that matches nothing shows
/// as a deny to B, a Deny or Pass that denies all as a deny to OUTSIDE.
fn invalid_rule(name: &str, rule: Value, expected: &[Expect]) {
    let admin = cnp(
        "admin",
        json!({"tier": "Admin", "priority": 0, "subject": all(), "egress": [rule]}),
    );
    let baseline = cnp(
        "baseline",
        json!({"tier": "Baseline", "priority": 0, "subject": all(),
               "egress": [{"action": "Deny", "to": [all()]}]}),
    );
    case(name, vec![admin, baseline], expected);
}

#[test]
fn ill_formed_rules_match_nothing_if_accept_and_deny_all_otherwise() {
    let long = "n".repeat(101);
    let ill_formed = [
        ("long name", json!({"name": long, "to": [all()]})),
        ("no peers", json!({"to": []})),
        ("26 peers", json!({"to": vec![all(); 26]})),
        (
            "two fields",
            json!({"to": [{"namespaces": {}, "networks": ["0.0.0.0/0"]}]}),
        ),
        ("no networks", json!({"to": [{"networks": []}]})),
        ("bad cidr", json!({"to": [{"networks": ["10.0.0.0/33"]}]})),
        // A CIDR, but past the CRD's maxLength of 43.
        (
            "long cidr",
            json!({"to": [{"networks": ["0.0.0.0/0", "0000:0000:0000:0000:0000:ffff:255.255.255.255/128"]}]}),
        ),
        (
            "bad selector",
            json!({"to": [{"namespaces": {"matchExpressions": [{"key": "a", "operator": "In"}]}}]}),
        ),
        ("no protocols", json!({"to": [all()], "protocols": []})),
        ("tcp {}", json!({"to": [all()], "protocols": [{"tcp": {}}]})),
        (
            "no port",
            json!({"to": [all()], "protocols": [{"tcp": {"destinationPort": {}}}]}),
        ),
        (
            "number and range",
            json!({"to": [all()], "protocols": [{"tcp": {"destinationPort": {"number": 80, "range": {"start": 80, "end": 81}}}}]}),
        ),
        (
            "tcp and udp",
            json!({"to": [all()], "protocols": [{"tcp": {"destinationPort": {"number": 80}}, "udp": {"destinationPort": {"number": 53}}}]}),
        ),
        (
            "empty named port",
            json!({"to": [all()], "protocols": [{"destinationNamedPort": ""}]}),
        ),
        (
            "named port to nodes",
            json!({"to": [all(), {"nodes": {}}], "protocols": [{"destinationNamedPort": "web"}]}),
        ),
        (
            "range of one",
            json!({"to": [all()], "protocols": [{"tcp": {"destinationPort": {"range": {"start": 80, "end": 80}}}}]}),
        ),
        (
            "port 65536",
            json!({"to": [all()], "protocols": [tcp(80), {"tcp": {"destinationPort": {"number": 65536}}}]}),
        ),
    ];
    for (name, mut rule) in ill_formed {
        rule["action"] = json!("Accept");
        invalid_rule(
            name,
            rule.clone(),
            &[(A, B, 6, 80, false), (A, OUTSIDE, 6, 80, true)],
        );
        for action in ["Deny", "Pass"] {
            rule["action"] = json!(action);
            invalid_rule(
                &format!("{name} ({action})"),
                rule.clone(),
                &[(A, OUTSIDE, 6, 80, false), (A, OUTSIDE, 1, 0, false)],
            );
        }
    }
    invalid_rule(
        "unknown action",
        json!({"action": "Allow", "to": [{"networks": ["1.1.1.1/32"]}]}),
        &[(A, OUTSIDE, 6, 80, false)],
    );
}

#[test]
fn an_unreadable_peer_makes_accept_match_nothing_and_deny_everything() {
    // The API reference: for Accept, "treat the rule as matching no
    // traffic", so its other peers do not match either.
    invalid_rule(
        "accept with an empty peer",
        json!({"action": "Accept", "to": [{}, app("y")]}),
        &[(A, B, 6, 80, false), (A, C, 6, 80, false)],
    );
    invalid_rule(
        "deny with an empty peer",
        json!({"action": "Deny", "to": [{}, {"networks": ["1.1.1.1/32"]}]}),
        &[(A, OUTSIDE, 6, 80, false)],
    );
    invalid_rule(
        "domain names match nothing",
        json!({"action": "Accept", "to": [{"domainNames": ["example.com"]}, app("y")]}),
        &[
            (A, B, 6, 80, true),
            (A, C, 6, 80, false),
            (A, OUTSIDE, 6, 80, true),
        ],
    );
    for names in [
        json!([]),
        json!(["not a name"]),
        json!(["example"]),
        json!(["a..com"]),
        json!(["*example.com"]),
        json!(["-a.com"]),
        json!(vec!["example.com"; 26]),
    ] {
        invalid_rule(
            &format!("domain names {names}"),
            json!({"action": "Deny", "to": [{"domainNames": names}]}),
            &[(A, OUTSIDE, 6, 80, false)],
        );
    }
    // A readable name leaves the rule's other peers matching; an unreadable
    // one makes the Accept rule match nothing.
    for name in ["*.example.com", "example.com.", "a.b", "x_y.example.com"] {
        invalid_rule(
            &format!("domain name {name}"),
            json!({"action": "Accept", "to": [{"domainNames": [name]}, app("y")]}),
            &[(A, B, 6, 80, true), (A, C, 6, 80, false)],
        );
    }
    invalid_rule(
        "domain name not a name",
        json!({"action": "Accept", "to": [{"domainNames": ["not a name"]}, app("y")]}),
        &[(A, B, 6, 80, false)],
    );
    // The reference supports them in Accept rules only.
    for action in ["Deny", "Pass"] {
        invalid_rule(
            &format!("a {action} of domain names denies all traffic"),
            json!({"action": action, "to": [{"domainNames": ["example.com"]}, app("y")]}),
            &[(A, OUTSIDE, 6, 80, false), (A, C, 6, 80, false)],
        );
    }
}

#[test]
fn an_unreadable_subject_covers_every_pod_and_an_unreadable_tier_is_admin() {
    // Accept rules match nothing and Pass rules deny; an unreadable
    // subject covers every pod, an unreadable tier is Admin, an
    // unreadable priority is 0 (a readable one of them stays).
    let rules = json!([
        {"action": "Accept", "from": [all()]},
        {"action": "Pass", "from": [app("x")]},
    ]);
    let baseline = [
        (A, B, 6, 80, true),
        (A, C, 6, 80, false),
        (B, C, 6, 80, true),
    ];
    let admin = [
        (A, B, 6, 80, false),
        (C, B, 6, 80, false),
        (B, A, 6, 80, true),
    ];
    for (name, patch, expected) in [
        (
            "both subjects",
            json!({"subject": {"namespaces": {}, "pods": {"podSelector": {}}}}),
            &baseline,
        ),
        ("no subject", json!({"subject": {}}), &baseline),
        (
            "bad subject",
            json!({"subject": {"namespaces": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}}),
            &baseline,
        ),
        (
            "priority",
            json!({"priority": 1001, "subject": all()}),
            &baseline,
        ),
        (
            "tier",
            json!({"tier": "Platform", "subject": all()}),
            &admin,
        ),
    ] {
        let mut spec = json!({"tier": "Baseline", "priority": 5, "ingress": rules});
        for (k, v) in patch.as_object().expect("object") {
            spec[k] = v.clone();
        }
        // NetworkPolicy decides for ns0 after the Admin tier.
        case(
            name,
            vec![cnp("degraded", spec), allow_ns0_ingress()],
            expected,
        );
    }
}
