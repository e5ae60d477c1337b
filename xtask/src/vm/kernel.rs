//! Debian's 6.1 LTS kernel, downloaded with apt and unpacked with `dpkg -x`
//! under [`CACHE`]: never installed, so no boot loader or initramfs hooks run.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::exec::{output, run as exec};

/// The kernel series the VM tier runs: the oldest one Palisade supports.
pub const SERIES: &str = "6.1";
/// One directory per unpacked package, named `<package>_<version>`. Not
/// under /var/cache: virtme-ng's guest mounts a tmpfs there, and the guest
/// loads its modules from this tree.
pub const CACHE: &str = "/opt/palisade-vm/kernel";
/// Generic flavour only: `-cloud` has no 9p, which the VM's root needs.
const PACKAGE_PREFIX: &str = "linux-image-6.1.0-";
const PACKAGE_SUFFIX: &str = "-amd64";

/// An unpacked kernel.
pub struct Kernel {
    /// `<package>_<version>`, e.g. `linux-image-6.1.0-57-amd64_6.1.192-3`.
    pub name: String,
    pub vmlinuz: PathBuf,
    abi: u32,
}

/// The ABI number of a package name (`linux-image-6.1.0-57-amd64` -> 57).
fn abi(package: &str) -> Option<u32> {
    package
        .strip_prefix(PACKAGE_PREFIX)?
        .strip_suffix(PACKAGE_SUFFIX)?
        .parse()
        .ok()
}

/// The newest unpacked kernel in the cache, if any.
pub fn cached() -> Option<Kernel> {
    fs::read_dir(CACHE)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|name| {
            let package = name.split_once('_')?.0;
            let abi = abi(package)?;
            let release = package.strip_prefix("linux-image-")?;
            let vmlinuz = Path::new(CACHE)
                .join(&name)
                .join(format!("boot/vmlinuz-{release}"));
            vmlinuz.is_file().then_some(Kernel { name, vmlinuz, abi })
        })
        .max_by_key(|k| k.abi)
}

/// The newest `linux-image-6.1.0-N-amd64` in apt's package lists.
fn newest_package() -> Option<String> {
    let pattern = format!(
        "^{}[0-9]+{}$",
        PACKAGE_PREFIX.replace('.', "\\."),
        PACKAGE_SUFFIX
    );
    let found = output(Command::new("apt-cache").args(["search", "--names-only", &pattern]))?;
    found
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|p| Some((abi(p)?, p.to_string())))
        .max_by_key(|(abi, _)| *abi)
        .map(|(_, p)| p)
}

/// apt's candidate version of a package.
fn candidate(package: &str) -> Result<String> {
    let policy = output(Command::new("apt-cache").args(["policy", package]))
        .with_context(|| format!("apt-cache policy {package}"))?;
    policy
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(|v| v.trim().to_string())
        .filter(|v| v != "(none)")
        .with_context(|| format!("apt has no candidate version of {package}"))
}

/// Makes sure the newest 6.1 kernel apt knows of is unpacked; returns what it
/// did. When the cache already holds a kernel at least as new as the newest in
/// apt's lists, nothing is fetched (not even the lists).
pub fn ensure() -> Result<String> {
    let current = cached();
    if let Some(k) = &current
        && newest_package().and_then(|p| abi(&p)) <= Some(k.abi)
    {
        return Ok(format!("kernel {} already unpacked in {CACHE}", k.name));
    }
    exec(Command::new("apt-get").args(["update", "-qq"]))?;
    let Some(package) = newest_package() else {
        bail!("apt knows no {PACKAGE_PREFIX}*{PACKAGE_SUFFIX} package (is this Debian 12?)");
    };
    let version = candidate(&package)?;
    let name = format!("{package}_{version}");
    if current.as_ref().is_some_and(|k| k.name == name) {
        return Ok(format!("kernel {name} already unpacked in {CACHE}"));
    }
    unpack(&package, &version, &name)?;
    remove_others(&name)?;
    Ok(format!("kernel {name} downloaded and unpacked in {CACHE}"))
}

/// Downloads and unpacks into a staging directory, then renames it into
/// place, so an interrupted run never leaves a half-unpacked kernel behind
/// that [`cached`] would pick.
fn unpack(package: &str, version: &str, name: &str) -> Result<()> {
    let staging = Path::new(CACHE).join(".staging");
    if staging.exists() {
        fs::remove_dir_all(&staging).with_context(|| format!("removing {}", staging.display()))?;
    }
    let root = staging.join("root");
    fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    exec(
        Command::new("apt-get")
            // The download lands in a root-owned directory that apt's `_apt`
            // user could not write to.
            .args(["download", "-qq", "-o", "APT::Sandbox::User=root"])
            .arg(format!("{package}={version}"))
            .current_dir(&staging),
    )?;
    let deb = fs::read_dir(&staging)?
        .filter_map(|e| Some(e.ok()?.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get download left no .deb in {}", staging.display()))?;
    exec(Command::new("dpkg").arg("-x").arg(&deb).arg(&root))?;
    let release = package.trim_start_matches("linux-image-");
    // virtme-ng would otherwise write the module index into the cache at every boot.
    exec(Command::new("depmod").arg("-b").arg(&root).arg(release))?;
    let dest = Path::new(CACHE).join(name);
    fs::rename(&root, &dest).with_context(|| format!("moving the kernel to {}", dest.display()))?;
    fs::remove_dir_all(&staging).with_context(|| format!("removing {}", staging.display()))?;
    Ok(())
}

/// Removes every other unpacked kernel (each is ~400 MB).
fn remove_others(keep: &str) -> Result<()> {
    for entry in fs::read_dir(CACHE)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name != keep && name.starts_with(PACKAGE_PREFIX) {
            fs::remove_dir_all(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}
