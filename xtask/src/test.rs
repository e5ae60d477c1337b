//! `cargo xtask test`: every host tier, a second pass of the end-to-end tier
//! with the agent attaching by netlink tc filters, then the VM tier on
//! the 6.1 and 5.15 kernels ([`crate::vm::tier`]); and a check that nothing was left behind.

use std::path::Path;

use anyhow::{Result, bail};
use clap::Args;

use crate::build::{OBJECT_ENV, build_ebpf};
use crate::exec::{cargo, require_root, run as exec};
use crate::vm;

#[derive(Args)]
pub struct Options {
    /// Skip the VM tier (the kernel and end-to-end tests on the 6.1 and 5.15 kernels).
    #[arg(long, conflicts_with = "vm_only")]
    no_vm: bool,
    /// Run only the VM tier.
    #[arg(long)]
    vm_only: bool,
    /// Run the VM tier on this kernel series only (repeat for several;
    /// default: every series, 6.1 then 5.15).
    #[arg(long = "kernel", value_name = "SERIES", conflicts_with = "no_vm")]
    kernels: Vec<vm::kernel::Series>,
    /// Extra arguments for `cargo test` (e.g. a test name filter after `--`);
    /// the VM tier honours `--test NAME` and everything after `--`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

pub fn run(opts: Options) -> Result<()> {
    require_root("cargo xtask test")?;
    let object = build_ebpf()?;
    // The end-to-end tiers drive the `palisade` binary, which no test target
    // depends on: build it first, or a filtered run would test a stale one.
    exec(
        cargo()
            .args(["build", "-p", "palisade-agent", "--bins"])
            .env(OBJECT_ENV, &object),
    )?;
    let mut failures = Vec::new();
    if !opts.vm_only
        && let Err(e) = host(&object, &opts.args)
    {
        failures.push(format!("{e:#}"));
    }
    if !opts.no_vm {
        let selection = vm::tier::select(&opts.args);
        let kernels = if opts.kernels.is_empty() {
            vm::kernel::Series::ALL.to_vec()
        } else {
            opts.kernels.clone()
        };
        if let Err(e) = vm::tier::run(&object, &selection, &kernels) {
            failures.push(format!("{e:#}"));
        }
        // Also after a failing run: nothing of the VM may outlive it.
        let left = vm::session::leftovers();
        if !left.is_empty() {
            failures.push(format!("VM processes left running: {}", left.join("; ")));
        }
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("\n"));
    }
    Ok(())
}

/// The host tiers, then the tc pass; then the leftover check.
fn host(object: &Path, args: &[String]) -> Result<()> {
    let stale = palisade_tests::netns::sweep_leftovers()?;
    if !stale.is_empty() {
        eprintln!(
            "test: removed leftovers of an earlier run: {}",
            stale.join(", ")
        );
    }
    let mut result = exec(
        cargo()
            .args(["test", "--workspace", "--exclude", "palisade-ebpf"])
            .args(args)
            .env(OBJECT_ENV, object),
    );
    if result.is_ok() {
        result = tc_rerun(object, args);
    }
    // Only what this suite's processes (all ended now) left: other test runs
    // on the machine may be live.
    let left = palisade_tests::netns::orphaned_leftovers();
    if !left.is_empty() {
        let _ = palisade_tests::netns::sweep_leftovers();
        bail!("the test suite left these behind: {}", left.join(", "));
    }
    result
}

/// The end-to-end tier again, attaching with netlink tc filters (the host
/// has tcx, so `auto` chose tcx the first time). Skipped when the caller
/// filtered the run: they asked for particular tests.
fn tc_rerun(object: &Path, args: &[String]) -> Result<()> {
    if !args.is_empty() {
        eprintln!(
            "test: arguments given; not re-running the end-to-end tier with PALISADE_TEST_ATTACH=tc"
        );
        return Ok(());
    }
    eprintln!("test: the end-to-end tier again with PALISADE_TEST_ATTACH=tc");
    exec(
        cargo()
            .args(["test", "--workspace", "--exclude", "palisade-ebpf"])
            .args(["--test", "e2e"])
            .env(OBJECT_ENV, object)
            .env("PALISADE_TEST_ATTACH", "tc"),
    )
}
