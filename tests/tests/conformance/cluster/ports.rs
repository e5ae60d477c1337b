//! `protocols`: TCP, UDP and SCTP port numbers and ranges, and
//! `destinationNamedPort` (the destination pod's container port of that name
//! and the packet's protocol), in Deny and Accept rules.

use super::{ALL_V4, cases, cnp, documents};
use crate::fixture::*;

/// A policy whose subject is the one pod `ns/name`.
fn on_pod(name: &str, id: &str, rules: &str) -> String {
    let (ns, pod) = id.split_once('/').expect("ns/name");
    cnp(
        name,
        "Admin",
        50,
        &format!(
            "subject:\n  pods:\n    namespaceSelector: {{matchLabels: {{ns: {ns}}}}}\n    podSelector: {{matchLabels: {{pod: {pod}}}}}\n{rules}"
        ),
    )
}

#[test]
fn port_numbers_ranges_and_named_ports_match_only_their_protocol_and_ports() {
    // y/c calls its TCP port 81 `web`; nobody else has a port of that name.
    let fx = Fixture::builder()
        .ports(
            "y/c",
            &[
                ("serve-80-tcp", 80, "TCP"),
                ("web", 81, "TCP"),
                ("serve-80-udp", 80, "UDP"),
                ("serve-81-udp", 81, "UDP"),
            ],
        )
        .build();
    let deny_all_from = "- action: Deny\n  from:\n  - namespaces: {}\n  protocols:\n";
    fx.apply(
        "ports",
        &documents(&[
            on_pod(
                "x-a-tcp-range",
                "x/a",
                &format!("ingress:\n{deny_all_from}  - tcp: {{destinationPort: {{range: {{start: 81, end: 90}}}}}}"),
            ),
            on_pod(
                "x-b-udp-range-sctp-81",
                "x/b",
                &format!("ingress:\n{deny_all_from}  - udp: {{destinationPort: {{range: {{start: 70, end: 80}}}}}}\n  - sctp: {{destinationPort: {{number: 81}}}}"),
            ),
            on_pod(
                "x-c-named",
                "x/c",
                &format!("ingress:\n{deny_all_from}  - destinationNamedPort: serve-80-sctp"),
            ),
            // Accept before a Deny of everything: only what the Accept lists.
            on_pod(
                "y-a-accept-listed",
                "y/a",
                "ingress:\n- action: Accept\n  from:\n  - namespaces: {}\n  protocols:\n  - tcp: {destinationPort: {number: 80}}\n  - udp: {destinationPort: {range: {start: 80, end: 81}}}\n- action: Deny\n  from:\n  - namespaces: {}",
            ),
            // An egress named port resolves against each destination pod.
            on_pod(
                "z-a-not-to-web",
                "z/a",
                "egress:\n- action: Deny\n  to:\n  - namespaces: {}\n  protocols:\n  - destinationNamedPort: web",
            ),
        ]),
    );
    let table = |proto: Proto, port: u16| {
        let mut r = fx.reach(true);
        let closed = [
            ("x/a", proto == Tcp && port == 81),
            (
                "x/b",
                (proto == Udp && port == 80) || (proto == Sctp && port == 81),
            ),
            ("x/c", proto == Sctp && port == 80),
            ("y/a", !((proto == Tcp && port == 80) || proto == Udp)),
        ];
        for (to, denied) in closed {
            if denied {
                r.deny_ingress_to(to);
            }
        }
        if proto == Tcp && port == 81 {
            r.deny("z/a", "y/c");
        }
        r
    };
    let on: Vec<_> = ALL_V4
        .iter()
        .copied()
        .chain([(Tcp, 81, V6), (Udp, 80, V6), (Sctp, 81, V6)])
        .collect();
    fx.expect(&cases(&on, |proto, port, _| table(proto, port)));
}

#[test]
fn an_egress_named_port_resolves_per_destination_pod_even_where_no_selector_tells_them_apart() {
    // y's pods differ only in what they call `web`: TCP 80 on y/b, TCP 81
    // on y/c, nothing on y/a. No selector below looks at pod labels.
    let fx = Fixture::builder()
        .ports("y/a", &[("serve-80-tcp", 80, "TCP")])
        .ports("y/b", &[("web", 80, "TCP"), ("serve-81-tcp", 81, "TCP")])
        .ports("y/c", &[("serve-80-tcp", 80, "TCP"), ("web", 81, "TCP")])
        .build();
    fx.apply(
        "named",
        &documents(&[
            cnp(
                "x-not-to-web",
                "Admin",
                10,
                "subject:\n  namespaces: {matchLabels: {ns: x}}\negress:\n- action: Deny\n  to:\n  - namespaces: {matchLabels: {ns: y}}\n  protocols:\n  - destinationNamedPort: web",
            ),
            // Baseline: z may reach y only on `web`, after a Pass for y/a's
            // own policy that skips the later Baseline policy.
            cnp(
                "z-b-10-pass",
                "Baseline",
                10,
                "subject:\n  namespaces: {matchLabels: {ns: z}}\negress:\n- action: Pass\n  to:\n  - pods:\n      namespaceSelector: {matchLabels: {ns: y}}\n      podSelector: {matchLabels: {pod: a}}",
            ),
            cnp(
                "z-b-20-web-only",
                "Baseline",
                20,
                "subject:\n  namespaces: {matchLabels: {ns: z}}\negress:\n- action: Accept\n  to:\n  - namespaces: {matchLabels: {ns: y}}\n  protocols:\n  - destinationNamedPort: web\n- action: Deny\n  to:\n  - namespaces: {matchLabels: {ns: y}}",
            ),
        ]),
    );
    let table = |port: u16| {
        let mut r = fx.reach(true);
        let (web, other) = if port == 80 {
            ("y/b", "y/c")
        } else {
            ("y/c", "y/b")
        };
        r.deny("x/*", web).deny("z/*", other);
        r
    };
    let t = table(80);
    assert!(!t.get_by_id("x/a", "y/b") && t.get_by_id("x/a", "y/c") && t.get_by_id("z/a", "y/a"));
    fx.expect(&[
        Case::new(Tcp, 80, V4, &table(80)),
        Case::new(Tcp, 81, V4, &table(81)),
        Case::new(Tcp, 81, V6, &table(81)),
        // `web` is TCP only: UDP to y goes to the Baseline's Deny from z.
        Case::new(
            Udp,
            80,
            V4,
            fx.reach(true).deny("z/*", "y/b").deny("z/*", "y/c"),
        ),
    ]);
}
