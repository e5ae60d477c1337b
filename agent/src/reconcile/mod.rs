//! The loop that keeps the kernel in step with the source:
//! events -> state -> (coalesced) compile -> interfaces -> sync -> attach.
//!
//! Nothing reaches the kernel before the source has delivered its complete
//! initial view. On start the loop adopts what the pinned maps hold (a
//! previous agent's state), so the first apply writes only differences and
//! enforcement never pauses across a restart.
//!
//! The parts, each testable alone: `intake` (which objects the source has
//! listed), `cni` (the plugin's waiting ADDs and reported addresses),
//! `lifecycle` (pure attach/retain/detach decisions), `enforce` (their
//! kernel calls), `publish` (the status), `pass` (one reconcile). The loop
//! runs on tokio's clock only, so its tests pause time.

use std::future::Future;

use tokio::time::{Instant, sleep_until};

use crate::observe::SharedStatus;

mod cni;
mod enforce;
mod error;
mod inputs;
mod intake;
mod interfaces;
mod kernel;
mod lifecycle;
mod pass;
mod publish;
#[cfg(test)]
mod tests;

pub use error::Error;
pub use inputs::{Hooks, Inputs, OnCompiled, OnProgrammed, Settings};
pub use interfaces::{Interfaces, PodInterface};
pub use kernel::Kernel;

use pass::Reconciler;
use publish::Board;

/// Runs until `inputs.shutdown` resolves.
pub async fn run<I: Interfaces, K: Kernel>(
    settings: Settings,
    inputs: Inputs<impl Future<Output = ()>>,
    interfaces: I,
    kernel: K,
    status: SharedStatus,
    hooks: Hooks,
) -> Result<(), Error> {
    let Inputs {
        mut source,
        required,
        mut cni_calls,
        shutdown,
    } = inputs;
    let board = Board::new(status);
    let mut r = Reconciler::new(settings, kernel, interfaces, board, hooks)?;
    r.board.not_ready("waiting for the source's initial state");
    tokio::pin!(shutdown);
    let mut burst_started: Option<Instant> = None;
    let mut cni_open = true;
    // Unenforced pods are retried on a timer of its own: other wake-ups (a
    // CNI call, a waiter's deadline) must not keep pushing it back.
    let mut next_retry = Instant::now() + r.settings.retry;
    loop {
        let cni_deadline = r.next_cni_deadline();
        // Whether something happened that the kernel may need to follow (a
        // CNI waiter's deadline, or a CNI CHECK/DEL, does not).
        let mut dirty = true;
        // Whether to reconcile even if the cluster state did not change.
        let mut forced = true;
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            event = source.recv() => {
                let event = event.ok_or(Error::SourceEnded)?;
                burst_started.get_or_insert_with(Instant::now);
                r.on_event(event);
                forced = false;
            }
            _ = r.interfaces.changed() => {}
            _ = sleep_until(next_retry), if r.has_unenforced() => {
                next_retry = Instant::now() + r.settings.retry;
            }
            call = cni_calls.recv(), if cni_open => {
                cni_open = call.is_some();
                dirty = call.is_some_and(|call| r.on_cni(call));
                if dirty {
                    burst_started.get_or_insert_with(Instant::now);
                }
            }
            _ = sleep_until(cni_deadline.unwrap_or_else(Instant::now)), if cni_deadline.is_some() => {
                dirty = false;
            }
        }
        if !dirty {
            r.answer_cni();
            continue;
        }
        // Coalesce: take whatever else arrives within the window.
        let window = sleep_until(Instant::now() + r.settings.coalesce);
        tokio::pin!(window);
        loop {
            tokio::select! {
                event = source.recv() => {
                    let event = event.ok_or(Error::SourceEnded)?;
                    burst_started.get_or_insert_with(Instant::now);
                    r.on_event(event);
                }
                _ = &mut window => break,
            }
        }
        let waiting = r.intake.waiting_for(&required);
        r.board
            .waiting_for(waiting.iter().map(|k| format!("{k:?}")).collect());
        if !waiting.is_empty() {
            continue;
        }
        if !forced && r.up_to_date() {
            // Only events that changed nothing we keep (status updates, node
            // heartbeats, resyncs): the kernel already has this state.
            burst_started = None;
            r.board.caught_up();
            r.answer_cni();
            continue;
        }
        let plan = r.reconcile().await?;
        next_retry = Instant::now() + r.settings.retry;
        if let Some(started) = burst_started.take() {
            (r.hooks.on_programmed)(started.elapsed(), &plan, &r.cluster);
        }
        r.answer_cni();
    }
}
