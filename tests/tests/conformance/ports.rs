//! Which ports and protocols a rule admits: numbered and named ports (named
//! ports resolve against the destination pod, per peer on egress), endPort
//! ranges, protocol-only rules and empty port lists.

use crate::fixture::*;

/// Every (protocol, port) of the servers, over IPv4.
const ALL: [(Proto, u16, Family); 6] = [
    (Tcp, 80, V4),
    (Tcp, 81, V4),
    (Udp, 80, V4),
    (Udp, 81, V4),
    (Sctp, 80, V4),
    (Sctp, 81, V4),
];

/// One table per (protocol, port) of [`ALL`], from `open(proto, port)`:
/// the targets reachable from everyone on it, the others isolated.
fn per_port(fx: &Fixture, targets: &[&str], open: impl Fn(&str, Proto, u16) -> bool) -> Vec<Case> {
    ALL.iter()
        .map(|&(proto, port, family)| {
            let mut r = fx.reach(true);
            for t in targets {
                if !open(t, proto, port) {
                    r.deny_ingress_to(t);
                }
            }
            Case::new(proto, port, family, &r)
        })
        .collect()
}

#[test]
fn a_numbered_port_admits_only_that_port_and_tcp_by_default() {
    let fx = Fixture::new();
    fx.apply(
        "port",
        &policy(
            "x",
            "a-port-80",
            "podSelector: {matchLabels: {pod: a}}\ningress:\n- ports:\n  - port: 80",
        ),
    );
    fx.expect(&per_port(&fx, &["x/a"], |_, proto, port| {
        proto == Tcp && port == 80
    }));
}

#[test]
fn a_named_ingress_port_resolves_against_the_destination_pods_ports() {
    // x/b calls its TCP port 81 `web`, x/c calls port 80 `web`.
    let fx = Fixture::builder()
        .ports(
            "x/b",
            &[
                ("serve-80-tcp", 80, "TCP"),
                ("web", 81, "TCP"),
                ("serve-80-udp", 80, "UDP"),
            ],
        )
        .ports(
            "x/c",
            &[
                ("web", 80, "TCP"),
                ("serve-81-tcp", 81, "TCP"),
                ("serve-81-udp", 81, "UDP"),
            ],
        )
        .build();
    fx.apply(
        "named",
        &format!(
            "{}---\n{}",
            policy(
                "x",
                "web",
                "podSelector: {matchExpressions: [{key: pod, operator: In, values: [b, c]}]}\ningress:\n- ports:\n  - port: web",
            ),
            policy(
                "x",
                "a-udp",
                "podSelector: {matchLabels: {pod: a}}\ningress:\n- ports:\n  - port: serve-81-udp\n    protocol: UDP",
            ),
        ),
    );
    // A name is looked up on the given protocol: x/a has no UDP port called
    // serve-80-tcp, so this admits nothing more.
    fx.apply(
        "named-wrong-protocol",
        &policy(
            "x",
            "a-wrong-protocol",
            "podSelector: {matchLabels: {pod: a}}\ningress:\n- ports:\n  - port: serve-80-tcp\n    protocol: UDP\n  - port: serve-80-udp",
        ),
    );
    fx.expect(&per_port(
        &fx,
        &["x/a", "x/b", "x/c"],
        |to, proto, port| match to {
            "x/a" => proto == Udp && port == 81,
            "x/b" => proto == Tcp && port == 81,
            _ => proto == Tcp && port == 80,
        },
    ));
}

#[test]
fn a_named_egress_port_resolves_against_each_destination_peer() {
    // y/b calls its TCP port 80 `web`, y/c calls port 81 `web`; nobody else
    // has a port called `web`.
    let fx = Fixture::builder()
        .ports("y/b", &[("web", 80, "TCP"), ("serve-81-tcp", 81, "TCP")])
        .ports("y/c", &[("serve-80-tcp", 80, "TCP"), ("web", 81, "TCP")])
        .build();
    fx.apply(
        "named-egress",
        &policy(
            "x",
            "a-to-web",
            "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Egress]\negress:\n- to:\n  - namespaceSelector: {}\n  ports:\n  - port: web",
        ),
    );
    let table = |port: u16| {
        let mut r = fx.reach(true);
        r.deny_egress_from("x/a")
            .allow("x/a", if port == 80 { "y/b" } else { "y/c" });
        r
    };
    fx.expect(&[
        Case::new(Tcp, 80, V4, &table(80)),
        Case::new(Tcp, 81, V4, &table(81)),
        Case::new(Tcp, 81, V6, &table(81)),
        Case::new(Udp, 80, V4, fx.reach(true).deny_egress_from("x/a")),
    ]);
}

#[test]
fn an_end_port_range_admits_every_port_from_port_to_end_port() {
    let fx = Fixture::new();
    let range = |pod: &str, first: u16, last: u16| {
        policy(
            "x",
            &format!("range-{pod}"),
            &format!(
                "podSelector: {{matchLabels: {{pod: {pod}}}}}\ningress:\n- ports:\n  - port: {first}\n    endPort: {last}\n    protocol: TCP"
            ),
        )
    };
    fx.apply(
        "ranges",
        &format!(
            "{}---\n{}---\n{}",
            range("a", 80, 81),
            range("b", 81, 90),
            range("c", 70, 80)
        ),
    );
    fx.expect(&per_port(&fx, &["x/a", "x/b", "x/c"], |to, proto, port| {
        proto == Tcp
            && match to {
                "x/a" => true,
                "x/b" => port == 81,
                _ => port == 80,
            }
    }));
}

#[test]
fn udp_only_and_sctp_only_rules_admit_only_their_protocol() {
    let fx = Fixture::new();
    fx.apply(
        "protocols",
        &format!(
            "{}---\n{}---\n{}",
            policy(
                "x",
                "a-udp-80",
                "podSelector: {matchLabels: {pod: a}}\ningress:\n- ports:\n  - protocol: UDP\n    port: 80",
            ),
            policy(
                "x",
                "b-sctp-81",
                "podSelector: {matchLabels: {pod: b}}\ningress:\n- ports:\n  - protocol: SCTP\n    port: 81",
            ),
            // A protocol without a port: every port of that protocol.
            policy(
                "x",
                "c-any-sctp",
                "podSelector: {matchLabels: {pod: c}}\ningress:\n- ports:\n  - protocol: SCTP",
            ),
        ),
    );
    let mut cases = per_port(&fx, &["x/a", "x/b", "x/c"], |to, proto, port| match to {
        "x/a" => proto == Udp && port == 80,
        "x/b" => proto == Sctp && port == 81,
        _ => proto == Sctp,
    });
    let mut v6 = fx.reach(true);
    v6.deny_ingress_to("x/b").deny_ingress_to("x/c");
    cases.push(Case::new(Udp, 80, V6, &v6));
    fx.expect(&cases);
}

#[test]
fn an_empty_ports_list_admits_every_port_and_protocol_of_the_peers() {
    let fx = Fixture::new();
    fx.apply(
        "empty-ports",
        &policy(
            "x",
            "a-from-b-all-ports",
            "podSelector: {matchLabels: {pod: a}}\ningress:\n- from:\n  - podSelector: {matchLabels: {pod: b}}\n  ports: []",
        ),
    );
    let mut r = fx.reach(true);
    r.deny_ingress_to("x/a").allow("x/b", "x/a");
    fx.expect_for(&r, &ALL);
}
