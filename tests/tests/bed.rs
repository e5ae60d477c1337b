//! Self-tests of the test bed: real packets between namespaces the bed
//! creates (needs root), cleanup after panics, and the frame builder.
//!
//! Every test builds its own nodes, so they run in parallel.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::unix::fs::MetadataExt,
    process::Stdio,
    time::{Duration, Instant},
};

use palisade_tests::{
    BpffsDir, ChildGuard, Frame, Ipv6Ext, Node, Outcome, Pod, TcpFlags,
    checksum::{internet_checksum, l4_checksum},
    frames::{ETH_HLEN, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ipproto},
    leftovers, link_nodes, sctp, try_wait_until, wait_until,
};

/// Timeout for probes that should succeed.
const OK: Duration = Duration::from_secs(3);
/// Timeout for probes that should fail.
const NEG: Duration = Duration::from_millis(800);

fn node(index: u8) -> Node {
    Node::new(index).expect("creating a node")
}

fn pod(node: &Node, name: &str) -> Pod {
    node.add_pod(name).expect("adding a pod")
}

#[track_caller]
fn assert_reachable(what: &str, outcome: Outcome) {
    assert!(
        outcome.is_reachable(),
        "{what}: expected reachable, got {outcome}"
    );
}

// ---------------------------------------------------------------- topology

#[test]
fn pods_get_their_node_range_and_a_host_veth_in_the_node() {
    let n = node(7);
    let a = pod(&n, "a");
    let b = pod(&n, "b");
    assert_eq!(a.ipv4(), Ipv4Addr::new(10, 244, 7, 2));
    assert_eq!(b.ipv4(), Ipv4Addr::new(10, 244, 7, 3));
    assert_eq!(
        a.ipv6(),
        "fd00:244:7::2".parse::<Ipv6Addr>().expect("literal")
    );
    assert_eq!(n.ipv4(), Ipv4Addr::new(10, 244, 7, 1));
    assert_eq!(a.node_name(), n.name());
    assert_eq!(n.pods().len(), 2);
    assert!(n.pod("b").is_some() && n.pod("c").is_none());
    assert!(n.add_pod("a").is_err(), "duplicate pod names are refused");

    for p in [&a, &b] {
        assert!(p.netns().name().starts_with("plsd-"));
        assert!(p.host_veth().len() <= 15, "{}", p.host_veth());
        // The ifindex is the node namespace's, as `ip` there reports it.
        let shown = n
            .netns()
            .ip(["-o", "link", "show", "dev", p.host_veth()])
            .expect("ip link show in the node");
        assert!(
            shown.starts_with(&format!("{}: {}@", p.host_ifindex(), p.host_veth())),
            "{shown}"
        );
        // The pod side is eth0 with the pod's addresses.
        let addrs = p
            .netns()
            .ip(["-o", "addr", "show", "dev", "eth0"])
            .expect("ip addr");
        assert!(addrs.contains(&format!("{}/32", p.ipv4())), "{addrs}");
        assert!(addrs.contains(&format!("{}/128", p.ipv6())), "{addrs}");
    }
    // Proxy ARP: the pod's gateway 169.254.1.1 resolves to its host veth.
    for dst in b.ips() {
        assert_reachable("icmp a->b", a.probe_icmp(dst, OK));
    }
    let link = n
        .netns()
        .ip(["-o", "link", "show", "dev", a.host_veth()])
        .expect("ip link");
    let mac = link
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .expect("host veth has a MAC")
        .to_owned();
    for gateway in ["169.254.1.1", "fe80::1"] {
        let neigh = a
            .netns()
            .ip(["neigh", "show", gateway, "dev", "eth0"])
            .expect("ip neigh");
        assert!(
            neigh.contains(&mac),
            "{gateway} -> {neigh} (host veth {mac})"
        );
    }
    // Host veths exist only in the node namespace.
    let veth = a.host_veth().to_owned();
    assert!(
        a.netns()
            .run(move || nix::net::if_::if_nametoindex(veth.as_str()).is_err())
    );
    assert!(
        n.netns()
            .run(|| nix::net::if_::if_nametoindex("eth0").is_err())
    );
}

#[test]
fn netns_command_and_run_execute_inside_the_namespace() {
    let n = node(0);
    let a = pod(&n, "a");
    let out = a
        .netns()
        .command("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
        .expect("running ip in the pod");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&a.ipv4().to_string()), "{text}");
    // A socket made inside `run` belongs to the pod: it can bind the pod IP.
    let ip = a.ipv4();
    let bound = a
        .netns()
        .run(move || std::net::TcpListener::bind((ip, 0)).map(|l| l.local_addr()));
    assert!(bound.is_ok(), "{bound:?}");
    // The node cannot: the pod's address is not local there.
    assert!(
        n.netns()
            .run(move || std::net::TcpListener::bind((ip, 0)).is_err())
    );
    let err = a
        .netns()
        .ip(["link", "show", "dev", "nope0"])
        .expect_err("no such link");
    assert!(format!("{err:#}").contains("nope0"), "{err:#}");
}

// ---------------------------------------------------------------- traffic

#[test]
fn pods_on_one_node_reach_each_other_over_every_protocol() {
    let n = node(0);
    let client = pod(&n, "client");
    let server = pod(&n, "server");
    let tcp = server.serve_tcp(8080).expect("tcp server");
    let udp = server.serve_udp(5353).expect("udp server");
    let sctp_srv = server.serve_sctp(3868).expect("sctp server");
    for dst in server.ips() {
        assert_reachable(&format!("icmp {dst}"), client.probe_icmp(dst, OK));
        assert_reachable(&format!("tcp {dst}"), client.probe_tcp(dst, 8080, OK));
        assert_reachable(&format!("udp {dst}"), client.probe_udp(dst, 5353, OK));
        assert_reachable(&format!("sctp {dst}"), client.probe_sctp(dst, 3868, OK));
    }
    // The echoes came from our servers, for both families.
    assert!(tcp.hits() >= 2, "tcp hits {}", tcp.hits());
    assert!(udp.hits() >= 2, "udp hits {}", udp.hits());
    assert!(sctp_srv.hits() >= 2, "sctp hits {}", sctp_srv.hits());
    // SCTP to another port of the same pod gets no echo.
    assert!(
        !client
            .probe_sctp(server.ipv4().into(), 3869, NEG)
            .is_reachable()
    );
}

#[test]
fn pods_on_linked_nodes_reach_each_other() {
    let n1 = node(1);
    let n2 = node(2);
    let a = pod(&n1, "a");
    let b = pod(&n2, "b");
    let _tcp = b.serve_tcp(80).expect("tcp server");
    let _udp = a.serve_udp(53).expect("udp server");
    // Not linked yet: node 1 has no route to node 2's pods.
    assert!(a.probe_icmp(b.ipv4().into(), NEG).is_blocked());
    link_nodes(&n1, &n2).expect("linking nodes");
    for dst in b.ips() {
        assert_reachable(&format!("icmp a->{dst}"), a.probe_icmp(dst, OK));
        assert_reachable(&format!("tcp a->{dst}"), a.probe_tcp(dst, 80, OK));
    }
    for dst in a.ips() {
        assert_reachable(&format!("udp b->{dst}"), b.probe_udp(dst, 53, OK));
    }
    // The node itself reaches the remote pod too, from its own address.
    let conn = n1
        .connect_tcp(b.ipv4().into(), 80, OK)
        .expect("node 1 to pod b");
    assert_eq!(
        conn.local_addr().expect("local addr").ip(),
        IpAddr::from(n1.ipv4())
    );
}

#[test]
fn node_originated_traffic_reaches_pods_from_the_node_address() {
    let n = node(3);
    let p = pod(&n, "web");
    let _tcp = p.serve_tcp(443).expect("tcp server");
    let _udp = p.serve_udp(443).expect("udp server");
    let _sctp = p.serve_sctp(443).expect("sctp server");
    for dst in p.ips() {
        assert_reachable(&format!("node icmp {dst}"), n.probe_icmp(dst, OK));
        assert_reachable(&format!("node tcp {dst}"), n.probe_tcp(dst, 443, OK));
        assert_reachable(&format!("node udp {dst}"), n.probe_udp(dst, 443, OK));
        assert_reachable(&format!("node sctp {dst}"), n.probe_sctp(dst, 443, OK));
        let mut conn = n.connect_tcp(dst, 443, OK).expect("node connects");
        assert_eq!(conn.local_addr().expect("local").ip(), n.ip_like(dst));
        assert!(conn.exchange(OK));
    }
    // And pods reach the node (host network) address.
    let _host = n.serve_tcp(10250).expect("host server");
    assert_reachable("pod->node", p.probe_tcp(n.ipv4().into(), 10250, OK));
    assert_reachable("pod->node v6", p.probe_tcp(n.ipv6().into(), 10250, OK));
}

#[test]
fn probes_without_a_server_fail_fast() {
    let n = node(0);
    let a = pod(&n, "a");
    let b = pod(&n, "b");
    for dst in b.ips() {
        let start = Instant::now();
        let tcp = a.probe_tcp(dst, 9999, Duration::from_secs(2));
        assert!(matches!(tcp, Outcome::Refused(_)), "tcp {dst}: {tcp}");
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "TCP RST from {dst} took {:?}",
            start.elapsed()
        );

        let start = Instant::now();
        let udp = a.probe_udp(dst, 9999, Duration::from_secs(2));
        assert!(udp.is_blocked(), "udp {dst}: {udp}");
        assert!(
            start.elapsed() <= Duration::from_millis(2100),
            "UDP took {:?}",
            start.elapsed()
        );

        // No SCTP listener at all: the kernel answers protocol unreachable.
        let sctp_probe = a.probe_sctp(dst, 9999, Duration::from_secs(2));
        assert!(
            matches!(sctp_probe, Outcome::Refused(_)),
            "sctp {dst}: {sctp_probe}"
        );
    }
}

#[test]
fn unroutable_destination_is_not_reachable() {
    let n = node(0);
    let a = pod(&n, "a");
    // 10.244.9.9 is nobody's (node 9 does not exist; the node has no route):
    // the node answers with ICMP unreachable or drops, but never echoes.
    let v6: IpAddr = "fd00:244:9::9".parse().expect("literal");
    let v4: IpAddr = Ipv4Addr::new(10, 244, 9, 9).into();
    for dst in [v4, v6] {
        // The node answers with ICMP net unreachable...
        let icmp = a.probe_icmp(dst, NEG);
        assert!(matches!(icmp, Outcome::Refused(_)), "icmp {dst}: {icmp}");
    }
    // ...which TCP and UDP treat as a soft error: they time out.
    let short = Duration::from_millis(400);
    assert_eq!(a.probe_tcp(v4, 80, short), Outcome::TimedOut);
    assert_eq!(a.probe_udp(v6, 80, short), Outcome::TimedOut);
}

#[test]
fn dropped_server_stops_answering() {
    let n = node(0);
    let a = pod(&n, "a");
    let b = pod(&n, "b");
    let server = b.serve_tcp(7000).expect("server");
    let udp = b.serve_udp(7000).expect("server");
    assert_reachable("tcp up", a.probe_tcp(b.ipv4().into(), 7000, OK));
    let start = Instant::now();
    drop(server);
    drop(udp);
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "stopping took {:?}",
        start.elapsed()
    );
    assert!(a.probe_tcp(b.ipv4().into(), 7000, NEG).is_blocked());
    assert!(a.probe_udp(b.ipv4().into(), 7000, NEG).is_blocked());
}

#[test]
fn established_connection_notices_a_cut_and_recovers() {
    let n = node(0);
    let a = pod(&n, "a");
    let b = pod(&n, "b");
    let _server = b.serve_tcp(9000).expect("server");
    for dst in b.ips() {
        let mut conn = a.connect_tcp(dst, 9000, OK).expect("connect");
        for _ in 0..3 {
            assert!(conn.exchange(OK), "echo over {dst}");
        }
        let (prefix, restore) = match dst {
            IpAddr::V4(ip) => (format!("{ip}/32"), format!("src {}", n.ipv4())),
            IpAddr::V6(ip) => (format!("{ip}/128"), format!("src {}", n.ipv6())),
        };
        // Black-hole the pod's route in the node: packets vanish.
        n.netns()
            .ip(["route", "replace", "blackhole", &prefix])
            .expect("blackhole");
        assert_eq!(
            conn.exchange_outcome(Duration::from_millis(300)),
            Outcome::TimedOut
        );
        let mut args = vec!["route", "replace", &prefix, "dev", b.host_veth()];
        args.extend(restore.split(' '));
        n.netns().ip(args).expect("restore route");
        // Late echoes of the cut exchange are skipped, new ones come back.
        wait_until(Duration::from_secs(5), "the connection to recover", || {
            conn.exchange(Duration::from_millis(500))
        });
    }
}

// ---------------------------------------------------------------- cleanup

/// Builds a node with pods, a server, a bpffs dir and a marked process,
/// checks `leftovers()` sees them all, then panics. Returns (via the
/// panic-free path of the caller) the names to look for.
fn build_and_panic(names: &std::sync::Mutex<Vec<String>>) {
    let n = node(0);
    let a = pod(&n, "a");
    let b = pod(&n, "b");
    let _server = b.serve_tcp(80).expect("server");
    let bpf = BpffsDir::new().expect("bpffs dir");
    std::fs::create_dir(bpf.path().join("sub")).expect("mkdir inside bpffs");
    let marker = format!("{}-marker", a.netns().name());
    // `read` is a shell builtin: the shell blocks on stdin, no child.
    let mut cmd = a.netns().command("sh");
    cmd.args(["-c", "read x", &marker]).stdin(Stdio::piped());
    let _child = ChildGuard::spawn(&mut cmd).expect("marker process");
    let mut mine = vec![
        n.name().to_owned(),
        a.netns().name().to_owned(),
        b.netns().name().to_owned(),
        bpf.path().display().to_string(),
        marker,
    ];
    wait_until(
        Duration::from_secs(2),
        "leftovers() to list everything",
        || {
            let now = leftovers();
            mine.iter()
                .all(|name| now.iter().any(|l| l.contains(name.as_str())))
        },
    );
    names
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .append(&mut mine);
    panic!("deliberate panic while holding bed resources");
}

#[track_caller]
fn assert_gone(names: &[String]) {
    assert_eq!(names.len(), 5, "the setup ran to the panic");
    let left: Vec<String> = leftovers()
        .into_iter()
        .filter(|l| names.iter().any(|n| l.contains(n.as_str())))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    for name in names.iter().filter(|n| !n.starts_with('/')) {
        assert!(
            !std::path::Path::new("/run/netns").join(name).exists(),
            "{name}"
        );
    }
}

#[test]
fn panic_in_catch_unwind_leaves_nothing_behind() {
    let names = std::sync::Mutex::new(Vec::new());
    let result = std::panic::catch_unwind(|| build_and_panic(&names));
    assert!(result.is_err(), "the closure panicked");
    assert_gone(&names.lock().expect("names"));
}

#[test]
fn panic_in_a_thread_leaves_nothing_behind() {
    let names = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let shared = std::sync::Arc::clone(&names);
    let result = std::thread::spawn(move || build_and_panic(&shared)).join();
    assert!(result.is_err(), "the thread panicked");
    assert_gone(&names.lock().expect("names"));
}

#[test]
fn sweep_removes_what_a_killed_run_left() {
    // Simulate a run that died without cleaning up: raw resources with the
    // bed's prefixes, owned by no guard.
    let tag = palisade_tests::unique_tag();
    let ns = format!("plsd-{tag}-orphan");
    let status = std::process::Command::new("ip")
        .args(["netns", "add", &ns])
        .status()
        .expect("ip netns add");
    assert!(status.success());
    palisade_tests::bpffs::ensure_bpffs().expect("bpffs");
    let dir = std::path::Path::new("/sys/fs/bpf").join(format!("palisade-test-{tag}-orphan"));
    std::fs::create_dir_all(dir.join("nested")).expect("bpffs dirs");
    let mut orphan = std::process::Command::new("sh")
        .args(["-c", "read x", &ns])
        .stdin(Stdio::piped())
        .spawn()
        .expect("orphan process");
    wait_until(
        Duration::from_secs(2),
        "leftovers() to list all three",
        || {
            leftovers()
                .iter()
                .filter(|l| l.contains(tag.as_str()))
                .count()
                == 3
        },
    );

    let removed =
        palisade_tests::sweep_leftovers_matching(|l| l.contains(tag.as_str())).expect("sweep");
    assert_eq!(removed.len(), 3, "{removed:?}");
    assert!(!std::path::Path::new("/run/netns").join(&ns).exists());
    assert!(!dir.exists());
    let status = orphan.wait().expect("reap orphan");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "killed by SIGKILL");
    assert!(leftovers().iter().all(|l| !l.contains(tag.as_str())));
}

/// A live foreign owner's resources (another test run) are no leftovers of
/// this one; an ended owner's, or this process's, are.
#[test]
fn orphaned_leftovers_leave_out_live_owners() {
    palisade_tests::bpffs::ensure_bpffs().expect("bpffs");
    let root = std::path::Path::new("/sys/fs/bpf");
    // pid 1 lives as long as the machine; pid 0 never owns anything; ours
    // counts as ended (a suite checks after its tests).
    let live = root.join(format!(
        "palisade-test-00001-{}",
        palisade_tests::unique_tag()
    ));
    let ended = root.join(format!(
        "palisade-test-00000-{}",
        palisade_tests::unique_tag()
    ));
    let ours = BpffsDir::new().expect("bpffs dir");
    for dir in [&live, &ended] {
        std::fs::create_dir(dir).expect("bpffs dir");
    }
    let all = leftovers();
    let orphaned = palisade_tests::orphaned_leftovers();
    for dir in [&live, &ended] {
        // A concurrent sweep may have taken the ended one already.
        let _ = std::fs::remove_dir(dir);
    }
    let shown = |p: &std::path::Path| p.display().to_string();
    assert!(all.contains(&shown(&live)) && all.contains(&shown(&ended)));
    assert!(!orphaned.contains(&shown(&live)), "{orphaned:?}");
    assert!(orphaned.contains(&shown(&ended)), "{orphaned:?}");
    assert!(orphaned.contains(&shown(ours.path())), "{orphaned:?}");
}

#[test]
fn bpffs_dir_is_on_bpffs_and_removed_on_drop() {
    let dir = BpffsDir::new().expect("bpffs dir");
    let path = dir.path().to_owned();
    assert!(path.is_dir());
    let fs = nix::sys::statfs::statfs(&path).expect("statfs");
    assert_eq!(fs.filesystem_type(), nix::sys::statfs::BPF_FS_MAGIC);
    assert!(leftovers().contains(&path.display().to_string()));
    drop(dir);
    assert!(!path.exists());
}

#[test]
fn child_guard_kills_on_drop() {
    let n = node(0);
    let mut child = n.netns().spawn("sleep", ["30"]).expect("spawn sleep");
    let pid = child.id();
    assert!(child.is_running());
    // It runs inside the node namespace (once nsenter has switched).
    let ns_inode = |path: &str| std::fs::metadata(path).map(|m| m.ino()).ok();
    let node_ns = ns_inode(&n.netns().path().display().to_string());
    assert!(node_ns.is_some());
    wait_until(
        Duration::from_secs(2),
        "the child to enter the node namespace",
        || ns_inode(&format!("/proc/{pid}/ns/net")) == node_ns,
    );
    drop(child);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} still there"
    );
}

// ---------------------------------------------------------------- wait

#[test]
fn wait_until_returns_once_true() {
    let mut calls = 0;
    wait_until(Duration::from_secs(1), "third call", || {
        calls += 1;
        calls == 3
    });
    assert_eq!(calls, 3);
    assert!(!try_wait_until(Duration::from_millis(50), || false));
}

#[test]
#[should_panic(expected = "waiting for the impossible")]
fn wait_until_panics_with_what() {
    wait_until(Duration::from_millis(50), "the impossible", || false);
}

// ---------------------------------------------------------------- frames

const V4A: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 2);
const V4B: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 3);

fn v6(s: &str) -> Ipv6Addr {
    s.parse().expect("literal")
}

fn be16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

#[test]
fn frame_ipv4_tcp_layout() {
    let f = Frame::ipv4(V4A, V4B)
        .tcp(40000, 80, TcpFlags::SYN | TcpFlags::ACK)
        .payload(10)
        .build();
    assert_eq!(f.len(), ETH_HLEN + 20 + 20 + 10);
    assert_eq!(be16(&f, 12), ETHERTYPE_IPV4);
    let ip = &f[ETH_HLEN..];
    assert_eq!(ip[0], 0x45, "version 4, IHL 5");
    assert_eq!(be16(ip, 2), 50, "total length");
    assert_eq!(ip[9], ipproto::TCP);
    assert_eq!(&ip[12..16], &V4A.octets());
    assert_eq!(&ip[16..20], &V4B.octets());
    assert_eq!(internet_checksum(&ip[..20]), 0, "valid header checksum");
    let tcp = &ip[20..];
    assert_eq!((be16(tcp, 0), be16(tcp, 2)), (40000, 80));
    assert_eq!(tcp[12] >> 4, 5, "data offset");
    assert_eq!(tcp[13], 0x12, "SYN|ACK");
    assert_eq!(l4_checksum(V4A.into(), V4B.into(), ipproto::TCP, tcp), 0);
}

#[test]
fn frame_ipv4_options_set_ihl() {
    let f = Frame::ipv4(V4A, V4B)
        .ipv4_options(&[1, 1, 1, 1, 1, 1]) // padded to 8
        .udp(1000, 53)
        .payload(4)
        .build();
    let ip = &f[ETH_HLEN..];
    assert_eq!(ip[0] & 0x0f, 7, "IHL 7 = 28 bytes");
    assert_eq!(be16(ip, 2), 28 + 8 + 4);
    assert_eq!(&ip[20..28], &[1, 1, 1, 1, 1, 1, 0, 0]);
    assert_eq!(internet_checksum(&ip[..28]), 0);
    let udp = &ip[28..];
    assert_eq!((be16(udp, 0), be16(udp, 2), be16(udp, 4)), (1000, 53, 12));
    assert_eq!(f.len(), ETH_HLEN + 28 + 12);
}

#[test]
fn frame_ipv4_fragment_fields() {
    let first = Frame::ipv4(V4A, V4B)
        .udp(1, 2)
        .fragment(0, true, 0xbeef)
        .build();
    let ip = &first[ETH_HLEN..];
    assert_eq!(be16(ip, 4), 0xbeef, "identification");
    assert_eq!(be16(ip, 6), 0x2000, "MF, offset 0");
    let later = Frame::ipv4(V4A, V4B)
        .udp(1, 2)
        .fragment(185, false, 7)
        .build();
    let ip = &later[ETH_HLEN..];
    assert_eq!(be16(ip, 6), 185, "no MF, offset 185");
    assert_eq!(be16(ip, 4), 7);
    let plain = Frame::ipv4(V4A, V4B).udp(1, 2).build();
    assert_eq!(be16(&plain[ETH_HLEN..], 6) & 0x3fff, 0, "unfragmented");
}

#[test]
fn frame_ipv6_udp_layout() {
    let (s, d) = (v6("fd00:244::2"), v6("fd00:244:1::3"));
    let f = Frame::ipv6(s, d).udp(5000, 53).payload(7).build();
    assert_eq!(be16(&f, 12), ETHERTYPE_IPV6);
    assert_eq!(f.len(), ETH_HLEN + 40 + 8 + 7);
    let ip = &f[ETH_HLEN..];
    assert_eq!(ip[0] >> 4, 6);
    assert_eq!(be16(ip, 4), 15, "payload length");
    assert_eq!(ip[6], ipproto::UDP);
    assert_eq!(&ip[8..24], &s.octets());
    assert_eq!(&ip[24..40], &d.octets());
    assert_eq!(be16(ip, 40 + 4), 15, "udp length");
    assert_eq!(l4_checksum(s.into(), d.into(), ipproto::UDP, &ip[40..]), 0);
}

#[test]
fn frame_ipv6_extension_headers_chain() {
    let (s, d) = (v6("fd00::1"), v6("fd00::2"));
    let f = Frame::ipv6(s, d)
        .ipv6_ext_headers(&[
            Ipv6Ext::HopByHop,
            Ipv6Ext::Routing,
            Ipv6Ext::DestinationOptions,
        ])
        .fragment(3, true, 0x1234_5678)
        .tcp(1234, 443, TcpFlags::SYN)
        .build();
    let ip = &f[ETH_HLEN..];
    assert_eq!(ip[6], ipproto::HOPOPTS);
    let ext = &ip[40..];
    assert_eq!(ext[0], ipproto::ROUTING, "hop-by-hop -> routing");
    assert_eq!(ext[8], ipproto::DSTOPTS, "routing -> destination options");
    assert_eq!(
        ext[16],
        ipproto::FRAGMENT,
        "destination options -> fragment"
    );
    let frag = &ext[24..32];
    assert_eq!(frag[0], ipproto::TCP, "fragment -> tcp");
    assert_eq!(be16(frag, 2), (3 << 3) | 1, "offset 3, M");
    assert_eq!(&frag[4..8], &0x1234_5678u32.to_be_bytes());
    assert_eq!(be16(ip, 4), 32 + 20, "payload length covers ext headers");
    let tcp = &ext[32..];
    assert_eq!((be16(tcp, 0), be16(tcp, 2)), (1234, 443));
    assert_eq!(f.len(), ETH_HLEN + 40 + 32 + 20);
    // Without a fragment, the last extension header points at L4.
    let g = Frame::ipv6(s, d)
        .ipv6_ext_headers(&[Ipv6Ext::DestinationOptions])
        .udp(1, 2)
        .build();
    assert_eq!(g[ETH_HLEN + 6], ipproto::DSTOPTS);
    assert_eq!(g[ETH_HLEN + 40], ipproto::UDP);
}

#[test]
fn frame_sctp_icmp_and_other_protocols() {
    let f = Frame::ipv4(V4A, V4B).sctp(5000, 3868).build();
    let ip = &f[ETH_HLEN..];
    assert_eq!(ip[9], ipproto::SCTP);
    let s = &ip[20..];
    assert_eq!(s.len(), sctp::COMMON_HEADER_LEN + sctp::INIT_CHUNK_LEN);
    assert!(sctp::checksum_ok(s));
    assert_eq!(
        (sctp::src_port(s), sctp::dst_port(s)),
        (Some(5000), Some(3868))
    );

    let f = Frame::ipv4(V4A, V4B).icmp_echo().build();
    let icmp = &f[ETH_HLEN + 20..];
    assert_eq!((f[ETH_HLEN + 9], icmp[0]), (ipproto::ICMP, 8));
    assert_eq!(internet_checksum(icmp), 0);

    let (s6, d6) = (v6("fd00::1"), v6("fd00::2"));
    let f = Frame::ipv6(s6, d6).icmpv6_echo().build();
    let icmp = &f[ETH_HLEN + 40..];
    assert_eq!((f[ETH_HLEN + 6], icmp[0]), (ipproto::ICMPV6, 128));
    assert_eq!(l4_checksum(s6.into(), d6.into(), ipproto::ICMPV6, icmp), 0);

    let f = Frame::ipv4(V4A, V4B).proto(47).build();
    assert_eq!(f[ETH_HLEN + 9], 47);
    assert_eq!(f.len(), ETH_HLEN + 20 + 8);
}

#[test]
fn frame_truncate_and_pad_keep_length_fields() {
    let full = Frame::ipv4(V4A, V4B)
        .tcp(1, 2, TcpFlags::SYN)
        .payload(100)
        .build();
    let cut = Frame::ipv4(V4A, V4B)
        .tcp(1, 2, TcpFlags::SYN)
        .payload(100)
        .truncate_to(40)
        .build();
    assert_eq!(cut.len(), 40);
    assert_eq!(&cut[..], &full[..40]);
    assert_eq!(be16(&cut, ETH_HLEN + 2), 140, "total length still says 140");
    let short = Frame::ipv4(V4A, V4B).pad_to(60).build();
    assert_eq!(short.len(), 60);
    assert_eq!(be16(&short, ETH_HLEN + 2), 20, "IP header only");
    assert!(short[ETH_HLEN + 20..].iter().all(|&b| b == 0));
    // Padding never shortens.
    assert_eq!(
        Frame::ipv4(V4A, V4B).payload(100).pad_to(60).build().len(),
        ETH_HLEN + 20 + 100
    );
}

#[test]
fn frame_arp_request() {
    let f = Frame::arp().build();
    assert_eq!(f.len(), ETH_HLEN + 28);
    assert_eq!(be16(&f, 12), ETHERTYPE_ARP);
    assert_eq!(&f[..6], &[0xff; 6], "broadcast");
    let arp = &f[ETH_HLEN..];
    assert_eq!(
        (be16(arp, 0), be16(arp, 2), arp[4], arp[5]),
        (1, 0x0800, 6, 4)
    );
    assert_eq!(be16(arp, 6), 1, "request");
    assert_eq!(&arp[14..18], &[10, 244, 0, 2]);
    assert_eq!(&arp[24..28], &[169, 254, 1, 1]);
}
