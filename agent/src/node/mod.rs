//! Which host-side interface carries which local pod.
//!
//! The agent runs in the node's network namespace and learns, for each local
//! pod IP, the device its traffic passes through on the node, using routing
//! netlink only:
//!
//! - routed CNIs (Calico-style): the /32 or /128 route to the pod names its
//!   host-side veth;
//! - bridge CNIs (`bridge` plugin, flannel): the route names a bridge; the
//!   neighbour entry for the pod IP gives its MAC and the bridge FDB entry for
//!   that MAC gives the port (the veth).
//!
//! [`resolve`] holds the pure rules over a [`Snapshot`]; [`netlink`] takes
//! snapshots and subscribes to changes; [`Discovery`] ties them together for
//! the agent, which re-resolves (coalesced) whenever [`Discovery::changes`]
//! fires.

mod convert;
mod error;
pub mod netlink;
pub mod resolve;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::marker::PhantomData;
use std::net::IpAddr;
use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;

pub use error::Error;
pub use netlink::{Change, Netlink, Subscription};
pub use resolve::{Interface, Snapshot, Unresolved, resolve_pod, resolve_pods};

/// How long [`Discovery::changes`] keeps collecting after the first
/// notification of a burst.
pub const DEFAULT_COALESCE_WINDOW: Duration = Duration::from_millis(50);

/// A coalesced burst of change notifications.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeSet {
    /// Links that were deleted during the burst (by ifindex). A link stays
    /// listed even if a new link with the same ifindex appeared afterwards:
    /// whatever was attached to the old one is gone.
    pub removed_links: BTreeSet<u32>,
    /// How many notifications the burst held.
    pub events: usize,
    /// Whether the kernel dropped notifications; the caller must resync
    /// everything (it re-snapshots anyway, but a removed link may be missing
    /// from `removed_links`).
    pub overrun: bool,
}

impl ChangeSet {
    fn record(&mut self, change: Change) {
        self.events += 1;
        match change {
            Change::LinkRemoved { ifindex } => {
                self.removed_links.insert(ifindex);
            }
            Change::Overrun => self.overrun = true,
            Change::Link { .. } | Change::Route | Change::Neighbour => {}
        }
    }
}

/// Pause before [`Discovery::changes`] reports a failure to reopen the
/// notification socket, so a caller that simply loops does not spin.
const REOPEN_BACKOFF: Duration = Duration::from_secs(1);

/// Node interface discovery for pods keyed by `K` (the agent's pod
/// reference): snapshots, resolution and coalesced change notifications, all
/// in the network namespace of the thread that created it.
pub struct Discovery<K> {
    netlink: Netlink,
    subscription: Subscription,
    window: Duration,
    /// The burst being collected and when its window closes; kept here so
    /// [`Discovery::changes`] loses nothing when its future is dropped.
    pending: Option<(ChangeSet, Instant)>,
    _key: PhantomData<fn() -> K>,
}

impl<K> fmt::Debug for Discovery<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Discovery")
            .field("window", &self.window)
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

impl<K: Ord + Clone> Discovery<K> {
    /// Opens the request and notification sockets in the calling thread's
    /// network namespace (their drivers run on the current tokio runtime)
    /// and takes one snapshot, so missing privileges fail here rather than
    /// on every resolution.
    ///
    /// The subscription exists before any snapshot, so no change between
    /// creation and the first resolution is missed.
    pub async fn new() -> Result<Self, Error> {
        let netlink = Netlink::connect()?;
        let subscription = netlink.subscribe()?;
        netlink.snapshot().await?;
        Ok(Self {
            netlink,
            subscription,
            window: DEFAULT_COALESCE_WINDOW,
            pending: None,
            _key: PhantomData,
        })
    }

    /// Sets how long a burst of notifications is collected (default
    /// [`DEFAULT_COALESCE_WINDOW`]).
    #[must_use]
    pub fn with_coalesce_window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Takes a fresh snapshot of links, routes, neighbours and FDB.
    pub async fn snapshot(&self) -> Result<Snapshot, Error> {
        self.netlink.snapshot().await
    }

    /// Resolves every pod against a fresh snapshot.
    ///
    /// A pod resolves when any of its addresses resolves and all resolving
    /// addresses agree on the interface. If the snapshot itself fails, every
    /// pod is unresolved with the error as reason (the agent retries).
    pub async fn resolve_all(
        &mut self,
        pods: &[(K, Vec<IpAddr>)],
    ) -> BTreeMap<K, Result<Interface, Unresolved>> {
        match self.snapshot().await {
            Ok(snapshot) => resolve_pods(pods, &snapshot),
            Err(error) => {
                tracing::warn!(%error, "node snapshot failed");
                let reason = format!("node snapshot failed: {error}");
                pods.iter()
                    .map(|(key, _)| {
                        let unresolved = Unresolved {
                            reason: reason.clone(),
                        };
                        (key.clone(), Err(unresolved))
                    })
                    .collect()
            }
        }
    }

    /// Waits for the next change, then collects whatever else arrives within
    /// the coalescing window, and returns the whole burst.
    ///
    /// Cancel-safe: a burst being collected when the future is dropped is
    /// kept and returned by the next call. If the notification socket dies it
    /// is reopened and the burst is marked [`ChangeSet::overrun`] (resync);
    /// only a failure to reopen is an error, reported after a short pause.
    pub async fn changes(&mut self) -> Result<ChangeSet, Error> {
        loop {
            let deadline = match &self.pending {
                Some((_, deadline)) => *deadline,
                None => {
                    let change = self.next_change().await?;
                    let mut set = ChangeSet::default();
                    set.record(change);
                    let deadline = Instant::now() + self.window;
                    self.pending = Some((set, deadline));
                    deadline
                }
            };
            let next = tokio::time::timeout_at(deadline, self.next_change()).await;
            match (next, &mut self.pending) {
                (Ok(Ok(change)), Some((set, _))) => set.record(change),
                // Window closed (or reopening failed mid-burst): hand out
                // the burst; a failed reopen is retried on the next call.
                (_, pending) => {
                    return Ok(pending.take().map(|(set, _)| set).unwrap_or_default());
                }
            }
        }
    }

    /// The next notification; a dead socket is reopened and reported as an
    /// overrun.
    async fn next_change(&mut self) -> Result<Change, Error> {
        if let Some(change) = self.subscription.next().await {
            return Ok(change);
        }
        tracing::warn!("netlink notification socket closed; reopening");
        match self.netlink.subscribe() {
            Ok(subscription) => {
                self.subscription = subscription;
                Ok(Change::Overrun)
            }
            Err(error) => {
                tokio::time::sleep(REOPEN_BACKOFF).await;
                Err(error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_set_tracks_removed_links() {
        let mut set = ChangeSet::default();
        set.record(Change::Route);
        set.record(Change::LinkRemoved { ifindex: 7 });
        set.record(Change::LinkRemoved { ifindex: 8 });
        set.record(Change::Link { ifindex: 8 });
        set.record(Change::Neighbour);
        assert_eq!(set.removed_links, BTreeSet::from([7, 8]));
        assert_eq!(set.events, 5);
        assert!(!set.overrun);
        set.record(Change::Overrun);
        assert!(set.overrun);
    }
}
