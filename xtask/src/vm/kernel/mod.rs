//! The kernels the VM tier runs, unpacked under [`CACHE`] and never
//! installed (no boot loader or initramfs hooks run):
//! - [`Series::V6_1`]: Debian 12's 6.1 LTS, the newest apt knows of ([`debian`]);
//! - [`Series::V5_15`]: Ubuntu 22.04's 5.15 LTS, one pinned build checked
//!   against its SHA-256 ([`ubuntu`]).
//!
//! Both are below 6.6, so both run the agent's tc attach mode; 5.15 is also
//! the older verifier.

mod debian;
mod ubuntu;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::exec::run as exec;

/// One directory per unpacked kernel, named `<package>_<version>`. Not under
/// /var/cache: virtme-ng's guest mounts a tmpfs there, and the guest loads
/// its modules from this tree.
pub const CACHE: &str = "/opt/palisade-vm/kernel";

/// A kernel series the VM tier runs, oldest supported first in [`Series::ALL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Series {
    #[value(name = "5.15")]
    V5_15,
    #[value(name = "6.1")]
    V6_1,
}

impl Series {
    /// Every series, in the order the VM tier runs them.
    pub const ALL: [Series; 2] = [Series::V6_1, Series::V5_15];

    pub fn name(self) -> &'static str {
        match self {
            Series::V5_15 => "5.15",
            Series::V6_1 => "6.1",
        }
    }

    /// The unpacked kernel of this series, if any.
    pub fn cached(self) -> Option<Kernel> {
        match self {
            Series::V5_15 => ubuntu::cached(),
            Series::V6_1 => debian::cached(),
        }
    }

    /// Makes sure a kernel of this series is unpacked; returns what it did.
    pub fn ensure(self) -> Result<String> {
        match self {
            Series::V5_15 => ubuntu::ensure(),
            Series::V6_1 => debian::ensure(),
        }
    }
}

impl std::fmt::Display for Series {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An unpacked kernel.
pub struct Kernel {
    /// The cache directory's name, `<package>_<version>`.
    pub name: String,
    pub vmlinuz: PathBuf,
}

/// `CACHE/<name>/boot/vmlinuz-<release>`, if that file is there.
fn unpacked(name: String, release: &str) -> Option<Kernel> {
    let vmlinuz = Path::new(CACHE)
        .join(&name)
        .join(format!("boot/vmlinuz-{release}"));
    vmlinuz.is_file().then_some(Kernel { name, vmlinuz })
}

/// The names of the cache's directories.
fn cached_names() -> Vec<String> {
    fs::read_dir(CACHE)
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A fresh staging directory in the cache; [`Staging::finish`] renames its
/// root into place, so an interrupted run never leaves a half-unpacked
/// kernel behind that `cached` would pick.
struct Staging {
    dir: PathBuf,
}

impl Staging {
    fn new() -> Result<Staging> {
        let dir = Path::new(CACHE).join(".staging");
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        let root = dir.join("root");
        fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        Ok(Staging { dir })
    }

    fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// Unpacks one downloaded package into the root.
    fn unpack(&self, deb: &Path) -> Result<()> {
        exec(Command::new("dpkg").arg("-x").arg(deb).arg(self.root()))
    }

    /// Indexes the modules and moves the root to `CACHE/<name>`.
    fn finish(self, name: &str, release: &str) -> Result<()> {
        // virtme-ng would otherwise write the module index into the cache at every boot.
        exec(
            Command::new("depmod")
                .arg("-b")
                .arg(self.root())
                .arg(release),
        )?;
        let dest = Path::new(CACHE).join(name);
        fs::rename(self.root(), &dest)
            .with_context(|| format!("moving the kernel to {}", dest.display()))?;
        fs::remove_dir_all(&self.dir).with_context(|| format!("removing {}", self.dir.display()))
    }
}

/// Removes the cache's other kernels of one distribution (each is ~400 MB).
fn remove_others(prefix: &str, keep: &str) -> Result<()> {
    for name in cached_names() {
        if name != keep && name.starts_with(prefix) {
            let path = Path::new(CACHE).join(&name);
            fs::remove_dir_all(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}
