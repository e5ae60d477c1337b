//! `palisade cleanup`: detach every link this agent pinned and remove its pins.

use std::fs;
use std::io;
use std::path::Path;

use aya::programs::links::PinnedLink;

use super::error::Error;
use super::load::{links_dir, maps_dir};

/// What cleanup removed.
#[derive(Debug, Default)]
pub struct CleanupReport {
    /// Links detached (by pin name).
    pub links: Vec<String>,
    /// Map pins removed.
    pub maps: Vec<String>,
}

/// Detaches and unpins every link under `bpffs/links`, removes the map pins and
/// the directory. Safe to run twice; a missing directory is not an error.
pub fn cleanup(bpffs: &Path) -> Result<CleanupReport, Error> {
    let mut report = CleanupReport::default();
    let io_err = |path: &Path, source: io::Error| Error::Bpffs {
        path: path.to_path_buf(),
        source,
    };
    let links = links_dir(bpffs);
    if let Ok(entries) = fs::read_dir(&links) {
        for entry in entries.flatten() {
            let path = entry.path();
            match PinnedLink::from_pin(&path) {
                // Unpinning drops the last reference: the link detaches.
                Ok(pinned) => drop(pinned.unpin().map_err(|e| io_err(&path, e))?),
                Err(_) => fs::remove_file(&path).map_err(|e| io_err(&path, e))?,
            }
            report
                .links
                .push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    let maps = maps_dir(bpffs);
    if let Ok(entries) = fs::read_dir(&maps) {
        for entry in entries.flatten() {
            fs::remove_file(entry.path()).map_err(|e| io_err(&entry.path(), e))?;
            report
                .maps
                .push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    for dir in [&links, &maps, &bpffs.to_path_buf()] {
        match fs::remove_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(dir, e)),
        }
    }
    Ok(report)
}
