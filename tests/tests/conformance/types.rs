//! policyTypes and how policies combine: what a policy isolates (listed or
//! defaulted), deny-all and allow-all, the union of several policies, and
//! traffic needing both the source's egress and the destination's ingress.

use crate::fixture::*;

#[test]
fn deny_all_egress_isolates_only_the_policy_namespaces_pods() {
    let fx = Fixture::new();
    fx.apply(
        "deny-egress",
        &policy("x", "deny-egress", "podSelector: {}\npolicyTypes: [Egress]"),
    );
    let mut r = fx.reach(true);
    r.deny_egress_from("x/*");
    fx.expect_for(
        &r,
        &[(Tcp, 80, V4), (Udp, 80, V4), (Sctp, 81, V4), (Tcp, 80, V6)],
    );
}

#[test]
fn an_empty_rule_allows_all_ingress_and_all_egress_despite_deny_all_policies() {
    let fx = Fixture::new();
    fx.apply(
        "deny-all",
        &policy(
            "x",
            "deny-all",
            "podSelector: {}\npolicyTypes: [Ingress, Egress]",
        ),
    );
    let mut denied = fx.reach(true);
    denied.deny_ingress_to("x/*").deny_egress_from("x/*");
    fx.expect_for(&denied, &[(Tcp, 80, V4)]);
    fx.apply(
        "allow-all",
        &policy(
            "x",
            "allow-all",
            "podSelector: {}\npolicyTypes: [Ingress, Egress]\ningress:\n- {}\negress:\n- {}",
        ),
    );
    denied.expect_all(true);
    fx.expect_for(
        &denied,
        &[(Tcp, 80, V4), (Udp, 81, V4), (Sctp, 80, V4), (Tcp, 81, V6)],
    );
}

#[test]
fn an_egress_only_policy_does_not_isolate_ingress() {
    let fx = Fixture::new();
    fx.apply(
        "egress-only",
        &policy(
            "x",
            "to-y",
            "podSelector: {}\npolicyTypes: [Egress]\negress:\n- to:\n  - namespaceSelector: {matchLabels: {ns: y}}",
        ),
    );
    let mut r = fx.reach(true);
    r.deny_egress_from("x/*").allow("x/*", "y/*");
    fx.expect_for(&r, &[(Tcp, 80, V4), (Udp, 81, V4)]);
}

#[test]
fn without_policy_types_ingress_is_always_isolated_and_egress_only_with_egress_rules() {
    let fx = Fixture::new();
    fx.apply(
        "defaulted",
        &format!(
            "{}---\n{}",
            // Egress rules, no ingress rules: both directions isolated.
            policy(
                "x",
                "a-egress-rules",
                "podSelector: {matchLabels: {pod: a}}\negress:\n- to:\n  - podSelector: {matchLabels: {pod: b}}",
            ),
            // Ingress rules only: ingress isolated, egress untouched.
            policy(
                "y",
                "b-ingress-rules",
                "podSelector: {matchLabels: {pod: b}}\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {ns: z}}",
            ),
        ),
    );
    let mut r = fx.reach(true);
    r.deny_ingress_to("x/a")
        .deny_egress_from("x/a")
        .allow("x/a", "x/b")
        .deny_ingress_to("y/b")
        .allow("z/*", "y/b");
    fx.expect_for(&r, &[(Tcp, 80, V4), (Sctp, 80, V4)]);
}

#[test]
fn several_policies_selecting_one_pod_allow_the_union_of_their_rules() {
    let fx = Fixture::new();
    fx.apply(
        "union",
        &format!(
            "{}---\n{}",
            policy(
                "x",
                "a-from-y-tcp",
                "podSelector: {matchLabels: {pod: a}}\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {ns: y}}\n  ports:\n  - port: 80",
            ),
            policy(
                "x",
                "a-from-z-b",
                "podSelector: {}\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {ns: z}}\n    podSelector: {matchLabels: {pod: b}}",
            ),
        ),
    );
    let mut tcp80 = fx.reach(true);
    tcp80
        .deny_ingress_to("x/*")
        .allow("z/b", "x/*")
        .allow("y/*", "x/a");
    let mut other = fx.reach(true);
    other.deny_ingress_to("x/*").allow("z/b", "x/*");
    fx.expect(&[
        Case::new(Tcp, 80, V4, &tcp80),
        Case::new(Tcp, 81, V4, &other),
        Case::new(Udp, 80, V4, &other),
    ]);
}

#[test]
fn traffic_between_isolated_pods_needs_the_sources_egress_and_the_destinations_ingress() {
    let fx = Fixture::new();
    fx.apply(
        "egress",
        &policy(
            "x",
            "a-to-y-a",
            "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Egress]\negress:\n- to:\n  - namespaceSelector: {matchLabels: {ns: y}}\n    podSelector: {matchLabels: {pod: a}}",
        ),
    );
    fx.apply(
        "ingress",
        &policy(
            "y",
            "from-x-b",
            "podSelector: {}\npolicyTypes: [Ingress]\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {ns: x}}\n    podSelector: {matchLabels: {pod: b}}",
        ),
    );
    // x/a may send to y/a but y/a does not admit it; y/b admits x/b only.
    let mut r = fx.reach(true);
    r.deny_egress_from("x/a")
        .deny_ingress_to("y/*")
        .allow("x/b", "y/*");
    fx.expect_for(&r, &[(Tcp, 80, V4)]);
    fx.apply(
        "ingress",
        &policy(
            "y",
            "from-x-b",
            "podSelector: {}\npolicyTypes: [Ingress]\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {ns: x}}",
        ),
    );
    // Now y admits all of x, but x/a still sends only to y/a.
    let mut r = fx.reach(true);
    r.deny_egress_from("x/a")
        .deny_ingress_to("y/*")
        .allow("x/b", "y/*")
        .allow("x/c", "y/*")
        .allow("x/a", "y/a");
    fx.expect_for(&r, &[(Tcp, 80, V4), (Udp, 80, V4)]);
}

#[test]
fn a_rule_without_peers_admits_every_destination_on_its_ports() {
    let fx = Fixture::new();
    fx.apply(
        "no-peers",
        &policy(
            "x",
            "a-out-81",
            "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Egress]\negress:\n- to: []\n  ports:\n  - port: 81\n  - port: 80\n    protocol: UDP",
        ),
    );
    let mut closed = fx.reach(true);
    closed.deny_egress_from("x/a");
    let open = fx.reach(true);
    fx.expect(&[
        Case::new(Tcp, 80, V4, &closed),
        Case::new(Tcp, 81, V4, &open),
        Case::new(Udp, 80, V4, &open),
        Case::new(Udp, 81, V4, &closed),
        Case::new(Tcp, 81, V6, &open),
    ]);
}
