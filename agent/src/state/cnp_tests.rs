//! One test per validation rule of the CRD, and its fail-closed reading.

use serde_json::json;

use super::*;

fn parse(spec: serde_json::Value) -> ClusterNetworkPolicy {
    let object = crate::source::fixtures::cluster_network_policy_object("p", spec);
    ClusterNetworkPolicy::from_k8s(&object).expect("named")
}

fn fields(p: &ClusterNetworkPolicy) -> Vec<&str> {
    p.rejections.iter().map(|r| r.field.as_str()).collect()
}

fn spec(rule: serde_json::Value) -> serde_json::Value {
    json!({"tier": "Admin", "priority": 10, "subject": {"namespaces": {}}, "egress": [rule]})
}

fn selector(k: &str, v: &str) -> Selector {
    Selector::parse(&serde_json::from_value(json!({"matchLabels": {k: v}})).unwrap()).unwrap()
}

#[test]
fn a_valid_policy_reads_as_written() {
    let p = parse(json!({
        "tier": "Baseline", "priority": 1000,
        "subject": {"pods": {"namespaceSelector": {"matchLabels": {"team": "a"}}, "podSelector": {"matchLabels": {"app": "db"}}}},
        "ingress": [{"name": "from-web", "action": "Accept",
                     "from": [{"pods": {"podSelector": {"matchLabels": {"app": "web"}}}}],
                     "protocols": [{"tcp": {"destinationPort": {"number": 5432}}},
                                   {"udp": {"destinationPort": {"range": {"start": 1000, "end": 2000}}}},
                                   {"destinationNamedPort": "metrics"}]}],
        "egress": [{"action": "Deny", "to": [{"networks": ["10.0.0.1/8", "fd00::/8"]}, {"nodes": {}}]},
                   {"action": "Pass", "to": [{"namespaces": {"matchLabels": {"team": "b"}}}]}],
    }));
    assert!(p.rejections.is_empty(), "{:?}", p.rejections);
    assert_eq!((p.tier, p.priority), (Tier::Baseline, 1000));
    assert_eq!(
        p.subject,
        PodSet {
            namespaces: selector("team", "a"),
            pods: selector("app", "db")
        }
    );
    let ingress = &p.ingress[0];
    assert_eq!(
        (ingress.label(), ingress.action),
        ("from-web".to_string(), Action::Accept)
    );
    assert_eq!(
        ingress.peers,
        Peers::Listed(vec![Peer::Pods(PodSet {
            namespaces: Selector::everything(),
            pods: selector("app", "web")
        })])
    );
    assert_eq!(
        ingress.ports,
        Some(vec![
            Port::Range {
                protocol: Protocol::Tcp,
                first: 5432,
                last: 5432
            },
            Port::Range {
                protocol: Protocol::Udp,
                first: 1000,
                last: 2000
            },
            Port::Named("metrics".into()),
        ])
    );
    assert_eq!(p.egress[0].label(), "0");
    assert_eq!(
        p.egress[0].peers,
        Peers::Listed(vec![
            Peer::Networks(vec![
                "10.0.0.0/8".parse().unwrap(),
                "fd00::/8".parse().unwrap()
            ]),
            Peer::Nodes(Selector::everything()),
        ])
    );
    assert_eq!(p.egress[0].ports, None);
    assert_eq!(p.egress[1].action, Action::Pass);
    assert_eq!(
        p.egress[1].peers,
        Peers::Listed(vec![Peer::Pods(PodSet {
            namespaces: selector("team", "b"),
            pods: Selector::everything()
        })])
    );
}

#[test]
fn an_empty_peer_matches_nothing_in_accept_and_everything_in_deny_and_pass() {
    let accept = parse(spec(json!({"action": "Accept", "to": [{}]})));
    assert!(accept.egress.is_empty());
    assert_eq!(fields(&accept), ["spec.egress[0].to[0]"]);
    for action in ["Deny", "Pass"] {
        let p = parse(spec(
            json!({"action": action, "to": [{}], "protocols": [{"tcp": {"destinationPort": {"number": 80}}}]}),
        ));
        assert_eq!(p.egress, vec![Rule::deny_all(0, None)], "{action}");
    }
}

#[test]
fn an_accept_rule_with_an_unreadable_peer_matches_no_traffic() {
    // The API reference: for an Accept rule, failing closed is "treat the
    // rule as matching no traffic", so its readable peers go with it.
    let p = parse(spec(json!({"action": "Accept", "to": [
        {"networks": ["not-a-cidr"]}, {"namespaces": {"matchLabels": {"team": "a"}}}]})));
    assert_eq!(fields(&p), ["spec.egress[0].to[0].networks[0]"]);
    assert!(p.egress.is_empty(), "{:?}", p.egress);
    let empty = parse(spec(json!({"action": "Accept", "to": [
        {}, {"namespaces": {"matchLabels": {"team": "a"}}}]})));
    assert!(empty.egress.is_empty(), "{:?}", empty.egress);
    // Control: the same rule without the unreadable peer stays.
    let readable = parse(spec(json!({"action": "Accept", "to": [
        {"namespaces": {"matchLabels": {"team": "a"}}}]})));
    assert_eq!(
        readable.egress[0].peers,
        Peers::Listed(vec![Peer::Pods(PodSet {
            namespaces: selector("team", "a"),
            pods: Selector::everything()
        })])
    );
}

#[test]
fn invalid_deny_and_pass_rules_deny_all_and_invalid_accept_rules_vanish() {
    let bad_ports = [
        json!([{"tcp": {"destinationPort": {"range": {"start": 90, "end": 80}}}}]),
        json!([{"tcp": {"destinationPort": {"range": {"start": 80, "end": 80}}}}]),
        json!([{"tcp": {"destinationPort": {"number": 0}}}]),
        json!([{"tcp": {"destinationPort": {"number": 70000}}}]),
        json!([{"tcp": {}}]),
        json!([{"tcp": {"destinationPort": {}}}]),
        json!([{"tcp": {"destinationPort": {"number": 80}}, "udp": {"destinationPort": {"number": 80}}}]),
        json!([{}]),
        json!([]),
    ];
    for protocols in bad_ports {
        let accept = parse(spec(
            json!({"action": "Accept", "to": [{"nodes": {}}], "protocols": protocols}),
        ));
        assert!(accept.egress.is_empty(), "{protocols}");
        assert_eq!(
            accept.rejections.len(),
            1,
            "{protocols}: {:?}",
            accept.rejections
        );
        assert!(
            accept.rejections[0]
                .field
                .starts_with("spec.egress[0].protocols"),
            "{:?}",
            accept.rejections
        );
        for action in ["Deny", "Pass"] {
            let p = parse(spec(
                json!({"action": action, "to": [{"nodes": {}}], "protocols": protocols}),
            ));
            assert_eq!(
                p.egress,
                vec![Rule::deny_all(0, None)],
                "{action} {protocols}"
            );
        }
    }
    let unknown = parse(spec(json!({"action": "Allow", "to": [{"nodes": {}}]})));
    assert_eq!(unknown.egress, vec![Rule::deny_all(0, None)]);
    assert_eq!(fields(&unknown), ["spec.egress[0].action"]);
}

#[test]
fn named_ports_do_not_combine_with_address_peers() {
    for peer in [json!({"networks": ["10.0.0.0/8"]}), json!({"nodes": {}})] {
        let p = parse(spec(
            json!({"action": "Deny", "to": [peer], "protocols": [{"destinationNamedPort": "http"}]}),
        ));
        assert_eq!(p.egress, vec![Rule::deny_all(0, None)], "{peer}");
        assert_eq!(fields(&p), ["spec.egress[0].protocols"]);
    }
    let fine = parse(spec(
        json!({"action": "Deny", "to": [{"pods": {"podSelector": {}}}], "protocols": [{"destinationNamedPort": "http"}]}),
    ));
    assert!(fine.rejections.is_empty());
}

#[test]
fn domain_names_match_nothing_and_say_so() {
    let p = parse(spec(
        json!({"action": "Accept", "to": [{"domainNames": ["example.com"]}, {"nodes": {}}]}),
    ));
    assert_eq!(
        p.egress[0].peers,
        Peers::Listed(vec![Peer::Nodes(Selector::everything())])
    );
    assert_eq!(p.egress[0].action, Action::Accept);
    assert_eq!(fields(&p), ["spec.egress[0].to[0].domainNames"]);
    assert!(p.rejections[0].reason.contains("not supported"));
    assert_eq!(
        p.unsupported,
        [UnsupportedField {
            field: "spec.egress[0].to[0].domainNames".into(),
            part: Unsupported::DomainNames,
        }],
        "the rejection is marked as an unsupported part"
    );
    // A validation failure is not one.
    let bad = parse(spec(
        json!({"action": "Deny", "to": [{"networks": ["10.0.0.0/33"]}]}),
    ));
    assert!(!bad.rejections.is_empty() && bad.unsupported.is_empty());
}

#[test]
fn domain_names_the_crd_refuses_are_unreadable_peers() {
    for names in [
        json!([]),
        json!(["not a name"]),
        json!(["example"]),
        json!(["a..com"]),
        json!(["-a.com"]),
        json!(["*example.com"]),
        json!(vec!["example.com"; MAX_ITEMS + 1]),
    ] {
        let p = parse(spec(
            json!({"action": "Deny", "to": [{"domainNames": names}]}),
        ));
        assert_eq!(p.egress, vec![Rule::deny_all(0, None)], "{names}");
        assert!(p.unsupported.is_empty(), "{names}");
        assert!(
            fields(&p)[0].starts_with("spec.egress[0].to[0].domainNames"),
            "{names}"
        );
    }
    for name in [
        "*.example.com",
        "example.com.",
        "a.b",
        "x_y.example.com",
        "_x.com",
    ] {
        let p = parse(spec(
            json!({"action": "Accept", "to": [{"domainNames": [name]}, {"nodes": {}}]}),
        ));
        assert_eq!(
            p.egress[0].peers,
            Peers::Listed(vec![Peer::Nodes(Selector::everything())]),
            "{name}"
        );
        assert_eq!(p.unsupported.len(), 1, "{name}");
    }
}

#[test]
fn domain_names_in_deny_and_pass_rules_deny_all_traffic() {
    // The API reference supports them in Accept rules only; matching
    // nothing there would let through what the rule was written to stop.
    for action in ["Deny", "Pass"] {
        let p = parse(spec(
            json!({"action": action, "to": [{"domainNames": ["example.com"]}, {"nodes": {}}]}),
        ));
        assert_eq!(p.egress, vec![Rule::deny_all(0, None)], "{action}");
        assert_eq!(fields(&p), ["spec.egress[0].to[0].domainNames"], "{action}");
        assert!(
            p.rejections[0]
                .reason
                .contains("only allowed in Accept rules")
        );
        assert!(
            p.unsupported.is_empty(),
            "{action}: a rejection, not an unsupported part"
        );
    }
}

#[test]
fn a_cidr_past_the_crd_s_max_length_is_unreadable() {
    let long = "0000:0000:0000:0000:0000:ffff:255.255.255.255/128";
    assert!(long.len() > MAX_CIDR_LENGTH && long.parse::<ipnet::IpNet>().is_ok());
    let p = parse(spec(
        json!({"action": "Deny", "to": [{"networks": [long]}]}),
    ));
    assert_eq!(p.egress, vec![Rule::deny_all(0, None)]);
    assert_eq!(fields(&p), ["spec.egress[0].to[0].networks[0]"]);
}

#[test]
fn limits_follow_the_crd() {
    let rule = json!({"action": "Accept", "to": [{"nodes": {}}]});
    let p = parse(
        json!({"tier": "Admin", "priority": 0, "subject": {"namespaces": {}},
                         "egress": vec![rule; MAX_ITEMS + 1]}),
    );
    assert_eq!(p.egress.len(), MAX_ITEMS);
    assert_eq!(fields(&p), ["spec.egress"]);
    let deny = json!({"action": "Deny", "to": [{"nodes": {}}]});
    let p = parse(
        json!({"tier": "Admin", "priority": 0, "subject": {"namespaces": {}},
                         "egress": vec![deny; MAX_ITEMS + 1]}),
    );
    assert_eq!(p.egress[MAX_ITEMS], Rule::deny_all(MAX_ITEMS, None));
    let many_peers = parse(spec(
        json!({"action": "Deny", "to": vec![json!({"nodes": {}}); MAX_ITEMS + 1]}),
    ));
    assert_eq!(many_peers.egress, vec![Rule::deny_all(0, None)]);
    let long = "n".repeat(MAX_RULE_NAME + 1);
    let named = parse(spec(
        json!({"name": long, "action": "Accept", "to": [{"nodes": {}}]}),
    ));
    assert!(named.egress.is_empty());
    assert_eq!(fields(&named), ["spec.egress[0].name"]);
}

#[test]
fn an_unreadable_subject_tier_or_priority_degrades_the_policy_closed() {
    let rules = json!([
        {"action": "Accept", "to": [{"nodes": {}}]},
        {"action": "Pass", "to": [{"nodes": {}}]},
        {"action": "Deny", "to": [{"networks": ["10.0.0.0/8"]}]},
    ]);
    for (patch, field) in [
        (json!({"subject": {}}), "spec.subject"),
        (
            json!({"subject": {"namespaces": {}, "pods": {"podSelector": {}}}}),
            "spec.subject",
        ),
        (
            json!({"subject": {"namespaces": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}}),
            "spec.subject.namespaces.matchExpressions[0].operator",
        ),
        (json!({"tier": "Platform"}), "spec.tier"),
        (json!({"priority": 1001}), "spec.priority"),
        (json!({"priority": -1}), "spec.priority"),
    ] {
        let mut s = json!({"tier": "Baseline", "priority": 5, "subject": {"pods": {"podSelector": {"matchLabels": {"app": "x"}}}}, "egress": rules});
        for (k, v) in patch.as_object().unwrap() {
            s[k] = v.clone();
        }
        let p = parse(s);
        assert_eq!(fields(&p), [field], "{patch}");
        let actions: Vec<Action> = p.egress.iter().map(|r| r.action).collect();
        assert_eq!(actions, [Action::Deny, Action::Deny], "{patch}");
        assert_eq!(p.egress.iter().map(|r| r.index).collect::<Vec<_>>(), [1, 2]);
    }
    let subjectless = parse(json!({"tier": "Admin", "priority": 1, "subject": {}}));
    assert_eq!(subjectless.subject, PodSet::everything());
    let tierless = parse(json!({"tier": "x", "priority": 1, "subject": {"namespaces": {}}}));
    assert_eq!(tierless.tier, Tier::Admin);
}

#[test]
fn precedence_is_tier_then_priority_then_name() {
    let mut policies: Vec<ClusterNetworkPolicy> = [
        ("b", "Admin", 5),
        ("a", "Admin", 5),
        ("c", "Admin", 1),
        ("d", "Baseline", 0),
    ]
    .into_iter()
    .map(|(name, tier, priority)| {
        let mut p =
            parse(json!({"tier": tier, "priority": priority, "subject": {"namespaces": {}}}));
        p.name = name.into();
        p
    })
    .collect();
    policies.sort_by(|x, y| x.precedence().cmp(&y.precedence()));
    let order: Vec<&str> = policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(order, ["c", "a", "b", "d"]);
}
