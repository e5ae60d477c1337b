//! The agent's bpf filesystem directory: where maps and links are pinned, and
//! making sure it is a bpffs.

use std::ffi::CString;
use std::fs;
use std::path::{Path, PathBuf};

use super::error::Error;

const BPF_FS_MAGIC: u64 = 0xcafe4a11;

/// Directory of the pinned maps.
pub fn maps_dir(bpffs: &Path) -> PathBuf {
    bpffs.join("maps")
}

/// Directory of the pinned links.
pub fn links_dir(bpffs: &Path) -> PathBuf {
    bpffs.join("links")
}

/// Makes sure the parent of `dir` lives on a bpf filesystem, mounting one at
/// `/sys/fs/bpf` when that is where it should be and nothing is mounted.
pub(crate) fn ensure_bpffs(dir: &Path) -> Result<(), Error> {
    let bpffs_err = |path: &Path, source| Error::Bpffs {
        path: path.to_path_buf(),
        source,
    };
    let root = dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"))
        .to_path_buf();
    if is_bpffs(&root).map_err(|e| bpffs_err(&root, e))? {
        return Ok(());
    }
    let sys_bpf = Path::new("/sys/fs/bpf");
    if dir.starts_with(sys_bpf) && !is_bpffs(sys_bpf).unwrap_or(false) {
        fs::create_dir_all(sys_bpf).map_err(|e| bpffs_err(sys_bpf, e))?;
        mount_bpffs(sys_bpf).map_err(|e| bpffs_err(sys_bpf, e))?;
        return Ok(());
    }
    Err(bpffs_err(
        &root,
        std::io::Error::other("not on a bpf filesystem (mount -t bpf bpf <dir>)"),
    ))
}

fn is_bpffs(path: &Path) -> std::io::Result<bool> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: `c` is a valid NUL-terminated path and `buf` a writable statfs.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statfs(c.as_ptr(), &mut buf) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // `f_type` is i64 on glibc and u64 on musl.
    Ok(buf.f_type as u64 == BPF_FS_MAGIC)
}

fn mount_bpffs(path: &Path) -> std::io::Result<()> {
    let target =
        CString::new(path.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)?;
    let fstype = c"bpf";
    // SAFETY: all pointers are valid NUL-terminated strings; data is null.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
