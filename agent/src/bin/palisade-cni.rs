//! `palisade-cni`: the chained CNI plugin (see `palisade_agent::cni::plugin`).
use std::io::Read;
use std::process::ExitCode;

use palisade_agent::cni::plugin;

fn main() -> ExitCode {
    let env = plugin::Env::from_process();
    let mut stdin = String::new();
    if env.command != "VERSION" {
        let _ = std::io::stdin().read_to_string(&mut stdin);
    }
    let (out, ok) = plugin::run(&env, &stdin, plugin::call_agent);
    if !out.is_null() {
        println!("{out}");
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
