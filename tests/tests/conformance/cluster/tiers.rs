//! Actions, rule order, priorities and how the tiers stack with
//! NetworkPolicy: Admin, then NetworkPolicy, then Baseline, then allow.

use super::{ALL_V4, cases, cnp, documents};
use crate::fixture::*;

/// The upstream `gress-rules` policy over x/y/z (subject: namespace x). Its
/// first two rules each way decide x <-> z (`first`, then `second`); a Pass
/// for z follows, shadowed. Port 80 egress to y and port 81 ingress from y are
/// denied on every protocol, with a shadowed rule of the opposite action after.
fn gress_rules(first: &str, second: &str) -> String {
    let ns = |name: &str| format!("  - namespaces: {{matchLabels: {{ns: {name}}}}}\n");
    let on = |port: u16| {
        format!(
            "  protocols:\n  - tcp: {{destinationPort: {{number: {port}}}}}\n  - udp: {{destinationPort: {{number: {port}}}}}\n  - sctp: {{destinationPort: {{number: {port}}}}}\n"
        )
    };
    let rule = |name: &str, action: &str, peers: &str, peer: &str, ports: &str| {
        format!("- name: {name}\n  action: {action}\n  {peers}:\n{peer}{ports}")
    };
    let mut spec = "subject:\n  namespaces: {matchLabels: {ns: x}}\negress:\n".to_string();
    spec += &rule("first-to-z", first, "to", &ns("z"), "");
    spec += &rule("second-to-z", second, "to", &ns("z"), "");
    spec += &rule("pass-to-z", "Pass", "to", &ns("z"), "");
    spec += &rule("deny-to-y-at-80", "Deny", "to", &ns("y"), &on(80));
    spec += &rule("accept-to-y-at-80", "Accept", "to", &ns("y"), &on(80));
    spec += "ingress:\n";
    spec += &rule("first-from-z", first, "from", &ns("z"), "");
    spec += &rule("second-from-z", second, "from", &ns("z"), "");
    spec += &rule("pass-from-z", "Pass", "from", &ns("z"), "");
    spec += &rule("deny-from-y-at-81", "Deny", "from", &ns("y"), &on(81));
    spec += &rule("accept-from-y-at-81", "Accept", "from", &ns("y"), &on(81));
    cnp("gress-rules", "Admin", 15, &spec)
}

#[test]
fn admin_rules_decide_in_list_order_by_accept_deny_or_pass() {
    let fx = Fixture::new();
    // What a Pass falls through to: x and z kept apart.
    fx.apply(
        "baseline",
        &cnp(
            "x-without-z",
            "Baseline",
            10,
            "subject:\n  namespaces: {matchLabels: {ns: x}}\ningress:\n- action: Deny\n  from:\n  - namespaces: {matchLabels: {ns: z}}\negress:\n- action: Deny\n  to:\n  - namespaces: {matchLabels: {ns: z}}",
        ),
    );
    let table = |x_with_z: bool, port: u16| {
        let mut r = fx.reach(true);
        if !x_with_z {
            r.deny("x/*", "z/*").deny("z/*", "x/*");
        }
        match port {
            80 => r.deny("x/*", "y/*"),
            _ => r.deny("y/*", "x/*"),
        };
        r
    };
    // Accept before Deny: x and z reach each other despite the Baseline;
    // port 80 out to y and port 81 in from y are denied on every protocol.
    fx.apply("gress", &gress_rules("Accept", "Deny"));
    let on: Vec<_> = ALL_V4
        .iter()
        .copied()
        .chain([(Tcp, 80, V6), (Udp, 81, V6), (Sctp, 81, V6)])
        .collect();
    fx.expect(&cases(&on, |_, port, _| table(true, port)));

    // The first two rules swapped (as upstream patches them): Deny first.
    fx.apply("gress", &gress_rules("Deny", "Accept"));
    let some = [(Tcp, 80, V4), (Udp, 81, V4), (Sctp, 80, V4), (Tcp, 81, V6)];
    fx.expect(&cases(&some, |_, port, _| table(false, port)));

    // Pass first: the Accept after it is skipped, and the Baseline denies.
    fx.apply("gress", &gress_rules("Pass", "Accept"));
    fx.expect(&cases(&some, |_, port, _| table(false, port)));

    // The Admin policy deleted: the Baseline alone.
    fx.delete("gress");
    let mut r = fx.reach(true);
    r.deny("x/*", "z/*").deny("z/*", "x/*");
    fx.expect_for(&r, &[(Tcp, 80, V4), (Udp, 81, V6)]);
}

#[test]
fn admin_decides_before_network_policy_which_decides_before_baseline() {
    let fx = Fixture::new();
    // Upstream's ANP/NP/BANP integration: each layer has a say about x <-> y.
    let admin = |ingress: &str, egress: &str| {
        cnp(
            "x-and-y",
            "Admin",
            10,
            &format!(
                "subject:\n  namespaces: {{matchLabels: {{ns: x}}}}\ningress:\n- name: {ingress}-from-y\n  action: {ingress}\n  from:\n  - namespaces: {{matchLabels: {{ns: y}}}}\negress:\n- name: {egress}-to-y\n  action: {egress}\n  to:\n  - namespaces: {{matchLabels: {{ns: y}}}}"
            ),
        )
    };
    fx.apply(
        "baseline",
        &cnp(
            "x-without-y",
            "Baseline",
            10,
            "subject:\n  namespaces: {matchLabels: {ns: x}}\ningress:\n- action: Deny\n  from:\n  - namespaces: {matchLabels: {ns: y}}\negress:\n- action: Deny\n  to:\n  - namespaces: {matchLabels: {ns: y}}",
        ),
    );
    fx.apply(
        "np",
        &policy(
            "x",
            "only-y",
            "podSelector: {}\npolicyTypes: [Ingress, Egress]\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {ns: y}}\negress:\n- to:\n  - namespaceSelector: {matchLabels: {ns: y}}",
        ),
    );
    fx.apply("admin", &admin("Deny", "Deny"));
    let on = [(Tcp, 80, V4), (Udp, 81, V4), (Sctp, 80, V4), (Tcp, 81, V6)];
    // Admin Deny wins over the NetworkPolicy that admits y; the
    // NetworkPolicy isolates x from everyone else.
    let mut r = fx.reach(true);
    r.deny_ingress_to("x/*").deny_egress_from("x/*");
    fx.expect_for(&r, &on);

    // Admin Pass: the NetworkPolicy decides, admitting y both ways.
    fx.apply("admin", &admin("Pass", "Pass"));
    let mut r = fx.reach(true);
    r.deny_ingress_to("x/*")
        .deny_egress_from("x/*")
        .allow("y/*", "x/*")
        .allow("x/*", "y/*");
    fx.expect_for(&r, &on);

    // No NetworkPolicy: the Pass lands in the Baseline, which denies y.
    fx.delete("np");
    let mut r = fx.reach(true);
    r.deny("y/*", "x/*").deny("x/*", "y/*");
    fx.expect_for(&r, &on);

    // Admin Accept on ingress beats the Baseline; egress still passes to it.
    fx.apply("admin", &admin("Accept", "Pass"));
    let mut r = fx.reach(true);
    r.deny("x/*", "y/*");
    fx.expect_for(&r, &on);
}

#[test]
fn baseline_decides_only_for_pods_no_network_policy_isolates() {
    let fx = Fixture::new();
    fx.apply(
        "baseline",
        &documents(&[
            cnp(
                "y-ingress",
                "Baseline",
                50,
                "subject:\n  namespaces: {matchLabels: {ns: y}}\ningress:\n- name: pass-from-z\n  action: Pass\n  from:\n  - namespaces: {matchLabels: {ns: z}}\n- name: accept-from-a-pods\n  action: Accept\n  from:\n  - pods: {podSelector: {matchLabels: {pod: a}}}\n- name: deny-the-rest\n  action: Deny\n  from:\n  - namespaces: {}",
            ),
            cnp(
                "z-egress",
                "Baseline",
                50,
                "subject:\n  namespaces: {matchLabels: {ns: z}}\negress:\n- name: deny-to-x\n  action: Deny\n  to:\n  - namespaces: {matchLabels: {ns: x}}",
            ),
        ]),
    );
    // y/c's ingress and z/a's egress are NetworkPolicy's to decide.
    fx.apply(
        "np",
        &documents(&[
            policy(
                "y",
                "c-from-x-b",
                "podSelector: {matchLabels: {pod: c}}\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {ns: x}}\n    podSelector: {matchLabels: {pod: b}}",
            ),
            policy(
                "z",
                "a-to-anywhere",
                "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Egress]\negress:\n- {}",
            ),
        ]),
    );
    let mut r = fx.reach(true);
    for to in ["y/a", "y/b"] {
        // Pass in the Baseline decides nothing: z falls to the default.
        r.deny_ingress_to(to).allow("z/*", to).allow("*/a", to);
    }
    // The Baseline's Accept and Pass do not reach past the NetworkPolicy.
    r.deny_ingress_to("y/c").allow("x/b", "y/c");
    // The Baseline's egress Deny holds for z/b and z/c, not for z/a.
    r.deny("z/b", "x/*").deny("z/c", "x/*");
    assert!(!r.get_by_id("z/a", "y/c") && r.get_by_id("z/a", "y/b"));
    fx.expect_for(
        &r,
        &[(Tcp, 80, V4), (Udp, 80, V4), (Sctp, 81, V4), (Tcp, 81, V6)],
    );
}

#[test]
fn lower_priority_values_decide_first_and_equal_priorities_go_by_name() {
    let fx = Fixture::new();
    let x_policies = |accept_priority: u16| {
        documents(&[
            cnp(
                "p-accept",
                "Admin",
                accept_priority,
                "subject:\n  namespaces: {matchLabels: {ns: x}}\ningress:\n- action: Accept\n  from:\n  - namespaces: {matchLabels: {ns: y}}",
            ),
            cnp(
                "p-deny",
                "Admin",
                30,
                "subject:\n  namespaces: {matchLabels: {ns: x}}\ningress:\n- action: Deny\n  from:\n  - namespaces: {}",
            ),
        ])
    };
    // Into z: at equal priority z-1-deny goes before z-2-accept; an Admin
    // policy at the highest priority value still comes before a Baseline at 0.
    fx.apply(
        "z",
        &documents(&[
            cnp(
                "z-2-accept",
                "Admin",
                30,
                "subject:\n  namespaces: {matchLabels: {ns: z}}\ningress:\n- action: Accept\n  from:\n  - namespaces: {matchLabels: {ns: y}}",
            ),
            cnp(
                "z-1-deny",
                "Admin",
                30,
                "subject:\n  namespaces: {matchLabels: {ns: z}}\ningress:\n- action: Deny\n  from:\n  - namespaces: {matchLabels: {ns: y}}",
            ),
            cnp(
                "z-3-accept-x",
                "Admin",
                1000,
                "subject:\n  namespaces: {matchLabels: {ns: z}}\ningress:\n- action: Accept\n  from:\n  - namespaces: {matchLabels: {ns: x}}",
            ),
            cnp(
                "z-baseline",
                "Baseline",
                0,
                "subject:\n  namespaces: {matchLabels: {ns: z}}\ningress:\n- action: Deny\n  from:\n  - namespaces: {}",
            ),
        ]),
    );
    let table = |y_to_x: bool| {
        let mut r = fx.reach(true);
        r.deny_ingress_to("x/*");
        if y_to_x {
            r.allow("y/*", "x/*");
        }
        r.deny_ingress_to("z/*").allow("x/*", "z/*");
        r
    };
    let on = [(Tcp, 80, V4), (Udp, 81, V4), (Sctp, 80, V6)];
    // p-accept (20) before p-deny (30): y reaches x.
    fx.apply("x", &x_policies(20));
    fx.expect_for(&table(true), &on);
    // p-accept moved after p-deny: nothing reaches x.
    fx.apply("x", &x_policies(40));
    fx.expect_for(&table(false), &on);
    // Both at 30: p-accept sorts before p-deny.
    fx.apply("x", &x_policies(30));
    fx.expect_for(&table(true), &on);
}

/// A policy of the Admin tier whose subject is the one pod `ns/name`.
fn admin_on(name: &str, priority: u16, id: &str, rules: &str) -> String {
    let (ns, pod) = id.split_once('/').expect("ns/name");
    cnp(
        name,
        "Admin",
        priority,
        &format!(
            "subject:\n  pods:\n    namespaceSelector: {{matchLabels: {{ns: {ns}}}}}\n    podSelector: {{matchLabels: {{pod: {pod}}}}}\n{rules}"
        ),
    )
}

#[test]
fn each_direction_is_decided_on_its_own_through_the_tiers() {
    let fx = Fixture::new();
    fx.apply(
        "cnps",
        &documents(&[
            // A Pass skips the later policies of its tier too.
            admin_on(
                "k-10-pass",
                10,
                "x/a",
                "ingress:\n- action: Pass\n  from:\n  - namespaces: {matchLabels: {ns: y}}",
            ),
            admin_on(
                "k-20-deny",
                20,
                "x/a",
                "ingress:\n- action: Deny\n  from:\n  - namespaces: {}",
            ),
            // An egress Accept leaves the destination's ingress in force.
            admin_on(
                "k-egress-accept",
                10,
                "x/b",
                "egress:\n- action: Accept\n  to:\n  - namespaces: {matchLabels: {ns: z}}",
            ),
            // An ingress Accept beats the NetworkPolicy isolating y/c.
            admin_on(
                "k-ingress-accept",
                10,
                "y/c",
                "ingress:\n- action: Accept\n  from:\n  - pods: {podSelector: {matchLabels: {pod: a}}}",
            ),
            // Replies of accepted flows pass a Deny of the other direction.
            admin_on(
                "k-out-not-in",
                10,
                "y/a",
                "egress:\n- action: Accept\n  to:\n  - namespaces: {matchLabels: {ns: z}}\ningress:\n- action: Deny\n  from:\n  - namespaces: {matchLabels: {ns: z}}",
            ),
            // A Deny on part of what a NetworkPolicy range admits.
            admin_on(
                "k-not-81-from-y",
                10,
                "x/c",
                "ingress:\n- action: Deny\n  from:\n  - namespaces: {matchLabels: {ns: y}}\n  protocols:\n  - tcp: {destinationPort: {number: 81}}",
            ),
            // NetworkPolicy isolates z/c's ingress only: the Baseline still
            // decides its egress.
            cnp(
                "k-z-c-egress",
                "Baseline",
                10,
                "subject:\n  pods:\n    namespaceSelector: {matchLabels: {ns: z}}\n    podSelector: {matchLabels: {pod: c}}\negress:\n- action: Deny\n  to:\n  - namespaces: {matchLabels: {ns: x}}",
            ),
        ]),
    );
    fx.apply(
        "nps",
        &documents(&[
            policy(
                "z",
                "b-closed",
                "podSelector: {matchLabels: {pod: b}}\npolicyTypes: [Ingress]",
            ),
            policy("y", "c-closed", "podSelector: {matchLabels: {pod: c}}\npolicyTypes: [Ingress]"),
            policy(
                "z",
                "c-from-y",
                "podSelector: {matchLabels: {pod: c}}\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {ns: y}}",
            ),
            policy(
                "x",
                "c-tcp-80-81",
                "podSelector: {matchLabels: {pod: c}}\ningress:\n- from:\n  - namespaceSelector: {}\n  ports:\n  - {protocol: TCP, port: 80, endPort: 81}",
            ),
        ]),
    );
    let table = |proto: Proto, port: u16| {
        let mut r = fx.reach(true);
        r.deny_ingress_to("x/a").allow("y/*", "x/a");
        r.deny_ingress_to("z/b");
        r.deny_ingress_to("y/c").allow("*/a", "y/c");
        r.deny("z/*", "y/a");
        match (proto, port) {
            (Tcp, 80) => {}
            (Tcp, _) => {
                r.deny("y/*", "x/c");
            }
            _ => {
                r.deny_ingress_to("x/c");
            }
        }
        r.deny("z/c", "x/*");
        r.deny_ingress_to("z/c").allow("y/*", "z/c");
        r
    };
    let t = table(Tcp, 80);
    assert!(t.get_by_id("x/b", "z/a") && !t.get_by_id("x/b", "z/b"));
    assert!(t.get_by_id("y/a", "z/a") && !t.get_by_id("z/a", "y/a"));
    let on = [
        (Tcp, 80, V4),
        (Tcp, 81, V4),
        (Udp, 81, V4),
        (Sctp, 80, V4),
        (Tcp, 81, V6),
        (Udp, 80, V6),
    ];
    fx.expect(&cases(&on, |proto, port, _| table(proto, port)));
}
