//! One module per subcommand; `main.rs` dispatches here.

pub mod cleanup;
pub mod explain;
pub mod flows;
pub mod install_cni;
pub mod run;
pub mod status;

/// A subcommand's failure, with everything needed to act on it in the message.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
