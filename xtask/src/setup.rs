//! Installs what `../shared/TOOLCHAIN.md`-verified builds need, skipping what is
//! already there: apt packages, nightly with rust-src, bpf-linker 0.13.0
//! against LLVM 22; and for the VM tier qemu, virtme-ng and the 6.1 and 5.15 kernels
//! ([`crate::vm`]). A second run only checks.

use std::process::Command;

use anyhow::{Result, bail};
use clap::Args;

use crate::exec::{output, run as exec, succeeds};
use crate::vm;

/// Debian packages: LLVM 22 for bpf-linker, tools for the test bed and benches.
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "bpftool",
    "iproute2",
    "iputils-ping",
    "nftables",
];
/// Debian packages the VM tier needs: virtme-ng runs qemu, busybox, depmod
/// and udevd (without which it never finds its output ports); curl fetches
/// the 5.15 kernel.
const VM_APT_PACKAGES: &[&str] = &[
    "curl",
    "qemu-system-x86",
    "busybox-static",
    "kmod",
    "udev",
    "python3-venv",
];
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

#[derive(Args)]
pub struct Options {
    /// Only check; print what is missing and fail instead of installing.
    #[arg(long)]
    check: bool,
}

/// What is missing, in install order.
fn missing() -> Vec<String> {
    let mut out = Vec::new();
    let pkgs = not_installed(APT_PACKAGES);
    if !pkgs.is_empty() {
        out.push(format!("apt packages: {}", pkgs.join(" ")));
    }
    if !succeeds(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])) {
        out.push("rust toolchain: nightly".into());
    }
    let components = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))
    .unwrap_or_default();
    if !components.lines().any(|l| l.starts_with("rust-src")) {
        out.push("rustup component: rust-src (nightly)".into());
    }
    let linker = output(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if !linker.contains(BPF_LINKER_VERSION) {
        out.push(format!("bpf-linker {BPF_LINKER_VERSION} (LLVM 22)"));
    }
    out
}

/// The VM tier's prerequisites that are missing.
fn missing_vm() -> Vec<String> {
    let mut out = Vec::new();
    let pkgs = not_installed(VM_APT_PACKAGES);
    if !pkgs.is_empty() {
        out.push(format!("apt packages: {}", pkgs.join(" ")));
    }
    if !vm::vng::installed() {
        out.push(format!("virtme-ng {}", vm::vng::VERSION));
    }
    for series in vm::kernel::Series::ALL {
        if series.cached().is_none() {
            out.push(format!("a {series} kernel under {}", vm::kernel::CACHE));
        }
    }
    out
}

fn not_installed<'a>(pkgs: &[&'a str]) -> Vec<&'a str> {
    pkgs.iter().copied().filter(|p| !installed(p)).collect()
}

fn installed(pkg: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_some_and(|s| s.ends_with("install ok installed"))
}

/// Installs whatever is missing; errors say what could not be installed.
pub fn ensure() -> Result<()> {
    let todo = missing();
    if todo.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing {}", todo.join("; "));
    apt_install(APT_PACKAGES)?;
    if !succeeds(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])) {
        exec(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    exec(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    let linker = output(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if !linker.contains(BPF_LINKER_VERSION) {
        exec(
            Command::new("cargo")
                .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
                .args([
                    "--no-default-features",
                    "--features",
                    "llvm-22",
                    "--locked",
                    "--force",
                ])
                .env("LLVM_PREFIX", LLVM_PREFIX),
        )?;
    }
    let still = missing();
    if !still.is_empty() {
        bail!("setup could not install: {}", still.join("; "));
    }
    Ok(())
}

/// Installs whatever `pkgs` lacks.
fn apt_install(pkgs: &[&str]) -> Result<()> {
    let pkgs = not_installed(pkgs);
    if pkgs.is_empty() {
        return Ok(());
    }
    exec(Command::new("apt-get").args(["update", "-qq"]))?;
    exec(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&pkgs)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// Installs the VM tier's prerequisites, printing what it did for each.
fn ensure_vm() -> Result<()> {
    let pkgs = not_installed(VM_APT_PACKAGES);
    if pkgs.is_empty() {
        println!("setup: vm: apt packages already installed");
    } else {
        apt_install(&pkgs)?;
        println!("setup: vm: installed {}", pkgs.join(" "));
    }
    println!("setup: vm: {}", vm::vng::ensure()?);
    for series in vm::kernel::Series::ALL {
        println!("setup: vm: {}", series.ensure()?);
    }
    let still = missing_vm();
    if !still.is_empty() {
        bail!("setup could not install: {}", still.join("; "));
    }
    Ok(())
}

pub fn run(opts: Options) -> Result<()> {
    if opts.check {
        let mut todo = missing();
        todo.extend(missing_vm());
        if !todo.is_empty() {
            bail!(
                "missing prerequisites (run `cargo xtask setup`): {}",
                todo.join("; ")
            );
        }
        println!("setup: everything is installed");
        return Ok(());
    }
    ensure()?;
    ensure_vm()?;
    println!("setup: everything is installed");
    Ok(())
}
