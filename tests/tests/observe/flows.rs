//! The denied-flow log: `/flows` and `palisade flows`.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use palisade_tests::cluster::{AGENT_HEALTH, palisade_binary};
use palisade_tests::{ChildGuard, Poll};

use crate::fixture::*;

#[test]
fn the_flow_log_holds_exactly_the_denied_flows_with_pod_names() {
    let bed = GuardedCluster::new(false);
    let (v4, v6) = (bed.ipv4(SERVER_NS, "server"), bed.ipv6(SERVER_NS, "server"));
    bed.tcp_connects(v4, TCP_PORT, 2); // allowed: not in the log
    let before = bed.scrape();
    bed.udp_datagrams(v4, DENIED_PORT, 3);
    bed.udp_datagrams(v6, DENIED_PORT, 1);
    let want = denied(&before) + 4.0;
    scrape_until(&bed, "the drops", |s| denied(s) >= want);
    let ours = |flows: Vec<serde_json::Value>| -> Vec<serde_json::Value> {
        flows
            .into_iter()
            .filter(|f| f["source"] == format!("{CLIENT_NS}/client"))
            .collect()
    };
    wait_flows(&bed, SERVER_NS, 4, |f| ours(f).len());
    // Nothing more of ours arrives later (the allowed connects stay out).
    std::thread::sleep(Duration::from_millis(300));
    let flows = ours(bed.flows(SERVER_NS));
    assert_eq!(flows.len(), 4, "exactly the denied flows: {flows:#?}");
    for f in &flows {
        assert_eq!(f["verdict"], "drop");
        assert_eq!(f["direction"], "ingress");
        assert_eq!(f["reason"], "policy_denied");
        assert_eq!(f["protocol"], "UDP");
        assert_eq!(f["source"], format!("{CLIENT_NS}/client"));
        assert_eq!(f["destination"], format!("{SERVER_NS}/server"));
        assert_eq!(f["endpoint"], format!("{SERVER_NS}/server"));
        assert_eq!(f["destination_port"], DENIED_PORT);
        assert_eq!(
            f["policies"],
            serde_json::json!([format!("{SERVER_NS}/guard")])
        );
        // No rule of guard allows the port: its isolation denied the flow.
        assert_eq!(f["denied_by"], serde_json::json!({"by": "isolation"}));
        assert!(f["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    }
    assert!(bed.flows("elsewhere").is_empty(), "the namespace filter");
    let log = bed.cluster.agent_log(0);
    assert!(
        log.lines()
            .filter(|l| l.contains("flows") && l.contains("denied flow"))
            .count()
            >= 4,
        "flows in the agent's log stream:\n{log}"
    );

    // The CLI, inside the node (where the agent listens).
    let binary = palisade_binary().expect("palisade binary");
    let netns = bed.cluster.nodes[0].netns();
    let out = netns
        .command(&binary)
        .args([
            "flows",
            "--health-addr",
            AGENT_HEALTH,
            "--namespace",
            SERVER_NS,
        ])
        .args(["--pod", "server", "--output", "json"])
        .output()
        .expect("palisade flows");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(ours(lines).len(), 4);
    let text = netns
        .command(&binary)
        .args([
            "flows",
            "--health-addr",
            AGENT_HEALTH,
            "--namespace",
            CLIENT_NS,
        ])
        .output()
        .expect("palisade flows");
    let text = String::from_utf8_lossy(&text.stdout);
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("obs-client/client:"))
            .count(),
        4,
        "{text}"
    );
    assert!(
        text.contains("DROP") && text.contains("obs-client/client"),
        "{text}"
    );
    assert!(
        text.lines()
            .filter(|l| l.contains("obs-client/client:"))
            .all(|l| l.contains("by isolation, no rule allowed")),
        "{text}"
    );

    // --follow prints the history, then new flows as they come.
    let mut cmd = netns.command(&binary);
    cmd.args([
        "flows",
        "--follow",
        "--health-addr",
        AGENT_HEALTH,
        "--output",
        "json",
    ])
    .args(["--namespace", SERVER_NS])
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    let mut follow = ChildGuard::spawn(&mut cmd).expect("palisade flows --follow");
    let stdout = follow.child_mut().stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let history = ours(bed.flows(SERVER_NS)).len();
    let mut seen = 0;
    let next_ours = || loop {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("a followed line");
        let f: serde_json::Value = serde_json::from_str(&line).expect("json");
        if f["source"] == format!("{CLIENT_NS}/client") {
            return f;
        }
    };
    while seen < history {
        next_ours();
        seen += 1;
    }
    bed.udp_datagrams(v4, DENIED_PORT, 1);
    let f = next_ours();
    assert_eq!(f["destination_port"], DENIED_PORT);
    assert!(f["seq"].as_u64() > flows.last().and_then(|l| l["seq"].as_u64()));
    drop(follow);
}

/// Polls the flow log of `ns` until `count` of it reaches `n`.
#[track_caller]
fn wait_flows(
    bed: &GuardedCluster,
    ns: &str,
    n: usize,
    count: impl Fn(Vec<serde_json::Value>) -> usize,
) {
    Poll::new(
        format!("{n} counted flows in {ns}"),
        Duration::from_secs(10),
    )
    .every(Duration::from_millis(50))
    .until(|| bed.flows(ns), |flows| count(flows.clone()) >= n)
    .unwrap();
}

#[test]
fn status_reports_map_pressure_and_sync_state() {
    let bed = GuardedCluster::new(false);
    let s = bed.cluster.status(0).expect("status");
    assert_eq!(s["source_synced"], true, "{s:#}");
    assert!(s["waiting_for"].as_array().is_some_and(Vec::is_empty));
    assert!(s["source_lag_seconds"].as_f64().is_some());
    let maps = s["maps"].as_array().expect("maps");
    let endpoints = maps
        .iter()
        .find(|m| m["map"] == "ENDPOINTS")
        .expect("ENDPOINTS pressure");
    assert_eq!(endpoints["entries"], 2);
    assert!(endpoints["capacity"].as_u64().is_some_and(|c| c > 0));
    let binary = palisade_binary().expect("palisade binary");
    let out = bed.cluster.nodes[0]
        .netns()
        .command(&binary)
        .args(["status", "--health-addr", AGENT_HEALTH])
        .output()
        .expect("palisade status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("source: synced"), "{text}");
    assert!(text.contains("CONNTRACK"), "{text}");
    assert!(!text.contains("CLUSTER NETWORK POLICY"), "none yet: {text}");
}

/// Selects a namespace without pods, so it changes no verdict of the bed.
const UNSUPPORTED_CNP: &str = r#"
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata:
  name: egress-guard
spec:
  tier: Baseline
  priority: 30
  subject:
    namespaces:
      matchLabels:
        kubernetes.io/metadata.name: obs-nobody
  egress:
  - name: to-docs
    action: Accept
    to:
    - domainNames: ["docs.example.com"]
  - name: no-metadata
    action: Deny
    to:
    - networks: ["169.254.169.254/32"]
"#;

#[test]
fn status_lists_cluster_network_policies_with_tier_priority_and_unsupported_parts() {
    let bed = GuardedCluster::new(false);
    let since = std::time::SystemTime::now();
    bed.cluster
        .apply_policy("egress-guard", UNSUPPORTED_CNP)
        .expect("write the policy");
    bed.cluster.wait_applied(since, APPLY).expect("applied");
    let s = bed.cluster.status(0).expect("status");
    let listed = s["cluster_policies"].as_array().expect("cluster_policies");
    assert_eq!(listed.len(), 1, "{s:#}");
    let p = &listed[0];
    assert_eq!(p["name"], "egress-guard");
    assert_eq!(p["tier"], "Baseline");
    assert_eq!(p["priority"], 30);
    assert_eq!(p["rejections"], serde_json::json!([]), "{p:#}");
    let unsupported = p["unsupported"].as_array().expect("unsupported");
    assert_eq!(unsupported.len(), 1, "{p:#}");
    assert_eq!(unsupported[0]["field"], "spec.egress[0].to[0].domainNames");
    let scrape = bed.scrape();
    let gauge = |tier| {
        value(
            &scrape,
            "palisade_cluster_network_policies",
            &[("tier", tier)],
        )
    };
    assert_eq!((gauge("baseline"), gauge("admin")), (1.0, 0.0));
    let binary = palisade_binary().expect("palisade binary");
    let out = bed.cluster.nodes[0]
        .netns()
        .command(&binary)
        .args(["status", "--health-addr", AGENT_HEALTH])
        .output()
        .expect("palisade status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let row = text
        .lines()
        .find(|l| l.contains("egress-guard"))
        .unwrap_or_else(|| panic!("no row for the policy: {text}"));
    assert!(
        row.starts_with("Baseline")
            && row.contains(" 30 ")
            && row.contains("0 rejected, 1 unsupported"),
        "{row}"
    );
    assert!(
        text.contains("unsupported (matches nothing): spec.egress[0].to[0].domainNames"),
        "{text}"
    );
}
