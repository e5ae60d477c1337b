//! A restarted agent's first apply over the previous agent's pinned maps,
//! judged step by step with the kernel model: every intermediate state must
//! let through exactly what both the pinned and the new state let through,
//! and drop what both drop. Numbered afresh, the new agent gives ids other
//! meanings, and the writes are only safe through waypoints
//! (`sync::waypoint`); it takes over the pinned ids instead
//! (`policy::adopt`), so a restart over the same cluster rewrites nothing.

use std::collections::BTreeMap;
use std::path::Path;

use palisade_agent::policy::Compiler;
use palisade_agent::source::manifests;
use palisade_agent::state::{ClusterState, PodRef};
use palisade_agent::sync::{KernelState, MapOp, diff, pinned_ids, render};
use palisade_common::addr::Addr16;
use palisade_common::verdict::Direction;

use crate::model::{ModelPacket, passes};

const SERVER_IFINDEX: u32 = 10;
const SERVER: [u8; 4] = [10, 0, 0, 10];
const PEERS: [[u8; 4]; 3] = [[10, 0, 1, 1], [10, 0, 1, 2], [192, 0, 2, 1]];
const PORTS: [u16; 3] = [80, 443, 8080];

/// s on node-1 serves; a and b on node-2 are its peers.
fn pods() -> String {
    let pod = |name: &str, node: &str, ip: &str| {
        format!(
            "---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: t, labels: {{app: {name}}}}}
spec: {{nodeName: {node}, containers: [{{name: c, image: i}}]}}
status: {{phase: Running, podIP: {ip}, podIPs: [{{ip: {ip}}}]}}
"
        )
    };
    [
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: t}\n".to_string(),
        pod("s", "node-1", "10.0.0.10"),
        pod("a", "node-2", "10.0.1.1"),
        pod("b", "node-2", "10.0.1.2"),
    ]
    .concat()
}

/// s accepts `from` on TCP `port`.
fn allow(name: &str, from: &str, port: u16) -> String {
    format!(
        "---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: {name}, namespace: t}}
spec:
  podSelector: {{matchLabels: {{app: s}}}}
  ingress: [{{from: [{{podSelector: {{matchLabels: {{app: {from}}}}}}}], ports: [{{port: {port}}}]}}]
"
    )
}

fn cluster(yaml: &str) -> ClusterState {
    let objects = manifests::parse(Path::new("restart.yaml"), yaml).expect("valid manifests");
    let mut state = ClusterState::new();
    for object in &objects {
        state.apply(object).expect("a valid object");
    }
    state
}

fn interfaces() -> BTreeMap<PodRef, u32> {
    BTreeMap::from([(
        PodRef {
            namespace: "t".into(),
            name: "s".into(),
        },
        SERVER_IFINDEX,
    )])
}

/// Every (write, packet) after which the model's verdict differs from the
/// one the old and the new state agree on.
fn disagreements(old: &KernelState, new: &KernelState) -> Vec<String> {
    let packet = |peer: [u8; 4], port| ModelPacket {
        direction: Direction::Ingress,
        ipv4: true,
        local: Addr16::from_v4(SERVER),
        remote: Addr16::from_v4(peer),
        protocol: 6,
        dst_port: port,
    };
    let mut found = Vec::new();
    let mut state = old.clone();
    for op in diff(old, new) {
        state.apply(&op);
        for peer in PEERS {
            for port in PORTS {
                let p = packet(peer, port);
                let (was, will) = (
                    passes(old, SERVER_IFINDEX, &p),
                    passes(new, SERVER_IFINDEX, &p),
                );
                if was == will && passes(&state, SERVER_IFINDEX, &p) != was {
                    found.push(format!("{peer:?}:{port} after {op:?}"));
                }
            }
        }
    }
    assert_eq!(state, *new, "the writes end in the new state");
    found
}

/// The pinned state of an agent that compiled `history` (the last one
/// pinned), and the first target of a new agent for `now` over it, numbered
/// afresh and after taking over the pinned ids.
fn restart(history: &[String], now: &str) -> (KernelState, KernelState, KernelState) {
    let mut previous = Compiler::new();
    let mut pinned = KernelState::default();
    for yaml in history {
        pinned = render(&previous.compile(&cluster(yaml), "node-1"), &interfaces());
    }
    let now = cluster(now);
    let mut next = Compiler::new();
    let first = next.compile(&now, "node-1");
    let afresh = render(&first, &interfaces());
    next.adopt_pinned_ids(&first, &pinned_ids(&pinned, &interfaces()));
    let adopted = render(&next.compile(&now, "node-1"), &interfaces());
    (pinned, afresh, adopted)
}

#[test]
fn a_restart_keeps_the_pinned_ids_and_every_agreed_verdict() {
    // The previous agent numbered b's identity first (its policy came
    // first); a fresh agent numbers a's first: the two ids swap meanings.
    let both = format!(
        "{}{}{}",
        pods(),
        allow("pa", "a", 80),
        allow("pb", "b", 443)
    );
    let history = [format!("{}{}", pods(), allow("pb", "b", 443)), both.clone()];
    let (pinned, afresh, adopted) = restart(&history, &both);

    assert_ne!(
        afresh.ipcache, pinned.ipcache,
        "the control: numbered afresh, addresses change identity ids"
    );
    assert_eq!(
        (&adopted.ipcache, &adopted.endpoints),
        (&pinned.ipcache, &pinned.endpoints),
        "the same cluster: every address and endpoint keeps its pinned id"
    );
    assert_eq!(disagreements(&pinned, &afresh), Vec::<String>::new());
    assert_eq!(disagreements(&pinned, &adopted), Vec::<String>::new());
    let writes = |new| {
        diff(&pinned, new)
            .iter()
            .filter(|op| !matches!(op, MapOp::BumpRevision))
            .count()
    };
    assert!(
        writes(&adopted) < writes(&afresh),
        "{} writes against {}",
        writes(&adopted),
        writes(&afresh)
    );
}

#[test]
fn a_restart_over_a_cluster_changed_meanwhile_keeps_every_agreed_verdict() {
    // While the agent was down, b's policy was replaced by one for port
    // 8080 and a new policy admits a on 443.
    let history = [
        format!("{}{}", pods(), allow("pb", "b", 443)),
        format!(
            "{}{}{}",
            pods(),
            allow("pa", "a", 80),
            allow("pb", "b", 443)
        ),
    ];
    let now = format!(
        "{}{}{}{}",
        pods(),
        allow("pa", "a", 80),
        allow("pb", "b", 8080),
        allow("pc", "a", 443)
    );
    let (pinned, _, adopted) = restart(&history, &now);
    assert_ne!(pinned.policy, adopted.policy, "the cluster did change");
    assert_eq!(disagreements(&pinned, &adopted), Vec::<String>::new());
}
