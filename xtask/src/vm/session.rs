//! One VM run of a list of jobs: prepare its directory under `target/vm/`,
//! boot, follow the guest's events, and collect each job's exit and log.
//! A missing kernel is an error; a VM that does not boot or finish is a
//! [`Session::failure`] (with the console's tail printed), never a skipped job.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::guest::{self, Job};
use super::kernel::{CACHE, Kernel, Series};
use super::launch::{self, End};
use super::vng;
use crate::build::target_dir;
use crate::exec::output;

/// Measured here: 25-50 s under TCG on 2 cores, slower while the host builds.
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
/// Console lines shown when the VM fails.
const CONSOLE_TAIL: usize = 60;

pub struct JobResult {
    pub name: String,
    /// None when the job never finished (the VM died or was killed).
    pub exit: Option<i32>,
    /// Guest seconds from start to end.
    pub seconds: Option<f64>,
    pub log: PathBuf,
}

pub struct Session {
    pub kernel: String,
    /// Host seconds until the guest reported it was up.
    pub boot_seconds: f64,
    /// Host seconds for the whole VM run.
    pub total_seconds: f64,
    pub jobs: Vec<JobResult>,
    /// Set when the VM itself failed: no boot, a timeout, a failed setup, an
    /// early exit. The console's tail has been printed.
    pub failure: Option<String>,
}

/// `target/vm/<name>`: `out/` is shared with the guest, `console.log` is vng's output.
pub fn dir(name: &str) -> PathBuf {
    target_dir().join("vm").join(name)
}

/// The kernel and vng, or an error naming what is missing.
fn prerequisites(series: Series) -> Result<Kernel> {
    let kernel = series.cached().with_context(|| {
        format!("no {series} kernel unpacked under {CACHE} (run `cargo xtask setup`)")
    })?;
    if !vng::installed() {
        bail!(
            "virtme-ng {} is not installed (run `cargo xtask setup`)",
            vng::VERSION
        );
    }
    Ok(kernel)
}

/// Boots a kernel of `series`, runs `jobs` in order from `cwd`, and returns
/// what each did.
pub fn run(name: &str, series: Series, cwd: &Path, jobs: &[Job]) -> Result<Session> {
    let kernel = prerequisites(series)?;
    let dir = dir(name);
    let out = dir.join("out");
    // tmp: what a killed vng left last time.
    let tmp = dir.join("tmp");
    for d in [&out, &tmp] {
        if d.exists() {
            fs::remove_dir_all(d).with_context(|| format!("removing {}", d.display()))?;
        }
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let script = out.join("guest.sh");
    fs::write(&script, guest::script(&out, cwd, jobs))
        .with_context(|| format!("writing {}", script.display()))?;
    let console = dir.join("console.log");
    let limits: Duration = jobs.iter().map(|j| j.timeout + guest::KILL_AFTER).sum();
    let spec = launch::Spec {
        kernel: &kernel,
        rwdir: &out,
        exec: format!("sh {}", script.display()),
        console: &console,
        tmp: &tmp,
        events: out.join("events"),
        boot_timeout: BOOT_TIMEOUT,
        // Shutdown and the guest's clock running slow under load get a minute.
        timeout: BOOT_TIMEOUT + limits + Duration::from_secs(60),
    };
    eprintln!(
        "vm: booting {} under qemu (TCG), console in {}",
        kernel.name,
        console.display()
    );
    let mut seen: BTreeMap<String, Progress> = BTreeMap::new();
    let mut setup_failed = false;
    let run = launch::boot(&spec, |line, at| {
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = at.as_secs();
        match words.as_slice() {
            ["ready", _] => eprintln!("vm: [{at:>4} s] guest up"),
            ["setup-failed", _] => setup_failed = true,
            ["start", job, t] => {
                eprintln!("vm: [{at:>4} s] {job}: started");
                seen.entry(job.to_string()).or_default().start = t.parse().ok();
            }
            ["done", job, exit, t] => {
                eprintln!("vm: [{at:>4} s] {job}: exit {exit}");
                if let (Ok(exit), Ok(t)) = (exit.parse(), t.parse()) {
                    seen.entry(job.to_string()).or_default().done = Some((exit, t));
                }
            }
            _ => {}
        }
    });
    let _ = fs::remove_dir_all(&tmp);
    let run = run?;
    let failure = failure(&run, &spec, setup_failed, jobs, &seen, &out);
    let results = jobs
        .iter()
        .map(|j| {
            let p = seen.remove(&j.name).unwrap_or_default();
            JobResult {
                name: j.name.clone(),
                exit: p.done.map(|d| d.0),
                seconds: p.start.zip(p.done).map(|(s, d)| d.1 - s),
                log: out.join(format!("{}.log", j.name)),
            }
        })
        .collect();
    if failure.is_some() {
        print_tail(&console);
        if setup_failed {
            eprintln!("vm: the guest's setup output:");
            print_file(&out.join("setup.log"));
        }
    }
    Ok(Session {
        kernel: kernel.name,
        boot_seconds: run.booted.map_or(f64::NAN, |b| b.as_secs_f64()),
        total_seconds: run.elapsed.as_secs_f64(),
        jobs: results,
        failure: failure.map(|why| format!("{why} (console: {})", console.display())),
    })
}

/// Why the VM run as a whole failed, if it did (a job's own exit aside).
fn failure(
    run: &launch::Run,
    spec: &launch::Spec,
    setup_failed: bool,
    jobs: &[Job],
    seen: &BTreeMap<String, Progress>,
    out: &Path,
) -> Option<String> {
    match run.end {
        End::BootTimedOut => Some(format!(
            "the VM did not come up within {} s",
            spec.boot_timeout.as_secs()
        )),
        End::TimedOut => Some(format!(
            "the VM did not finish within {} s and was killed",
            spec.timeout.as_secs()
        )),
        End::Exited(_) if setup_failed => Some(format!(
            "the guest could not set up (bpffs, modules): see {}",
            out.join("setup.log").display()
        )),
        End::Exited(_) if run.booted.is_none() => {
            Some("the VM exited without the guest ever coming up".to_string())
        }
        End::Exited(status)
            if jobs
                .iter()
                .any(|j| seen.get(&j.name).is_none_or(|p| p.done.is_none())) =>
        {
            Some(format!(
                "the VM ended ({status}) before every job had finished"
            ))
        }
        End::Exited(_) => None,
    }
}

/// A job's events: guest uptime at its start; exit and uptime at its end.
#[derive(Default)]
struct Progress {
    start: Option<f64>,
    done: Option<(i32, f64)>,
}

fn print_tail(console: &Path) {
    let text = fs::read_to_string(console).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(CONSOLE_TAIL);
    eprintln!(
        "vm: last {} lines of {}:",
        lines.len() - from,
        console.display()
    );
    for line in &lines[from..] {
        eprintln!("  | {line}");
    }
}

/// Processes still running that belong to a VM of ours (their command line
/// names our `target/vm`): none, unless a kill failed.
pub fn leftovers() -> Vec<String> {
    let ours = target_dir().join("vm").display().to_string();
    output(Command::new("pgrep").args(["-a", "-f", "qemu|vng|virtme"]))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&ours))
        .map(str::to_string)
        .collect()
}

/// Prints a job's log to stdout.
pub fn print_file(path: &Path) {
    match fs::read_to_string(path) {
        Ok(text) => print!("{text}"),
        Err(e) => eprintln!("vm: cannot read {}: {e}", path.display()),
    }
}
