//! Bad input is reported and contained: a malformed manifest file keeps its
//! previous objects, a pod without an interface is reported as not
//! enforced, a policy naming a missing namespace selects nothing, and an
//! invalid policy fails closed.

use std::net::IpAddr;
use std::time::Duration;

use palisade_tests::wait_until;

use crate::fixture::*;

fn errors_mention(fx: &Fixture, what: &str) -> bool {
    fx.cluster
        .status(0)
        .ok()
        .and_then(|s| s["errors"].as_array().cloned())
        .is_some_and(|errors| {
            errors
                .iter()
                .any(|e| e.as_str().is_some_and(|e| e.contains(what)))
        })
}

#[test]
fn a_malformed_manifest_is_reported_and_its_previous_objects_stay_in_force() {
    let fx = Fixture::new();
    fx.apply(
        "deny",
        &policy("x", "deny", "podSelector: {}\npolicyTypes: [Ingress]"),
    );
    fx.apply(
        "a-from-y",
        &policy(
            "x",
            "a-from-y",
            "podSelector: {matchLabels: {pod: a}}\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {ns: y}}",
        ),
    );
    let mut r = fx.reach(true);
    r.deny_ingress_to("x/*").allow("y/*", "x/a");
    fx.expect_for(&r, &[(Tcp, 80, V4)]);

    // A YAML syntax error in the file that holds the default deny.
    fx.cluster
        .apply_policy(
            "deny",
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: [name: deny\nspec: {\n",
        )
        .expect("write the broken file");
    wait_until(
        Duration::from_secs(10),
        "the agent to report the broken file in its status",
        || errors_mention(&fx, "50-deny.yaml"),
    );
    assert!(
        fx.cluster.agent_log(0).contains("50-deny.yaml"),
        "the log names the broken file"
    );
    assert_eq!(
        fx.status(0)["source_up"],
        false,
        "the source is reported as not up to date"
    );
    fx.expect_for(&r, &[(Tcp, 80, V4), (Udp, 80, V4)]);

    // Other files still apply while the broken one is there.
    fx.apply(
        "z-deny",
        &policy("z", "deny", "podSelector: {}\npolicyTypes: [Ingress]"),
    );
    r.deny_ingress_to("z/*");
    fx.expect_for(&r, &[(Tcp, 80, V4)]);

    // Removing the broken file removes what it held.
    fx.delete("deny");
    let mut r = fx.reach(true);
    r.deny_ingress_to("x/a")
        .allow("y/*", "x/a")
        .deny_ingress_to("z/*");
    fx.expect_for(&r, &[(Tcp, 80, V4)]);
    assert_eq!(
        fx.status(0)["source_up"],
        true,
        "the source is healthy again"
    );
}

#[test]
fn a_pod_whose_address_no_interface_carries_is_reported_unenforced_and_disturbs_nothing() {
    let mut fx = Fixture::new();
    let ghost: [IpAddr; 2] = [
        "10.244.0.250".parse().expect("ip"),
        "fd00:244:0::250".parse().expect("ip"),
    ];
    let since = std::time::SystemTime::now();
    fx.cluster
        .add_pod_object(0, "x", "ghost", &[("pod", "a")], &standard_ports(), ghost)
        .expect("pod object");
    fx.cluster
        .apply_policy(
            "policies",
            &format!(
                "{}---\n{}",
                policy("x", "deny", "podSelector: {}\npolicyTypes: [Ingress]"),
                policy(
                    "x",
                    "a-from-z",
                    "podSelector: {matchLabels: {pod: a}}\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {ns: z}}",
                ),
            ),
        )
        .expect("write policies");
    fx.wait_applied(since);
    wait_until(
        Duration::from_secs(10),
        "x/ghost to show as not enforced",
        || {
            fx.endpoint_status(0, "x/ghost")
                .is_some_and(|e| e["enforced"] == false && e["reason"].is_string())
        },
    );
    let mut r = fx.reach(true);
    r.deny_ingress_to("x/*").allow("z/*", "x/a");
    fx.expect_for(&r, &[(Tcp, 80, V4), (Tcp, 80, V6)]);
    let status = fx.status(0);
    for e in status["endpoints"].as_array().expect("endpoints") {
        if e["pod"] != "x/ghost" {
            assert_eq!(e["enforced"], true, "{e}");
        }
    }
    assert_eq!(status["ready"], true, "{status}");
}

#[test]
fn a_policy_in_or_naming_a_missing_namespace_selects_nothing_and_breaks_nothing() {
    let fx = Fixture::new();
    fx.apply(
        "missing",
        &format!(
            "{}---\n{}---\n{}",
            // A policy in a namespace that does not exist: no pods to select.
            policy("w", "deny-all", "podSelector: {}\npolicyTypes: [Ingress, Egress]"),
            // Peers in a namespace that does not exist: nobody.
            policy(
                "x",
                "a-from-w",
                "podSelector: {matchLabels: {pod: a}}\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: w}}",
            ),
            policy(
                "x",
                "b-from-w-or-y",
                "podSelector: {matchLabels: {pod: b}}\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: w}}\n  - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}",
            ),
        ),
    );
    let mut r = fx.reach(true);
    r.deny_ingress_to("x/a")
        .deny_ingress_to("x/b")
        .allow("y/*", "x/b");
    fx.expect_for(&r, &[(Tcp, 80, V4), (Udp, 80, V4)]);
    let status = fx.status(0);
    assert_eq!(status["rejections"], serde_json::json!([]), "{status}");
}

#[test]
fn an_invalid_policy_still_isolates_its_pods_allows_nothing_and_is_listed_as_rejected() {
    let fx = Fixture::new();
    fx.apply(
        "invalid",
        &format!(
            "{}---\n{}",
            // `except` outside `cidr`; the second rule alone would admit everyone.
            policy(
                "y",
                "bad-except",
                "podSelector: {matchLabels: {pod: a}}\ningress:\n- from:\n  - ipBlock: {cidr: 10.244.0.0/24, except: [10.245.0.0/24]}\n- {}",
            ),
            // endPort below port; the rule alone would admit all of z.
            policy(
                "z",
                "bad-range",
                "podSelector: {matchLabels: {pod: b}}\npolicyTypes: [Egress]\negress:\n- to:\n  - namespaceSelector: {matchLabels: {ns: z}}\n  ports:\n  - port: 80\n    endPort: 70",
            ),
        ),
    );
    let mut r = fx.reach(true);
    r.deny_ingress_to("y/a").deny_egress_from("z/b");
    fx.expect_for(&r, &[(Tcp, 80, V4), (Udp, 80, V4), (Tcp, 80, V6)]);
    let status = fx.status(0);
    let rejections = status["rejections"].as_array().expect("rejections");
    let listed = |object: &str, field: &str| {
        rejections.iter().any(|r| {
            r["object"].as_str().is_some_and(|o| o.contains(object))
                && r["field"].as_str().is_some_and(|f| f.contains(field))
        })
    };
    assert!(listed("y/bad-except", "except"), "{status}");
    assert!(listed("z/bad-range", "endPort"), "{status}");
}
