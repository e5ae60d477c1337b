//! Startup and restart at scale, in one process with a loaded datapath (real
//! maps in a private bpffs, nothing attached, fake ifindexes as in the
//! control suite's latency run):
//!
//! - **start**: the initial list (JSON, generated before the clock starts)
//!   parsed into objects and applied to `ClusterState`, the object loaded
//!   and its maps created, the first compile, render and apply (every entry
//!   written): what stands between an agent's start and its first full apply.
//! - **restart**: the same list parsed again, the object loaded over the
//!   pins the first run left (maps adopted), the pinned state read back, the
//!   first compile, the takeover of the pinned ids and the compile after it,
//!   render and apply over the adopted state.
//!
//! Not included: the process start, the API server's list latency and the
//! attach calls (one per local pod interface, measured by the e2e tier's
//! figures elsewhere).

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use palisade_agent::datapath::{Capacities, Datapath, DatapathConfig};
use palisade_agent::policy::Compiler;
use palisade_agent::state::{ClusterState, PodRef};
use palisade_agent::sync::{Syncer, pinned_ids, render};
use palisade_tests::BpffsDir;
use serde_json::{Value, json};

use super::control::{Gen, NODE, parse_list};

/// (pods, policies, namespaces) of each point: the control suite's latency
/// cluster and issue 18's scale point.
const POINTS: [(usize, usize, usize); 2] = [(10_000, 1_000, 100), (100_000, 10_000, 1_000)];

pub fn run(quick: bool) -> Result<Value> {
    let points = if quick { &POINTS[..1] } else { &POINTS[..] };
    let mut results = Vec::new();
    for &(pods, policies, namespaces) in points {
        let g = Gen {
            pods,
            policies,
            cluster_policies: 0,
            namespaces,
        };
        let r = measure(g).with_context(|| format!("{pods} pods x {policies} policies"))?;
        println!(
            "  {pods:>6} pods x {policies:>5} policies: start {:.0} ms ({} writes), restart {:.0} ms ({} writes)",
            r["start"]["total_s"].as_f64().unwrap_or(0.0) * 1e3,
            r["start"]["writes"],
            r["restart"]["total_s"].as_f64().unwrap_or(0.0) * 1e3,
            r["restart"]["writes"],
        );
        results.push(r);
    }
    Ok(json!({"suite": "startup", "points": results}))
}

fn seconds_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

/// The state from the initial list: (state, seconds parsing the objects,
/// seconds applying them to the state).
fn list(lists: &[String]) -> Result<(ClusterState, f64, f64)> {
    let (mut parse_s, mut state_s) = (0.0, 0.0);
    let mut state = ClusterState::new();
    for text in lists {
        let t = Instant::now();
        let objects = parse_list(text)?;
        parse_s += seconds_since(t);
        let t = Instant::now();
        for object in &objects {
            state.apply(object).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        state_s += seconds_since(t);
    }
    Ok((state, parse_s, state_s))
}

fn measure(g: Gen) -> Result<Value> {
    let dir = BpffsDir::new()?;
    let config = DatapathConfig {
        bpffs: dir.path().to_path_buf(),
        capacities: Capacities::default(),
        attach: palisade_agent::datapath::default_attach_mode(),
    };
    let interfaces = g.interfaces();
    // The API server's answer, generated before any clock starts.
    let lists = g.lists()?;

    let (state, parse_s, state_s) = list(&lists)?;
    let t = Instant::now();
    let mut dp = Datapath::load(&config).context("loading the datapath")?;
    let load_s = seconds_since(t);
    let t = Instant::now();
    let plan = Compiler::new().compile(&state, NODE);
    let compile_s = seconds_since(t);
    let t = Instant::now();
    let kernel = render(&plan, &interfaces);
    let report = Syncer::default().apply(&mut dp.maps, &kernel)?;
    ensure!(report.complete(), "maps full: {:?}", report.map_full);
    let apply_s = seconds_since(t);
    let start = json!({"parse_s": parse_s, "state_s": state_s, "load_s": load_s,
                       "compile_s": compile_s, "apply_s": apply_s,
                       "total_s": parse_s + state_s + load_s + compile_s + apply_s,
                       "writes": report.writes, "endpoints": plan.endpoints.len(),
                       "rules": plan.rules.len(), "ipcache": plan.ipcache.len()});
    drop((dp, state));

    let (state, parse_s, state_s) = list(&lists)?;
    let t = Instant::now();
    let mut dp = Datapath::load(&config).context("loading the datapath over its pins")?;
    let (pinned, revision) = dp.maps.read_state()?;
    let adopt_s = seconds_since(t);
    let t = Instant::now();
    let (plan, moved) = first_plan(&state, &pinned, &interfaces);
    let compile_s = seconds_since(t);
    let t = Instant::now();
    let kernel = render(&plan, &interfaces);
    let mut syncer = Syncer::adopt(pinned, revision);
    // Nothing is attached here; in the agent the first settle does this.
    syncer.programs_upgraded();
    let report = syncer.apply(&mut dp.maps, &kernel)?;
    ensure!(report.complete(), "maps full: {:?}", report.map_full);
    let apply_s = seconds_since(t);
    let restart = json!({"parse_s": parse_s, "state_s": state_s, "adopt_s": adopt_s,
                         "compile_s": compile_s, "apply_s": apply_s,
                         "total_s": parse_s + state_s + adopt_s + compile_s + apply_s,
                         "writes": report.writes, "ids_moved": moved});
    Ok(
        json!({"pods": g.pods, "policies": g.policies, "namespaces": g.namespaces,
              "start": start, "restart": restart}),
    )
}

/// The restarted agent's first plan: compiled, then compiled again if the
/// takeover of the pinned ids moved any (as the reconcile loop does).
fn first_plan(
    state: &ClusterState,
    pinned: &palisade_agent::sync::KernelState,
    interfaces: &BTreeMap<PodRef, u32>,
) -> (palisade_agent::policy::plan::DatapathPlan, bool) {
    let mut compiler = Compiler::new();
    let plan = compiler.compile(state, NODE);
    let moved = compiler.adopt_pinned_ids(&plan, &pinned_ids(pinned, interfaces));
    if moved {
        (compiler.compile(state, NODE), true)
    } else {
        (plan, false)
    }
}

/// The Markdown table of a run.
pub fn summary(result: &Value) -> String {
    let mut md = String::from(
        "## Startup and restart\n\n| pods | policies | namespaces | start: parse | state | load | compile | apply | **total** | writes | restart: parse | state | adopt pins | compile | apply | **total** | writes |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let ms = |v: &Value| format!("{:.0}", v.as_f64().unwrap_or(f64::NAN) * 1e3);
    for p in result["points"].as_array().into_iter().flatten() {
        let (s, r) = (&p["start"], &p["restart"]);
        md += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | **{}** | {} | {} | {} | {} | {} | {} | **{}** | {} |\n",
            p["pods"],
            p["policies"],
            p["namespaces"],
            ms(&s["parse_s"]),
            ms(&s["state_s"]),
            ms(&s["load_s"]),
            ms(&s["compile_s"]),
            ms(&s["apply_s"]),
            ms(&s["total_s"]),
            s["writes"],
            ms(&r["parse_s"]),
            ms(&r["state_s"]),
            ms(&r["adopt_s"]),
            ms(&r["compile_s"]),
            ms(&r["apply_s"]),
            ms(&r["total_s"]),
            r["writes"],
        );
    }
    md += "\nTimes in ms. A restart over an unchanged cluster writes only the revision bump that re-checks live flows; its compile is two compiles when the takeover of the pinned ids moves any.\n";
    md
}
