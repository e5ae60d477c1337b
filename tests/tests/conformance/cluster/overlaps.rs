//! Rules of several policies and tiers over the same pods, decided per
//! destination port, remote peer and direction: named ports resolved per
//! subject pod, a Deny carved out of a later Accept, an Admin Accept past a
//! NetworkPolicy's egress isolation, CIDRs before pod selectors, and rules
//! the agent cannot read (an Accept then matches nothing, a Deny everything).

use super::{ALL_V4, cases, cnp, documents};
use crate::fixture::*;

/// A policy whose subject is the one pod `ns/name`.
fn on_pod(name: &str, tier: &str, priority: u16, id: &str, rules: &str) -> String {
    let (ns, pod) = id.split_once('/').expect("ns/name");
    cnp(
        name,
        tier,
        priority,
        &format!(
            "subject:\n  pods:\n    namespaceSelector: {{matchLabels: {{ns: {ns}}}}}\n    podSelector: {{matchLabels: {{pod: {pod}}}}}\n{rules}"
        ),
    )
}

#[test]
fn overlapping_rules_of_several_tiers_decide_per_port_peer_and_direction() {
    // Each pod of x calls a different port `web`.
    let fx = Fixture::builder()
        .ports("x/a", &[("web", 80, "TCP")])
        .ports("x/b", &[("web", 81, "TCP")])
        .ports("x/c", &[("web", 80, "UDP")])
        .build();
    let x_a = [fx.ip("x/a", V4), fx.ip("x/a", V6)];
    fx.apply(
        "cnps",
        &documents(&[
            cnp(
                "m-web",
                "Admin",
                10,
                "subject:\n  namespaces: {matchLabels: {ns: x}}\ningress:\n- action: Accept\n  from:\n  - namespaces: {}\n  protocols:\n  - destinationNamedPort: web",
            ),
            cnp(
                "m-x-closed",
                "Baseline",
                10,
                "subject:\n  namespaces: {matchLabels: {ns: x}}\ningress:\n- action: Deny\n  from:\n  - namespaces: {}",
            ),
            on_pod(
                "m-y-a-10",
                "Admin",
                10,
                "y/a",
                "ingress:\n- action: Deny\n  from:\n  - namespaces: {matchLabels: {ns: z}}\n  protocols:\n  - tcp: {destinationPort: {number: 80}}",
            ),
            on_pod(
                "m-y-a-20",
                "Admin",
                20,
                "y/a",
                "ingress:\n- action: Accept\n  from:\n  - namespaces: {matchLabels: {ns: z}}",
            ),
            on_pod(
                "m-y-a-base",
                "Baseline",
                10,
                "y/a",
                "ingress:\n- action: Deny\n  from:\n  - namespaces: {}",
            ),
            on_pod(
                "m-y-b-out",
                "Admin",
                10,
                "y/b",
                "egress:\n- action: Accept\n  to:\n  - pods:\n      namespaceSelector: {matchLabels: {ns: z}}\n      podSelector: {matchLabels: {pod: a}}\n- action: Pass\n  to:\n  - namespaces: {matchLabels: {ns: z}}\n  protocols:\n  - udp: {destinationPort: {range: {start: 80, end: 81}}}",
            ),
            on_pod(
                "m-z-c-out",
                "Admin",
                10,
                "z/c",
                &format!(
                    "egress:\n- action: Deny\n  to:\n  - networks: [\"{}/32\", \"{}/128\"]\n- action: Accept\n  to:\n  - namespaces: {{matchLabels: {{ns: x}}}}\n- action: Deny\n  to:\n  - networks: [0.0.0.0/0, \"::/0\"]",
                    x_a[0], x_a[1]
                ),
            ),
            // start > end: the CRD refuses it, the agent fails closed.
            on_pod(
                "m-z-b-unreadable",
                "Admin",
                10,
                "z/b",
                "ingress:\n- action: Accept\n  from:\n  - namespaces: {}\n  protocols:\n  - tcp: {destinationPort: {range: {start: 90, end: 80}}}\n- action: Deny\n  from:\n  - namespaces: {matchLabels: {ns: y}}\negress:\n- action: Deny\n  to:\n  - namespaces: {matchLabels: {ns: y}}\n  protocols:\n  - tcp: {destinationPort: {range: {start: 90, end: 80}}}",
            ),
        ]),
    );
    fx.apply(
        "np",
        &policy(
            "y",
            "b-only-to-x",
            "podSelector: {matchLabels: {pod: b}}\npolicyTypes: [Egress]\negress:\n- to:\n  - namespaceSelector: {matchLabels: {ns: x}}",
        ),
    );
    let table = |proto: Proto, port: u16| {
        let mut r = fx.reach(true);
        r.expect_where(|from, to| {
            let (from_ns, to_ns) = (from.namespace.as_str(), to.namespace.as_str());
            let ingress = match to.id().as_str() {
                "x/a" => (proto, port) == (Tcp, 80),
                "x/b" => (proto, port) == (Tcp, 81),
                "x/c" => (proto, port) == (Udp, 80),
                "y/a" => from_ns == "z" && (proto, port) != (Tcp, 80),
                // The unreadable Accept matches nothing; the Deny after it holds.
                "z/b" => from_ns != "y",
                _ => true,
            };
            let egress = match from.id().as_str() {
                "y/b" => to.id() == "z/a" || to_ns == "x",
                "z/c" => to_ns == "x" && to.id() != "x/a",
                // The unreadable Deny denies everything.
                "z/b" => false,
                _ => true,
            };
            Some(ingress && egress)
        });
        r
    };
    let t = table(Udp, 80);
    assert!(t.get_by_id("z/a", "y/a") && !t.get_by_id("x/a", "y/a"));
    assert!(t.get_by_id("y/b", "z/a") && !t.get_by_id("y/b", "z/c"));
    assert!(t.get_by_id("z/c", "x/c") && !t.get_by_id("y/c", "z/b"));
    let on: Vec<_> = ALL_V4
        .iter()
        .copied()
        .chain([(Tcp, 80, V6), (Udp, 80, V6), (Tcp, 81, V6)])
        .collect();
    fx.expect(&cases(&on, |proto, port, _| table(proto, port)));
    // The unreadable rules are reported, naming the policy.
    let rejections = fx.status(0)["rejections"].to_string();
    assert!(
        rejections.contains("m-z-b-unreadable"),
        "rejections: {rejections}"
    );
}
