//! Who a policy selects and which peers its rules admit: pod and namespace
//! selectors, their combinations, label expressions and ipBlocks.

use crate::fixture::*;

#[test]
fn default_deny_ingress_in_a_namespace_isolates_exactly_its_pods() {
    let fx = Fixture::new();
    fx.apply(
        "deny",
        &policy(
            "x",
            "deny-ingress",
            "podSelector: {}\npolicyTypes: [Ingress]",
        ),
    );
    let mut r = fx.reach(true);
    r.deny_ingress_to("x/*");
    fx.expect_for(
        &r,
        &[(Tcp, 80, V4), (Udp, 81, V4), (Sctp, 80, V4), (Tcp, 81, V6)],
    );
}

#[test]
fn a_pod_selector_alone_admits_only_matching_pods_of_the_policy_namespace() {
    let fx = Fixture::new();
    fx.apply(
        "from-b",
        &policy(
            "x",
            "a-from-b",
            "podSelector: {matchLabels: {pod: a}}\ningress:\n- from:\n  - podSelector: {matchLabels: {pod: b}}",
        ),
    );
    let mut r = fx.reach(true);
    r.deny_ingress_to("x/a").allow("x/b", "x/a");
    fx.expect_for(&r, &[(Tcp, 80, V4), (Udp, 80, V4), (Tcp, 80, V6)]);
}

#[test]
fn a_namespace_selector_alone_admits_every_pod_of_matching_namespaces() {
    let fx = Fixture::new();
    fx.apply(
        "from-y",
        &policy(
            "x",
            "a-from-y",
            "podSelector: {matchLabels: {pod: a}}\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {ns: y}}",
        ),
    );
    let mut r = fx.reach(true);
    r.deny_ingress_to("x/a").allow("y/*", "x/a");
    fx.expect_for(&r, &[(Tcp, 81, V4), (Sctp, 81, V4)]);
}

#[test]
fn pod_and_namespace_selectors_in_one_peer_must_both_match() {
    let fx = Fixture::new();
    fx.apply(
        "and",
        &policy(
            "x",
            "a-from-y-b",
            "podSelector: {matchLabels: {pod: a}}\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {ns: y}}\n    podSelector: {matchLabels: {pod: b}}",
        ),
    );
    let mut r = fx.reach(true);
    r.deny_ingress_to("x/a").allow("y/b", "x/a");
    fx.expect_for(&r, &[(Tcp, 80, V4), (Udp, 81, V4)]);
}

#[test]
fn two_peers_of_one_rule_are_alternatives() {
    let fx = Fixture::new();
    fx.apply(
        "or",
        &policy(
            "x",
            "a-from-y-or-b",
            "podSelector: {matchLabels: {pod: a}}\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {ns: y}}\n  - podSelector: {matchLabels: {pod: b}}",
        ),
    );
    let mut r = fx.reach(true);
    r.deny_ingress_to("x/a")
        .allow("y/*", "x/a")
        .allow("x/b", "x/a");
    fx.expect_for(&r, &[(Tcp, 80, V4), (Sctp, 80, V4)]);
}

#[test]
fn match_expressions_in_not_in_exists_and_does_not_exist_select_as_documented() {
    let fx = Fixture::builder()
        .namespace_labels("z", &[("team", "blue")])
        .build();
    // One target pod per operator; x/c stays unselected.
    let ns_expr = |target: &str, expr: &str| {
        policy(
            "x",
            &format!("expr-{target}"),
            &format!(
                "podSelector: {{matchLabels: {{pod: {target}}}}}\ningress:\n- from:\n  - namespaceSelector:\n      matchExpressions: [{expr}]"
            ),
        )
    };
    let mut yaml = ns_expr("a", "{key: ns, operator: In, values: [y, q]}");
    yaml.push_str("---\n");
    yaml.push_str(&ns_expr("b", "{key: ns, operator: NotIn, values: [x, y]}"));
    yaml.push_str("---\n");
    yaml.push_str(&policy(
        "y",
        "expr-a",
        "podSelector: {matchLabels: {pod: a}}\ningress:\n- from:\n  - namespaceSelector:\n      matchExpressions: [{key: team, operator: Exists}]",
    ));
    yaml.push_str("---\n");
    yaml.push_str(&policy(
        "y",
        "expr-b",
        "podSelector: {matchLabels: {pod: b}}\ningress:\n- from:\n  - namespaceSelector:\n      matchExpressions: [{key: team, operator: DoesNotExist}]",
    ));
    yaml.push_str("---\n");
    // matchLabels and matchExpressions of one selector are ANDed.
    yaml.push_str(&policy(
        "y",
        "expr-c",
        "podSelector: {matchLabels: {pod: c}}\ningress:\n- from:\n  - namespaceSelector: {}\n    podSelector:\n      matchExpressions: [{key: pod, operator: NotIn, values: [a]}]\n  - namespaceSelector: {matchLabels: {ns: x}, matchExpressions: [{key: pod, operator: DoesNotExist}]}\n    podSelector: {matchLabels: {pod: a}, matchExpressions: [{key: pod, operator: In, values: [a, c]}]}",
    ));
    fx.apply("expressions", &yaml);
    let mut r = fx.reach(true);
    r.deny_ingress_to("x/a").allow("y/*", "x/a");
    r.deny_ingress_to("x/b").allow("z/*", "x/b");
    r.deny_ingress_to("y/a").allow("z/*", "y/a");
    r.deny_ingress_to("y/b")
        .allow("x/*", "y/b")
        .allow("y/*", "y/b");
    r.deny_ingress_to("y/c")
        .allow("*/b", "y/c")
        .allow("*/c", "y/c")
        .allow("x/a", "y/c");
    fx.expect_for(&r, &[(Tcp, 80, V4), (Udp, 80, V4)]);
}

#[test]
fn ip_blocks_with_except_match_pod_addresses_per_family() {
    let fx = Fixture::new();
    let cidr6 = "fd00:244::/32";
    let except4 = vec![format!("{}/32", fx.ip("y/b", V4))];
    let except6 = vec![format!("{}/128", fx.ip("z/c", V6))];
    // Egress of x/b: the /28 holding the pods' addresses except its upper
    // /29 (where z's pods are).
    let egress4 = format!("{}/28", network(fx.ip("x/a", V4), 28));
    let egress4_except = vec![format!("{}/29", network(fx.ip("z/a", V4), 29))];
    fx.apply(
        "ipblocks",
        &format!(
            "{}---\n{}",
            policy(
                "x",
                "a-from-blocks",
                &format!(
                    "podSelector: {{matchLabels: {{pod: a}}}}\ningress:\n- from:\n  - ipBlock: {{cidr: 10.244.0.0/16, except: [{}]}}\n  - ipBlock: {{cidr: \"{cidr6}\", except: [\"{}\"]}}",
                    except4[0], except6[0]
                ),
            ),
            policy(
                "x",
                "b-to-block",
                &format!(
                    "podSelector: {{matchLabels: {{pod: b}}}}\npolicyTypes: [Egress]\negress:\n- to:\n  - ipBlock: {{cidr: {egress4}, except: [{}]}}",
                    egress4_except[0]
                ),
            ),
        ),
    );
    let expected = |family: Family| {
        let mut r = fx.reach(true);
        r.expect_where(|from, to| {
            // Traffic needs the destination's ingress and the source's egress.
            let ingress = to.id() != "x/a"
                || match family {
                    V4 => in_ip_block(from.ip(V4), "10.244.0.0/16", &except4),
                    V6 => in_ip_block(from.ip(V6), cidr6, &except6),
                };
            let egress = from.id() != "x/b"
                || match family {
                    V4 => in_ip_block(to.ip(V4), &egress4, &egress4_except),
                    V6 => false,
                };
            Some(ingress && egress)
        });
        r
    };
    let (r4, r6) = (expected(V4), expected(V6));
    // Make sure the tables say something: both except clauses and the egress
    // block leave some pods in and some out.
    assert!(!r4.get_by_id("y/b", "x/a") && r4.get_by_id("y/a", "x/a"));
    assert!(!r6.get_by_id("z/c", "x/a") && r6.get_by_id("y/b", "x/a"));
    assert!(r4.get_by_id("x/b", "y/a") && !r4.get_by_id("x/b", "z/b"));
    fx.expect(&[
        Case::new(Tcp, 80, V4, &r4),
        Case::new(Tcp, 80, V6, &r6),
        Case::new(Udp, 81, V6, &r6),
    ]);
}

/// The network address of `ip` with a `prefix`-bit mask.
fn network(ip: std::net::IpAddr, prefix: u8) -> std::net::IpAddr {
    let net: ipnet::IpNet = ipnet::IpNet::new(ip, prefix).expect("prefix");
    net.network()
}

#[test]
fn ip_blocks_spanning_every_address_still_honour_except() {
    let fx = Fixture::new();
    // The first /29 of the node's range holds x/a to y/c (.2 to .7).
    let low = format!("{}/29", network(fx.ip("x/a", V4), 29));
    let x_a6 = format!("{}/128", fx.ip("x/a", V6));
    fx.apply(
        "everything",
        &policy(
            "x",
            "c-to-world",
            &format!(
                "podSelector: {{matchLabels: {{pod: c}}}}\npolicyTypes: [Egress]\negress:\n- to:\n  - ipBlock: {{cidr: 0.0.0.0/0, except: [{low}]}}\n  - ipBlock: {{cidr: \"::/0\", except: [\"{x_a6}\"]}}"
            ),
        ),
    );
    let expected = |family: Family| {
        let mut r = fx.reach(true);
        r.expect_where(|from, to| {
            (from.id() == "x/c").then(|| match family {
                V4 => in_ip_block(to.ip(V4), "0.0.0.0/0", std::slice::from_ref(&low)),
                V6 => in_ip_block(to.ip(V6), "::/0", std::slice::from_ref(&x_a6)),
            })
        });
        r
    };
    let (r4, r6) = (expected(V4), expected(V6));
    assert!(!r4.get_by_id("x/c", "x/a") && r4.get_by_id("x/c", "z/c"));
    assert!(!r6.get_by_id("x/c", "x/a") && r6.get_by_id("x/c", "x/b"));
    fx.expect(&[
        Case::new(Tcp, 80, V4, &r4),
        Case::new(Udp, 81, V4, &r4),
        Case::new(Tcp, 80, V6, &r6),
    ]);
}
