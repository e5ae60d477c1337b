//! `cargo xtask <command>`: everything beyond a plain `cargo build` on stable.
// The agent's allocator, so the benchmarks measure what ships.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod build;
mod demo;
mod exec;
mod image;
mod setup;
mod test;
mod vm;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Palisade build, setup, test and demo automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install the prerequisites (apt packages, nightly rust-src, bpf-linker,
    /// virtme-ng and the 6.1 and 5.15 kernels for the VM tier); idempotent.
    Setup(setup::Options),
    /// Build the eBPF object and the agent (with the object embedded).
    Build(build::Options),
    /// Run every test: unit, kernel (BPF_PROG_TEST_RUN) and end-to-end, then the
    /// kernel and end-to-end tiers again in a VM on the 6.1 and the 5.15 kernel. Needs root.
    Test(test::Options),
    /// Show enforcement on a virtual node: reachability before and after policies. Needs root.
    Demo(demo::Options),
    /// Build the container image (static binaries, from scratch) as an OCI archive.
    Image(image::Options),
    /// Benchmarks (not part of `test`): datapath, wire, control plane. Needs root.
    Bench(bench::Options),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Setup(o) => setup::run(o),
        Command::Build(o) => build::run(o).map(|_| ()),
        Command::Test(o) => test::run(o),
        Command::Demo(o) => demo::run(o),
        Command::Bench(o) => bench::run(o),
        Command::Image(o) => image::run(o),
    }
}
