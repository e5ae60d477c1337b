//! Test that replacing the agent (an upgrade: stop, start a new binary on the
//! same pins) loses no packet of an established flow and lets no denied flow
//! through: the new agent swaps its programs into the pinned links atomically.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use palisade_tests::Poll;
use palisade_tests::cluster::applied_after;

use crate::fixture::cluster_in_x;

const POLICY: &str = "\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server, namespace: x}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
";

#[test]
fn an_agent_upgrade_drops_no_packet_of_an_established_flow_and_keeps_denying() {
    let mut cluster = cluster_in_x(&["client", "server", "other"]);
    let _echo = cluster
        .pod("x", "server")
        .pod
        .serve_udp(9000)
        .expect("udp echo");
    let _tcp = cluster
        .pod("x", "server")
        .pod
        .serve_tcp(80)
        .expect("tcp server");
    cluster.apply_policy("server", POLICY).expect("policy");
    let since = SystemTime::now();
    cluster.start_agents().expect("agent");
    cluster
        .wait_applied(since, Duration::from_secs(20))
        .expect("ready");
    // The node says how its programs are attached.
    let mode = crate::fixture::attach_mode().to_string();
    assert_eq!(
        cluster.status(0).expect("status")["attach_mode"],
        mode.as_str()
    );
    let (_, metrics) = cluster
        .agent_get(0, palisade_tests::cluster::AGENT_METRICS, "/metrics")
        .expect("metrics");
    assert!(
        metrics.contains(&format!("palisade_attach_mode{{mode=\"{mode}\"}} 1")),
        "{metrics}"
    );

    let server: IpAddr = cluster.pod("x", "server").pod.ipv4().into();
    let socket = cluster
        .pod("x", "client")
        .pod
        .netns()
        .run(|| UdpSocket::bind("0.0.0.0:0").expect("bind"));
    socket
        .connect(SocketAddr::new(server, 9000))
        .expect("connect");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let receiver = socket.try_clone().expect("clone");

    // `upgraded`: the new agent has applied; the stream then runs on for a
    // while. `stop`: the receiver may end. Both are also set by `Release` if
    // the test panics first, so the scope never waits on a running thread.
    let upgraded = AtomicBool::new(false);
    let stop = AtomicBool::new(false);
    let echoed = AtomicU64::new(0);
    let (sent, sent_after_upgrade) = std::thread::scope(|s| {
        let _release = Release(&[&upgraded, &stop]);
        s.spawn(|| {
            let mut buf = [0u8; 64];
            loop {
                match receiver.recv(&mut buf) {
                    Ok(_) => {
                        echoed.fetch_add(1, Ordering::Relaxed);
                    }
                    // Timed out: done once the sender stopped and nothing is in flight.
                    Err(_) if stop.load(Ordering::Relaxed) => break,
                    Err(_) => {}
                }
            }
        });
        let sender = s.spawn(|| {
            let (mut sent, mut after) = (0u64, 0u64);
            let started = Instant::now();
            let mut upgraded_at = None;
            // A steady stream, one datagram per millisecond, until a second
            // after the upgrade (bounded in time whatever happens).
            while started.elapsed() < Duration::from_secs(60)
                && upgraded_at.is_none_or(|t: Instant| t.elapsed() < Duration::from_secs(1))
            {
                if upgraded_at.is_none() && upgraded.load(Ordering::Relaxed) {
                    upgraded_at = Some(Instant::now());
                }
                if socket.send(&sent.to_be_bytes()).is_ok() {
                    sent += 1;
                    after += u64::from(upgraded_at.is_some());
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            (sent, after)
        });
        std::thread::sleep(Duration::from_millis(500));
        // The upgrade, as a rolling update does it: SIGTERM to the old agent,
        // then a new one on the same pins.
        cluster
            .stop_agent(0, Duration::from_secs(5))
            .expect("stop the old agent");
        let other = cluster.pod("x", "other").pod.clone();
        assert!(
            !other
                .probe_tcp(server, 80, Duration::from_millis(300))
                .is_reachable(),
            "denied while no agent runs"
        );
        let restarted = SystemTime::now();
        cluster.start_agent(0).expect("start the new agent");
        cluster
            .wait_applied(restarted, Duration::from_secs(20))
            .expect("new agent ready");
        upgraded.store(true, Ordering::Relaxed);
        assert!(
            !other
                .probe_tcp(server, 80, Duration::from_millis(300))
                .is_reachable(),
            "denied after the upgrade"
        );
        let sent = sender.join().expect("sender");
        // The echoes still in flight; a shortfall is the assertion's to report.
        let _ = Poll::new("every datagram echoed", Duration::from_millis(300))
            .until(|| echoed.load(Ordering::Relaxed), |&n| n >= sent.0);
        stop.store(true, Ordering::Relaxed);
        sent
    });
    let echoed = echoed.load(Ordering::Relaxed);
    assert!(sent > 1000, "the stream ran ({sent} sent)");
    assert!(
        sent_after_upgrade > 100,
        "the stream outlived the upgrade ({sent_after_upgrade} sent after it)"
    );
    assert_eq!(
        echoed, sent,
        "every datagram of the established flow made it across the upgrade"
    );
}

/// Sets every flag when dropped (also while unwinding from a failed assert).
pub(crate) struct Release<'a>(pub(crate) &'a [&'a AtomicBool]);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        for flag in self.0 {
            flag.store(true, Ordering::Relaxed);
        }
    }
}

const CLIENT_DENY_EGRESS: &str = "\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client, namespace: x}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
";

/// Sends `count` datagrams from `from` to `to:port`, one-way: the test takes
/// the client's routes away, so no reply could reach it and an echo probe
/// would fail whatever the policy.
fn send_udp(from: &palisade_tests::Pod, to: IpAddr, port: u16, count: usize) {
    let socket = from
        .netns()
        .run(|| UdpSocket::bind("0.0.0.0:0").expect("bind"));
    for _ in 0..count {
        let _ = socket.send_to(b"probe", SocketAddr::new(to, port));
    }
}

/// `x/client` and `x/server`, no agent yet, and a UDP sink on the server's
/// port 9100: (cluster, client, the server's IPv4, sink).
fn client_and_sink() -> (
    palisade_tests::cluster::Cluster,
    palisade_tests::Pod,
    IpAddr,
    palisade_tests::Server,
) {
    let cluster = cluster_in_x(&["client", "server"]);
    let client = cluster.pod("x", "client").pod.clone();
    let server = cluster.pod("x", "server").pod.clone();
    let sink = server.serve_udp(9100).expect("udp sink");
    (cluster, client, server.ipv4().into(), sink)
}

/// Removes (`del`) or restores (`add`) the client's node-side routes, so the
/// agent cannot, or can again, tell which interface is the client's.
fn client_routes(
    cluster: &palisade_tests::cluster::Cluster,
    client: &palisade_tests::Pod,
    action: &str,
) {
    for route in [
        format!("{}/32", client.ipv4()),
        format!("{}/128", client.ipv6()),
    ] {
        cluster.nodes[0]
            .netns()
            .ip(["route", action, &route, "dev", client.host_veth()])
            .unwrap_or_else(|e| panic!("route {action} {route}: {e}"));
    }
}

fn client_status(s: &serde_json::Value) -> Option<&serde_json::Value> {
    s["endpoints"]
        .as_array()?
        .iter()
        .find(|e| e["pod"].as_str() == Some("x/client"))
}

/// A pod whose interface the restarted agent cannot resolve (here: its
/// node-side routes are gone) stays closed: the previous agent's links stay on
/// its interface with the new programs, which drop its traffic until the pod
/// resolves again, and then enforce its policy as before.
#[test]
fn a_restarted_agent_keeps_a_pod_it_cannot_resolve_yet_closed() {
    let (mut cluster, client, server, sink) = client_and_sink();
    let arrivals = |before: u64| {
        std::thread::sleep(Duration::from_millis(300));
        sink.hits() - before
    };

    // Without any agent, the path is open: what a detached link would leave.
    send_udp(&client, server, 9100, 3);
    palisade_tests::wait_until(
        Duration::from_secs(2),
        "the client reaches the server without policy",
        || sink.hits() > 0,
    );

    cluster
        .apply_policy("client", CLIENT_DENY_EGRESS)
        .expect("policy");
    let since = SystemTime::now();
    cluster.start_agents().expect("agent");
    cluster
        .wait_applied(since, Duration::from_secs(20))
        .expect("ready");
    let hits = sink.hits();
    send_udp(&client, server, 9100, 3);
    assert_eq!(arrivals(hits), 0, "the client's egress is denied");

    // Restart the agent while the client's routes are gone, so the new agent
    // cannot tell which interface is the client's.
    cluster
        .stop_agent(0, Duration::from_secs(5))
        .expect("stop the agent");
    client_routes(&cluster, &client, "del");
    let restarted = SystemTime::now();
    cluster.start_agent(0).expect("restart the agent");
    cluster
        .wait_status(
            0,
            Duration::from_secs(20),
            "the new agent's first apply, client unresolved",
            |s| {
                applied_after(s, restarted)
                    && client_status(s).is_some_and(|c| c["enforced"].as_bool() == Some(false))
            },
        )
        .expect("status");
    let status = cluster.status(0).expect("status");
    assert_eq!(
        status["held_closed"],
        serde_json::json!([client.host_veth()]),
        "the status names the interface held closed"
    );
    let hits = sink.hits();
    send_udp(&client, server, 9100, 5);
    assert_eq!(
        arrivals(hits),
        0,
        "the unresolved client stays closed; agent log:\n{}",
        cluster.agent_log(0)
    );

    // The routes come back: the pod resolves, its link is adopted, and its
    // policy applies as before.
    client_routes(&cluster, &client, "add");
    cluster
        .wait_status(
            0,
            Duration::from_secs(20),
            "the client enforced again",
            |s| {
                client_status(s).is_some_and(|c| c["enforced"].as_bool() == Some(true))
                    && s["held_closed"].as_array().is_some_and(Vec::is_empty)
            },
        )
        .expect("status");
    let hits = sink.hits();
    send_udp(&client, server, 9100, 3);
    assert_eq!(arrivals(hits), 0, "the client's egress is still denied");
}

/// A running agent keeps a pod enforced on its interface when the pod stops
/// resolving (here: its node-side routes are removed, as a CNI restarting may
/// do): detaching would leave it unpoliced.
#[test]
fn a_running_agent_keeps_enforcing_a_pod_whose_interface_stops_resolving() {
    let (mut cluster, client, server, sink) = client_and_sink();
    let arrivals = |before: u64| {
        std::thread::sleep(Duration::from_millis(300));
        sink.hits() - before
    };
    cluster
        .apply_policy("client", CLIENT_DENY_EGRESS)
        .expect("policy");
    let since = SystemTime::now();
    cluster.start_agents().expect("agent");
    cluster
        .wait_applied(since, Duration::from_secs(20))
        .expect("ready");

    client_routes(&cluster, &client, "del");
    // Control: without policy the path is open even without those routes,
    // so a detached client would get through.
    cluster.delete_policy("client").expect("delete policy");
    let opened = SystemTime::now();
    // The apply without the policy, not any apply after the delete: the
    // route removal above wakes the agent too, and its reconcile (and
    // status) may land after `opened` but before the delete is read.
    cluster
        .wait_status(0, Duration::from_secs(20), "the delete applied", |s| {
            applied_after(s, opened)
                && client_status(s).is_some_and(|c| {
                    c["enforced"].as_bool() == Some(true) && c["egress_isolated"] == false
                })
        })
        .unwrap_or_else(|e| panic!("{e}; agent log:\n{}", cluster.agent_log(0)));
    let hits = sink.hits();
    send_udp(&client, server, 9100, 3);
    palisade_tests::wait_until(
        Duration::from_secs(2),
        "with no policy the client reaches the server",
        || sink.hits() > hits,
    );

    // A new plan while the client is unresolved keeps its interface.
    cluster
        .apply_policy("client", CLIENT_DENY_EGRESS)
        .expect("policy again");
    let denied = SystemTime::now();
    cluster
        .wait_status(0, Duration::from_secs(20), "the deny applied", |s| {
            applied_after(s, denied)
                && client_status(s).is_some_and(|c| {
                    c["enforced"].as_bool() == Some(true) && c["egress_isolated"] == true
                })
        })
        .unwrap_or_else(|e| panic!("{e}; agent log:\n{}", cluster.agent_log(0)));
    let hits = sink.hits();
    send_udp(&client, server, 9100, 5);
    assert_eq!(
        arrivals(hits),
        0,
        "the unresolved client is still enforced; agent log:\n{}",
        cluster.agent_log(0)
    );
}
