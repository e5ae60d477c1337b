//! Egress `nodes` peers: a label selector over Node objects, matching their
//! addresses (here the InternalIPs each Node lists, one per family), on two
//! nodes with pods spread across them; and the same policy's pod peers
//! enforced across nodes.

use std::time::Duration;

use palisade_tests::{Outcome, Poll, Server};

use super::{cnp, label_node};
use crate::fixture::*;

/// x/a, x/c, y/b, z/a, z/c on node 0; x/b, y/a, y/c, z/b on node 1.
fn spread(ns: usize, pod: usize) -> usize {
    (ns * 3 + pod) % 2
}

/// TCP, UDP and SCTP echo servers on ports 80 and 81 of every node.
fn serve_on_nodes(fx: &Fixture) -> Vec<Server> {
    let mut servers = Vec::new();
    for node in &fx.cluster.nodes {
        for port in PORTS {
            servers.push(node.serve_tcp(port).expect("node tcp server"));
            servers.push(node.serve_udp(port).expect("node udp server"));
            servers.push(node.serve_sctp(port).expect("node sctp server"));
        }
    }
    servers
}

/// One probe from every pod to every node address for each of `on`.
type NodeCell = (String, usize, Proto, u16, Family);

fn probe_nodes(fx: &Fixture, on: &[(Proto, u16, Family)]) -> Vec<(NodeCell, Outcome)> {
    let cells: Vec<NodeCell> = fx
        .endpoints
        .iter()
        .flat_map(|e| {
            (0..fx.cluster.nodes.len()).flat_map(move |node| {
                on.iter()
                    .map(move |&(proto, port, family)| (e.info.id(), node, proto, port, family))
            })
        })
        .collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = cells
            .iter()
            .map(|cell| {
                s.spawn(move || {
                    let (from, node, proto, port, family) = cell;
                    let node = &fx.cluster.nodes[*node];
                    let dst = match family {
                        V4 => node.ipv4().into(),
                        V6 => node.ipv6().into(),
                    };
                    let pod = fx.pod(from);
                    match proto {
                        Tcp => pod.probe_tcp(dst, *port, PROBE),
                        Udp => pod.probe_udp(dst, *port, PROBE),
                        Sctp => pod.probe_sctp(dst, *port, PROBE),
                    }
                })
            })
            .collect();
        cells
            .iter()
            .cloned()
            .zip(handles.into_iter().map(|h| h.join().expect("probe thread")))
            .collect()
    })
}

/// Waits until every pod reaches each node on each of `on` exactly when
/// `want(pod, node, proto, port)` says so (a blocked probe must time out).
#[track_caller]
fn expect_nodes(
    fx: &Fixture,
    on: &[(Proto, u16, Family)],
    want: impl Fn(&str, usize, Proto, u16) -> bool,
) {
    let wrong = |observed: &Vec<(NodeCell, Outcome)>| -> Vec<String> {
        observed
            .iter()
            .filter(|((from, node, proto, port, _), outcome)| {
                if want(from, *node, *proto, *port) {
                    !outcome.is_reachable()
                } else {
                    !matches!(outcome, Outcome::TimedOut)
                }
            })
            .map(|((from, node, proto, port, family), outcome)| {
                format!(
                    "  {from} -> node-{node} {proto} port {port} over {family}: expected {}, observed {outcome}",
                    if want(from, *node, *proto, *port) { "reachable" } else { "blocked" }
                )
            })
            .collect()
    };
    let matched = Poll::new("pods to nodes to match the model", Duration::from_secs(10))
        .every(Duration::from_millis(100))
        .until(
            || probe_nodes(fx, on),
            |observed| wrong(observed).is_empty(),
        );
    if let Err(timed_out) = matched {
        panic!(
            "pods to nodes did not match within {:?}:\n{}\n{}",
            timed_out.waited,
            wrong(&timed_out.last).join("\n"),
            fx.diagnostics()
        );
    }
}

#[test]
fn nodes_peers_match_the_addresses_of_the_selected_nodes() {
    let mut fx = Fixture::builder().nodes(2, spread).build();
    let _servers = serve_on_nodes(&fx);
    label_node(&mut fx, 0, &[("role", "infra")]);
    // Upstream's node-and-CIDR policy: Accept and Pass to some nodes' ports,
    // then one Deny for pods and every node.
    fx.apply(
        "nodes",
        &cnp(
            "x-to-nodes",
            "Admin",
            75,
            "subject:\n  namespaces: {matchLabels: {ns: x}}\negress:\n- name: accept-tcp-80-on-infra\n  action: Accept\n  to:\n  - nodes: {matchLabels: {role: infra}}\n  protocols:\n  - tcp: {destinationPort: {number: 80}}\n- name: pass-udp-80-on-infra\n  action: Pass\n  to:\n  - nodes: {matchLabels: {role: infra}}\n  protocols:\n  - udp: {destinationPort: {number: 80}}\n- name: deny-z-c-and-nodes\n  action: Deny\n  to:\n  - pods:\n      namespaceSelector: {matchLabels: {ns: z}}\n      podSelector: {matchLabels: {pod: c}}\n  - nodes: {}",
        ),
    );
    let on = [
        (Tcp, 80, V4),
        (Tcp, 81, V4),
        (Udp, 80, V4),
        (Sctp, 80, V4),
        (Tcp, 80, V6),
        (Udp, 81, V6),
    ];
    let want = |infra: usize| {
        move |from: &str, node: usize, proto: Proto, port: u16| {
            !from.starts_with("x/")
                || (node == infra && matches!((proto, port), (Tcp, 80) | (Udp, 80)))
        }
    };
    expect_nodes(&fx, &on, want(0));
    // The pod peer of the same rule, across nodes (x/b is on node 1, z/c on 0).
    let mut r = fx.reach(true);
    r.deny("x/*", "z/c");
    fx.expect_for(&r, &[(Tcp, 80, V4), (Udp, 81, V6)]);

    // The label moves to node 1.
    label_node(&mut fx, 0, &[]);
    label_node(&mut fx, 1, &[("role", "infra")]);
    expect_nodes(&fx, &on[..4], want(1));
}
