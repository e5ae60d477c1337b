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

/// One probe between a pod and a node address, one way or the other.
#[derive(Clone, Debug)]
struct NodeCell {
    pod: String,
    node: usize,
    /// From the pod to the node (else from the node to the pod).
    to_node: bool,
    proto: Proto,
    port: u16,
    family: Family,
}

impl std::fmt::Display for NodeCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (pod, node) = (&self.pod, format!("node-{}", self.node));
        let (from, to) = if self.to_node {
            (pod, &node)
        } else {
            (&node, pod)
        };
        write!(
            f,
            "{from} -> {to} {} port {} over {}",
            self.proto, self.port, self.family
        )
    }
}

/// Every (pod, node) pair for each of `on`, one way.
fn node_cells(fx: &Fixture, to_node: bool, on: &[(Proto, u16, Family)]) -> Vec<NodeCell> {
    let mut cells = Vec::new();
    for e in &fx.endpoints {
        for node in 0..fx.cluster.nodes.len() {
            for &(proto, port, family) in on {
                cells.push(NodeCell {
                    pod: e.info.id(),
                    node,
                    to_node,
                    proto,
                    port,
                    family,
                });
            }
        }
    }
    cells
}

fn probe(fx: &Fixture, cell: &NodeCell) -> Outcome {
    let node = &fx.cluster.nodes[cell.node];
    let (pod, port) = (fx.pod(&cell.pod), cell.port);
    if cell.to_node {
        let dst = match cell.family {
            V4 => node.ipv4().into(),
            V6 => node.ipv6().into(),
        };
        match cell.proto {
            Tcp => pod.probe_tcp(dst, port, PROBE),
            Udp => pod.probe_udp(dst, port, PROBE),
            Sctp => pod.probe_sctp(dst, port, PROBE),
        }
    } else {
        let dst = fx.ip(&cell.pod, cell.family);
        match cell.proto {
            Tcp => node.probe_tcp(dst, port, PROBE),
            Udp => node.probe_udp(dst, port, PROBE),
            Sctp => node.probe_sctp(dst, port, PROBE),
        }
    }
}

/// Waits until each cell is reachable exactly when `want` says so (a
/// blocked probe must time out), probing all in parallel.
#[track_caller]
fn expect_cells(fx: &Fixture, cells: &[NodeCell], want: impl Fn(&NodeCell) -> bool) {
    let wrong = |observed: &Vec<Outcome>| -> Vec<String> {
        cells
            .iter()
            .zip(observed)
            .filter(|(cell, outcome)| {
                if want(cell) {
                    !outcome.is_reachable()
                } else {
                    !matches!(outcome, Outcome::TimedOut)
                }
            })
            .map(|(cell, outcome)| {
                let expected = if want(cell) { "reachable" } else { "blocked" };
                format!("  {cell}: expected {expected}, observed {outcome}")
            })
            .collect()
    };
    let observe = || {
        std::thread::scope(|s| {
            let handles: Vec<_> = cells.iter().map(|c| s.spawn(|| probe(fx, c))).collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("probe thread"))
                .collect::<Vec<_>>()
        })
    };
    let matched = Poll::new("pods and nodes to match the model", Duration::from_secs(10))
        .every(Duration::from_millis(100))
        .until(observe, |observed| wrong(observed).is_empty());
    if let Err(timed_out) = matched {
        panic!(
            "pods and nodes did not match within {:?}:\n{}\n{}",
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
        move |c: &NodeCell| {
            !c.pod.starts_with("x/")
                || (c.node == infra && matches!((c.proto, c.port), (Tcp, 80) | (Udp, 80)))
        }
    };
    expect_cells(&fx, &node_cells(&fx, true, &on), want(0));
    // The pod peer of the same rule, across nodes (x/b is on node 1, z/c on 0).
    let mut r = fx.reach(true);
    r.deny("x/*", "z/c");
    fx.expect_for(&r, &[(Tcp, 80, V4), (Udp, 81, V6)]);

    // The label moves to node 1.
    label_node(&mut fx, 0, &[]);
    label_node(&mut fx, 1, &[("role", "infra")]);
    expect_cells(&fx, &node_cells(&fx, true, &on[..4]), want(1));

    // Node addresses are in the pods' CIDRs too: a node Accept before a
    // CIDR Deny leaves exactly that node port open.
    fx.apply(
        "nodes",
        &cnp(
            "x-to-nodes",
            "Admin",
            75,
            "subject:\n  namespaces: {matchLabels: {ns: x}}\negress:\n- action: Accept\n  to:\n  - nodes: {matchLabels: {role: infra}}\n  protocols:\n  - tcp: {destinationPort: {number: 80}}\n- action: Deny\n  to:\n  - networks: [10.244.0.0/16, \"fd00:244::/32\"]",
        ),
    );
    let cidr_on = [(Tcp, 80, V4), (Tcp, 81, V4), (Udp, 80, V4), (Tcp, 80, V6)];
    expect_cells(&fx, &node_cells(&fx, true, &cidr_on), |c| {
        !c.pod.starts_with("x/") || (c.node == 1 && (c.proto, c.port) == (Tcp, 80))
    });
    let mut r = fx.reach(true);
    r.deny_egress_from("x/*");
    fx.expect_for(&r, &[(Tcp, 80, V4), (Tcp, 80, V6)]);
}

#[test]
fn a_pods_own_node_reaches_it_whatever_a_cluster_network_policy_denies() {
    let fx = Fixture::builder().nodes(2, spread).build();
    let _servers = serve_on_nodes(&fx);
    // x closed both ways: an unreadable Deny (a range with start > end)
    // fails closed to "deny every source"; egress to nodes and the world denied.
    fx.apply(
        "shut",
        &cnp(
            "x-shut",
            "Admin",
            5,
            "subject:\n  namespaces: {matchLabels: {ns: x}}\ningress:\n- action: Deny\n  from:\n  - namespaces: {}\n  protocols:\n  - tcp: {destinationPort: {range: {start: 90, end: 80}}}\negress:\n- action: Deny\n  to:\n  - nodes: {}\n  - networks: [0.0.0.0/0, \"::/0\"]",
        ),
    );
    let on = [(Tcp, 80, V4), (Udp, 81, V4), (Sctp, 80, V4), (Tcp, 81, V6)];
    let home = |c: &NodeCell| fx.pod(&c.pod).node_index() as usize == c.node;
    // The node's own probes (and their replies, past x's egress Deny) pass;
    // the other node is just another source.
    let mut cells = node_cells(&fx, false, &on);
    cells.extend(node_cells(&fx, true, &on[..2]));
    expect_cells(&fx, &cells, |c| {
        !c.pod.starts_with("x/") || (!c.to_node && home(c))
    });
    let mut r = fx.reach(true);
    r.deny_ingress_to("x/*").deny_egress_from("x/*");
    fx.expect_for(&r, &[(Tcp, 80, V4), (Udp, 80, V6)]);
}

#[test]
fn host_network_pods_are_not_matched_by_pod_or_namespace_peers() {
    let mut fx = Fixture::builder().nodes(2, spread).build();
    let _servers = serve_on_nodes(&fx);
    // x/h runs on node 1's network: its addresses are node 1's.
    let since = std::time::SystemTime::now();
    fx.cluster
        .add_host_network_pod_object(1, "x", "h", &[("pod", "h")])
        .expect("host-network pod object");
    fx.wait_applied(since);
    let x_pods = "  - pods: {namespaceSelector: {matchLabels: {ns: x}}, podSelector: {}}\n  - namespaces: {matchLabels: {ns: x}}";
    let policies = |and_node_1: &str| {
        super::documents(&[
            cnp(
                "y-to-x",
                "Admin",
                10,
                &format!(
                    "subject:\n  namespaces: {{matchLabels: {{ns: y}}}}\negress:\n- action: Deny\n  to:\n{x_pods}{and_node_1}"
                ),
            ),
            cnp(
                "z-from-x",
                "Admin",
                10,
                &format!(
                    "subject:\n  namespaces: {{matchLabels: {{ns: z}}}}\ningress:\n- action: Deny\n  from:\n{x_pods}"
                ),
            ),
        ])
    };
    fx.apply("host-network", &policies(""));
    let on = [(Tcp, 80, V4), (Udp, 81, V4), (Sctp, 80, V4), (Tcp, 81, V6)];
    // x's pods, x/h among them, are denied to y and from z's point of view;
    // node 1 (x/h's addresses) is not, either way.
    let mut cells = node_cells(&fx, true, &on);
    cells.extend(node_cells(&fx, false, &on));
    expect_cells(&fx, &cells, |_| true);
    let mut r = fx.reach(true);
    r.deny("y/*", "x/*").deny("x/*", "z/*");
    fx.expect_for(&r, &[(Tcp, 80, V4), (Udp, 81, V6)]);

    // Control: the same Deny naming node 1 does cut y from its addresses.
    label_node(&mut fx, 1, &[("host", "h")]);
    fx.apply(
        "host-network",
        &policies("\n  - nodes: {matchLabels: {host: h}}"),
    );
    expect_cells(&fx, &node_cells(&fx, true, &on), |c| {
        !(c.pod.starts_with("y/") && c.node == 1)
    });
}
