//! Who a ClusterNetworkPolicy applies to and whom its rules match: subjects
//! and peers by namespaces and by pods, and egress `networks` (CIDRs, which
//! match pod addresses too).

use std::net::IpAddr;

use super::{cnp, documents};
use crate::fixture::*;

#[test]
fn subjects_and_peers_select_by_namespace_labels_and_by_pod_labels() {
    let fx = Fixture::new();
    fx.apply(
        "selectors",
        &documents(&[
            // Subject by pods; an ingress peer without namespaceSelector
            // means pods of every namespace.
            cnp(
                "y-b",
                "Admin",
                40,
                "subject:\n  pods:\n    namespaceSelector: {matchLabels: {ns: y}}\n    podSelector: {matchLabels: {pod: b}}\ningress:\n- action: Deny\n  from:\n  - pods: {podSelector: {matchLabels: {pod: a}}}\negress:\n- action: Deny\n  to:\n  - pods:\n      namespaceSelector: {matchLabels: {ns: z}}\n      podSelector: {matchExpressions: [{key: pod, operator: In, values: [b, c]}]}",
            ),
            // Subject by namespaces, by expression.
            cnp(
                "not-x-or-y",
                "Admin",
                41,
                "subject:\n  namespaces: {matchExpressions: [{key: ns, operator: NotIn, values: [x, y]}]}\ningress:\n- action: Deny\n  from:\n  - namespaces: {matchLabels: {ns: x}}",
            ),
        ]),
    );
    let mut r = fx.reach(true);
    r.deny("*/a", "y/b")
        .deny("y/b", "z/b")
        .deny("y/b", "z/c")
        .deny("x/*", "z/*");
    fx.expect_for(
        &r,
        &[(Tcp, 80, V4), (Udp, 81, V4), (Sctp, 81, V4), (Tcp, 80, V6)],
    );
}

/// The network address of `ip` with a `prefix`-bit mask, as a CIDR.
fn cidr(ip: IpAddr, prefix: u8) -> String {
    let net = ipnet::IpNet::new(ip, prefix).expect("prefix");
    format!("{}/{prefix}", net.network())
}

#[test]
fn networks_peers_match_pod_addresses_of_either_family() {
    let fx = Fixture::new();
    let y_a = [cidr(fx.ip("y/a", V4), 32), cidr(fx.ip("y/a", V6), 128)];
    // x/b: the first /29 of the pods' IPv4 range and the /125 of IPv6
    // addresses around z/a.
    let low4 = cidr(fx.ip("x/a", V4), 29);
    let z6 = cidr(fx.ip("z/a", V6), 125);
    fx.apply(
        "cidrs",
        &documents(&[
            // Upstream's inline-CIDR policy: pods and addresses allowed, the
            // rest of the world denied.
            cnp(
                "x-a",
                "Admin",
                20,
                &format!(
                    "subject:\n  pods:\n    namespaceSelector: {{matchLabels: {{ns: x}}}}\n    podSelector: {{matchLabels: {{pod: a}}}}\negress:\n- name: accept-y-a\n  action: Accept\n  to:\n  - networks: [\"{}\", \"{}\"]\n- name: accept-z\n  action: Accept\n  to:\n  - namespaces: {{matchLabels: {{ns: z}}}}\n- name: deny-the-world\n  action: Deny\n  to:\n  - networks: [0.0.0.0/0, \"::/0\"]",
                    y_a[0], y_a[1]
                ),
            ),
            cnp(
                "x-b",
                "Admin",
                20,
                &format!(
                    "subject:\n  pods:\n    namespaceSelector: {{matchLabels: {{ns: x}}}}\n    podSelector: {{matchLabels: {{pod: b}}}}\negress:\n- action: Deny\n  to:\n  - networks: [\"{low4}\", \"{z6}\"]"
                ),
            ),
        ]),
    );
    let table = |family: Family| {
        let mut r = fx.reach(true);
        r.deny_egress_from("x/a")
            .allow("x/a", "y/a")
            .allow("x/a", "z/*");
        r.expect_where(|from, to| {
            (from.id() == "x/b").then(|| match family {
                V4 => !in_ip_block(to.ip(V4), &low4, &[]),
                V6 => !in_ip_block(to.ip(V6), &z6, &[]),
            })
        });
        r
    };
    let (r4, r6) = (table(V4), table(V6));
    // Both blocks leave some pods in and some out.
    assert!(!r4.get_by_id("x/b", "y/c") && r4.get_by_id("x/b", "z/a"));
    assert!(!r6.get_by_id("x/b", "z/a") && r6.get_by_id("x/b", "y/c"));
    fx.expect(&[
        Case::new(Tcp, 80, V4, &r4),
        Case::new(Udp, 81, V4, &r4),
        Case::new(Sctp, 80, V4, &r4),
        Case::new(Tcp, 81, V6, &r6),
        Case::new(Udp, 80, V6, &r6),
    ]);
}
