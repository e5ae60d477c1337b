//! Test that replacing the agent (an upgrade: stop, start a new binary on the
//! same pins) loses no packet of an established flow and lets no denied flow
//! through: the new agent swaps its programs into the pinned links atomically.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use palisade_tests::cluster::Cluster;

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
    let mut cluster = Cluster::new(1).expect("cluster");
    cluster.set_namespace("x", &[]).expect("namespace");
    cluster
        .add_pod(0, "x", "client", &[("app", "client")], &[])
        .expect("client");
    cluster
        .add_pod(0, "x", "server", &[("app", "server")], &[])
        .expect("server");
    cluster
        .add_pod(0, "x", "other", &[("app", "other")], &[])
        .expect("other");
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
        std::thread::sleep(Duration::from_millis(300));
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
struct Release<'a>(&'a [&'a AtomicBool]);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        for flag in self.0 {
            flag.store(true, Ordering::Relaxed);
        }
    }
}
