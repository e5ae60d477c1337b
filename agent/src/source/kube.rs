//! The Kubernetes API as the source: one list/watch loop per [`Kind`], joined
//! by a forwarder that gives the agent one consistent view.
//!
//! Each kind is listed (paginated, one snapshot) and then watched from the
//! list's `resourceVersion`; a watch that ends (server timeout, dropped
//! connection, unreachable server) resumes from the last version seen, so no
//! relist is needed unless the server answers `410 Gone`, in which case the
//! kind is listed again and delivered as a new [`SourceEvent::Replace`].
//!
//! The forwarder holds everything back until every kind's initial list has
//! arrived, then sends one `Replace` per kind (in [`Kind::ALL`] order),
//! whatever the watches delivered meanwhile, and `Health { up: true }`. Only
//! `Health { up: false }` may come earlier (so a server that cannot be reached
//! at start shows in the status).
//!
//! Health is the conjunction over kinds: down as soon as one kind cannot list
//! or (re)start its watch, up again once every kind has a live watch (a
//! started watch, not the next event: an idle cluster sends none). A `410` is
//! not a fault; the kind simply relists. Failures are retried with client-go's
//! backoff (0.8 s doubling to 30 s, jittered) while the last state stays
//! enforced.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::DefaultBackoff;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::cnp::ClusterNetworkPolicy;
use super::{Kind, ObjectRef, SourceEvent, object_ref};
use crate::source::K8sObject;

/// Objects per list page.
const PAGE_SIZE: u32 = 500;
/// `timeoutSeconds` of each watch: the server ends the watch after this and
/// the loop resumes it from the last version seen.
const WATCH_TIMEOUT_SECS: u32 = 290;
/// A watch with no event (not even a bookmark) for the server timeout plus
/// this is taken for a dead connection and restarted.
const IDLE_MARGIN: Duration = Duration::from_secs(5);
/// A watch that ends cleanly sooner than this is restarted only after a
/// backoff pause, so a server that closes watches at once is not hammered.
const MIN_WATCH_LIFETIME: Duration = Duration::from_secs(1);

/// How often a kind whose CRD is not installed (or may not be read) is looked
/// for again.
const OPTIONAL_RECHECK: Duration = Duration::from_secs(30);

/// The kinds this source lists and watches: every one the agent needs, and
/// the optional ones (their CRD may be absent: then they are empty).
fn watched() -> impl Iterator<Item = Kind> {
    Kind::ALL.into_iter().chain(Kind::OPTIONAL)
}

/// Builds a client from a kubeconfig path, or as kubectl does without one:
/// `KUBECONFIG` (a merged list), `~/.kube/config`, then in-cluster.
pub async fn client(kubeconfig: Option<&std::path::Path>) -> Result<Client, kube::Error> {
    match kubeconfig {
        Some(path) => {
            let kc =
                kube::config::Kubeconfig::read_from(path).map_err(kube::Error::InferKubeconfig)?;
            let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(kube::Error::InferKubeconfig)?;
            Client::try_from(config)
        }
        None => Client::try_default().await,
    }
}

/// What one kind's loop tells the forwarder.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "reports are moved once through a channel, like SourceEvent"
)]
enum Report {
    /// A complete list (initial or after `410 Gone`).
    Listed(Vec<K8sObject>),
    /// A watch event: added or modified.
    Apply(K8sObject),
    /// A watch event: deleted.
    Delete(ObjectRef),
    /// The kind has a live watch (or a fresh list).
    Up,
    /// The kind cannot list or watch.
    Down(String),
}

/// The forwarder's receiver is gone: the agent stopped.
struct Closed;

/// Runs one list/watch loop per kind until the receiver is gone (or the
/// future is dropped, which stops every loop).
pub async fn run(client: Client, tx: mpsc::Sender<SourceEvent>) {
    run_with(client, tx, OPTIONAL_RECHECK).await;
}

/// [`run`], looking for a missing CRD every `optional_recheck`.
pub async fn run_with(client: Client, tx: mpsc::Sender<SourceEvent>, optional_recheck: Duration) {
    let (report_tx, report_rx) = mpsc::channel::<(Kind, Report)>(1024);
    let mut loops = JoinSet::new();
    for kind in watched() {
        let client = client.clone();
        let out = report_tx.clone();
        loops.spawn(async move {
            let _ = match kind {
                Kind::Namespace => {
                    follow::<core::Namespace>(Api::all(client), kind, K8sObject::Namespace, out)
                        .await
                }
                Kind::Pod => follow::<core::Pod>(Api::all(client), kind, K8sObject::Pod, out).await,
                Kind::NetworkPolicy => {
                    follow::<NetworkPolicy>(Api::all(client), kind, K8sObject::NetworkPolicy, out)
                        .await
                }
                Kind::Node => {
                    follow::<core::Node>(Api::all(client), kind, K8sObject::Node, out).await
                }
                Kind::Service => {
                    follow::<core::Service>(Api::all(client), kind, K8sObject::Service, out).await
                }
                Kind::EndpointSlice => {
                    follow::<EndpointSlice>(Api::all(client), kind, K8sObject::EndpointSlice, out)
                        .await
                }
                Kind::ClusterNetworkPolicy => {
                    follow_optional::<ClusterNetworkPolicy>(
                        Api::all(client),
                        kind,
                        K8sObject::ClusterNetworkPolicy,
                        out,
                        optional_recheck,
                    )
                    .await
                }
            };
        });
    }
    drop(report_tx);
    forward(report_rx, tx).await;
    // Dropping the set aborts the loops.
    drop(loops);
}

/// The forwarder: initial barrier, health across kinds.
async fn forward(mut reports: mpsc::Receiver<(Kind, Report)>, tx: mpsc::Sender<SourceEvent>) {
    let mut forwarder = Forwarder {
        tx,
        initial: Some(Initial::default()),
        down: BTreeMap::new(),
    };
    while let Some((kind, report)) = reports.recv().await {
        if forwarder.on_report(kind, report).await.is_err() {
            return;
        }
    }
}

/// What arrived before every kind's initial list.
#[derive(Default)]
struct Initial {
    lists: BTreeMap<Kind, Vec<K8sObject>>,
    queued: Vec<(Kind, SourceEvent)>,
}

struct Forwarder {
    tx: mpsc::Sender<SourceEvent>,
    /// `Some` until every kind has listed once.
    initial: Option<Initial>,
    /// Kinds that cannot list or watch, with the last reason.
    down: BTreeMap<Kind, String>,
}

impl Forwarder {
    async fn send(&self, event: SourceEvent) -> Result<(), Closed> {
        self.tx.send(event).await.map_err(|_| Closed)
    }

    async fn on_report(&mut self, kind: Kind, report: Report) -> Result<(), Closed> {
        match report {
            Report::Listed(objects) => match &mut self.initial {
                Some(initial) => {
                    // A relist before the barrier supersedes what the earlier
                    // list's watch delivered.
                    initial.queued.retain(|(k, _)| *k != kind);
                    initial.lists.insert(kind, objects);
                    if initial.lists.len() == watched().count() {
                        self.release().await?;
                    }
                }
                None => {
                    self.send(SourceEvent::Replace {
                        kinds: vec![kind],
                        objects,
                    })
                    .await?;
                }
            },
            Report::Apply(object) => self.event(kind, SourceEvent::Apply(object)).await?,
            Report::Delete(r) => self.event(kind, SourceEvent::Delete(r)).await?,
            Report::Up => {
                if self.down.remove(&kind).is_some() {
                    tracing::info!(%kind, "watch restored");
                    if self.down.is_empty() && self.initial.is_none() {
                        self.send(SourceEvent::Health {
                            up: true,
                            detail: "every watch is live again".into(),
                        })
                        .await?;
                    }
                }
            }
            Report::Down(reason) => {
                if self.down.get(&kind) != Some(&reason) {
                    self.down.insert(kind, reason);
                    let detail = self
                        .down
                        .iter()
                        .map(|(k, r)| format!("{k}: {r}"))
                        .collect::<Vec<_>>()
                        .join("; ");
                    self.send(SourceEvent::Health { up: false, detail }).await?;
                }
            }
        }
        Ok(())
    }

    async fn event(&mut self, kind: Kind, event: SourceEvent) -> Result<(), Closed> {
        match &mut self.initial {
            Some(initial) => {
                initial.queued.push((kind, event));
                Ok(())
            }
            None => self.send(event).await,
        }
    }

    /// Every kind has listed: the initial view, what came since, and health.
    async fn release(&mut self) -> Result<(), Closed> {
        let Some(mut initial) = self.initial.take() else {
            return Ok(());
        };
        for kind in watched() {
            let objects = initial.lists.remove(&kind).unwrap_or_default();
            tracing::info!(%kind, objects = objects.len(), "initial list");
            self.send(SourceEvent::Replace {
                kinds: vec![kind],
                objects,
            })
            .await?;
        }
        for (_, event) in initial.queued {
            self.send(event).await?;
        }
        if self.down.is_empty() {
            self.send(SourceEvent::Health {
                up: true,
                detail: "every kind listed and watched".into(),
            })
            .await?;
        }
        Ok(())
    }
}

/// How a watch ended.
enum Ended {
    /// The server closed it, or it went idle: resume from the last version.
    Closed,
    /// `410 Gone`: the version is too old, relist.
    Gone,
    /// An error event or a broken stream: resume after a pause.
    Failed(String),
}

/// Lists and watches one kind forever (until the forwarder is gone).
async fn follow<K>(
    api: Api<K>,
    kind: Kind,
    wrap: fn(K) -> K8sObject,
    out: mpsc::Sender<(Kind, Report)>,
) -> Result<(), Closed>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    follow_while_served(api, kind, wrap, out, false).await
}

/// Lists and watches a kind whose CRD may be missing: while the resource is
/// not served (404) or may not be read (403), the kind is empty, which is
/// not a fault (no CRD, no such objects); it is looked for again every
/// `recheck`. Installing or removing the CRD later is noticed and logged.
async fn follow_optional<K>(
    api: Api<K>,
    kind: Kind,
    wrap: fn(K) -> K8sObject,
    out: mpsc::Sender<(Kind, Report)>,
    recheck: Duration,
) -> Result<(), Closed>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let send = |report: Report| {
        let out = out.clone();
        async move { out.send((kind, report)).await.map_err(|_| Closed) }
    };
    let mut backoff = DefaultBackoff::default();
    let mut absent_reported = false;
    let mut down = false;
    loop {
        match api.list(&ListParams::default().limit(1)).await {
            Err(e) if not_served(&e) => {
                let first = !absent_reported;
                if first && forbidden(&e) {
                    tracing::warn!(%kind, reason = %e, every = ?recheck,
                        "not readable (RBAC): none known; grant get/list/watch as deploy/clusterrole.yaml does; looking again periodically");
                } else if first {
                    tracing::info!(%kind, reason = %e, every = ?recheck,
                        "not served (CRD not installed): none known; looking again periodically");
                }
                if first {
                    send(Report::Listed(Vec::new())).await?;
                    absent_reported = true;
                }
                if first || std::mem::take(&mut down) {
                    send(Report::Up).await?;
                }
                backoff.reset();
                tokio::time::sleep(recheck).await;
            }
            // The server cannot be asked: a fault, as for any kind.
            Err(e) => {
                let e = crate::errors::chain(&e);
                tracing::warn!(%kind, error = %e, "list failed; retrying");
                send(Report::Down(format!("list failed: {e}"))).await?;
                down = true;
                tokio::time::sleep(backoff.next().unwrap_or(Duration::from_secs(30))).await;
            }
            Ok(_) => {
                if absent_reported {
                    tracing::info!(%kind, "now served (CRD installed); listing and watching");
                }
                absent_reported = false;
                down = false;
                follow_while_served(api.clone(), kind, wrap, out.clone(), true).await?;
                tracing::info!(%kind, "no longer served (CRD removed?)");
            }
        }
    }
}

/// Whether the server refuses this agent the resource (RBAC).
fn forbidden(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 403)
}

/// Whether the server says the resource does not exist or may not be read.
fn not_served(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 404 || status.code == 403)
}

/// [`follow`]; with `optional`, returns once the resource is not served.
async fn follow_while_served<K>(
    api: Api<K>,
    kind: Kind,
    wrap: fn(K) -> K8sObject,
    out: mpsc::Sender<(Kind, Report)>,
    optional: bool,
) -> Result<(), Closed>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let report = |r: Report| {
        let out = out.clone();
        async move { out.send((kind, r)).await.map_err(|_| Closed) }
    };
    let mut backoff = DefaultBackoff::default();
    let pause = |backoff: &mut DefaultBackoff| {
        let delay = backoff.next().unwrap_or(Duration::from_secs(30));
        tokio::time::sleep(delay)
    };
    let watch_params = WatchParams::default().timeout(WATCH_TIMEOUT_SECS);
    'relist: loop {
        let (objects, mut version) = match list_all(&api).await {
            Ok(listed) => listed,
            Err(ListError::Api(e)) if optional && not_served(&e) => return Ok(()),
            Err(e) => {
                let e = crate::errors::chain(&e);
                tracing::warn!(%kind, error = %e, "list failed; retrying, the last state stays enforced");
                report(Report::Down(format!("list failed: {e}"))).await?;
                pause(&mut backoff).await;
                continue 'relist;
            }
        };
        tracing::debug!(%kind, objects = objects.len(), %version, "listed");
        report(Report::Listed(objects.into_iter().map(wrap).collect())).await?;
        report(Report::Up).await?;
        backoff.reset();
        loop {
            let started = Instant::now();
            let stream = match api.watch(&watch_params, &version).await {
                Ok(stream) => stream,
                Err(kube::Error::Api(status)) if status.code == 410 => {
                    tracing::info!(%kind, %version, "watch version expired (410); relisting");
                    continue 'relist;
                }
                Err(e) if optional && not_served(&e) => return Ok(()),
                Err(e) => {
                    tracing::warn!(%kind, error = %crate::errors::chain(&e), "watch failed to start; retrying, the last state stays enforced");
                    report(Report::Down(format!("watch failed: {e}"))).await?;
                    pause(&mut backoff).await;
                    continue;
                }
            };
            report(Report::Up).await?;
            let mut stream = std::pin::pin!(stream);
            let idle = Duration::from_secs(u64::from(WATCH_TIMEOUT_SECS)) + IDLE_MARGIN;
            let ended = loop {
                let item = match tokio::time::timeout(idle, stream.next()).await {
                    Err(_) => {
                        tracing::debug!(%kind, "watch idle too long; restarting it");
                        break Ended::Closed;
                    }
                    Ok(None) => break Ended::Closed,
                    Ok(Some(item)) => item,
                };
                match item {
                    Ok(WatchEvent::Added(o) | WatchEvent::Modified(o)) => {
                        if let Some(v) = o.resource_version() {
                            version = v;
                        }
                        report(Report::Apply(wrap(o))).await?;
                    }
                    Ok(WatchEvent::Deleted(o)) => {
                        if let Some(v) = o.resource_version() {
                            version = v;
                        }
                        report(Report::Delete(object_ref(&wrap(o)))).await?;
                    }
                    Ok(WatchEvent::Bookmark(b)) => version = b.metadata.resource_version,
                    Ok(WatchEvent::Error(status)) if status.code == 410 => break Ended::Gone,
                    Ok(WatchEvent::Error(status)) => {
                        break Ended::Failed(format!("watch error: {status}"));
                    }
                    Err(e) => break Ended::Failed(format!("watch stream failed: {e}")),
                }
            };
            match ended {
                Ended::Gone => {
                    tracing::info!(%kind, %version, "watch version expired (410); relisting");
                    continue 'relist;
                }
                Ended::Failed(reason) => {
                    tracing::warn!(%kind, %reason, "watch broke; resuming, the last state stays enforced");
                    report(Report::Down(reason)).await?;
                    pause(&mut backoff).await;
                }
                Ended::Closed => {
                    if started.elapsed() < MIN_WATCH_LIFETIME {
                        pause(&mut backoff).await;
                    } else {
                        backoff.reset();
                    }
                }
            }
        }
    }
}

/// Why a list failed.
#[derive(Debug, thiserror::Error)]
enum ListError {
    /// The request failed.
    #[error(transparent)]
    Api(kube::Error),
    /// The server's answer carries no version to watch from.
    #[error("the list has no metadata.resourceVersion")]
    NoVersion,
}

/// Lists every object of a kind (all pages of one snapshot) and the
/// snapshot's resource version.
async fn list_all<K>(api: &Api<K>) -> Result<(Vec<K>, String), ListError>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut params = ListParams::default().limit(PAGE_SIZE);
    let mut items = Vec::new();
    let mut version: Option<String> = None;
    loop {
        let page = api.list(&params).await.map_err(ListError::Api)?;
        if version.is_none() {
            version = page.metadata.resource_version.filter(|v| !v.is_empty());
        }
        items.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params.continue_token = Some(token),
            None => break,
        }
    }
    let version = version.ok_or(ListError::NoVersion)?;
    Ok((items, version))
}
