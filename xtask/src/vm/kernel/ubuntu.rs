//! Ubuntu 22.04's 5.15 LTS kernel (the kernel of most clusters still on
//! 5.15): one pinned build from the Ubuntu archive, each package checked
//! against the SHA-256 of jammy-updates' index, written down here. Debian has
//! no 5.15 kernel; this machine's apt has no Ubuntu key, so the pinned hashes
//! are what vouches for the download.
//!
//! To move to a newer build: take the `Filename` and `SHA256` of both
//! packages from
//! `http://archive.ubuntu.com/ubuntu/dists/jammy-updates/main/binary-amd64/Packages.gz`.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::{CACHE, Kernel, Staging, remove_others, unpacked};
use crate::exec::{output, run as exec};

const RELEASE: &str = "5.15.0-208-generic";
const VERSION: &str = "5.15.0-208.218";
const POOL: &str = "http://archive.ubuntu.com/ubuntu/pool/main/l/linux";
/// The kernel image and its modules (`linux-modules-extra` has none the VM
/// tier loads). Package name and the SHA-256 of its `.deb`.
const PACKAGES: [(&str, &str); 2] = [
    (
        "linux-image-unsigned-5.15.0-208-generic",
        "dfcb46169cf058ac7b83fba89e2a9adbb3841fb63ba91c9d99418638ec6a4a8b",
    ),
    (
        "linux-modules-5.15.0-208-generic",
        "1afd062d1e68a1fd76c3baf9e2e5b09ff7b87c7f92f6df2e406639537a60d54f",
    ),
];
/// Every cache directory of this distribution's kernels starts so.
const NAME_PREFIX: &str = "ubuntu-linux-";

fn name() -> String {
    format!("{NAME_PREFIX}{RELEASE}_{VERSION}")
}

pub fn cached() -> Option<Kernel> {
    unpacked(name(), RELEASE)
}

/// Makes sure the pinned build is unpacked; downloads it otherwise.
pub fn ensure() -> Result<String> {
    let name = name();
    if cached().is_some() {
        return Ok(format!("kernel {name} already unpacked in {CACHE}"));
    }
    let staging = Staging::new()?;
    for (package, sha256) in PACKAGES {
        let file = format!("{package}_{VERSION}_amd64.deb");
        let deb = staging.dir.join(&file);
        exec(
            Command::new("curl")
                .args(["--fail", "--silent", "--show-error", "--location"])
                .args(["--retry", "3", "--output"])
                .arg(&deb)
                .arg(format!("{POOL}/{file}")),
        )
        .with_context(|| format!("downloading {file} from {POOL}"))?;
        check_sha256(&deb, sha256)?;
        staging.unpack(&deb)?;
    }
    staging.finish(&name, RELEASE)?;
    remove_others(NAME_PREFIX, &name)?;
    Ok(format!(
        "kernel {name} downloaded, checked and unpacked in {CACHE}"
    ))
}

fn check_sha256(file: &Path, want: &str) -> Result<()> {
    let got = output(Command::new("sha256sum").arg(file))
        .and_then(|o| o.split_whitespace().next().map(str::to_string))
        .with_context(|| format!("sha256sum {}", file.display()))?;
    if got != want {
        bail!(
            "{} has SHA-256 {got}, not the pinned {want}: refusing to unpack it",
            file.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_download_whose_hash_is_not_the_pinned_one_is_refused() {
        let file = std::env::temp_dir().join(format!("palisade-sha256-{}", std::process::id()));
        std::fs::write(&file, "abc").expect("write");
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let matching = check_sha256(&file, abc);
        let other = check_sha256(&file, &abc.replace('b', "c"));
        std::fs::remove_file(&file).expect("remove");
        assert!(matching.is_ok(), "{matching:?}");
        let err = other.expect_err("a different hash").to_string();
        assert!(err.contains("refusing to unpack"), "{err}");
    }
}
