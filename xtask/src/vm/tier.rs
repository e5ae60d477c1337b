//! `cargo xtask test`'s VM tier: the kernel and end-to-end test binaries the
//! host built run unchanged in one VM per kernel series (6.1, then 5.15; the
//! guest's root is the host's, shared read-only).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::guest::Job;
use super::kernel::Series;
use super::session::{self, JobResult, Session};
use crate::build::{OBJECT_ENV, target_dir};
use crate::exec::{cargo, workspace_root};

/// The test targets (of palisade-tests) that run in the VM, with a time
/// limit each: about 3x the slowest run measured under TCG (see README).
const TIERS: [(&str, Duration); 2] = [
    ("kernel", Duration::from_secs(600)),
    ("e2e", Duration::from_secs(900)),
];

/// Passed on to the tests when set on the host.
const PASSED_ENV: &[&str] = &[
    "PALISADE_TEST_ATTACH",
    "PALISADE_DIFF_SEED",
    "RUST_BACKTRACE",
    "RUST_LOG",
    "RUST_TEST_THREADS",
];

/// What `cargo test` arguments ask of the VM tier.
#[derive(Debug, PartialEq)]
pub struct Selection {
    pub tiers: Vec<&'static str>,
    /// Arguments before `--`, for `cargo test`.
    pub cargo_args: Vec<String>,
    /// Arguments after `--`, for the test binaries (name filters, ...).
    pub test_args: Vec<String>,
}

/// `cargo test` options that take a value (so the word after them is no
/// test name filter).
const VALUE_OPTIONS: &[&str] = &[
    "-p",
    "--package",
    "--exclude",
    "--test",
    "--bench",
    "--bin",
    "--example",
    "-F",
    "--features",
    "--target",
    "--target-dir",
    "--profile",
    "-j",
    "--jobs",
    "--manifest-path",
    "--message-format",
    "--color",
    "--config",
    "-Z",
];

/// The VM tiers that the arguments of a host `cargo test` run would include:
/// `--test NAME` names them, `-p` without palisade-tests and `--lib`/`--doc`
/// exclude them; a test name filter and the arguments after `--` reach the
/// test binaries unchanged.
pub fn select(args: &[String]) -> Selection {
    let (cargo_args, mut test_args) = match args.iter().position(|a| a == "--") {
        Some(i) => (args[..i].to_vec(), args[i + 1..].to_vec()),
        None => (args.to_vec(), Vec::new()),
    };
    let mut named = Vec::new();
    let mut packages = Vec::new();
    let mut filter = None;
    let mut it = cargo_args.iter().enumerate();
    while let Some((i, a)) = it.next() {
        let (option, inline) = match a.split_once('=') {
            Some((o, v)) if o.starts_with("--") => (o, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        if VALUE_OPTIONS.contains(&option) {
            let value = inline
                .or_else(|| it.next().map(|(_, v)| v.clone()))
                .unwrap_or_default();
            match option {
                "--test" => named.push(value),
                "-p" | "--package" => packages.push(value),
                _ => {}
            }
        } else if !a.starts_with('-') && filter.is_none() {
            filter = Some(i);
        }
    }
    let excluded = (!packages.is_empty() && !packages.iter().any(|p| p == "palisade-tests"))
        || cargo_args.iter().any(|a| a == "--lib" || a == "--doc");
    let tiers = TIERS
        .iter()
        .map(|(t, _)| *t)
        .filter(|t| !excluded && (named.is_empty() || named.iter().any(|n| n == t)))
        .collect();
    let mut cargo_args = cargo_args;
    if let Some(i) = filter {
        test_args.insert(0, cargo_args.remove(i));
    }
    Selection {
        tiers,
        cargo_args,
        test_args,
    }
}

/// Runs the selected tiers in one VM per kernel of `kernels`, in turn (each
/// VM takes both CPUs); fails when any test fails or a VM does, after every
/// kernel had its run.
pub fn run(object: &Path, selection: &Selection, kernels: &[Series]) -> Result<()> {
    if selection.tiers.is_empty() {
        eprintln!("vm: the arguments select no test that runs in the VM");
        return Ok(());
    }
    let binaries = test_binaries(object, selection)?;
    let palisade = target_dir().join("debug/palisade");
    let mut env = vec![
        (OBJECT_ENV.to_string(), object.display().to_string()),
        ("PALISADE_BIN".to_string(), palisade.display().to_string()),
        // Emulation runs the agent's start (program loads, the verifier)
        // about 5x slower than the host: the bed's deadlines stretch alike.
        (
            palisade_tests::wait::TIME_SCALE_ENV.to_string(),
            "5".to_string(),
        ),
    ];
    env.extend(
        PASSED_ENV
            .iter()
            .filter_map(|k| Some((k.to_string(), std::env::var(k).ok()?))),
    );
    let jobs: Vec<Job> = binaries
        .into_iter()
        .map(|(tier, binary)| Job {
            name: tier.to_string(),
            argv: std::iter::once(binary.display().to_string())
                .chain(selection.test_args.iter().cloned())
                .collect(),
            env: env.clone(),
            timeout: TIERS
                .iter()
                .find(|(t, _)| *t == tier)
                .map(|(_, d)| *d)
                .expect("binaries come from TIERS"),
        })
        .collect();
    // Where cargo runs a package's test binaries.
    let cwd = workspace_root().join("tests");
    let mut failed = Vec::new();
    for &series in kernels {
        let outcome = session::run(&format!("test-{series}"), series, &cwd, &jobs)
            .and_then(|session| report(&session));
        if let Err(e) = outcome {
            failed.push(format!("{e:#}"));
        }
    }
    if !failed.is_empty() {
        bail!("{}", failed.join("; "));
    }
    Ok(())
}

/// Prints each tier's output and a summary; fails if any tier failed.
fn report(session: &Session) -> Result<()> {
    let mut failed: Vec<String> = session.failure.iter().cloned().collect();
    for job in &session.jobs {
        if job.exit != Some(0) {
            failed.push(describe_failure(job));
        }
        if job.log.exists() {
            println!("\n== vm ({}): {} ==", session.kernel, job.name);
            session::print_file(&job.log);
        }
    }
    println!("\nvm: kernel {}", session.kernel);
    if session.boot_seconds.is_nan() {
        println!("vm: the guest never came up");
    } else {
        println!("vm: boot {:.0} s", session.boot_seconds);
    }
    for job in session.jobs.iter().filter(|j| j.log.exists()) {
        let counts = Counts::of(&fs::read_to_string(&job.log).unwrap_or_default());
        println!(
            "vm: {}: {} passed, {} failed, {} ignored in {:.0} s (exit {})",
            job.name,
            counts.passed,
            counts.failed.len(),
            counts.ignored,
            job.seconds.unwrap_or(f64::NAN),
            job.exit.map_or("none".to_string(), |e| e.to_string())
        );
        for name in &counts.failed {
            println!("vm:   FAILED {name}");
        }
    }
    println!("vm: whole VM run {:.0} s", session.total_seconds);
    if !failed.is_empty() {
        bail!("VM tier on {}: {}", session.kernel, failed.join("; "));
    }
    Ok(())
}

fn describe_failure(job: &JobResult) -> String {
    match job.exit {
        // timeout(1): 124 when the limit hit, 137 when it had to SIGKILL.
        Some(124 | 137) => format!("{} ran out of time", job.name),
        Some(code) => format!("{} failed (exit {code})", job.name),
        None => format!("{} did not finish", job.name),
    }
}

/// Test outcomes counted from libtest's output.
#[derive(Debug, Default, PartialEq)]
struct Counts {
    passed: usize,
    failed: Vec<String>,
    ignored: usize,
}

impl Counts {
    fn of(log: &str) -> Counts {
        let mut c = Counts::default();
        for line in log.lines() {
            let Some(rest) = line.strip_prefix("test ") else {
                continue;
            };
            if rest.ends_with(" ... ok") {
                c.passed += 1;
            } else if let Some(name) = rest.strip_suffix(" ... FAILED") {
                c.failed.push(name.to_string());
            } else if rest.contains(" ... ignored") {
                c.ignored += 1;
            }
        }
        c
    }
}

/// The executables of the selected test targets, built like the host run
/// builds them (same packages and features, so nothing is rebuilt).
fn test_binaries(object: &Path, selection: &Selection) -> Result<Vec<(&'static str, PathBuf)>> {
    let mut cmd = cargo();
    cmd.args(["test", "--workspace", "--exclude", "palisade-ebpf"])
        .args(["--no-run", "--message-format=json-render-diagnostics"])
        .args(&selection.cargo_args)
        .env(OBJECT_ENV, object);
    for tier in &selection.tiers {
        cmd.args(["--test", tier]);
    }
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", out.status);
    }
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let target = &msg["target"];
        let is_test = target["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "test"));
        let in_tests = msg["package_id"]
            .as_str()
            .is_some_and(|p| p.contains("palisade-tests"));
        if msg["reason"] != "compiler-artifact" || !is_test || !in_tests {
            continue;
        }
        let (Some(name), Some(exe)) = (target["name"].as_str(), msg["executable"].as_str()) else {
            continue;
        };
        if let Some(tier) = selection.tiers.iter().find(|t| **t == name) {
            found.push((*tier, PathBuf::from(exe)));
        }
    }
    for tier in &selection.tiers {
        if !found.iter().any(|(t, _)| t == tier) {
            bail!("cargo built no `{tier}` test binary in palisade-tests");
        }
    }
    found.sort_by_key(|(t, _)| selection.tiers.iter().position(|s| s == t));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn select_takes_both_tiers_and_the_filter_after_the_separator() {
        let s = select(&args("-- restart --nocapture"));
        assert_eq!(s.tiers, ["kernel", "e2e"]);
        assert!(s.cargo_args.is_empty());
        assert_eq!(s.test_args, args("restart --nocapture"));
    }

    #[test]
    fn select_hands_a_test_name_filter_to_the_binaries() {
        let s = select(&args("--test e2e restart -- --nocapture"));
        assert_eq!(s.tiers, ["e2e"]);
        assert_eq!(s.cargo_args, args("--test e2e"));
        assert_eq!(s.test_args, args("restart --nocapture"));
        assert_eq!(
            select(&args("--test e2e e2e")).cargo_args,
            args("--test e2e")
        );
    }

    #[test]
    fn select_keeps_only_named_tiers() {
        assert_eq!(select(&args("--test e2e")).tiers, ["e2e"]);
        assert_eq!(select(&args("--test=kernel --test bed")).tiers, ["kernel"]);
        assert!(select(&args("--test conformance")).tiers.is_empty());
    }

    #[test]
    fn select_excludes_the_vm_when_another_package_or_the_lib_is_chosen() {
        assert!(select(&args("-p palisade-agent")).tiers.is_empty());
        assert!(select(&args("--lib")).tiers.is_empty());
        assert_eq!(select(&args("-p palisade-tests")).tiers, ["kernel", "e2e"]);
    }

    #[test]
    fn counts_read_libtest_lines() {
        let log =
            "running 3 tests\ntest a::b ... ok\ntest a::c ... FAILED\ntest d ... ignored, slow\n";
        assert_eq!(
            Counts::of(log),
            Counts {
                passed: 1,
                failed: vec!["a::c".into()],
                ignored: 1
            }
        );
    }
}
