//! Control plane: full compile time and peak RSS per cluster size (each in a
//! fresh child process), and event-to-maps-written latency for single-object
//! changes at 10k pods with a loaded datapath.
//!
//! The synthetic cluster: 100 namespaces (`team=t<n%10>`), pods spread over
//! nodes of 100 pods each, labelled `app` (20 values) and `tier` (web/api/db)
//! with a named container port; each policy selects one app in its namespace
//! and has the shape of the compiler's own scale test: ingress from
//! `tier=web` on a port, ingress from an app in `team`-selected namespaces on
//! a named port, egress to an ipBlock with an except, egress to namespaces by
//! expression on a port range. Plans are compiled for `node0`.
//!
//! With ClusterNetworkPolicies (the `+cnp` rows): 100 of 25 rules each, half
//! Admin and half Baseline, each applying to the namespaces of one `team`,
//! with Accept, Deny and Pass rules over namespaces, pods, networks and port
//! ranges, so endpoints get deny entries and split port ranges.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use palisade_agent::datapath::{Capacities, Datapath, DatapathConfig};
use palisade_agent::policy::Compiler;
use palisade_agent::source::K8sObject;
use palisade_agent::source::manifests;
use palisade_agent::state::ClusterState;
use palisade_agent::state::PodRef;
use palisade_agent::sync::{Renderer, Syncer};
use palisade_tests::{BpffsDir, ChildGuard};
use serde_json::{Value, json};

use super::{fmt_num, median, percentile};

/// Namespaces of the synthetic cluster, unless a point says otherwise.
const NAMESPACES: usize = 100;
const APPS: usize = 20;
const PODS_PER_NODE: usize = 100;
pub(super) const NODE: &str = "node0";

pub const GRID_PODS: [usize; 4] = [1_000, 10_000, 50_000, 100_000];
pub const GRID_POLICIES: [usize; 3] = [100, 1_000, 5_000];
/// A child compile taking longer than this is killed and reported as skipped.
const CHILD_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone, Copy)]
pub(super) struct Gen {
    pub(super) pods: usize,
    pub(super) policies: usize,
    pub(super) cluster_policies: usize,
    pub(super) namespaces: usize,
}

/// Issue 18's scale point: 100k pods x 10k policies in 1k namespaces.
const SCALE: (usize, usize, usize) = (100_000, 10_000, 1_000);

/// Rules per generated ClusterNetworkPolicy (the CRD's maximum per direction
/// is 25; these are 13 ingress and 12 egress).
const CNP_RULES: usize = 25;
/// ClusterNetworkPolicies of the `+cnp` rows.
const CNPS: usize = 100;
/// POLICY capacity of the ClusterNetworkPolicy latency run.
const CNP_POLICY_CAPACITY: u32 = 1 << 20;

impl Gen {
    fn nodes(self) -> usize {
        (self.pods / PODS_PER_NODE).max(1)
    }

    fn namespace(n: usize) -> Value {
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": format!("ns{n}"), "labels": {"team": format!("t{}", n % 10)}}})
    }

    fn app_of(self, i: usize) -> usize {
        (i / self.namespaces) % APPS
    }

    fn pod(self, i: usize, app: usize) -> Value {
        let ip = format!("10.{}.{}.{}", 64 + (i >> 16), (i >> 8) & 255, i & 255);
        let tier = ["web", "api", "db"][i % 3];
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": format!("p{i}"), "namespace": format!("ns{}", i % self.namespaces),
                            "labels": {"app": format!("app{app}"), "tier": tier}},
               "spec": {"nodeName": format!("node{}", self.node_of(i)),
                        "containers": [{"name": "c", "image": "x",
                                        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]}]},
               "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})
    }

    fn policy(self, j: usize, port: u16) -> Value {
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
               "metadata": {"name": format!("pol{j}"), "namespace": format!("ns{}", j % self.namespaces)},
               "spec": {
                 "podSelector": {"matchLabels": {"app": format!("app{}", (j / self.namespaces) % APPS)}},
                 "policyTypes": ["Ingress", "Egress"],
                 "ingress": [
                   {"from": [{"podSelector": {"matchLabels": {"tier": "web"}}}],
                    "ports": [{"protocol": "TCP", "port": port}]},
                   {"from": [{"namespaceSelector": {"matchLabels": {"team": format!("t{}", j % 10)}},
                              "podSelector": {"matchLabels": {"app": format!("app{}", (j + 1) % APPS)}}}],
                    "ports": [{"protocol": "TCP", "port": "http"}]}],
                 "egress": [
                   {"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.128.0/24"]}}]},
                   {"to": [{"namespaceSelector": {"matchExpressions":
                              [{"key": "team", "operator": "In", "values": ["t1", "t2"]}]}}],
                    "ports": [{"protocol": "TCP", "port": 8000, "endPort": 9000}]}]}})
    }

    /// ClusterNetworkPolicy `k`; `variant` changes its rules' ports.
    fn cluster_policy(k: usize, variant: usize) -> Value {
        let action = |r: usize| ["Deny", "Accept", "Pass"][r % 3];
        // A third all traffic, a third one port, a third a port range.
        let protocols = |r: usize| match r % 3 {
            0 => Value::Null,
            1 => json!([{"tcp": {"destinationPort": {"number": 80 + (r * 7 + variant) % 50}}}]),
            _ => {
                let start = 8000 + 100 * ((r + variant) % 10);
                json!([{"tcp": {"destinationPort": {"range": {"start": start, "end": start + 99}}}}])
            }
        };
        let with_protocols = |mut rule: Value, r: usize| {
            if let p @ Value::Array(_) = protocols(r) {
                rule["protocols"] = p;
            }
            rule
        };
        let ingress: Vec<Value> = (0..13)
            .map(|r| {
                let from = if r % 2 == 0 {
                    json!({"namespaces": {"matchLabels": {"team": format!("t{}", (k + r) % 10)}}})
                } else {
                    json!({"pods": {"namespaceSelector": {},
                                    "podSelector": {"matchLabels": {"app": format!("app{}", (k + r) % APPS)}}}})
                };
                with_protocols(
                    json!({"name": format!("in{r}"), "action": action(r), "from": [from]}),
                    r,
                )
            })
            .collect();
        let egress: Vec<Value> = (0..CNP_RULES - 13)
            .map(|r| {
                let to = if r % 2 == 0 {
                    json!({"networks": [format!("10.{}.0.0/16", 64 + r % 2)]})
                } else {
                    json!({"namespaces": {"matchLabels": {"team": format!("t{}", (k + r) % 10)}}})
                };
                with_protocols(
                    json!({"name": format!("out{r}"), "action": action(r + 1), "to": [to]}),
                    r + 1,
                )
            })
            .collect();
        json!({"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
               "metadata": {"name": format!("cnp{k}")},
               "spec": {"tier": if k.is_multiple_of(2) { "Admin" } else { "Baseline" }, "priority": k % 50,
                        "subject": {"namespaces": {"matchLabels": {"team": format!("t{}", k % 10)}}},
                        "ingress": ingress, "egress": egress}})
    }

    /// Spreads each node's pods over namespaces and apps.
    fn node_of(self, i: usize) -> usize {
        (i / self.namespaces + i) % self.nodes()
    }

    fn is_local(self, i: usize) -> bool {
        self.node_of(i) == 0
    }

    /// Fake ifindexes of the local pods: the maps are keyed by them,
    /// nothing is attached.
    pub(super) fn interfaces(self) -> BTreeMap<PodRef, u32> {
        (0..self.pods)
            .filter(|&i| self.is_local(i))
            .enumerate()
            .map(|(k, i)| {
                let pod = PodRef {
                    namespace: format!("ns{}", i % self.namespaces),
                    name: format!("p{i}"),
                };
                (pod, 1000 + k as u32)
            })
            .collect()
    }

    /// The cluster as JSON `List` documents of up to 1,000 objects each, in
    /// the order an initial list would bring them.
    pub(super) fn lists(self) -> Result<Vec<String>> {
        let namespaces = (0..self.namespaces).map(Self::namespace);
        let pods = (0..self.pods).map(|i| self.pod(i, self.app_of(i)));
        let policies = (0..self.policies).map(|j| self.policy(j, 8080));
        let cluster_policies = (0..self.cluster_policies).map(|k| Self::cluster_policy(k, 0));
        let all: Vec<Value> = namespaces
            .chain(pods)
            .chain(policies)
            .chain(cluster_policies)
            .collect();
        all.chunks(1000)
            .map(|items| {
                let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
                Ok(serde_json::to_string(&list)?)
            })
            .collect()
    }

    /// The cluster state, fed through the agent's manifest parser.
    pub(super) fn state(self) -> Result<ClusterState> {
        let mut state = ClusterState::new();
        for list in self.lists()? {
            for obj in parse_list(&list)? {
                state.apply(&obj).map_err(|e| anyhow::anyhow!("{e}"))?;
            }
        }
        Ok(state)
    }
}

/// JSON objects -> K8sObjects through the agent's manifest parser.
fn objects(items: Vec<Value>) -> Result<Vec<K8sObject>> {
    parse_list(&serde_json::to_string(
        &json!({"apiVersion": "v1", "kind": "List", "items": items}),
    )?)
}

/// A JSON `List` document -> K8sObjects through the agent's manifest parser.
pub(super) fn parse_list(text: &str) -> Result<Vec<K8sObject>> {
    manifests::parse(Path::new("bench.json"), text).map_err(|e| anyhow::anyhow!("{e}"))
}

fn one(item: Value) -> Result<K8sObject> {
    objects(vec![item])?
        .pop()
        .context("the generated object parsed to nothing")
}

/// A `/proc/self/status` field in KiB.
fn status_kib(field: &str) -> u64 {
    fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Runs in the child: build the state, reset the RSS high-water mark, compile.
pub fn compile_child(spec: &str) -> Result<()> {
    let mut parts = spec.split('x');
    let mut next = || -> Result<usize> { Ok(parts.next().unwrap_or("0").parse()?) };
    let g = Gen {
        pods: next()?,
        policies: next()?,
        cluster_policies: next()?,
        namespaces: match next()? {
            0 => NAMESPACES,
            n => n,
        },
    };
    let t = Instant::now();
    let state = g.state()?;
    let build_s = t.elapsed().as_secs_f64();
    let hwm_build = status_kib("VmHWM");
    let rss_state = status_kib("VmRSS");
    // Writing 5 to clear_refs resets VmHWM to the current RSS.
    fs::write("/proc/self/clear_refs", "5").context("resetting VmHWM")?;
    let mut compiler = Compiler::new();
    let t = Instant::now();
    let plan = compiler.compile(&state, NODE);
    let cold_s = t.elapsed().as_secs_f64();
    let hwm_compile = status_kib("VmHWM");
    let mut warm = Vec::new();
    for _ in 0..2 {
        let t = Instant::now();
        let again = compiler.compile(&state, NODE);
        warm.push(t.elapsed().as_secs_f64());
        ensure!(again == plan, "compiles of the same state differ");
    }
    println!(
        "{}",
        json!({
            "pods": g.pods, "policies": g.policies, "cluster_policies": g.cluster_policies,
            "namespaces": g.namespaces, "nodes": g.nodes(),
            "build_state_s": build_s, "compile_cold_s": cold_s, "compile_warm_s": median(&warm),
            "rss_state_kib": rss_state, "hwm_build_kib": hwm_build, "hwm_compile_kib": hwm_compile,
            "endpoints": plan.endpoints.len(), "rules": plan.rules.len(), "denies": plan.denies.len(),
            "ipcache": plan.ipcache.len(), "identities": plan.identities.len(),
        })
    );
    Ok(())
}

/// Runs one child compile, killing it after [`CHILD_TIMEOUT`].
fn child(
    pods: usize,
    policies: usize,
    cluster_policies: usize,
    namespaces: usize,
) -> Result<Option<Value>> {
    let exe = std::env::current_exe()?;
    let spec = format!("{pods}x{policies}x{cluster_policies}x{namespaces}");
    let mut guard = ChildGuard::spawn(
        Command::new(exe)
            .args(["bench", "--compile-child", &spec])
            .stdout(Stdio::piped()),
    )?;
    let deadline = Instant::now() + CHILD_TIMEOUT;
    let status = loop {
        if let Some(status) = guard.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            drop(guard);
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    if let Some(mut stdout) = guard.child_mut().stdout.take() {
        stdout.read_to_string(&mut out)?;
    }
    if !status.success() {
        bail!("compile child {pods}x{policies} failed: {status}");
    }
    let line = out
        .lines()
        .last()
        .context("compile child printed nothing")?;
    Ok(Some(serde_json::from_str(line)?))
}

/// Durations of one event's phases, seconds.
struct EventTiming {
    kind: &'static str,
    state_s: f64,
    compile_s: f64,
    render_s: f64,
    write_s: f64,
    writes: usize,
}

impl EventTiming {
    fn total(&self) -> f64 {
        self.state_s + self.compile_s + self.render_s + self.write_s
    }
}

fn events(quick: bool, cluster_policies: usize) -> Result<Value> {
    let g = Gen {
        pods: 10_000,
        policies: 1_000,
        cluster_policies,
        namespaces: NAMESPACES,
    };
    let (per_kind, policy_events) = if quick { (5, 5) } else { (100, 100) };
    let mut state = g.state()?;
    let dir = BpffsDir::new()?;
    let mut dp = Datapath::load(&DatapathConfig {
        bpffs: dir.path().to_path_buf(),
        // The ClusterNetworkPolicy workload needs more policy entries than
        // the default holds (its entry count is reported): sized up, as an
        // operator would with --max-policy.
        capacities: Capacities {
            policy: if cluster_policies > 0 {
                CNP_POLICY_CAPACITY
            } else {
                Capacities::default().policy
            },
            ..Capacities::default()
        },
        attach: palisade_agent::datapath::default_attach_mode(),
    })
    .context("loading the datapath")?;
    let locals: Vec<usize> = (0..g.pods).filter(|&i| g.is_local(i)).collect();
    let remotes: Vec<usize> = (0..g.pods).filter(|&i| !g.is_local(i)).collect();
    let interfaces = g.interfaces();
    let mut compiler = Compiler::new();
    let mut syncer = Syncer::default();
    // Kept across events, as the agent's reconciler keeps it.
    let mut renderer = Renderer::default();
    let t = Instant::now();
    let plan = compiler.compile(&state, NODE);
    let compile_s = t.elapsed().as_secs_f64();
    let kernel = renderer.render(&plan, &interfaces);
    let report = syncer.apply(&mut dp.maps, &kernel)?;
    ensure!(
        report.complete(),
        "maps full: {} writes refused",
        report.map_full.len()
    );
    let initial = json!({"compile_s": compile_s, "total_s": t.elapsed().as_secs_f64(),
                         "writes": report.writes, "endpoints": plan.endpoints.len(),
                         "rules": plan.rules.len(), "denies": plan.denies.len(),
                         "ipcache": plan.ipcache.len()});
    println!(
        "  10k pods x 1k policies{}: initial compile {:.0} ms, first sync {} writes in {:.0} ms",
        if cluster_policies > 0 { " + cnp" } else { "" },
        compile_s * 1e3,
        report.writes,
        t.elapsed().as_secs_f64() * 1e3
    );

    // The events, generated (and parsed) before the clock starts.
    let mut queue: Vec<(&'static str, K8sObject)> = Vec::new();
    for k in 0..per_kind {
        for (kind, list) in [("pod_label_local", &locals), ("pod_label_remote", &remotes)] {
            let i = list[(k * 37) % list.len()];
            let app = (g.app_of(i) + 1 + k) % APPS;
            queue.push((kind, one(g.pod(i, app))?));
        }
    }
    // Policies selecting some local pod (the others change nothing on this node).
    let selecting: Vec<usize> = (0..g.policies)
        .filter(|&j| {
            locals.iter().any(|&i| {
                i % g.namespaces == j % g.namespaces && g.app_of(i) == (j / g.namespaces) % APPS
            })
        })
        .collect();
    ensure!(!selecting.is_empty(), "no policy selects a local pod");
    for k in 0..policy_events {
        let j = selecting[(k * 7) % selecting.len()];
        queue.push(("policy_update", one(g.policy(j, 8081 + k as u16))?));
    }
    for k in 0..if cluster_policies > 0 {
        policy_events
    } else {
        0
    } {
        let c = (k * 7) % cluster_policies;
        queue.push(("cnp_update", one(Gen::cluster_policy(c, k + 1))?));
    }
    let mut timings = Vec::new();
    for (kind, obj) in &queue {
        let t0 = Instant::now();
        state.apply(obj).map_err(|e| anyhow::anyhow!("{e}"))?;
        let t1 = Instant::now();
        let plan = compiler.compile(&state, NODE);
        let t2 = Instant::now();
        let kernel = renderer.render(&plan, &interfaces);
        let t3 = Instant::now();
        let report = syncer.apply(&mut dp.maps, &kernel)?;
        let t4 = Instant::now();
        ensure!(
            report.complete(),
            "maps full: {} writes refused",
            report.map_full.len()
        );
        timings.push(EventTiming {
            kind,
            state_s: (t1 - t0).as_secs_f64(),
            compile_s: (t2 - t1).as_secs_f64(),
            render_s: (t3 - t2).as_secs_f64(),
            write_s: (t4 - t3).as_secs_f64(),
            writes: report.writes,
        });
    }
    drop(dp);
    drop(dir);
    let mut by_kind = serde_json::Map::new();
    for kind in EVENT_KINDS {
        let sel: Vec<&EventTiming> = timings
            .iter()
            .filter(|t| kind == "all" || t.kind == kind)
            .collect();
        let col =
            |f: &dyn Fn(&EventTiming) -> f64| -> Vec<f64> { sel.iter().map(|t| f(t)).collect() };
        let total = col(&|t| t.total() * 1e3);
        let compile = col(&|t| t.compile_s * 1e3);
        let render_ms = col(&|t| t.render_s * 1e3);
        let write = col(&|t| t.write_s * 1e3);
        let writes = col(&|t| t.writes as f64);
        by_kind.insert(
            kind.into(),
            json!({
                "events": sel.len(),
                "total_ms": {"p50": percentile(&total, 50.0), "p99": percentile(&total, 99.0), "max": percentile(&total, 100.0)},
                "compile_ms_p50": median(&compile), "compile_ms_p99": percentile(&compile, 99.0),
                "render_ms_p50": median(&render_ms),
                "diff_write_ms_p50": median(&write), "writes_p50": median(&writes),
                "samples_ms": total,
            }),
        );
    }
    Ok(
        json!({"pods": g.pods, "policies": g.policies, "cluster_policies": cluster_policies,
              "initial": initial, "events": by_kind}),
    )
}

const EVENT_KINDS: [&str; 5] = [
    "pod_label_local",
    "pod_label_remote",
    "policy_update",
    "cnp_update",
    "all",
];

pub fn run(quick: bool) -> Result<Value> {
    let (pods, policies): (&[usize], &[usize]) = if quick {
        (&GRID_PODS[..2], &GRID_POLICIES[..2])
    } else {
        (&GRID_PODS, &GRID_POLICIES)
    };
    let mut grid = Vec::new();
    let mut points: Vec<(usize, usize, usize, usize)> = Vec::new();
    for &p in pods {
        points.extend(policies.iter().map(|&q| (p, q, 0, NAMESPACES)));
    }
    points.push((10_000, 1_000, CNPS, NAMESPACES));
    if !quick {
        points.push((SCALE.0, SCALE.1, 0, SCALE.2));
    }
    for (p, q, c, n) in points {
        {
            match child(p, q, c, n)? {
                Some(v) => {
                    let mut cnp = if c > 0 {
                        format!(" + {c} cnp")
                    } else {
                        String::new()
                    };
                    if n != NAMESPACES {
                        cnp += &format!(" in {n} namespaces");
                    }
                    println!(
                        "  {p:>6} pods x {q:>5} policies{cnp}: compile {:.0} ms (warm {:.0} ms), peak RSS {:.0} MiB ({:.0} MiB state)",
                        v["compile_cold_s"].as_f64().unwrap_or(0.0) * 1e3,
                        v["compile_warm_s"].as_f64().unwrap_or(0.0) * 1e3,
                        v["hwm_compile_kib"].as_f64().unwrap_or(0.0) / 1024.0,
                        v["rss_state_kib"].as_f64().unwrap_or(0.0) / 1024.0,
                    );
                    grid.push(v);
                }
                None => {
                    println!(
                        "  {p:>6} pods x {q:>5} policies: skipped (over {} s)",
                        CHILD_TIMEOUT.as_secs()
                    );
                    grid.push(
                        json!({"pods": p, "policies": q, "cluster_policies": c, "namespaces": n, "skipped": true}),
                    );
                }
            }
        }
    }
    let events_plain = events(quick, 0)?;
    let events_cnp = events(quick, CNPS)?;
    Ok(
        json!({"suite": "control", "grid": grid, "latency": events_plain,
              "latency_cnp": events_cnp}),
    )
}

/// The event-to-maps table of one latency run.
fn latency_table(lat: &Value) -> String {
    let cnp = match lat["cluster_policies"].as_u64() {
        Some(c) if c > 0 => format!(" + {c} ClusterNetworkPolicies"),
        _ => String::new(),
    };
    let mut md = format!(
        "\n### Event to maps written ({} pods x {} policies{cnp}, datapath loaded)\n\n\
         Per event: ClusterState update + recompile (incremental: the compiler catches up \
         from the state's journal of changes) + render + diff + map writes (the agent's \
         coalescing window is not included). Initial full sync: {} writes, {} ms.\n\n",
        lat["pods"],
        lat["policies"],
        lat["initial"]["writes"],
        fmt_num(lat["initial"]["total_s"].as_f64().unwrap_or(f64::NAN) * 1e3)
    );
    md += "| event | n | p50 ms | p99 ms | compile p50 ms | compile p99 ms | render p50 ms | diff+write p50 ms | writes p50 |\n";
    md += "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for kind in EVENT_KINDS {
        let e = &lat["events"][kind];
        if e["events"].as_u64().unwrap_or(0) == 0 {
            continue;
        }
        let f = |v: &Value| fmt_num(v.as_f64().unwrap_or(f64::NAN));
        md += &format!(
            "| {kind} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            e["events"],
            f(&e["total_ms"]["p50"]),
            f(&e["total_ms"]["p99"]),
            f(&e["compile_ms_p50"]),
            f(&e["compile_ms_p99"]),
            f(&e["render_ms_p50"]),
            f(&e["diff_write_ms_p50"]),
            f(&e["writes_p50"]),
        );
    }
    md
}

pub fn summary(result: &Value) -> String {
    let mut md = String::from("## Control plane\n\n");
    md += "Full compile for one node (100 pods per node; `cold` = first compile of a fresh \
           `Compiler`, `warm` = median of two recompiles of the unchanged state, i.e. the \
           floor of an incremental re-plan). Peak RSS = \
           VmHWM of a fresh child process during the compile (reset after building the \
           cluster state, so it includes the resident state); `state` = RSS before compiling. \
           Ratio = time / the 1k-pod x 100-policy compile of the same run.\n\n";
    md += "| pods | policies | cold ms | warm ms | ratio | peak RSS MiB | state MiB | endpoints | rules | ipcache |\n";
    md += "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    let grid = result["grid"].as_array().cloned().unwrap_or_default();
    let base = grid
        .iter()
        .find(|g| g["pods"] == 1000 && g["policies"] == 100)
        .and_then(|g| g["compile_cold_s"].as_f64())
        .unwrap_or(f64::NAN);
    for g in &grid {
        if g["skipped"] == true {
            md += &format!(
                "| {} | {} | skipped (over {} s) |||||||\n",
                g["pods"],
                g["policies"],
                CHILD_TIMEOUT.as_secs()
            );
            continue;
        }
        let f = |k: &str| g[k].as_f64().unwrap_or(f64::NAN);
        let mut policies = match g["cluster_policies"].as_u64() {
            Some(c) if c > 0 => format!("{} + {c} cnp", g["policies"]),
            _ => g["policies"].to_string(),
        };
        match g["namespaces"].as_u64() {
            Some(n) if n != NAMESPACES as u64 => policies += &format!(" in {n} namespaces"),
            _ => {}
        }
        md += &format!(
            "| {} | {} | {} | {} | {:.1}x | {} | {} | {} | {} | {} |\n",
            g["pods"],
            policies,
            fmt_num(f("compile_cold_s") * 1e3),
            fmt_num(f("compile_warm_s") * 1e3),
            f("compile_cold_s") / base,
            fmt_num(f("hwm_compile_kib") / 1024.0),
            fmt_num(f("rss_state_kib") / 1024.0),
            g["endpoints"],
            g["rules"],
            g["ipcache"],
        );
    }
    let lat = &result["latency"];
    md += &latency_table(lat);
    if result["latency_cnp"].is_object() {
        md += &latency_table(&result["latency_cnp"]);
    }
    md += "\n### Targets\n\n";
    if let Some(g) = grid
        .iter()
        .find(|g| g["pods"] == 10_000 && g["policies"] == 1_000 && g["skipped"] != true)
    {
        let ms = g["compile_cold_s"].as_f64().unwrap_or(f64::NAN) * 1e3;
        let mib = g["hwm_compile_kib"].as_f64().unwrap_or(f64::NAN) / 1024.0;
        md += &format!(
            "- full compile 10k pods x 1k policies: {} ms (target < 500 ms): {}\n",
            fmt_num(ms),
            if ms < 500.0 {
                "met".into()
            } else {
                format!("MISSED by {} ms", fmt_num(ms - 500.0))
            }
        );
        md += &format!(
            "- peak RSS of that compile: {} MiB (target < 200 MiB): {}\n",
            fmt_num(mib),
            if mib < 200.0 {
                "met".into()
            } else {
                format!("MISSED by {} MiB", fmt_num(mib - 200.0))
            }
        );
    }
    // "One pod's label change re-planned": the recompile of the label events,
    // the slower of local and remote pods.
    let replan = |q: &str| {
        ["pod_label_local", "pod_label_remote"]
            .iter()
            .filter_map(|k| lat["events"][k][q].as_f64())
            .fold(f64::NAN, f64::max)
    };
    let (replan_p50, replan_p99) = (replan("compile_ms_p50"), replan("compile_ms_p99"));
    md += &format!(
        "- one pod's label change re-planned: {} ms p50, {} ms p99 (target < 5 ms): {}\n",
        fmt_num(replan_p50),
        fmt_num(replan_p99),
        if replan_p50 < 5.0 {
            "met".into()
        } else {
            format!("MISSED by {} ms", fmt_num(replan_p50 - 5.0))
        }
    );
    if let Some(g) = grid
        .iter()
        .find(|g| g["pods"] == 10_000 && g["cluster_policies"] == CNPS && g["skipped"] != true)
    {
        let ms = g["compile_cold_s"].as_f64().unwrap_or(f64::NAN) * 1e3;
        let mib = g["hwm_compile_kib"].as_f64().unwrap_or(f64::NAN) / 1024.0;
        let verdict = |v: f64, target: f64, unit: &str| {
            if v < target {
                "met".to_string()
            } else {
                format!("MISSED by {} {unit}", fmt_num(v - target))
            }
        };
        md += &format!(
            "- full compile 10k pods x 1k policies + {CNPS} ClusterNetworkPolicies of {CNP_RULES} rules: {} ms (target < 500 ms): {}; peak RSS {} MiB (target < 250 MiB): {}\n",
            fmt_num(ms),
            verdict(ms, 500.0, "ms"),
            fmt_num(mib),
            verdict(mib, 250.0, "MiB"),
        );
        let cnp_p99 = result["latency_cnp"]["events"]["cnp_update"]["compile_ms_p99"]
            .as_f64()
            .unwrap_or(f64::NAN);
        md += &format!(
            "- one ClusterNetworkPolicy change re-planned: {} ms p99 (target < 10 ms): {}\n",
            fmt_num(cnp_p99),
            verdict(cnp_p99, 10.0, "ms"),
        );
    }
    md += &issue_18_targets(result, &grid);
    let p99 = lat["events"]["all"]["total_ms"]["p99"]
        .as_f64()
        .unwrap_or(f64::NAN);
    md += &format!(
        "- p99 event-to-maps at 10k pods: {} ms (target < 100 ms): {}\n",
        fmt_num(p99),
        if p99 < 100.0 {
            "met".into()
        } else {
            format!("MISSED by {} ms", fmt_num(p99 - 100.0))
        }
    );
    md
}

/// Issue 18's control-plane targets (10x the first budgets).
fn issue_18_targets(result: &Value, grid: &[Value]) -> String {
    let verdict = |v: f64, target: f64, unit: &str| {
        if v < target {
            "met".to_string()
        } else {
            format!("MISSED by {} {unit}", fmt_num(v - target))
        }
    };
    let mut md = String::new();
    let lat = &result["latency"]["events"];
    let replan_p99 = ["pod_label_local", "pod_label_remote"]
        .iter()
        .filter_map(|k| lat[k]["compile_ms_p99"].as_f64())
        .fold(f64::NAN, f64::max);
    md += &format!(
        "- one pod's label change re-planned at 10k pods: {} ms p99 (issue 18: < 2 ms): {}\n",
        fmt_num(replan_p99),
        verdict(replan_p99, 2.0, "ms")
    );
    let p99 = lat["all"]["total_ms"]["p99"].as_f64().unwrap_or(f64::NAN);
    md += &format!(
        "- event to maps written at 10k pods: {} ms p99 (issue 18: < 5 ms): {}\n",
        fmt_num(p99),
        verdict(p99, 5.0, "ms")
    );
    let point = |pods: usize, policies: usize, namespaces: usize| {
        grid.iter().find(|g| {
            g["pods"] == pods
                && g["policies"] == policies
                && g["cluster_policies"].as_u64().unwrap_or(0) == 0
                && g["namespaces"].as_u64().unwrap_or(NAMESPACES as u64) == namespaces as u64
                && g["skipped"] != true
        })
    };
    if let Some(g) = point(SCALE.0, SCALE.1, SCALE.2) {
        let ms = g["compile_cold_s"].as_f64().unwrap_or(f64::NAN) * 1e3;
        let mib = g["hwm_compile_kib"].as_f64().unwrap_or(f64::NAN) / 1024.0;
        let per_pod = g["rss_state_kib"].as_f64().unwrap_or(f64::NAN) * 1024.0 / SCALE.0 as f64;
        md += &format!(
            "- full compile {}k pods x {}k policies x {}k namespaces: {} ms (issue 18: < 1 s): {}; \
             peak RSS {} MiB (< 1 GiB): {}; resident after building the state: {} bytes/pod \
             (the whole process over its pods, policies included)\n",
            SCALE.0 / 1000,
            SCALE.1 / 1000,
            SCALE.2 / 1000,
            fmt_num(ms),
            verdict(ms, 1000.0, "ms"),
            fmt_num(mib),
            verdict(mib, 1024.0, "MiB"),
            fmt_num(per_pod),
        );
    }
    if let (Some(small), Some(big)) = (
        point(10_000, 100, NAMESPACES),
        point(100_000, 100, NAMESPACES),
    ) {
        let kib = |g: &Value| g["rss_state_kib"].as_f64().unwrap_or(f64::NAN);
        let per_pod = (kib(big) - kib(small)) * 1024.0 / 90_000.0;
        md += &format!(
            "- cluster state per pod (10k -> 100k pods, 100 policies): {} bytes/pod\n",
            fmt_num(per_pod)
        );
    }
    let cnp = &result["latency_cnp"]["events"];
    if cnp.is_object() {
        let f = |kind: &str, q: &str| cnp[kind][q].as_f64().unwrap_or(f64::NAN);
        let replan = f("cnp_update", "compile_ms_p99");
        md += &format!(
            "- with {CNPS} ClusterNetworkPolicies: one CNP change re-planned {} ms p99 (< 10 ms): {}; \
             a local pod's label change re-planned {} ms p99; render p50 {} ms (CNP change)\n",
            fmt_num(replan),
            verdict(replan, 10.0, "ms"),
            fmt_num(
                f("pod_label_local", "compile_ms_p99").max(f("pod_label_remote", "compile_ms_p99"))
            ),
            fmt_num(f("cnp_update", "render_ms_p50")),
        );
    }
    md
}
