//! `palisade cleanup`: detach every link this agent pinned, remove Palisade's
//! tc filters from every interface of this network namespace, and remove the
//! pins.

use std::fs;
use std::io;
use std::path::Path;

use aya::programs::links::PinnedLink;

use super::bpffs::{links_dir, maps_dir};
use super::error::Error;
use super::object::{PROG_POD_EGRESS, PROG_POD_INGRESS};
use super::tc::{self, hook_name};

/// What cleanup removed.
#[derive(Debug, Default)]
pub struct CleanupReport {
    /// Links detached (by pin name).
    pub links: Vec<String>,
    /// tc filters removed (`<interface> <hook>`).
    pub filters: Vec<String>,
    /// Map pins removed.
    pub maps: Vec<String>,
}

/// Detaches and unpins every link under `bpffs/links`, removes Palisade's
/// filters (and older builds' filters on these maps) from every interface,
/// removes the map pins and the directory. Safe to run twice; a missing
/// directory is not an error.
pub fn cleanup(bpffs: &Path) -> Result<CleanupReport, Error> {
    let mut report = CleanupReport {
        filters: remove_filters(bpffs)?,
        ..CleanupReport::default()
    };
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

/// Removes every filter of Palisade's from the interfaces of this network
/// namespace: its own slot, and older builds' filters that use its maps.
fn remove_filters(bpffs: &Path) -> Result<Vec<String>, Error> {
    let ours = tc::pinned_map_ids(bpffs);
    let mut removed = Vec::new();
    for (ifindex, interface) in tc::interfaces() {
        for (program, hook) in [
            (PROG_POD_EGRESS, aya::programs::TcAttachType::Ingress),
            (PROG_POD_INGRESS, aya::programs::TcAttachType::Egress),
        ] {
            let filter_err = |source| Error::Filter {
                interface: interface.clone(),
                hook: hook_name(hook),
                source,
            };
            let filters = match tc::filters(ifindex, hook) {
                Ok(f) => f,
                // Gone since it was listed.
                Err(e) if e.raw_os_error() == Some(libc::ENODEV) => continue,
                Err(e) => return Err(filter_err(e)),
            };
            for f in filters {
                if f.is_palisade(program) || f.is_legacy_palisade(&ours, tc::program_map_ids) {
                    tc::delete(&interface, hook, f.priority, f.handle)
                        .map_err(|e| filter_err(io::Error::other(e)))?;
                    removed.push(format!("{interface} {}", hook_name(hook)));
                }
            }
        }
    }
    Ok(removed)
}
