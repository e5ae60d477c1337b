//! `cargo xtask demo`: a virtual node with three pods, the real agent following
//! a manifest directory, and the reachability matrix before and after policies.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use clap::Args;
use palisade_tests::cluster::{Cluster, PortSpec};

#[derive(Args)]
pub struct Options {}

const NS: &str = "demo";
const PODS: [&str; 3] = ["web", "api", "db"];
const PORT: u16 = 80;
const PROBE: Duration = Duration::from_millis(500);

const DEFAULT_DENY: &str = "\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: default-deny
  namespace: demo
spec:
  podSelector: {}
  policyTypes: [Ingress]
";

const ALLOW_CHAIN: &str = "\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: api-from-web
  namespace: demo
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{protocol: TCP, port: 80}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: db-from-api
  namespace: demo
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: api}}}]
    ports: [{protocol: TCP, port: 80}]
";

fn matrix(cluster: &Cluster, title: &str) {
    println!("\n{title}");
    print!("  {:>10}", "from \\ to");
    for to in PODS {
        print!("{to:>6}");
    }
    println!();
    let results: Vec<Vec<String>> = std::thread::scope(|s| {
        let handles: Vec<_> = PODS
            .iter()
            .map(|from| {
                s.spawn(move || {
                    PODS.iter()
                        .map(|to| {
                            if from == to {
                                return "-".to_string();
                            }
                            let src = &cluster.pod(NS, from).pod;
                            let dst: IpAddr = cluster.pod(NS, to).pod.ipv4().into();
                            let v4 = src.probe_tcp(dst, PORT, PROBE).is_reachable();
                            let v6 = src
                                .probe_tcp(cluster.pod(NS, to).pod.ipv6().into(), PORT, PROBE)
                                .is_reachable();
                            match (v4, v6) {
                                (true, true) => "ok".into(),
                                (false, false) => "X".into(),
                                _ => "v4/v6?".into(),
                            }
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("probe thread"))
            .collect()
    });
    for (from, row) in PODS.iter().zip(results) {
        print!("  {from:>10}");
        for cell in row {
            print!("{cell:>6}");
        }
        println!();
    }
}

fn apply_and_wait(cluster: &Cluster, file: &str, yaml: &str) -> Result<()> {
    let since = SystemTime::now();
    cluster.apply_policy(file, yaml)?;
    cluster.wait_applied(since, Duration::from_secs(20))
}

pub fn run(_opts: Options) -> Result<()> {
    crate::exec::require_root("cargo xtask demo")?;
    crate::build::run(crate::build::Options::default())?;
    println!("Palisade demo: one virtual node (a network namespace), three pods joined to it by");
    println!("veth pairs and routed like Calico does, and the real `palisade run` agent enforcing");
    println!(
        "NetworkPolicies written to a manifest directory. Probes: TCP port {PORT}, IPv4 and IPv6."
    );

    let mut cluster = Cluster::new(1).context("creating the virtual node")?;
    cluster.set_namespace(NS, &[])?;
    for name in PODS {
        cluster.add_pod(
            0,
            NS,
            name,
            &[("app", name)],
            &[PortSpec {
                name: "http".into(),
                port: PORT,
                protocol: "TCP".into(),
            }],
        )?;
    }
    let servers: Vec<_> = PODS
        .iter()
        .map(|p| cluster.pod(NS, p).pod.serve_tcp(PORT))
        .collect::<Result<_>>()?;
    println!();
    for p in PODS {
        let pod = &cluster.pod(NS, p).pod;
        println!(
            "  pod {NS}/{p:<4} {:<12} {:<18} host veth {}",
            pod.ipv4(),
            pod.ipv6(),
            pod.host_veth()
        );
    }
    let since = SystemTime::now();
    cluster.start_agents()?;
    cluster.wait_applied(since, Duration::from_secs(30))?;
    println!(
        "\nagent ready (manifests in {})",
        cluster.manifests().display()
    );

    matrix(
        &cluster,
        "[1/3] no NetworkPolicy: every pod reaches every pod",
    );
    apply_and_wait(&cluster, "default-deny", DEFAULT_DENY)?;
    matrix(
        &cluster,
        "[2/3] default-deny ingress in namespace demo: nothing gets in",
    );
    apply_and_wait(&cluster, "allow-chain", ALLOW_CHAIN)?;
    matrix(
        &cluster,
        "[3/3] allow web -> api and api -> db on TCP 80: exactly those get in",
    );

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
    println!("\ntorn down: namespaces, veths, pinned maps and the agent are gone.");
    Ok(())
}
