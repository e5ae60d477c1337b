//! A private directory on the BPF filesystem for one test's pins.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::Mutex,
};

use anyhow::{Context, Result};
use nix::{
    mount::{MsFlags, mount},
    sys::statfs::{BPF_FS_MAGIC, statfs},
};

use crate::netns::unique_tag;

/// Where the BPF filesystem is mounted.
pub const BPFFS_ROOT: &str = "/sys/fs/bpf";
/// Prefix of every directory the bed creates under [`BPFFS_ROOT`].
pub const BPFFS_PREFIX: &str = "palisade-test-";

/// Serialises the check-and-mount so parallel tests do not stack mounts.
static MOUNT_LOCK: Mutex<()> = Mutex::new(());

/// Makes sure [`BPFFS_ROOT`] is a BPF filesystem, mounting one if not.
pub fn ensure_bpffs() -> Result<()> {
    let _guard = MOUNT_LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let is_bpffs = |p: &str| statfs(p).is_ok_and(|s| s.filesystem_type() == BPF_FS_MAGIC);
    if is_bpffs(BPFFS_ROOT) {
        return Ok(());
    }
    fs::create_dir_all(BPFFS_ROOT).with_context(|| format!("creating {BPFFS_ROOT}"))?;
    mount(
        Some("bpf"),
        BPFFS_ROOT,
        Some("bpf"),
        MsFlags::empty(),
        None::<&str>,
    )
    .with_context(|| format!("mounting bpffs on {BPFFS_ROOT}"))?;
    Ok(())
}

/// `/sys/fs/bpf/palisade-test-<tag>`, created on construction and removed
/// recursively (with everything pinned inside) on drop, also while unwinding.
#[derive(Debug)]
pub struct BpffsDir {
    path: PathBuf,
}

impl BpffsDir {
    /// Mounts bpffs if needed and creates a fresh, uniquely named directory.
    pub fn new() -> Result<Self> {
        ensure_bpffs()?;
        let path = Path::new(BPFFS_ROOT).join(format!("{BPFFS_PREFIX}{}", unique_tag()));
        fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path })
    }

    /// The directory's path, for pinning maps and programs.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BpffsDir {
    fn drop(&mut self) {
        match fs::remove_dir_all(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // Never panic in drop: this may run while unwinding.
            Err(e) => eprintln!("palisade-tests: removing {}: {e}", self.path.display()),
        }
    }
}
