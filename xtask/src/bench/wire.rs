//! Pod-to-pod traffic on one virtual node (a network namespace, pods joined by
//! veths; see `palisade_tests::node`): transactions per second over one
//! persistent TCP connection (64-byte request/response), new connections per
//! second (connect, one 1-byte exchange, close) and bulk throughput (iperf3,
//! or a built-in sender when iperf3 cannot be installed), for
//!
//! * `none`: no program, no nftables;
//! * `palisade-N`: the datapath attached to both pods' host veths, the server
//!   pod ingress-isolated with one rule allowing the client plus N-1 other
//!   rules (other identities/ports) on the server;
//! * `nft-N`: the same rule list as an nftables table in the node namespace:
//!   `ct state established,related accept`, a verdict map on the destination
//!   endpoint, and a set of (source address . protocol . port) per endpoint.
//! * `lin-N` (N in [`LINEAR_RULES`]): the same rules as a linear chain, one
//!   rule per allow after `ct state established,related accept` (the form
//!   iptables-based enforcers generate), the client's rule last, so every new
//!   connection walks the whole chain.
//!
//! Configurations are interleaved round by round and each figure is the
//! median over rounds; ratios compare configurations of the same run.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use palisade_agent::datapath::{Capacities, Datapath, DatapathConfig};
use palisade_agent::policy::plan::{DatapathPlan, EndpointPlan, L4Match, RuleKey};
use palisade_agent::state::PodRef;
use palisade_agent::sync::{Syncer, render};
use palisade_common::ids::{EndpointId, IdentityId, RuleId};
use palisade_common::verdict::Direction;
use palisade_tests::{BpffsDir, ChildGuard, Node, Pod};
use serde_json::{Value, json};

use super::{fmt_num, median};

const PORT: u16 = 5201;
pub const RULES: [usize; 3] = [1, 1_000, 10_000];
/// Rule counts of the linear-chain configuration (slow to load and to walk).
pub const LINEAR_RULES: [usize; 1] = [10_000];
const CLIENT_ID: IdentityId = IdentityId(16);
const SERVER_ID: IdentityId = IdentityId(17);
const HOST_ID: IdentityId = IdentityId(15);
const NFT_TABLE: &str = "plsd_bench";
const NFT_LINEAR_TABLE: &str = "plsd_bench_linear";
/// A node index no test uses, so the bed's addresses are recognisable.
const NODE_INDEX: u8 = 211;

/// One allow rule of the server: (remote address, identity, protocol, port).
#[derive(Clone, Copy)]
struct Allow {
    ip: Ipv4Addr,
    identity: IdentityId,
    protocol: u8,
    port: u16,
}

/// The server's rules: the client on [`PORT`], then `n - 1` others.
fn rule_list(client: Ipv4Addr, n: usize) -> Vec<Allow> {
    let mut out = vec![Allow {
        ip: client,
        identity: CLIENT_ID,
        protocol: 6,
        port: PORT,
    }];
    for i in 0..n.saturating_sub(1) as u32 {
        let j = i / 8;
        out.push(Allow {
            ip: Ipv4Addr::new(10, 250, (j >> 8) as u8, (j & 255) as u8),
            identity: IdentityId(1000 + j),
            protocol: if i % 5 == 4 { 17 } else { 6 },
            port: 1024 + (i % 8) as u16 * 97,
        });
    }
    out
}

// ---------------------------------------------------------------- load tool

unsafe extern "C" {
    fn shutdown(fd: i32, how: i32) -> i32;
}

/// A TCP server in a pod: per connection, the first byte picks the mode:
/// `e` echoes everything (that byte included), `s` swallows everything.
/// Connections are served one at a time (the clients are sequential).
struct LoadServer {
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LoadServer {
    fn start(pod: &Pod) -> Result<LoadServer> {
        let listener = pod
            .netns()
            .try_run(|| TcpListener::bind(("0.0.0.0", PORT)))?
            .context("binding the load server")?;
        let stop = Arc::new(AtomicBool::new(false));
        let l = listener.try_clone()?;
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("bench-server".into())
            .spawn(move || serve(&l, &s))?;
        Ok(LoadServer {
            listener,
            stop,
            thread: Some(thread),
        })
    }
}

fn serve(listener: &TcpListener, stop: &AtomicBool) {
    let mut buf = vec![0u8; 1 << 16];
    while !stop.load(Ordering::Relaxed) {
        let Ok((mut s, _)) = listener.accept() else {
            continue;
        };
        let _ = s.set_nodelay(true);
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let mut echo = None;
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let echoing = *echo.get_or_insert(buf[0] == b'e');
                    if echoing && s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
    }
}

impl Drop for LoadServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // SAFETY: shutting down our own listening socket wakes the blocked
        // accept (EINVAL) so the thread sees `stop`.
        unsafe { shutdown(self.listener.as_raw_fd(), 2) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Transactions per second: 64-byte request, 64-byte response, one connection.
fn rr(addr: SocketAddr, secs: f64) -> Result<f64> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut req = [0u8; 64];
    req[0] = b'e';
    let mut resp = [0u8; 64];
    let start = Instant::now();
    let deadline = Duration::from_secs_f64(secs);
    let mut n = 0u64;
    while start.elapsed() < deadline && n < 50_000_000 {
        s.write_all(&req)?;
        s.read_exact(&mut resp)?;
        n += 1;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Connections per second: connect, 1-byte exchange, close.
fn crr(addr: SocketAddr, secs: f64) -> Result<f64> {
    let start = Instant::now();
    let deadline = Duration::from_secs_f64(secs);
    let mut n = 0u64;
    let mut b = [0u8; 1];
    while start.elapsed() < deadline && n < 1_000_000 {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .with_context(|| format!("connection {n}"))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"e")?;
        s.read_exact(&mut b)?;
        n += 1;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Built-in bulk sender (when iperf3 is unavailable): Gbit/s written.
fn bulk_builtin(addr: SocketAddr, secs: f64) -> Result<f64> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = vec![0u8; 128 * 1024];
    buf[0] = b's';
    let start = Instant::now();
    let deadline = Duration::from_secs_f64(secs);
    let mut bytes = 0u64;
    while start.elapsed() < deadline {
        s.write_all(&buf)?;
        bytes += buf.len() as u64;
        buf[0] = 0;
    }
    Ok(bytes as f64 * 8.0 / start.elapsed().as_secs_f64() / 1e9)
}

/// iperf3 for `secs` seconds: received Gbit/s.
fn bulk_iperf(client: &Pod, server: &Pod, secs: f64) -> Result<f64> {
    let mut srv = ChildGuard::spawn(
        server
            .netns()
            .command("iperf3")
            .args(["-s", "-1", "-p", &PORT.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )?;
    let secs_arg = format!("{}", secs.ceil().max(1.0) as u64);
    let ip = server.ipv4().to_string();
    for _attempt in 0..30 {
        let mut cli = ChildGuard::spawn(
            client
                .netns()
                .command("iperf3")
                .args(["-c", &ip, "-p", &PORT.to_string(), "-t", &secs_arg, "-J"])
                .args(["--connect-timeout", "2000"])
                .stdout(Stdio::piped())
                .stderr(Stdio::null()),
        )?;
        let deadline = Instant::now() + Duration::from_secs_f64(secs + 15.0);
        let status = loop {
            if let Some(s) = cli.try_wait()? {
                break Some(s);
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut out = String::new();
        if let Some(mut o) = cli.child_mut().stdout.take() {
            o.read_to_string(&mut out)?;
        }
        drop(cli);
        let Some(status) = status else {
            bail!("iperf3 client did not finish in time");
        };
        let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        if status.success()
            && let Some(bps) = v["end"]["sum_received"]["bits_per_second"].as_f64()
        {
            let _ = srv.try_wait();
            return Ok(bps / 1e9);
        }
        // Most likely the server was not listening yet.
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(srv);
    bail!("iperf3 never completed a test")
}

fn have_iperf3() -> bool {
    let found = || {
        Command::new("iperf3")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if found() {
        return true;
    }
    eprintln!("bench: iperf3 missing, trying apt-get install iperf3");
    let _ = Command::new("apt-get")
        .args(["install", "-y", "-q", "iperf3"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status();
    found()
}

// ------------------------------------------------------- configurations

/// nftables rules in the node namespace, removed on drop.
struct NftGuard<'a> {
    node: &'a Node,
    table: &'static str,
}

fn proto(p: u8) -> &'static str {
    if p == 17 { "udp" } else { "tcp" }
}

impl<'a> NftGuard<'a> {
    /// The rules as a linear chain: one rule per allow, walked in order, the
    /// client's last (the worst case: every new connection walks them all).
    fn install_linear(node: &'a Node, server: &Pod, rules: &[Allow]) -> Result<NftGuard<'a>> {
        let chain: Vec<String> = rules
            .iter()
            .rev()
            .map(|r| {
                format!(
                    "\t\tip saddr {} meta l4proto {} th dport {} accept\n",
                    r.ip,
                    proto(r.protocol),
                    r.port
                )
            })
            .collect();
        let script = format!(
            "table inet {NFT_LINEAR_TABLE} {{\n\
             \tchain ep_server {{\n{}\t\tdrop\n\t}}\n\
             \tchain forward {{\n\t\ttype filter hook forward priority filter; policy accept;\n\
             \t\tct state established,related accept\n\t\tip daddr {} jump ep_server\n\t}}\n}}\n",
            chain.concat(),
            server.ipv4()
        );
        Self::load(node, NFT_LINEAR_TABLE, &script)
    }

    fn install(node: &'a Node, server: &Pod, rules: &[Allow]) -> Result<NftGuard<'a>> {
        let elements: Vec<String> = rules
            .iter()
            .map(|r| format!("{} . {} . {}", r.ip, proto(r.protocol), r.port))
            .collect();
        let script = format!(
            "table inet {NFT_TABLE} {{\n\
             \tset allow_server {{\n\t\ttype ipv4_addr . inet_proto . inet_service\n\
             \t\telements = {{ {} }}\n\t}}\n\
             \tchain ep_server {{\n\t\tip saddr . meta l4proto . th dport @allow_server accept\n\t\tdrop\n\t}}\n\
             \tmap endpoints_in {{\n\t\ttype ipv4_addr : verdict\n\
             \t\telements = {{ {} : jump ep_server }}\n\t}}\n\
             \tchain forward {{\n\t\ttype filter hook forward priority filter; policy accept;\n\
             \t\tct state established,related accept\n\t\tip daddr vmap @endpoints_in\n\t}}\n}}\n",
            elements.join(", "),
            server.ipv4()
        );
        Self::load(node, NFT_TABLE, &script)
    }

    fn load(node: &'a Node, table: &'static str, script: &str) -> Result<NftGuard<'a>> {
        let guard = NftGuard { node, table };
        let mut child = node
            .netns()
            .command("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running nft")?;
        child
            .stdin
            .take()
            .context("nft stdin")?
            .write_all(script.as_bytes())?;
        let out = child.wait_with_output()?;
        ensure!(
            out.status.success(),
            "nft -f failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(guard)
    }
}

impl Drop for NftGuard<'_> {
    fn drop(&mut self) {
        let _ = self
            .node
            .netns()
            .command("nft")
            .args(["delete", "table", "inet", self.table])
            .stderr(Stdio::null())
            .status();
    }
}

/// The datapath loaded in the node namespace and attached to both pods;
/// detached and unpinned on drop.
struct PalisadeGuard {
    // Dropped before the directory holding its pins.
    dp: Datapath,
    syncer: Syncer,
    interfaces: BTreeMap<PodRef, u32>,
    _dir: BpffsDir,
}

fn pod_ref(p: &Pod) -> PodRef {
    PodRef {
        namespace: "bench".into(),
        name: p.name().into(),
    }
}

impl PalisadeGuard {
    fn attach(node: &Node, pods: &[&Pod]) -> Result<PalisadeGuard> {
        let dir = BpffsDir::new()?;
        let bpffs = dir.path().to_path_buf();
        let veths: Vec<String> = pods.iter().map(|p| p.host_veth().to_string()).collect();
        let dp = node.netns().try_run(move || -> Result<Datapath> {
            let mut dp = Datapath::load(&DatapathConfig {
                bpffs,
                capacities: Capacities::default(),
                attach: palisade_agent::datapath::default_attach_mode(),
            })?;
            for v in &veths {
                dp.attach(v)?;
            }
            Ok(dp)
        })??;
        Ok(PalisadeGuard {
            dp,
            syncer: Syncer::default(),
            interfaces: pods
                .iter()
                .map(|p| (pod_ref(p), p.host_ifindex()))
                .collect(),
            _dir: dir,
        })
    }

    fn apply(&mut self, node: &Node, client: &Pod, server: &Pod, rules: &[Allow]) -> Result<()> {
        let mut plan = DatapathPlan::default();
        for (i, (p, id)) in [(client, CLIENT_ID), (server, SERVER_ID)]
            .into_iter()
            .enumerate()
        {
            plan.endpoints.insert(
                pod_ref(p),
                EndpointPlan {
                    id: EndpointId(i as u32 + 1),
                    ipv4: Some(p.ipv4()),
                    ipv6: Some(p.ipv6()),
                    ingress_isolated: i == 1,
                    egress_isolated: false,
                    audit: false,
                    source_prefixes: Vec::new(),
                    policies: vec![],
                },
            );
            for ip in p.ips() {
                std::sync::Arc::make_mut(&mut plan.ipcache).insert(ip.into(), id);
            }
        }
        for ip in [IpAddr::V4(node.ipv4()), IpAddr::V6(node.ipv6())] {
            std::sync::Arc::make_mut(&mut plan.ipcache).insert(ip.into(), HOST_ID);
            plan.host_addresses.insert(ip);
        }
        for (i, r) in rules.iter().enumerate() {
            if r.identity != CLIENT_ID {
                std::sync::Arc::make_mut(&mut plan.ipcache)
                    .insert(IpAddr::V4(r.ip).into(), r.identity);
            }
            plan.rules.insert(
                RuleKey {
                    endpoint: EndpointId(2),
                    direction: Direction::Ingress,
                    identity: r.identity,
                    l4: L4Match::Ports {
                        protocol: r.protocol,
                        first: r.port,
                        last: r.port,
                    },
                },
                RuleId(1 + (i % 60_000) as u32),
            );
        }
        let state = render(&plan, &self.interfaces);
        let report = self.syncer.apply(&mut self.dp.maps, &state)?;
        ensure!(report.complete(), "maps full: {:?}", report.map_full);
        Ok(())
    }
}

impl Drop for PalisadeGuard {
    fn drop(&mut self) {
        for ifindex in self.interfaces.values() {
            if let Err(e) = self.dp.detach(*ifindex) {
                eprintln!("bench: detaching from ifindex {ifindex}: {e}");
            }
        }
    }
}

// ------------------------------------------------------------- the suite

#[derive(Default)]
struct Samples {
    rr: Vec<f64>,
    crr: Vec<f64>,
    bulk: Vec<f64>,
}

fn measure(client: &Pod, server: &Pod, secs: f64, iperf: bool, into: &mut Samples) -> Result<()> {
    let addr = SocketAddr::new(IpAddr::V4(server.ipv4()), PORT);
    {
        let _srv = LoadServer::start(server)?;
        into.rr.push(client.netns().try_run(|| rr(addr, secs))??);
        into.crr.push(client.netns().try_run(|| crr(addr, secs))??);
        if !iperf {
            into.bulk
                .push(client.netns().try_run(|| bulk_builtin(addr, secs))??);
        }
    }
    if iperf {
        into.bulk.push(bulk_iperf(client, server, secs)?);
    }
    Ok(())
}

pub fn run(quick: bool, one_cpu: bool) -> Result<Value> {
    let (secs, rounds) = if quick { (0.5, 1) } else { (1.0, 5) };
    if one_cpu {
        // This thread's affinity; the threads and processes it starts from
        // here on (server thread, namespace helpers, iperf3) inherit it.
        let mut set = nix::sched::CpuSet::new();
        set.set(0)?;
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
            .context("pinning the wire benchmark to CPU 0")?;
    }
    let iperf = have_iperf3();
    let node = Node::new(NODE_INDEX)?;
    let client = node.add_pod("client")?;
    let server = node.add_pod("server")?;
    // Many short connections: widen the ephemeral range, reuse TIME_WAIT.
    client.netns().sysctls(&[
        ("net.ipv4.ip_local_port_range", "10000 65000"),
        ("net.ipv4.tcp_tw_reuse", "1"),
    ])?;
    let lists: Vec<(usize, Vec<Allow>)> = RULES
        .iter()
        .map(|&n| (n, rule_list(client.ipv4(), n)))
        .collect();
    let mut samples: BTreeMap<String, Samples> = BTreeMap::new();
    for round in 0..rounds {
        println!("  round {}/{rounds}", round + 1);
        // Alternate the order of rule counts between rounds; measure the
        // no-program baseline before each family.
        let order: Vec<&(usize, Vec<Allow>)> = if round % 2 == 0 {
            lists.iter().collect()
        } else {
            lists.iter().rev().collect()
        };
        let mut point = |name: String| -> Result<()> {
            measure(
                &client,
                &server,
                secs,
                iperf,
                samples.entry(name).or_default(),
            )
        };
        // Which family goes first alternates too, so drift within a round
        // (TIME_WAIT build-up, a neighbour's load) falls on both alike.
        let nft_first = round % 2 == 0;
        for nft in [nft_first, !nft_first] {
            point("none".into())?;
            if nft {
                for (n, list) in &order {
                    let _nft = NftGuard::install(&node, &server, list)?;
                    point(format!("nft-{n}"))?;
                }
                for (n, list) in order.iter().filter(|(n, _)| LINEAR_RULES.contains(n)) {
                    let _lin = NftGuard::install_linear(&node, &server, list)?;
                    point(format!("lin-{n}"))?;
                }
            } else {
                let mut pal = PalisadeGuard::attach(&node, &[&client, &server])?;
                for (n, list) in &order {
                    pal.apply(&node, &client, &server, list)?;
                    point(format!("palisade-{n}"))?;
                }
            }
        }
    }
    let mut configs = serde_json::Map::new();
    for (name, s) in &samples {
        let (rr, crr, bulk) = (median(&s.rr), median(&s.crr), median(&s.bulk));
        println!("  {name:<15} rr {rr:>8.0}/s  crr {crr:>7.0}/s  bulk {bulk:>6.2} Gbit/s");
        configs.insert(
            name.clone(),
            json!({"rr_tps": rr, "crr_cps": crr, "bulk_gbps": bulk,
                   "rr_samples": s.rr, "crr_samples": s.crr, "bulk_samples": s.bulk}),
        );
    }
    drop(server);
    drop(client);
    drop(node);
    Ok(json!({
        "suite": "wire", "seconds_per_point": secs, "rounds": rounds, "one_cpu": one_cpu,
        "bulk_tool": if iperf { "iperf3" } else { "built-in sender" },
        "rules": RULES, "linear_rules": LINEAR_RULES, "configs": configs,
    }))
}

/// metric of config `name`.
pub fn metric(result: &Value, name: &str, metric: &str) -> f64 {
    result["configs"][name][metric].as_f64().unwrap_or(f64::NAN)
}

pub fn summary(result: &Value) -> String {
    let mut md = String::from("## Wire (pod to pod on one virtual node)\n\n");
    if result["one_cpu"].as_bool() == Some(true) {
        md += "1-CPU layout: client, server and iperf3 pinned to CPU 0.\n\n";
    }
    md += &format!(
        "Median of {} interleaved rounds (rule-count order reversed every other round, \
         the no-program baseline measured twice per round), {} s per point; bulk with {}. \
         `none` = no program and no nftables; `palisade-N` = datapath on both host veths, \
         server isolated, client allowed plus N-1 other rules; `nft-N` = the same rules in \
         nftables (ct established accept, verdict map per endpoint, concatenated set).\n\n",
        result["rounds"],
        result["seconds_per_point"],
        result["bulk_tool"].as_str().unwrap_or("?")
    );
    md += "| config | RR trans/s | CRR conn/s | bulk Gbit/s |\n|---|---:|---:|---:|\n";
    let mut names = vec!["none".to_string()];
    for n in RULES {
        names.push(format!("palisade-{n}"));
        names.push(format!("nft-{n}"));
        if LINEAR_RULES.contains(&n) {
            names.push(format!("lin-{n}"));
        }
    }
    for name in &names {
        md += &format!(
            "| {name} | {} | {} | {:.2} |\n",
            fmt_num(metric(result, name, "rr_tps")),
            fmt_num(metric(result, name, "crr_cps")),
            metric(result, name, "bulk_gbps")
        );
    }
    md += "\n| rules | RR b/a | RR b/c | CRR b/a | CRR b/c | bulk b/a | bulk b/c |\n|---:|---:|---:|---:|---:|---:|---:|\n";
    for n in RULES {
        md += &format!("| {n} |");
        for m in ["rr_tps", "crr_cps", "bulk_gbps"] {
            let b = metric(result, &format!("palisade-{n}"), m);
            md += &format!(
                " {:.3} | {:.3} |",
                b / metric(result, "none", m),
                b / metric(result, &format!("nft-{n}"), m)
            );
        }
        md += "\n";
    }
    for n in LINEAR_RULES {
        md += &format!(
            "\nAgainst the linear chain (`lin-{n}`): RR b/lin {:.3}, CRR b/lin {:.3}, bulk b/lin {:.3}.\n",
            metric(result, &format!("palisade-{n}"), "rr_tps")
                / metric(result, &format!("lin-{n}"), "rr_tps"),
            metric(result, &format!("palisade-{n}"), "crr_cps")
                / metric(result, &format!("lin-{n}"), "crr_cps"),
            metric(result, &format!("palisade-{n}"), "bulk_gbps")
                / metric(result, &format!("lin-{n}"), "bulk_gbps"),
        );
    }
    md += "\n(a = no program, b = Palisade, c = nftables sets; > 1 means Palisade is faster.)\n";
    let spread = |m: &str| {
        let s: Vec<f64> = result["configs"]["none"][m]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        (super::percentile(&s, 75.0) - super::percentile(&s, 25.0)) / median(&s)
    };
    md += &format!(
        "\nNoise: interquartile range / median of the {} no-program samples: RR {:.0}%, \
         CRR {:.0}%, bulk {:.0}%. Ratios closer to 1 than that are not distinguishable here.\n",
        result["configs"]["none"]["rr_samples"]
            .as_array()
            .map_or(0, Vec::len),
        spread("rr_samples") * 100.0,
        spread("crr_samples") * 100.0,
        spread("bulk_samples") * 100.0
    );
    md
}
