//! The `palisade` binary: parse the command line, set up logging, dispatch.
use std::process::ExitCode;

use clap::Parser;
use palisade_agent::cli::{Cli, Command};
use palisade_agent::{cmd, errors, telemetry};

// See the workspace Cargo.toml: allocation-heavy compiles run ~40% faster.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run(_)) {
        // A command whose output goes into `head` ends quietly when the pipe
        // closes, as command-line tools do; the agent keeps Rust's default
        // (writes to a closed socket fail, they do not kill it).
        // SAFETY: restoring the default disposition of one signal, before
        // any other thread exists.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    if let Err(e) = telemetry::init(&cli.log_level, cli.log_format) {
        eprintln!("palisade: {}", errors::chain(&e));
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("palisade: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => cmd::run::run(args).await.map(|()| ExitCode::SUCCESS),
            Command::Explain(args) => cmd::explain::run(&args).await,
            Command::Status(args) => cmd::status::run(&args).map(|()| ExitCode::SUCCESS),
            Command::Flows(args) => cmd::flows::run(&args).map(|()| ExitCode::SUCCESS),
            Command::Cleanup(args) => cmd::cleanup::run(&args).map(|()| ExitCode::SUCCESS),
            Command::InstallCni(args) => cmd::install_cni::run(&args)
                .await
                .map(|()| ExitCode::SUCCESS),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            // Our errors keep causes apart from their own text; a third
            // party's that also repeats its cause shows it twice, never less.
            eprintln!("palisade: {}", errors::chain(e.as_ref()));
            ExitCode::from(2)
        }
    }
}
