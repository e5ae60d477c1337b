//! One module per subcommand; `main.rs` dispatches here.

pub mod cleanup;
pub mod explain;
pub mod flows;
pub mod install_cni;
pub mod run;
pub mod status;

/// A subcommand's failure, with everything needed to act on it in the message.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Resolves on SIGTERM (how Kubernetes stops a container) or SIGINT.
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
