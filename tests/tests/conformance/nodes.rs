//! Two nodes, one agent each: ingress is enforced by the destination's
//! node, egress by the source's.

use crate::fixture::*;

/// x/a, x/c, y/b, z/a, z/c on node 0; x/b, y/a, y/c, z/b on node 1.
fn spread(ns: usize, pod: usize) -> usize {
    (ns * 3 + pod) % 2
}

#[test]
fn across_two_nodes_ingress_is_enforced_at_the_destination_and_egress_at_the_source() {
    let fx = Fixture::builder().nodes(2, spread).build();
    fx.apply(
        "policies",
        &format!(
            "{}---\n{}",
            policy(
                "y",
                "from-x-a",
                "podSelector: {}\ningress:\n- from:\n  - namespaceSelector: {matchLabels: {ns: x}}\n    podSelector: {matchLabels: {pod: a}}",
            ),
            policy(
                "z",
                "b-to-x",
                "podSelector: {matchLabels: {pod: b}}\npolicyTypes: [Egress]\negress:\n- to:\n  - namespaceSelector: {matchLabels: {ns: x}}",
            ),
        ),
    );
    let mut r = fx.reach(true);
    r.deny_ingress_to("y/*")
        .allow("x/a", "y/*")
        .deny_egress_from("z/b")
        .allow("z/b", "x/*");
    // The table covers same-node and cross-node pairs both ways.
    assert_ne!(spread(0, 0), spread(1, 0), "x/a and y/a on different nodes");
    assert_eq!(spread(0, 0), spread(1, 1), "x/a and y/b on the same node");
    fx.expect_for(
        &r,
        &[(Tcp, 80, V4), (Udp, 81, V4), (Sctp, 80, V4), (Tcp, 81, V6)],
    );

    // Each agent enforces its own pods only, with the isolation of the
    // policies that select them.
    for node in 0..2 {
        let status = fx.status(node);
        let mut local: Vec<String> = status["endpoints"]
            .as_array()
            .expect("endpoints")
            .iter()
            .map(|e| {
                assert_eq!(e["enforced"], true, "node {node}: {e}");
                e["pod"].as_str().expect("pod").to_string()
            })
            .collect();
        local.sort();
        let mut want: Vec<String> = fx
            .endpoints
            .iter()
            .filter(|e| e.pod.node_index() as usize == node)
            .map(|e| e.info.id())
            .collect();
        want.sort();
        assert_eq!(local, want, "endpoints of node {node}");
        for e in status["endpoints"].as_array().expect("endpoints") {
            let pod = e["pod"].as_str().expect("pod");
            assert_eq!(
                e["ingress_isolated"],
                pod.starts_with("y/"),
                "{pod} on node {node}"
            );
            assert_eq!(e["egress_isolated"], pod == "z/b", "{pod} on node {node}");
        }
    }
}
