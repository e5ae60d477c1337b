//! `cargo xtask bench`: placeholder, filled in by the benchmarks work.

use anyhow::{Result, bail};
use clap::Args;

#[derive(Args)]
pub struct Options {}

pub fn run(_opts: Options) -> Result<()> {
    bail!("benchmarks are not implemented yet")
}
