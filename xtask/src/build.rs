//! Builds the eBPF object (nightly, bpf-linker) and the agent with the object
//! embedded (see `agent/build.rs` for why the object travels this way).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::exec::{cargo, run as exec, workspace_root};
use crate::setup;

#[derive(Args, Default)]
pub struct Options {
    /// Build the agent in release mode.
    #[arg(long)]
    pub release: bool,
}

/// Environment variable through which the agent's build script finds the object.
pub const OBJECT_ENV: &str = "PALISADE_EBPF_OBJECT";

/// Builds the eBPF object and returns its path. Always `--release`: the kernel
/// rejects debug-profile BPF objects.
pub fn build_ebpf() -> Result<PathBuf> {
    setup::ensure()?;
    let flags = [
        "--cfg=bpf_target_arch=\"x86_64\"",
        "-Cdebuginfo=2",
        "-Clink-arg=--btf",
    ]
    .join("\x1f");
    // `rustup run` rather than `cargo +nightly`: under `cargo xtask`, $CARGO is
    // the stable toolchain's cargo itself, which does not understand `+toolchain`.
    let mut cmd = std::process::Command::new("rustup");
    cmd.current_dir(workspace_root());
    exec(
        cmd.args([
            "run",
            "nightly",
            "cargo",
            "build",
            "-p",
            "palisade-ebpf",
            "--release",
        ])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .env("CARGO_ENCODED_RUSTFLAGS", flags)
        .env_remove("RUSTFLAGS")
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER")
        // Running under `cargo xtask` sets these for the stable toolchain.
        .env_remove("CARGO")
        .env_remove("RUSTUP_TOOLCHAIN"),
    )?;
    Ok(target_dir().join("bpfel-unknown-none/release/palisade-ebpf"))
}

/// Cargo's target directory (`CARGO_TARGET_DIR` when set).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => workspace_root().join("target"),
    }
}

/// Builds everything; returns the object path.
pub fn run(opts: Options) -> Result<PathBuf> {
    let object = build_ebpf()?;
    let mut cmd = cargo();
    cmd.args(["build", "-p", "palisade-agent"])
        .env(OBJECT_ENV, &object);
    if opts.release {
        cmd.arg("--release");
    }
    exec(&mut cmd)?;
    Ok(object)
}
