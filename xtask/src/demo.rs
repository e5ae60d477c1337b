//! `cargo xtask demo`: the story a platform engineer knows, on a virtual node
//! (a network namespace) with the real agent following a manifest directory:
//! default-deny both ways, DNS egress to kube-system, one allowed service
//! flow, then the flow log, the rule's Prometheus counter and
//! `palisade explain` for the same flows.
//!
//! Everything lives in namespaces the demo creates, and is torn down when it
//! ends, also on failure (the cluster, its pods and the agent are guards).

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use clap::Args;
use palisade_tests::Server;
use palisade_tests::cluster::{AGENT_HEALTH, AGENT_METRICS, Cluster, PortSpec, palisade_binary};

#[derive(Args)]
pub struct Options {}

const PROD: &str = "prod";
const KUBE_SYSTEM: &str = "kube-system";
const HTTP: u16 = 8080;
const DNS: u16 = 53;
/// A port `api` listens on that no rule allows.
const OTHER: u16 = 9090;
const PROBE: Duration = Duration::from_millis(700);
const APPLY: Duration = Duration::from_secs(30);

const DEFAULT_DENY: &str = "\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: default-deny
  namespace: prod
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
";

const ALLOW_DNS: &str = "\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-dns
  namespace: prod
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: kube-system
    ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
";

const WEB_TO_API: &str = "\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: api-from-web
  namespace: prod
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{protocol: TCP, port: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: web-to-api
  namespace: prod
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {matchLabels: {app: api}}}]
    ports: [{protocol: TCP, port: 8080}]
";

/// One expected reachability result.
struct Check {
    from: (&'static str, &'static str),
    to: (&'static str, &'static str),
    protocol: &'static str,
    port: u16,
    allowed: bool,
}

const fn check(
    from: (&'static str, &'static str),
    to: (&'static str, &'static str),
    protocol: &'static str,
    port: u16,
    allowed: bool,
) -> Check {
    Check {
        from,
        to,
        protocol,
        port,
        allowed,
    }
}

const WEB: (&str, &str) = (PROD, "web");
const API: (&str, &str) = (PROD, "api");
const DNS_POD: (&str, &str) = (KUBE_SYSTEM, "dns");

/// Probes every check over IPv4 and IPv6 (in parallel), prints one line per
/// check, and fails naming each result that does not hold.
fn verify(cluster: &Cluster, checks: &[Check]) -> Result<()> {
    let outcomes: Vec<[palisade_tests::Outcome; 2]> = std::thread::scope(|s| {
        let handles: Vec<_> = checks
            .iter()
            .map(|c| {
                s.spawn(move || {
                    let src = &cluster.pod(c.from.0, c.from.1).pod;
                    let dst = cluster.ips(c.to.0, c.to.1);
                    dst.map(|ip: IpAddr| match c.protocol {
                        "UDP" => src.probe_udp(ip, c.port, PROBE),
                        _ => src.probe_tcp(ip, c.port, PROBE),
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("probe thread"))
            .collect()
    });
    let mut wrong = Vec::new();
    for (c, [v4, v6]) in checks.iter().zip(outcomes) {
        let flow = format!(
            "{}/{} -> {}/{}:{} {}",
            c.from.0, c.from.1, c.to.0, c.to.1, c.port, c.protocol
        );
        let verdict = |o: &palisade_tests::Outcome| {
            if o.is_reachable() {
                "allowed"
            } else {
                "denied"
            }
        };
        let ok = v4.is_reachable() == c.allowed && v6.is_reachable() == c.allowed;
        println!(
            "    {flow:<42} {:<8} {}",
            verdict(&v4),
            if ok {
                "ok (IPv4 and IPv6)".to_string()
            } else {
                format!("UNEXPECTED: IPv4 {v4}, IPv6 {v6}")
            }
        );
        if !ok {
            wrong.push(format!(
                "{flow} should be {} (IPv4: {v4}, IPv6: {v6})",
                if c.allowed { "allowed" } else { "denied" }
            ));
        }
    }
    if !wrong.is_empty() {
        bail!(
            "reachability not as expected:\n  {}\nagent log (tail):\n{}",
            wrong.join("\n  "),
            cluster.agent_log_tail(0, 40)
        );
    }
    Ok(())
}

fn apply_and_wait(cluster: &Cluster, file: &str, yaml: &str) -> Result<()> {
    let since = SystemTime::now();
    cluster.apply_policy(file, yaml)?;
    cluster.wait_applied(since, APPLY)
}

fn step(n: usize, title: &str, why: &str) {
    println!("\n[{n}/6] {title}\n      {why}");
}

fn port(name: &str, port: u16, protocol: &str) -> PortSpec {
    PortSpec {
        name: name.into(),
        port,
        protocol: protocol.into(),
    }
}

/// Runs the real `palisade` binary (in the node namespace when `in_node`):
/// its stdout, failing with its stderr unless it exits with `want_code`.
fn palisade(cluster: &Cluster, in_node: bool, want_code: i32, args: &[&str]) -> Result<String> {
    let binary = palisade_binary()?;
    let mut cmd = if in_node {
        cluster.nodes[0].netns().command(&binary)
    } else {
        std::process::Command::new(&binary)
    };
    let out = cmd
        .args(args)
        .output()
        .with_context(|| format!("running palisade {}", args.join(" ")))?;
    if out.status.code() != Some(want_code) {
        bail!(
            "palisade {} exited with {} (expected {want_code}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn indent(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let _ = writeln!(out, "    {line}");
    }
    out
}

/// Polls `f` until it returns lines, or fails with `what` after 10 s.
fn poll_lines(what: &str, mut f: impl FnMut() -> Result<Vec<String>>) -> Result<Vec<String>> {
    let deadline = Instant::now() + palisade_tests::wait::scaled(Duration::from_secs(10));
    loop {
        let lines = f()?;
        if !lines.is_empty() {
            return Ok(lines);
        }
        if Instant::now() > deadline {
            bail!("{what} did not appear within 10 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn run(_opts: Options) -> Result<()> {
    crate::exec::require_root("cargo xtask demo")?;
    crate::build::run(crate::build::Options::default())?;
    let started = Instant::now();
    println!("Palisade demo: one virtual node (a network namespace), pods joined to it by veth");
    println!("pairs and routed like Calico does, and the real `palisade run` agent enforcing");
    println!(
        "NetworkPolicies written to a manifest directory. Every probe runs over IPv4 and IPv6."
    );

    let mut cluster = Cluster::new(1).context("creating the virtual node")?;
    cluster.set_namespace(PROD, &[])?;
    cluster.set_namespace(KUBE_SYSTEM, &[])?;
    cluster.add_pod(
        0,
        PROD,
        "web",
        &[("app", "web")],
        &[port("http", HTTP, "TCP")],
    )?;
    cluster.add_pod(
        0,
        PROD,
        "api",
        &[("app", "api")],
        &[port("http", HTTP, "TCP"), port("admin", OTHER, "TCP")],
    )?;
    cluster.add_pod(
        0,
        KUBE_SYSTEM,
        "dns",
        &[("k8s-app", "kube-dns")],
        &[port("dns", DNS, "UDP"), port("dns-tcp", DNS, "TCP")],
    )?;
    // Declared after the cluster, so dropped before the namespaces they run in.
    let servers: Vec<Server> = vec![
        cluster.pod(PROD, "web").pod.serve_tcp(HTTP)?,
        cluster.pod(PROD, "api").pod.serve_tcp(HTTP)?,
        cluster.pod(PROD, "api").pod.serve_tcp(DNS)?,
        cluster.pod(PROD, "api").pod.serve_tcp(OTHER)?,
        cluster.pod(KUBE_SYSTEM, "dns").pod.serve_tcp(DNS)?,
        cluster.pod(KUBE_SYSTEM, "dns").pod.serve_udp(DNS)?,
    ];
    println!();
    for (ns, name, listens) in [
        (PROD, "web", "TCP 8080"),
        (PROD, "api", "TCP 8080, 53, 9090"),
        (KUBE_SYSTEM, "dns", "UDP+TCP 53"),
    ] {
        let pod = &cluster.pod(ns, name).pod;
        println!(
            "  pod {:<15} {:<11} {:<15} listens on {listens}",
            format!("{ns}/{name}"),
            pod.ipv4(),
            pod.ipv6(),
        );
    }
    let since = SystemTime::now();
    cluster.start_agents()?;
    cluster.wait_applied(since, APPLY)?;
    let manifests = cluster.manifests().to_path_buf();
    println!("\n  agent ready, following {}", manifests.display());

    step(
        1,
        "default-deny in prod, both directions (podSelector: {}, policyTypes: [Ingress, Egress])",
        "every prod pod is isolated: nothing gets in and nothing gets out, not even DNS",
    );
    apply_and_wait(&cluster, "default-deny", DEFAULT_DENY)?;
    verify(
        &cluster,
        &[
            check(WEB, API, "TCP", HTTP, false),
            check(API, WEB, "TCP", HTTP, false),
            check(WEB, DNS_POD, "UDP", DNS, false),
        ],
    )?;

    step(
        2,
        "allow DNS egress to kube-system only (UDP and TCP 53, namespaceSelector kubernetes.io/metadata.name)",
        "prod pods resolve names through kube-dns; port 53 anywhere else stays closed",
    );
    apply_and_wait(&cluster, "allow-dns", ALLOW_DNS)?;
    verify(
        &cluster,
        &[
            check(WEB, DNS_POD, "UDP", DNS, true),
            check(WEB, DNS_POD, "TCP", DNS, true),
            check(WEB, API, "TCP", DNS, false),
        ],
    )?;

    step(
        3,
        "allow web -> api on TCP 8080 (api ingress from web + web egress to api)",
        "under default-deny both ends must agree; the reverse direction and other ports stay closed",
    );
    apply_and_wait(&cluster, "web-to-api", WEB_TO_API)?;
    verify(
        &cluster,
        &[
            check(WEB, API, "TCP", HTTP, true),
            check(API, WEB, "TCP", HTTP, false),
            check(WEB, API, "TCP", OTHER, false),
        ],
    )?;

    step(
        4,
        "the denied api -> web:8080 in the flow log (`palisade flows -n prod --pod web`)",
        "each drop names its pods, direction, reason and the policies that isolate the pod",
    );
    let flows = poll_lines(
        "the denied api -> web:8080 flow in `palisade flows`",
        || {
            let out = palisade(
                &cluster,
                true,
                0,
                &[
                    "flows",
                    "--health-addr",
                    AGENT_HEALTH,
                    "--namespace",
                    PROD,
                    "--pod",
                    "web",
                ],
            )?;
            Ok(out
                .lines()
                .filter(|l| l.contains("prod/api:") && l.contains("-> prod/web:8080"))
                .map(str::to_string)
                .collect())
        },
    )?;
    let shown = &flows[flows.len().saturating_sub(2)..];
    println!("{}", indent(&shown.join("\n")).trim_end());

    step(
        5,
        "the allowing rules' hit counters, as Prometheus scrapes them (GET /metrics)",
        "each allowed connection is credited to the rule that allowed it, at both ends",
    );
    let hits = poll_lines("hits of the web -> api rules in /metrics", || {
        let (code, body) = cluster.agent_get(0, AGENT_METRICS, "/metrics")?;
        if code != 200 {
            bail!("/metrics answered {code}: {body}");
        }
        Ok(body
            .lines()
            .filter(|l| l.starts_with("palisade_policy_rule_hits_total{"))
            .filter(|l| {
                l.contains("policy=\"api-from-web\"") || l.contains("policy=\"web-to-api\"")
            })
            .filter(|l| {
                l.rsplit_once(' ')
                    .and_then(|(_, v)| v.parse::<f64>().ok())
                    .is_some_and(|v| v > 0.0)
            })
            .map(str::to_string)
            .collect())
    })?;
    println!("{}", indent(&hits.join("\n")).trim_end());

    step(
        6,
        "`palisade explain` against the same manifest directory",
        "why a flow is allowed (the rule) or denied (the isolating policies), without sending a packet",
    );
    let dir = manifests.to_str().context("manifest path is UTF-8")?;
    // `palisade explain` exits 0 for allowed, 1 for denied.
    for (from, to, code) in [("prod/web", "prod/api", 0), ("prod/api", "prod/web", 1)] {
        let args = [
            "explain",
            "--manifests",
            dir,
            "--from",
            from,
            "--to",
            to,
            "--port",
            "8080",
        ];
        println!("  $ palisade explain --from {from} --to {to} --port 8080");
        print!("{}", indent(&palisade(&cluster, false, code, &args)?));
    }

    let status = cluster.status(0)?;
    println!(
        "\nagent status: {} endpoints enforced, {} policies, revision {}",
        status["endpoints"]
            .as_array()
            .map_or(0, |e| e.iter().filter(|e| e["enforced"] == true).count()),
        status["policies"],
        status["revision"]
    );
    drop(servers);
    drop(cluster);
    println!(
        "\ntorn down: namespaces, veths, pinned maps and the agent are gone ({:.1} s).",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
