//! Debian 12's 6.1 LTS kernel: the newest `linux-image-6.1.0-N-amd64` in
//! apt's lists, fetched with `apt-get download` (apt checks its signature).

use std::fs;
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::{CACHE, Kernel, Staging, cached_names, remove_others, unpacked};
use crate::exec::{output, run as exec};

/// Generic flavour only: `-cloud` has no 9p, which the VM's root needs.
const PACKAGE_PREFIX: &str = "linux-image-6.1.0-";
const PACKAGE_SUFFIX: &str = "-amd64";

/// The ABI number of a package name (`linux-image-6.1.0-57-amd64` -> 57).
fn abi(package: &str) -> Option<u32> {
    package
        .strip_prefix(PACKAGE_PREFIX)?
        .strip_suffix(PACKAGE_SUFFIX)?
        .parse()
        .ok()
}

/// The newest unpacked 6.1 kernel in the cache, with its ABI number.
fn newest_cached() -> Option<(Kernel, u32)> {
    cached_names()
        .into_iter()
        .filter_map(|name| {
            let package = name.split_once('_')?.0.to_string();
            let abi = abi(&package)?;
            let release = package.strip_prefix("linux-image-")?;
            Some((unpacked(name.clone(), release)?, abi))
        })
        .max_by_key(|(_, abi)| *abi)
}

pub fn cached() -> Option<Kernel> {
    newest_cached().map(|(k, _)| k)
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

/// Makes sure the newest 6.1 kernel apt knows of is unpacked. When the cache
/// already holds one at least as new as the newest in apt's lists, nothing is
/// fetched (not even the lists).
pub fn ensure() -> Result<String> {
    let current = newest_cached();
    if let Some((k, cached_abi)) = &current
        && newest_package().and_then(|p| abi(&p)) <= Some(*cached_abi)
    {
        return Ok(format!("kernel {} already unpacked in {CACHE}", k.name));
    }
    exec(Command::new("apt-get").args(["update", "-qq"]))?;
    let Some(package) = newest_package() else {
        bail!("apt knows no {PACKAGE_PREFIX}*{PACKAGE_SUFFIX} package (is this Debian 12?)");
    };
    let version = candidate(&package)?;
    let name = format!("{package}_{version}");
    if current.as_ref().is_some_and(|(k, _)| k.name == name) {
        return Ok(format!("kernel {name} already unpacked in {CACHE}"));
    }
    let staging = Staging::new()?;
    exec(
        Command::new("apt-get")
            // The download lands in a root-owned directory that apt's `_apt`
            // user could not write to.
            .args(["download", "-qq", "-o", "APT::Sandbox::User=root"])
            .arg(format!("{package}={version}"))
            .current_dir(&staging.dir),
    )?;
    let deb = fs::read_dir(&staging.dir)?
        .filter_map(|e| Some(e.ok()?.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get download left no .deb in {}", staging.dir.display()))?;
    staging.unpack(&deb)?;
    staging.finish(&name, package.trim_start_matches("linux-image-"))?;
    remove_others(PACKAGE_PREFIX, &name)?;
    Ok(format!("kernel {name} downloaded and unpacked in {CACHE}"))
}
