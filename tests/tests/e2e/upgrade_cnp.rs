//! Test that restarting the agent over its pinned state with a
//! ClusterNetworkPolicy `Deny` in force lets no packet of the denied flow
//! through at any point, and keeps an allowed established connection. The
//! first agent, over empty pins, holds endpoints with deny entries until
//! every link carries its programs (the upgrade gate,
//! `agent/src/sync/hold.rs`), then writes their deny entries; a restarted
//! agent finds deny entries pinned, so its gate is open from the start, and
//! takes over the pinned ids. Three restarts over the same pins: SIGTERM (a
//! rolling update), SIGKILL (a crash), and SIGTERM while the cluster changes
//! (a new pod and policy, so a fresh numbering of identities would differ).

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use palisade_tests::Poll;
use palisade_tests::cluster::Cluster;

use crate::upgrade::Release;

const SINK: u16 = 9100;
const WEB: u16 = 80;
const APPLY: Duration = Duration::from_secs(20);
const PROBE: Duration = Duration::from_millis(300);
/// What the agent logs when the gate lets the held deny entries in.
const GATE_OPENED: &str = "writing the held endpoints' deny entries";

const DENY_INTRUDER: &str = "\
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: no-intruder}
spec:
  tier: Admin
  priority: 5
  subject:
    pods:
      namespaceSelector: {}
      podSelector: {matchLabels: {app: server}}
  ingress:
  - name: deny-intruder
    action: Deny
    from:
    - pods:
        namespaceSelector: {}
        podSelector: {matchLabels: {role: intruder}}
";

/// Written while the agent is down, with a pod it selects: both sort first,
/// so the restarted agent's identity numbering differs from the pinned one.
const CHURN: &str = "\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: aaa, namespace: x}
spec:
  podSelector: {matchLabels: {app: aaa}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: aaa}}}]
";

/// How the agent goes away before the next one starts on its pins.
#[derive(Clone, Copy, Debug)]
enum Restart {
    Stop,
    Kill,
    StopWhileTheClusterChanges,
}

#[test]
fn restarts_with_a_cluster_deny_in_force_never_let_the_denied_flow_through() {
    let mut cluster = Cluster::new(1).expect("cluster");
    cluster.set_namespace("x", &[]).expect("namespace");
    for (name, labels) in [
        ("client", &[("app", "client")][..]),
        ("intruder", &[("app", "intruder"), ("role", "intruder")][..]),
        ("server", &[("app", "server")][..]),
    ] {
        cluster.add_pod(0, "x", name, labels, &[]).expect("pod");
    }
    let server_pod = cluster.pod("x", "server").pod.clone();
    let server: IpAddr = server_pod.ipv4().into();
    let sink = server_pod.serve_udp(SINK).expect("udp sink");
    let _web = server_pod.serve_tcp(WEB).expect("tcp echo");
    let intruder = cluster.pod("x", "intruder").pod.clone();
    let client = cluster.pod("x", "client").pod.clone();
    let socket = intruder
        .netns()
        .run(|| UdpSocket::bind("0.0.0.0:0").expect("bind"));
    let to_sink = SocketAddr::new(server, SINK);

    // Control: without any agent the intruder reaches the sink, so the
    // stream below would be counted if it got through.
    palisade_tests::wait_until(
        Duration::from_secs(2),
        "the intruder reaches the sink without policy",
        || {
            let _ = socket.send_to(b"open", to_sink);
            sink.hits() > 0
        },
    );

    cluster
        .apply_policy("no-intruder", DENY_INTRUDER)
        .expect("policy");
    let since = SystemTime::now();
    cluster.start_agents().expect("agent");
    cluster.wait_applied(since, APPLY).expect("ready");
    // The stream starts after the first agent's deny is in: from here on
    // nothing of it may arrive. Late arrivals of the control settle first.
    std::thread::sleep(PROBE);
    let open_hits = sink.hits();
    let mut conn = client
        .connect_tcp(server, WEB, Duration::from_secs(2))
        .expect("the client connects to the server");
    assert!(
        conn.exchange(Duration::from_secs(1)),
        "the client is allowed"
    );

    let stop = AtomicBool::new(false);
    let sent = AtomicU64::new(0);
    std::thread::scope(|s| {
        let _release = Release(&[&stop]);
        s.spawn(|| {
            // One datagram a millisecond through every restart (bounded in
            // time whatever happens).
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(120) {
                if socket.send_to(b"intrude", to_sink).is_ok() {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let denied = |when: &str| {
            assert!(
                intruder.probe_tcp(server, WEB, PROBE).is_blocked(),
                "the intruder is denied {when}"
            );
        };
        let mut allowed = |when: &str| {
            assert!(
                conn.exchange(Duration::from_secs(1)),
                "the established connection works {when}"
            );
        };
        denied("before any restart");
        for restart in [
            Restart::Stop,
            Restart::Kill,
            Restart::StopWhileTheClusterChanges,
        ] {
            match restart {
                Restart::Stop => cluster.stop_agent(0, Duration::from_secs(5)).expect("stop"),
                Restart::Kill => cluster.kill_agent(0).expect("kill"),
                Restart::StopWhileTheClusterChanges => {
                    cluster.stop_agent(0, Duration::from_secs(5)).expect("stop");
                    cluster
                        .add_pod(0, "x", "aaa", &[("app", "aaa")], &[])
                        .expect("pod aaa");
                    cluster.apply_policy("aaa", CHURN).expect("policy aaa");
                }
            }
            denied(&format!("while no agent runs ({restart:?})"));
            allowed(&format!("while no agent runs ({restart:?})"));
            let restarted = SystemTime::now();
            cluster.start_agent(0).expect("start the next agent");
            cluster
                .wait_applied(restarted, APPLY)
                .unwrap_or_else(|e| panic!("{e}; agent log:\n{}", agent_log(&cluster)));
            denied(&format!("after the restart ({restart:?})"));
            allowed(&format!("after the restart ({restart:?})"));
            assert_eq!(
                sink.hits() - open_hits,
                0,
                "datagrams of the denied stream arrived around the restart ({restart:?}); agent log:\n{}",
                agent_log(&cluster)
            );
        }
        stop.store(true, Ordering::Relaxed);
    });
    std::thread::sleep(PROBE);
    assert_eq!(
        sink.hits(),
        open_hits,
        "no datagram of the denied stream arrived at any point"
    );
    let sent = sent.load(Ordering::Relaxed);
    assert!(
        sent > 500,
        "the stream ran through the restarts ({sent} sent)"
    );
    // The first agent held the server's deny entries, then wrote them; the
    // restarted ones found them pinned and held nothing.
    let log = cluster.agent_log(0);
    assert_eq!(
        log.matches(GATE_OPENED).count(),
        1,
        "only the first agent held the server's deny entries:\n{log}"
    );

    // Control: with the policy deleted the same stream arrives.
    cluster.delete_policy("no-intruder").expect("delete");
    let deleted = SystemTime::now();
    cluster.wait_applied(deleted, APPLY).expect("applied");
    Poll::new(
        "the intruder reaches the sink again",
        Duration::from_secs(5),
    )
    .every(Duration::from_millis(20))
    .until(
        || {
            let _ = socket.send_to(b"open", to_sink);
            sink.hits()
        },
        |&hits| hits > open_hits,
    )
    .unwrap_or_else(|e| panic!("{e}; agent log:\n{}", agent_log(&cluster)));
}

/// The agent log without its flow lines (the denied stream floods it).
fn agent_log(cluster: &Cluster) -> String {
    let log = cluster.agent_log(0);
    let lines: Vec<&str> = log.lines().filter(|l| !l.contains("denied flow")).collect();
    lines[lines.len().saturating_sub(80)..].join("\n")
}
