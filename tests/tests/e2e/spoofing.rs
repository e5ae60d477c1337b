//! Test that a pod cannot pass for another, on a node routed like Calico and
//! on one bridged like flannel, both with reverse-path filtering off: forged
//! sources (raw packets, as `CAP_NET_RAW` allows, and an address added to
//! the pod's interface) do not reach an isolated server and show in the
//! metrics and the flow log with the attacker's name; the same pod's own
//! traffic, its neighbours' ARP and ND, and IPv6 bring-up with duplicate
//! address detection keep working; an allowed-source-prefixes annotation
//! lets a gateway pod's prefixes through only where the operator allows it.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use palisade_tests::cluster::{AGENT_HEALTH, AGENT_METRICS, Cluster, applied_after};
use palisade_tests::spoof::{Sniffer, send_frame, send_raw_ip};
use palisade_tests::{Frame, Layout, Outcome, TcpFlags, wait_until};

const PROBE: Duration = Duration::from_millis(1500);
/// How long a forged packet may take to arrive: long past any real delivery
/// on one node (the controls below arrive within milliseconds).
const WINDOW: Duration = Duration::from_millis(400);
const UDP_PORT: u16 = 5353;
const TCP_PORT: u16 = 80;

const POLICY: &str = "\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-from-a, namespace: x}
spec:
  podSelector: {matchLabels: {app: b}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: a}}}]
    ports: [{protocol: UDP, port: 5353}, {protocol: TCP, port: 80}]
";

/// Namespace `x` with `a` (the allowed peer), `b` (the isolated server), `m`
/// (the attacker) and `c` (a server no policy isolates), agent running.
fn attack_bed(layout: Layout, agent_args: &[&str]) -> Cluster {
    let mut cluster = Cluster::with_layout(1, layout).expect("cluster");
    cluster.set_namespace("x", &[]).expect("namespace");
    for name in ["a", "b", "m", "c"] {
        cluster
            .add_pod(0, "x", name, &[("app", name)], &[])
            .expect("pod");
    }
    cluster.apply_policy("b", POLICY).expect("policy");
    cluster.set_agent_args(agent_args);
    let since = SystemTime::now();
    cluster.start_agents().expect("agent");
    cluster
        .wait_applied(since, Duration::from_secs(20))
        .expect("ready");
    cluster
        .wait_enforced(0, Duration::from_secs(20))
        .expect("enforced");
    cluster
}

fn ip_like(cluster: &Cluster, pod: &str, like: IpAddr) -> IpAddr {
    cluster.pod("x", pod).pod.ip_like(like)
}

/// Sends raw packets from pod `x/from` claiming to be `src`, to `dst`: a
/// UDP datagram to the UDP port and a TCP SYN to the TCP port.
fn forge(cluster: &Cluster, from: &str, src: IpAddr, dst: IpAddr) {
    forge_from(&cluster.pod("x", from).pod, src, dst);
}

fn forge_from(from: &palisade_tests::Pod, src: IpAddr, dst: IpAddr) {
    let netns = from.netns();
    for frame in [
        Frame::ip(src, dst).udp(41000, UDP_PORT).payload(8).build(),
        Frame::ip(src, dst)
            .tcp(41001, TCP_PORT, TcpFlags::SYN)
            .build(),
    ] {
        send_raw_ip(netns, &frame).expect("raw send");
    }
}

/// How many packets from `src` to the UDP and TCP ports have arrived.
fn arrived(sniffer: &Sniffer, src: IpAddr) -> (usize, usize) {
    (
        sniffer.count(src, 17, UDP_PORT),
        sniffer.count(src, 6, TCP_PORT),
    )
}

fn spoofed_drops(cluster: &Cluster) -> f64 {
    let (_, body) = cluster
        .agent_get(0, AGENT_METRICS, "/metrics")
        .expect("metrics");
    body.lines()
        .filter(|l| {
            l.starts_with("palisade_drops_total{") && l.contains("reason=\"source_spoofed\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn spoofed_flows(cluster: &Cluster) -> Vec<serde_json::Value> {
    let (_, body) = cluster
        .agent_get(0, AGENT_HEALTH, "/flows?namespace=x")
        .expect("flows");
    let page: serde_json::Value = serde_json::from_str(&body).expect("flows json");
    page["flows"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f["reason"] == "source_spoofed")
        .collect()
}

fn forged_sources_do_not_reach_an_isolated_server(layout: Layout) {
    let cluster = attack_bed(layout, &[]);
    let b = &cluster.pod("x", "b").pod;
    let _udp = b.serve_udp(UDP_PORT).expect("udp server");
    let _tcp = b.serve_tcp(TCP_PORT).expect("tcp server");
    let sniffer = Sniffer::start(b.netns()).expect("sniffer");
    let (a, m, c) = (
        &cluster.pod("x", "a").pod,
        &cluster.pod("x", "m").pod,
        &cluster.pod("x", "c").pod,
    );
    let _c_udp = c.serve_udp(UDP_PORT).expect("udp server");

    for b_ip in b.ips() {
        // The policy works: the allowed peer gets in, the attacker as itself not.
        assert!(
            a.probe_udp(b_ip, UDP_PORT, PROBE).is_reachable(),
            "a -> b {b_ip}"
        );
        assert!(
            a.probe_tcp(b_ip, TCP_PORT, PROBE).is_reachable(),
            "a -> b {b_ip} tcp"
        );
        assert!(
            m.probe_udp(b_ip, UDP_PORT, PROBE).is_blocked(),
            "m -> b {b_ip}"
        );
        let a_ip = a.ip_like(b_ip);

        // Control: raw packets are a way in when their source is the sender's.
        let before = arrived(&sniffer, a_ip);
        forge(&cluster, "a", a_ip, b_ip);
        wait_until(
            Duration::from_secs(2),
            &format!("a's own raw packets to {b_ip} did not arrive"),
            || {
                let now = arrived(&sniffer, a_ip);
                now.0 > before.0 && now.1 > before.1
            },
        );
        // b answers a's forged SYN and a's stack, knowing no such
        // connection, resets it: that RST (from a, to the TCP port) must land
        // before m's baseline is taken, or it is counted as m's.
        std::thread::sleep(WINDOW);

        // m claims to be a; then claims to be b itself.
        for (claimed, what) in [(a_ip, "the allowed peer"), (b_ip, "the server itself")] {
            let before = arrived(&sniffer, claimed);
            let drops = spoofed_drops(&cluster);
            forge(&cluster, "m", claimed, b_ip);
            std::thread::sleep(WINDOW);
            assert_eq!(
                arrived(&sniffer, claimed),
                before,
                "{layout:?}: m forging {what} ({claimed}) reached b"
            );
            wait_until(
                Duration::from_secs(2),
                "drops of m's forgeries counted",
                || spoofed_drops(&cluster) >= drops + 2.0,
            );
        }
        // m's own traffic is untouched: c (not isolated) answers it.
        assert!(
            m.probe_udp(c.ip_like(b_ip), UDP_PORT, PROBE).is_reachable(),
            "{layout:?}: m's own traffic to c"
        );
    }

    // An address added to the attacker's interface: its sockets then send as a.
    let a_v4 = a.ipv4();
    m.netns()
        .ip(["addr", "add", &format!("{a_v4}/32"), "dev", "eth0"])
        .expect("alias");
    let before = arrived(&sniffer, a_v4.into());
    let outcome = palisade_tests::probes::probe_udp(
        m.netns(),
        Some(a_v4.into()),
        b.ipv4().into(),
        UDP_PORT,
        Duration::from_millis(600),
    );
    assert_ne!(outcome, Outcome::Reachable);
    assert_eq!(
        arrived(&sniffer, a_v4.into()),
        before,
        "{layout:?}: m with a's address reached b"
    );

    // The flow log names the attacker and the address it forged.
    let flows = spoofed_flows(&cluster);
    assert!(
        flows
            .iter()
            .any(|f| f["endpoint"] == "x/m" && f["source"] == a_v4.to_string()),
        "{layout:?}: no source_spoofed record of x/m forging {a_v4}: {flows:#?}"
    );
    assert!(
        flows.iter().all(|f| f["endpoint"] == "x/m"),
        "only the attacker forged: {flows:#?}"
    );
}

#[test]
fn forged_sources_do_not_reach_an_isolated_server_on_a_routed_node() {
    forged_sources_do_not_reach_an_isolated_server(Layout::Routed);
}

#[test]
fn forged_sources_do_not_reach_an_isolated_server_on_a_bridged_node() {
    forged_sources_do_not_reach_an_isolated_server(Layout::Bridged);
}

/// Whether the pod's IPv6 address on `eth0` is still tentative (DAD running).
fn tentative(pod: &palisade_tests::Pod) -> bool {
    pod.netns()
        .ip(["-6", "addr", "show", "dev", "eth0", "tentative"])
        .map(|out| out.contains(&pod.ipv6().to_string()))
        .unwrap_or(true)
}

fn ipv6_comes_up_with_duplicate_address_detection(layout: Layout) {
    let mut cluster = attack_bed(layout, &[]);
    let since = SystemTime::now();
    let late = cluster
        .add_pod_with_dad(0, "x", "late", &[("app", "late")])
        .expect("pod with DAD")
        .pod
        .clone();
    wait_until(
        Duration::from_secs(10),
        &format!("{layout:?}: DAD did not complete"),
        || !tentative(&late),
    );
    // The agent enforces on it, and it talks IPv6 through its gateway.
    cluster
        .wait_applied(since, Duration::from_secs(20))
        .expect("applied");
    cluster
        .wait_status(0, Duration::from_secs(10), "the late pod enforced", |s| {
            s["endpoints"].as_array().is_some_and(|eps| {
                eps.iter()
                    .any(|e| e["pod"] == "x/late" && e["enforced"] == true)
            })
        })
        .expect("enforced");
    let c = &cluster.pod("x", "c").pod;
    let _udp = c.serve_udp(UDP_PORT).expect("udp server");
    assert!(
        late.probe_udp(c.ipv6().into(), UDP_PORT, PROBE)
            .is_reachable(),
        "{layout:?}: the new pod reaches c over IPv6"
    );
    assert!(
        late.probe_icmp(cluster.nodes[0].ipv6().into(), PROBE)
            .is_reachable(),
        "{layout:?}: and its node"
    );
    assert_eq!(
        spoofed_drops(&cluster),
        0.0,
        "{layout:?}: nothing of the bring-up was taken for spoofing"
    );
}

#[test]
fn ipv6_comes_up_with_duplicate_address_detection_on_a_routed_node() {
    ipv6_comes_up_with_duplicate_address_detection(Layout::Routed);
}

#[test]
fn ipv6_comes_up_with_duplicate_address_detection_on_a_bridged_node() {
    ipv6_comes_up_with_duplicate_address_detection(Layout::Bridged);
}

/// The MAC that `pod`'s neighbour table holds for `ip`.
fn neighbour_mac(pod: &palisade_tests::Pod, ip: IpAddr) -> Option<String> {
    let out = pod
        .netns()
        .ip(["neigh", "show", &ip.to_string(), "dev", "eth0"])
        .ok()?;
    let mut words = out.split_whitespace();
    words.find(|w| *w == "lladdr")?;
    words.next().map(str::to_string)
}

fn mac_of(pod: &palisade_tests::Pod) -> [u8; 6] {
    let bytes: Vec<u8> = pod
        .mac()
        .expect("mac")
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).expect("hex"))
        .collect();
    bytes.try_into().expect("six bytes")
}

/// A gratuitous ARP from `from` claiming `claimed`.
fn gratuitous_arp(from: &palisade_tests::Pod, claimed: std::net::Ipv4Addr) -> Vec<u8> {
    Frame::arp_request(claimed, claimed)
        .macs(mac_of(from), [0xff; 6])
        .pad_to(60)
        .build()
}

#[test]
fn a_pod_on_a_bridge_cannot_claim_another_pods_address_by_arp() {
    let mut cluster = Cluster::with_layout(1, Layout::Bridged).expect("cluster");
    cluster.set_namespace("x", &[]).expect("namespace");
    for name in ["a", "b", "m"] {
        cluster
            .add_pod(0, "x", name, &[("app", name)], &[])
            .expect("pod");
    }
    let (a, b, m) = (
        cluster.pod("x", "a").pod.clone(),
        cluster.pod("x", "b").pod.clone(),
        cluster.pod("x", "m").pod.clone(),
    );
    let b_mac = b.mac().expect("mac");
    let learn = || {
        let _ = a.netns().ip(["neigh", "flush", "dev", "eth0"]);
        assert!(
            a.probe_icmp(b.ipv4().into(), PROBE).is_reachable(),
            "a -> b"
        );
        assert_eq!(
            neighbour_mac(&a, b.ipv4().into()).as_deref(),
            Some(b_mac.as_str())
        );
        // Past the neighbour lock time, a claim may override the entry.
        std::thread::sleep(Duration::from_millis(1100));
    };

    // Control, without the agent: the claim takes over a's entry for b.
    learn();
    send_frame(m.netns(), "eth0", &gratuitous_arp(&m, b.ipv4())).expect("garp");
    wait_until(
        Duration::from_secs(2),
        "without Palisade the gratuitous ARP poisons a's neighbour table",
        || neighbour_mac(&a, b.ipv4().into()).as_deref() != Some(b_mac.as_str()),
    );

    let since = SystemTime::now();
    cluster.start_agents().expect("agent");
    cluster
        .wait_applied(since, Duration::from_secs(20))
        .expect("ready");
    cluster
        .wait_enforced(0, Duration::from_secs(20))
        .expect("enforced");
    learn();
    send_frame(m.netns(), "eth0", &gratuitous_arp(&m, b.ipv4())).expect("garp");
    wait_until(
        Duration::from_secs(2),
        "the claim is dropped as spoofed",
        || spoofed_drops(&cluster) >= 1.0,
    );
    std::thread::sleep(WINDOW);
    assert_eq!(
        neighbour_mac(&a, b.ipv4().into()).as_deref(),
        Some(b_mac.as_str()),
        "a's entry for b still names b"
    );
    assert!(
        a.probe_icmp(b.ipv4().into(), PROBE).is_reachable(),
        "a still reaches b"
    );
    // m's own ARP is fine: it resolves its neighbours and reaches them.
    assert!(
        m.probe_icmp(a.ipv4().into(), PROBE).is_reachable(),
        "m -> a"
    );
}

const PREFIXES: &str = "10.99.0.0/24,fd00:99::/64";

#[test]
fn allowed_source_prefixes_pass_only_in_listed_namespaces_and_only_when_well_formed() {
    let mut cluster = attack_bed(Layout::Routed, &["--source-prefix-namespaces", "x"]);
    let annotation = "palisade.dev/allowed-source-prefixes";
    cluster.set_namespace("y", &[]).expect("namespace");
    cluster
        .add_pod(0, "y", "h", &[("app", "h")], &[])
        .expect("pod");
    let since = SystemTime::now();
    cluster
        .annotate_pod("x", "m", annotation, Some(PREFIXES))
        .expect("annotate");
    cluster
        .annotate_pod("y", "h", annotation, Some(PREFIXES))
        .expect("annotate");
    // Applied with both annotations (h's, written last, is reported): an
    // apply that merely ends after `since` may predate them.
    cluster
        .wait_status(
            0,
            Duration::from_secs(20),
            "both annotations applied",
            |s| {
                applied_after(s, since)
                    && s["rejections"]
                        .as_array()
                        .is_some_and(|r| r.iter().any(|r| r["object"] == "Pod y/h"))
            },
        )
        .expect("applied");
    let c = &cluster.pod("x", "c").pod;
    let sniffer = Sniffer::start(c.netns()).expect("sniffer");
    let gateway_sources: [IpAddr; 2] = [
        "10.99.0.5".parse().expect("addr"),
        "fd00:99::5".parse().expect("addr"),
    ];
    let send_as = |cluster: &Cluster, from: &str, src: IpAddr| {
        let dst = ip_like(cluster, "c", src);
        let from = if from == "h" {
            cluster.pod("y", "h")
        } else {
            cluster.pod("x", from)
        };
        forge_from(&from.pod, src, dst);
    };

    for src in gateway_sources {
        send_as(&cluster, "m", src);
        wait_until(
            Duration::from_secs(2),
            &format!("the listed gateway's {src} did not pass"),
            || arrived(&sniffer, src) == (1, 1),
        );
        send_as(&cluster, "h", src);
        std::thread::sleep(WINDOW);
        assert_eq!(
            arrived(&sniffer, src),
            (1, 1),
            "an unlisted namespace's {src} passed"
        );
    }
    let status = cluster.status(0).expect("status");
    let rejections = status["rejections"].as_array().cloned().unwrap_or_default();
    assert!(
        rejections.iter().any(|r| r["object"] == "Pod y/h"
            && r["reason"].as_str().is_some_and(|s| s.contains("ignored"))),
        "the unlisted annotation is reported: {rejections:#?}"
    );
    // Outside its prefixes the gateway is held to its own addresses.
    let outside: IpAddr = "10.98.0.5".parse().expect("addr");
    send_as(&cluster, "m", outside);
    std::thread::sleep(WINDOW);
    assert_eq!(arrived(&sniffer, outside), (0, 0));

    // A malformed value: rejected by name and value, nothing widened.
    let since = SystemTime::now();
    cluster
        .annotate_pod("x", "m", annotation, Some("10.99.0.5/24"))
        .expect("annotate");
    cluster
        .wait_status(
            0,
            Duration::from_secs(20),
            "the malformed annotation applied",
            |s| {
                applied_after(s, since)
                    && s["rejections"]
                        .as_array()
                        .is_some_and(|r| r.iter().any(|r| r["object"] == "Pod x/m"))
            },
        )
        .expect("applied");
    let status = cluster.status(0).expect("status");
    let rejections = status["rejections"].as_array().cloned().unwrap_or_default();
    assert!(
        rejections.iter().any(|r| r["object"] == "Pod x/m"
            && r["reason"]
                .as_str()
                .is_some_and(|s| s.contains("10.99.0.5/24"))),
        "the malformed annotation is reported: {rejections:#?}"
    );
    let src = gateway_sources[0];
    send_as(&cluster, "m", src);
    std::thread::sleep(WINDOW);
    assert_eq!(
        arrived(&sniffer, src),
        (1, 1),
        "a malformed annotation widened the sources"
    );
}
