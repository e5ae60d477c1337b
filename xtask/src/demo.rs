//! `cargo xtask demo`: placeholder until the agent can run a manifest directory.

use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct Options {}

pub fn run(_opts: Options) -> Result<()> {
    crate::exec::require_root("cargo xtask demo")?;
    let _object = crate::build::run(crate::build::Options::default())?;
    Ok(())
}
