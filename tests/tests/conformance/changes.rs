//! Changes while the agent runs: policies added, updated and deleted; pod
//! and namespace labels changed; pods added and removed.

use crate::fixture::*;

#[test]
fn a_policy_takes_effect_when_added_follows_an_update_and_goes_when_deleted() {
    let fx = Fixture::new();
    let port_policy = |pod: &str, port: u16| {
        policy(
            "x",
            "a-port",
            &format!(
                "podSelector: {{matchLabels: {{pod: {pod}}}}}\ningress:\n- ports:\n  - port: {port}"
            ),
        )
    };
    let only = |pod: &str, port: u16| {
        let mut closed = fx.reach(true);
        closed.deny_ingress_to(pod);
        let open = fx.reach(true);
        [80, 81].map(|p| Case::new(Tcp, p, V4, if p == port { &open } else { &closed }))
    };
    fx.apply("a-port", &port_policy("a", 80));
    fx.expect(&only("x/a", 80));
    fx.apply("a-port", &port_policy("a", 81));
    fx.expect(&only("x/a", 81));
    // The same policy now selects another pod: x/a is free again.
    fx.apply("a-port", &port_policy("b", 81));
    fx.expect(&only("x/b", 81));
    fx.delete("a-port");
    fx.expect_for(&fx.reach(true), &[(Tcp, 80, V4), (Tcp, 81, V4)]);
}

#[test]
fn relabelling_pods_moves_them_in_and_out_of_selectors() {
    let mut fx = Fixture::new();
    fx.apply(
        "clients",
        &policy(
            "x",
            "a-from-clients",
            "podSelector: {matchLabels: {pod: a}}\ningress:\n- from:\n  - namespaceSelector: {}\n    podSelector: {matchLabels: {role: client}}",
        ),
    );
    let mut r = fx.reach(true);
    r.deny_ingress_to("x/a");
    fx.expect_for(&r, &[(Tcp, 80, V4)]);

    // y/b becomes a client; x/c takes the label the policy selects.
    fx.relabel_pod("y/b", &[("pod", "b"), ("role", "client")]);
    fx.relabel_pod("x/c", &[("pod", "a")]);
    let mut r = fx.reach(true);
    r.deny_ingress_to("x/a")
        .deny_ingress_to("x/c")
        .allow("y/b", "x/a")
        .allow("y/b", "x/c");
    fx.expect_for(&r, &[(Tcp, 80, V4), (Udp, 80, V4)]);

    // And back.
    fx.relabel_pod("y/b", &[("pod", "b")]);
    fx.relabel_pod("x/c", &[("pod", "c")]);
    let mut r = fx.reach(true);
    r.deny_ingress_to("x/a");
    fx.expect_for(&r, &[(Tcp, 80, V4)]);
}

#[test]
fn relabelling_a_namespace_moves_its_pods_in_and_out_of_namespace_selectors() {
    let mut fx = Fixture::new();
    fx.apply(
        "blue",
        &policy(
            "x",
            "a-from-blue",
            "podSelector: {matchLabels: {pod: a}}\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {team: blue}}",
        ),
    );
    let mut r = fx.reach(true);
    r.deny_ingress_to("x/a");
    fx.expect_for(&r, &[(Tcp, 80, V4)]);

    fx.relabel_namespace("z", &[("team", "blue")]);
    let mut r = fx.reach(true);
    r.deny_ingress_to("x/a").allow("z/*", "x/a");
    fx.expect_for(&r, &[(Tcp, 80, V4), (Sctp, 81, V4)]);

    fx.relabel_namespace("z", &[]);
    fx.relabel_namespace("y", &[("team", "blue")]);
    let mut r = fx.reach(true);
    r.deny_ingress_to("x/a").allow("y/*", "x/a");
    fx.expect_for(&r, &[(Tcp, 80, V4)]);
}

#[test]
fn an_added_pod_is_selected_and_admitted_and_a_removed_pod_loses_its_allows() {
    let mut fx = Fixture::new();
    fx.apply(
        "policies",
        &format!(
            "{}---\n{}",
            policy("x", "deny", "podSelector: {}\npolicyTypes: [Ingress]"),
            policy(
                "y",
                "from-x-d",
                "podSelector: {}\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {ns: x}}\n    podSelector: {matchLabels: {pod: d}}",
            ),
        ),
    );
    let mut r = fx.reach(true);
    r.deny_ingress_to("x/*").deny_ingress_to("y/*");
    fx.expect_for(&r, &[(Tcp, 80, V4)]);

    let since = std::time::SystemTime::now();
    fx.add_pod(0, "x", "d", &[("pod", "d")]);
    fx.wait_applied(since);
    let mut r = fx.reach(true);
    r.deny_ingress_to("x/*")
        .deny_ingress_to("y/*")
        .allow("x/d", "y/*");
    fx.expect_for(&r, &[(Tcp, 80, V4), (Udp, 81, V4), (Tcp, 80, V6)]);

    // Its object goes (its veth and servers stay, as while a pod is torn
    // down): its address is no pod of x any more, so y no longer admits it.
    let since = std::time::SystemTime::now();
    let _gone = fx
        .cluster
        .remove_pod_object("x", "d")
        .expect("remove pod object");
    fx.wait_applied(since);
    let mut r = fx.reach(true);
    r.deny_ingress_to("x/*")
        .deny_ingress_to("y/*")
        .deny("x/d", "y/*")
        // What reaches a pod that no longer exists is not specified.
        .ignore("*", "x/d");
    fx.expect_for(&r, &[(Tcp, 80, V4), (Tcp, 80, V6)]);
}

#[test]
fn an_established_connection_is_cut_when_a_policy_change_revokes_its_allow() {
    let fx = Fixture::new();
    let allow = |pods: &str| {
        policy(
            "y",
            "a-from-x",
            &format!(
                "podSelector: {{matchLabels: {{pod: a}}}}\ningress:\n- from:\n  - namespaceSelector: {{matchLabels: {{ns: x}}}}\n    podSelector:\n      matchExpressions: [{{key: pod, operator: In, values: [{pods}]}}]"
            ),
        )
    };
    fx.apply("a-from-x", &allow("a, b"));
    let mut r = fx.reach(true);
    r.deny_ingress_to("y/a")
        .allow("x/a", "y/a")
        .allow("x/b", "y/a");
    fx.expect_for(&r, &[(Tcp, 80, V4)]);
    let connect = |from: &str| {
        let mut conn = fx
            .pod(from)
            .connect_tcp(fx.ip("y/a", V4), 80, PROBE)
            .unwrap_or_else(|e| panic!("{from} connects to y/a: {e:#}"));
        assert!(conn.exchange(PROBE), "{from} -> y/a works at first");
        conn
    };
    let mut kept = connect("x/a");
    let mut revoked = connect("x/b");

    fx.apply("a-from-x", &allow("a"));
    r.deny("x/b", "y/a");
    fx.expect_for(&r, &[(Tcp, 80, V4)]);
    assert!(
        kept.exchange(PROBE),
        "x/a's connection is still allowed and keeps working"
    );
    assert!(
        !revoked.exchange(PROBE),
        "x/b's established connection is cut once its allow is gone"
    );
}
