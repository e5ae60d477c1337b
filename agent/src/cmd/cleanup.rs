//! `palisade cleanup`.

use crate::cli::CleanupArgs;
use crate::datapath;

/// Detaches everything under the bpffs directory and removes the pins.
pub fn run(args: &CleanupArgs) -> Result<(), super::Error> {
    let report = datapath::cleanup(&args.bpffs)?;
    println!(
        "detached {} link(s), removed {} map pin(s) under {}",
        report.links.len(),
        report.maps.len(),
        args.bpffs.display()
    );
    Ok(())
}
