//! `cargo xtask bench [datapath|wire|control|startup|all]`: benchmarks, not tests.
//!
//! Every figure is reported as a ratio against a baseline measured in the same
//! run (the machine is shared and noisy; absolute numbers only describe it).
//! Raw results go to `target/bench/<suite>.json`, plots to
//! `target/bench/*.svg`, and a Markdown summary to `target/bench/summary.md`
//! (BENCHMARKS.md at the repository root is written from it).
//!
//! How the eBPF object reaches the measuring code: `cargo xtask` runs xtask in
//! the debug profile and without `PALISADE_EBPF_OBJECT`, so its copy of the
//! agent library embeds no object and would time unoptimised code. The `bench`
//! command therefore builds the object first ([`crate::build::build_ebpf`]) and
//! then re-runs itself as `cargo run --release -p xtask -- bench <suite>
//! --inner` with `PALISADE_EBPF_OBJECT` set: that release build of xtask
//! carries an agent library with the object embedded, so `Datapath::load`
//! works as in the agent. The control-plane suite re-executes that release
//! binary once more per data point (`--compile-child`) so each compile's peak
//! RSS is measured in a fresh process.
//!
//! `--kernel 6.1` (or `5.15`) runs that release binary inside a VM on that
//! kernel instead ([`crate::vm`]); its results go to
//! `target/vm/bench-<series>/out/results`.

mod control;
mod datapath;
mod plot;
mod startup;
mod wire;

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use crate::build::{OBJECT_ENV, build_ebpf};
use crate::exec::{cargo, require_root, run as exec, workspace_root};
use crate::vm;
use crate::vm::guest::Job;

/// Time limits for the datapath suite in the VM: about 3x the measured run.
const VM_TIMEOUT: Duration = Duration::from_secs(1800);
const VM_QUICK_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Suite {
    /// Per-packet cost of the TC programs (BPF_PROG_TEST_RUN).
    Datapath,
    /// Pod-to-pod transactions, connections and throughput on a virtual node.
    Wire,
    /// Compile time, memory and event-to-maps latency.
    Control,
    /// Agent start to first full apply, and a restart's adoption of its pins.
    Startup,
    /// All four.
    All,
}

impl Suite {
    fn name(self) -> &'static str {
        match self {
            Suite::Datapath => "datapath",
            Suite::Wire => "wire",
            Suite::Control => "control",
            Suite::Startup => "startup",
            Suite::All => "all",
        }
    }
}

#[derive(Args)]
pub struct Options {
    /// Which suite to run.
    #[arg(value_enum, default_value = "all")]
    suite: Suite,
    /// Fewer repeats and shorter points: a smoke test of the benchmark itself.
    #[arg(long)]
    quick: bool,
    /// Only regenerate the summaries and plots from the JSON of an earlier run.
    #[arg(long)]
    replot: bool,
    /// Run inside a VM booted on this kernel series (datapath only; see
    /// `cargo xtask test`'s VM tier).
    #[arg(long, value_name = "SERIES")]
    kernel: Option<vm::kernel::Series>,
    /// Wire: run client, server and iperf3 on one CPU (issue 18's "1-CPU
    /// layout"), so a rate is 1 / the CPU cost of one transaction.
    #[arg(long)]
    one_cpu: bool,
    /// Internal: this is the release-mode measuring process.
    #[arg(long, hide = true)]
    inner: bool,
    /// Internal: compile one synthetic cluster (`<pods>x<policies>`) in this
    /// process and print its figures as one JSON line.
    #[arg(long, hide = true, value_name = "PODSxPOLICIES")]
    compile_child: Option<String>,
}

/// Set inside the VM, whose view of the workspace is read-only.
const OUT_DIR_ENV: &str = "PALISADE_BENCH_DIR";

/// Where results go.
pub fn out_dir() -> PathBuf {
    std::env::var_os(OUT_DIR_ENV)
        .map_or_else(|| workspace_root().join("target/bench"), PathBuf::from)
}

pub fn run(opts: Options) -> Result<()> {
    if let Some(spec) = &opts.compile_child {
        return control::compile_child(spec);
    }
    if opts.replot {
        return replot();
    }
    require_root("cargo xtask bench")?;
    if let Some(series) = opts.kernel
        && !opts.inner
    {
        return in_vm(&opts, series);
    }
    if !opts.inner {
        let object = build_ebpf()?;
        let mut cmd = cargo();
        cmd.args(["run", "--release", "--quiet", "-p", "xtask", "--", "bench"])
            .arg(opts.suite.name())
            .arg("--inner")
            .env(OBJECT_ENV, &object);
        if opts.quick {
            cmd.arg("--quick");
        }
        if opts.one_cpu {
            cmd.arg("--one-cpu");
        }
        eprintln!("bench: building and running the release-mode measuring process");
        return exec(&mut cmd);
    }
    if cfg!(debug_assertions) {
        eprintln!("bench: warning: running a debug build; figures are not representative");
    }
    let dir = out_dir();
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let machine = machine();
    println!(
        "bench: {} CPUs, kernel {}, {}, load average {}\nbench: mitigations: {}",
        machine["nproc"],
        machine["kernel"],
        machine["cpu"],
        machine["load_at_start"].as_str().unwrap_or("?"),
        machine["mitigations"].as_str().unwrap_or("?")
    );
    let started = Instant::now();
    let suites = match opts.suite {
        Suite::All => vec![Suite::Datapath, Suite::Wire, Suite::Control, Suite::Startup],
        s => vec![s],
    };
    for suite in suites {
        let t = Instant::now();
        println!("\n== {} ==", suite.name());
        let mut result = match suite {
            Suite::Datapath => datapath::run(opts.quick)?,
            Suite::Wire => wire::run(opts.quick, opts.one_cpu)?,
            Suite::Control => control::run(opts.quick)?,
            Suite::Startup => startup::run(opts.quick)?,
            Suite::All => unreachable!("expanded above"),
        };
        result["machine"] = machine.clone();
        result["quick"] = json!(opts.quick);
        result["seconds"] = json!(t.elapsed().as_secs_f64());
        let path = dir.join(format!("{}.json", suite.name()));
        fs::write(&path, serde_json::to_string_pretty(&result)?)
            .with_context(|| format!("writing {}", path.display()))?;
        let md = publish(suite, &result)?;
        println!("{md}");
        println!(
            "({} written, {:.0} s)",
            path.display(),
            t.elapsed().as_secs_f64()
        );
    }
    write_summary(&machine)?;
    println!(
        "\nbench: done in {:.0} s; results under {}",
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    Ok(())
}

/// The measuring process in a VM: built here, run there, its output printed here.
fn in_vm(opts: &Options, series: vm::kernel::Series) -> Result<()> {
    ensure!(
        opts.suite == Suite::Datapath,
        "--kernel runs only the datapath suite (the others measure more than the kernel)"
    );
    let object = build_ebpf()?;
    exec(
        cargo()
            .args(["build", "--release", "--quiet", "-p", "xtask"])
            .env(OBJECT_ENV, &object),
    )?;
    let name = format!("bench-{series}");
    let results = vm::session::dir(&name).join("out/results");
    let mut argv = vec![
        crate::build::target_dir()
            .join("release/xtask")
            .display()
            .to_string(),
        "bench".into(),
        "datapath".into(),
        "--inner".into(),
    ];
    if opts.quick {
        argv.push("--quick".into());
    }
    let job = Job {
        name: "bench-datapath".into(),
        argv,
        env: vec![
            (OBJECT_ENV.into(), object.display().to_string()),
            (OUT_DIR_ENV.into(), results.display().to_string()),
        ],
        timeout: if opts.quick {
            VM_QUICK_TIMEOUT
        } else {
            VM_TIMEOUT
        },
    };
    let session = vm::session::run(&name, series, &workspace_root(), std::slice::from_ref(&job))?;
    let done = &session.jobs[0];
    if done.log.exists() {
        vm::session::print_file(&done.log);
    }
    println!(
        "bench: in the VM ({}): boot {:.0} s, bench {:.0} s, whole run {:.0} s",
        session.kernel,
        session.boot_seconds,
        done.seconds.unwrap_or(f64::NAN),
        session.total_seconds
    );
    if let Some(why) = &session.failure {
        anyhow::bail!("vm: {why}");
    }
    ensure!(
        done.exit == Some(0),
        "the benchmark failed in the VM (exit {:?}); output above",
        done.exit
    );
    Ok(())
}

/// Writes a suite's Markdown and plots; returns the Markdown.
fn publish(suite: Suite, result: &Value) -> Result<String> {
    let dir = out_dir();
    let md = match suite {
        Suite::Datapath => datapath::summary(result),
        Suite::Wire => wire::summary(result),
        Suite::Startup => startup::summary(result),
        _ => control::summary(result),
    };
    fs::write(dir.join(format!("{}.md", suite.name())), &md)?;
    match suite {
        Suite::Datapath => plot::datapath(result, &dir)?,
        Suite::Wire => plot::wire(result, &dir)?,
        Suite::Startup => {}
        _ => plot::control(result, &dir)?,
    }
    Ok(md)
}

/// `summary.md`: every suite's Markdown found under the output directory.
fn write_summary(machine: &Value) -> Result<()> {
    let dir = out_dir();
    let mut summary = String::from("# Palisade benchmark results\n\n");
    summary += &format!(
        "Machine: {} CPUs ({}), kernel {}, mitigations: {}; load average at start {}.\n\n",
        machine["nproc"],
        machine["cpu"].as_str().unwrap_or("?"),
        machine["kernel"].as_str().unwrap_or("?"),
        machine["mitigations"].as_str().unwrap_or("?"),
        machine["load_at_start"].as_str().unwrap_or("?")
    );
    for name in ["datapath", "wire", "control", "startup"] {
        if let Ok(md) = fs::read_to_string(dir.join(format!("{name}.md"))) {
            summary += &md;
            summary += "\n";
        }
    }
    fs::write(dir.join("summary.md"), summary)?;
    Ok(())
}

/// Regenerates Markdown and plots from the JSON files of an earlier run.
fn replot() -> Result<()> {
    let mut machine = machine();
    for suite in [Suite::Datapath, Suite::Wire, Suite::Control] {
        let path = out_dir().join(format!("{}.json", suite.name()));
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        let result: Value = serde_json::from_str(&text)?;
        machine = result["machine"].clone();
        publish(suite, &result)?;
        println!("bench: replotted {}", path.display());
    }
    write_summary(&machine)
}

/// The CPU mitigations that tax calls and returns in JITed programs: two runs
/// of the same object under different ones are not comparable.
const MITIGATIONS: [&str; 3] = ["retbleed", "spectre_v2", "spec_rstack_overflow"];

/// nproc, kernel, CPU model, call/return mitigations and the load at start.
fn machine() -> Value {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mitigations: Vec<String> = MITIGATIONS
        .iter()
        .filter_map(|m| {
            let state = fs::read_to_string(format!("/sys/devices/system/cpu/vulnerabilities/{m}"));
            state.ok().map(|s| format!("{m}: {}", s.trim()))
        })
        .collect();
    let load = fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_default();
    json!({
        "nproc": nproc,
        "kernel": kernel,
        "cpu": cpu,
        "mitigations": mitigations.join("; "),
        "load_at_start": load,
    })
}

/// Median of a sample (sorted copy); 0 for an empty one.
pub fn median(v: &[f64]) -> f64 {
    percentile(v, 50.0)
}

/// Nearest-rank percentile of a sample; 0 for an empty one.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// A number for a table: integers as such, small values with one decimal.
pub fn fmt_num(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}
