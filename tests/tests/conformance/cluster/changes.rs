//! ClusterNetworkPolicy while the agent runs: pod and namespace labels
//! moving pods in and out of subjects and peers, updates and deletes, and
//! established connections cut when a change now denies them.

use super::{cnp, documents};
use crate::fixture::*;

#[test]
fn label_changes_move_pods_and_namespaces_in_and_out_of_subjects_and_peers() {
    let mut fx = Fixture::builder()
        .namespace_labels("z", &[("team", "blue")])
        .build();
    fx.apply(
        "labels",
        &documents(&[
            cnp(
                "locked",
                "Admin",
                10,
                "subject:\n  pods:\n    podSelector: {matchLabels: {role: locked}}\ningress:\n- action: Deny\n  from:\n  - namespaces: {}",
            ),
            cnp(
                "blue-not-to-x",
                "Admin",
                20,
                "subject:\n  namespaces: {matchLabels: {team: blue}}\negress:\n- action: Deny\n  to:\n  - namespaces: {matchLabels: {ns: x}}",
            ),
            cnp(
                "x-c-not-from-red",
                "Baseline",
                20,
                "subject:\n  pods:\n    namespaceSelector: {matchLabels: {ns: x}}\n    podSelector: {matchLabels: {pod: c}}\ningress:\n- action: Deny\n  from:\n  - pods:\n      namespaceSelector: {matchLabels: {team: red}}\n      podSelector: {}",
            ),
        ]),
    );
    let on = [(Tcp, 80, V4), (Udp, 81, V4), (Tcp, 81, V6)];
    let mut r = fx.reach(true);
    r.deny("z/*", "x/*");
    fx.expect_for(&r, &on);

    // A pod label moves y/b into the subject.
    fx.relabel_pod("y/b", &[("pod", "b"), ("role", "locked")]);
    r.deny_ingress_to("y/b");
    fx.expect_for(&r, &on);

    // Namespace labels move the subject from z to y, and y into a peer.
    fx.relabel_namespace("z", &[]);
    fx.relabel_namespace("y", &[("team", "blue")]);
    let mut r = fx.reach(true);
    r.deny_ingress_to("y/b").deny("y/*", "x/*");
    fx.expect_for(&r, &on);
    fx.relabel_namespace("y", &[("team", "red")]);
    let mut r = fx.reach(true);
    r.deny_ingress_to("y/b").deny("y/*", "x/c");
    fx.expect_for(&r, &on);

    // And y/b out of the subject again.
    fx.relabel_pod("y/b", &[("pod", "b")]);
    let mut r = fx.reach(true);
    r.deny("y/*", "x/c");
    fx.expect_for(&r, &on);

    // A new pod with the subject's label is isolated as it appears.
    let since = std::time::SystemTime::now();
    fx.add_pod(0, "z", "d", &[("pod", "d"), ("role", "locked")]);
    fx.wait_applied(since);
    let mut r = fx.reach(true);
    r.deny("y/*", "x/c").deny_ingress_to("z/d");
    fx.expect_for(&r, &on);
}

#[test]
fn established_connections_are_cut_when_a_cluster_network_policy_now_denies_them() {
    let mut fx = Fixture::new();
    // An Admin Accept first, so the connections below start under a CNP;
    // and a Deny of pods labelled `role: bad` (none yet) into z.
    let policies = |deny: bool| {
        let mut docs = vec![
            cnp(
                "x-b-to-y",
                "Admin",
                10,
                "subject:\n  pods:\n    namespaceSelector: {matchLabels: {ns: x}}\n    podSelector: {matchLabels: {pod: b}}\negress:\n- action: Accept\n  to:\n  - namespaces: {matchLabels: {ns: y}}",
            ),
            cnp(
                "z-not-from-bad",
                "Admin",
                5,
                "subject:\n  namespaces: {matchLabels: {ns: z}}\ningress:\n- action: Deny\n  from:\n  - pods: {podSelector: {matchLabels: {role: bad}}}",
            ),
        ];
        if deny {
            docs.push(cnp(
                "cut",
                "Admin",
                5,
                "subject:\n  pods:\n    namespaceSelector: {matchLabels: {ns: y}}\n    podSelector: {matchLabels: {pod: a}}\ningress:\n- action: Deny\n  from:\n  - pods:\n      namespaceSelector: {matchLabels: {ns: x}}\n      podSelector: {matchLabels: {pod: b}}",
            ));
            docs.push(cnp(
                "cut-egress",
                "Admin",
                5,
                "subject:\n  pods:\n    namespaceSelector: {matchLabels: {ns: x}}\n    podSelector: {matchLabels: {pod: c}}\negress:\n- action: Deny\n  to:\n  - namespaces: {matchLabels: {ns: z}}",
            ));
        }
        documents(&docs)
    };
    fx.apply("cnp", &policies(false));
    let connect = |from: &str, to: &str| {
        let mut conn = fx
            .pod(from)
            .connect_tcp(fx.ip(to, V4), 80, PROBE)
            .unwrap_or_else(|e| panic!("{from} connects to {to}: {e:#}"));
        assert!(conn.exchange(PROBE), "{from} -> {to} works at first");
        conn
    };
    let mut kept = connect("x/a", "y/a");
    let mut kept_accepted = connect("x/b", "y/b");
    let mut cut_at_ingress = connect("x/b", "y/a");
    let mut cut_at_egress = connect("x/c", "z/a");
    let mut kept_unlabelled = connect("y/b", "z/b");
    let mut cut_by_label = connect("y/c", "z/c");

    fx.apply("cnp", &policies(true));
    let mut r = fx.reach(true);
    r.deny("x/b", "y/a").deny("x/c", "z/*");
    fx.expect_for(&r, &[(Tcp, 80, V4), (Tcp, 80, V6)]);
    assert!(kept.exchange(PROBE), "x/a -> y/a is still allowed");
    assert!(
        kept_accepted.exchange(PROBE),
        "x/b -> y/b is still accepted"
    );
    assert!(
        !cut_at_ingress.exchange(PROBE),
        "x/b -> y/a is cut by y/a's ingress Deny"
    );
    assert!(
        !cut_at_egress.exchange(PROBE),
        "x/c -> z/a is cut by x/c's egress Deny"
    );

    // No policy change: a label makes y/c a peer of the Deny into z.
    fx.relabel_pod("y/c", &[("pod", "c"), ("role", "bad")]);
    r.deny("y/c", "z/*");
    fx.expect_for(&r, &[(Tcp, 80, V4), (Udp, 80, V4)]);
    assert!(
        kept_unlabelled.exchange(PROBE),
        "y/b -> z/b is still allowed"
    );
    assert!(
        !cut_by_label.exchange(PROBE),
        "y/c -> z/c is cut once y/c's label matches the Deny"
    );
}
