//! virtme-ng (`vng`), pinned, in a venv of its own.
//!
//! A venv rather than `pip install --break-system-packages`: Debian 12's
//! Python is externally managed, and a venv neither overwrites packages apt
//! owns nor breaks when apt upgrades them; removing the directory undoes it.

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use anyhow::{Result, bail};

use crate::exec::{output, run as exec};

pub const VERSION: &str = "1.42";
const VENV: &str = "/opt/palisade-vm/venv";
/// Debian's interpreter, not whichever `python3` comes first on PATH (a
/// pyenv shim, say): the venv must not depend on a user's shell setup.
const PYTHON: &str = "/usr/bin/python3";

fn bin(name: &str) -> std::path::PathBuf {
    Path::new(VENV).join("bin").join(name)
}

/// Whether the pinned virtme-ng answers from the venv.
pub fn installed() -> bool {
    output(Command::new(bin("vng")).arg("--version"))
        .is_some_and(|v| v == format!("virtme-ng {VERSION}"))
}

/// Installs the pinned virtme-ng unless it is there; returns what it did.
pub fn ensure() -> Result<String> {
    if installed() {
        return Ok(format!("virtme-ng {VERSION} already in {VENV}"));
    }
    if !bin("pip").exists() {
        exec(Command::new(PYTHON).args(["-m", "venv", "--clear", VENV]))?;
    }
    exec(Command::new(bin("pip")).args(["install", "--quiet", &format!("virtme-ng=={VERSION}")]))?;
    if !installed() {
        bail!("virtme-ng {VERSION} installed into {VENV}, but its vng does not run");
    }
    Ok(format!("virtme-ng {VERSION} installed in {VENV}"))
}

/// `vng`, with the venv first on PATH: it runs its helpers (`virtme-run`) by name.
pub fn command() -> Command {
    let mut path = OsString::from(Path::new(VENV).join("bin"));
    if let Some(rest) = std::env::var_os("PATH") {
        path.push(":");
        path.push(rest);
    }
    let mut cmd = Command::new(bin("vng"));
    cmd.env("PATH", path);
    cmd
}
