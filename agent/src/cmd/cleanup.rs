//! `palisade cleanup`.

use crate::cli::CleanupArgs;
use crate::datapath;

/// Detaches every link and filter of Palisade's and removes the pins.
pub fn run(args: &CleanupArgs) -> Result<(), super::Error> {
    let report = datapath::cleanup(&args.bpffs)?;
    println!(
        "detached {} link(s) and {} tc filter(s), removed {} map pin(s) under {}",
        report.links.len(),
        report.filters.len(),
        report.maps.len(),
        args.bpffs.display()
    );
    Ok(())
}
