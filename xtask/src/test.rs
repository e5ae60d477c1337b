//! `cargo xtask test`: every tier, then a check that nothing was left behind.

use anyhow::{Result, bail};
use clap::Args;

use crate::build::{OBJECT_ENV, build_ebpf};
use crate::exec::{cargo, require_root, run as exec};

#[derive(Args)]
pub struct Options {
    /// Extra arguments for `cargo test` (e.g. a test name filter after `--`).
    #[arg(trailing_var_arg = true)]
    args: Vec<String>,
}

pub fn run(opts: Options) -> Result<()> {
    require_root("cargo xtask test")?;
    let object = build_ebpf()?;
    let stale = palisade_tests::netns::sweep_leftovers()?;
    if !stale.is_empty() {
        eprintln!(
            "test: removed leftovers of an earlier run: {}",
            stale.join(", ")
        );
    }
    // The end-to-end tiers drive the `palisade` binary, which no test target
    // depends on: build it first, or a filtered run would test a stale one.
    exec(
        cargo()
            .args(["build", "-p", "palisade-agent", "--bins"])
            .env(OBJECT_ENV, &object),
    )?;
    let result = exec(
        cargo()
            .args(["test", "--workspace", "--exclude", "palisade-ebpf"])
            .args(&opts.args)
            .env(OBJECT_ENV, &object),
    );
    let left = palisade_tests::netns::leftovers();
    if !left.is_empty() {
        let _ = palisade_tests::netns::sweep_leftovers();
        bail!("the test suite left these behind: {}", left.join(", "));
    }
    result
}
