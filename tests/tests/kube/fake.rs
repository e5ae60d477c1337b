//! A fake Kubernetes API server: plain HTTP on `127.0.0.1:<port>` inside a
//! network namespace the test owns, speaking list/watch for the six kinds the
//! agent follows.
//!
//! Objects are `serde_json::Value`s with `apiVersion`/`kind`/`metadata`; the
//! test adds, changes and deletes them (each change bumps one cluster-wide
//! `resourceVersion` and reaches every open watch as ADDED/MODIFIED/DELETED),
//! sends bookmarks, expires history (open watches get `ERROR 410`, and so
//! does any later watch from an older version), drops watch connections,
//! holds a kind's list requests, or takes the whole server down (open
//! connections are cut, new ones refused) and brings it back on the same port.
//!
//! Watches from a version still in the history replay what happened since,
//! as a real API server does, so a resumed watch misses nothing.
//!
//! Every request is logged; requests for anything else are answered 404 and
//! printed loudly (see [`FakeApiServer::unknown_requests`]).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::Response;
use palisade_tests::{NetNs, Poll};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};

/// A kind the fake serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Res {
    Namespace,
    Pod,
    NetworkPolicy,
    Node,
    Service,
    EndpointSlice,
    /// Served only while its CRD is installed ([`FakeApiServer::install_crd`]).
    ClusterNetworkPolicy,
}

impl Res {
    pub const ALL: [Res; 6] = [
        Res::Namespace,
        Res::Pod,
        Res::NetworkPolicy,
        Res::Node,
        Res::Service,
        Res::EndpointSlice,
    ];

    /// Every kind the fake knows: the built-in six and the CRD's.
    fn known() -> impl Iterator<Item = Res> {
        Res::ALL.into_iter().chain([Res::ClusterNetworkPolicy])
    }

    /// The cluster-wide collection path.
    pub fn path(self) -> &'static str {
        match self {
            Res::ClusterNetworkPolicy => {
                "/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies"
            }
            Res::Namespace => "/api/v1/namespaces",
            Res::Pod => "/api/v1/pods",
            Res::NetworkPolicy => "/apis/networking.k8s.io/v1/networkpolicies",
            Res::Node => "/api/v1/nodes",
            Res::Service => "/api/v1/services",
            Res::EndpointSlice => "/apis/discovery.k8s.io/v1/endpointslices",
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            Res::Namespace => "Namespace",
            Res::Pod => "Pod",
            Res::NetworkPolicy => "NetworkPolicy",
            Res::Node => "Node",
            Res::Service => "Service",
            Res::EndpointSlice => "EndpointSlice",
            Res::ClusterNetworkPolicy => "ClusterNetworkPolicy",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Res::NetworkPolicy => "networking.k8s.io/v1",
            Res::EndpointSlice => "discovery.k8s.io/v1",
            Res::ClusterNetworkPolicy => "policy.networking.k8s.io/v1alpha2",
            _ => "v1",
        }
    }

    fn of_kind(kind: &str) -> Option<Res> {
        Res::known().find(|r| r.kind() == kind)
    }

    fn of_path(path: &str) -> Option<Res> {
        Res::known().find(|r| r.path() == path)
    }
}

/// What a watch connection is fed.
enum Feed {
    /// One event line (with its newline).
    Line(String),
    /// End the response cleanly (the server closed the watch).
    End,
    /// Cut the connection mid-stream.
    Abort,
}

struct Watcher {
    bookmarks: bool,
    feed: mpsc::UnboundedSender<Feed>,
}

#[derive(Default)]
struct Collection {
    objects: BTreeMap<(String, String), Value>,
    /// (version, event line) of every announced change.
    history: Vec<(u64, String)>,
    /// Watches from a version below this answer `410 Gone`.
    compacted: u64,
    watchers: Vec<Watcher>,
}

impl Collection {
    fn broadcast(&mut self, feed: impl Fn() -> Feed, bookmark: bool) {
        self.watchers
            .retain(|w| (bookmark && !w.bookmarks) || w.feed.send(feed()).is_ok());
    }
}

/// One request as the fake saw it.
#[derive(Clone, Debug)]
pub struct Request {
    pub res: Option<Res>,
    pub watch: bool,
    pub query: BTreeMap<String, String>,
}

#[derive(Default)]
struct Inner {
    version: u64,
    collections: BTreeMap<Res, Collection>,
    /// Kinds whose list requests wait; a watch channel so a held request
    /// wakes when its kind is released.
    held: watch::Sender<BTreeSet<Res>>,
    /// Taken down: whatever still reaches the server gets a cut connection.
    down: bool,
    requests: Vec<Request>,
    unknown: Vec<String>,
    /// Whether the ClusterNetworkPolicy CRD is installed (served).
    crd_installed: bool,
}

type Shared = Arc<Mutex<Inner>>;

fn lock(shared: &Shared) -> MutexGuard<'_, Inner> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

fn key(object: &Value) -> (String, String) {
    let meta = &object["metadata"];
    (
        meta["namespace"].as_str().unwrap_or_default().to_string(),
        meta["name"]
            .as_str()
            .expect("test bug: object without metadata.name")
            .to_string(),
    )
}

fn gone_line(version: u64, compacted: u64) -> String {
    let status = json!({
        "type": "ERROR",
        "object": {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": format!("too old resource version: {version} ({compacted})"),
            "reason": "Expired",
            "code": 410
        }
    });
    format!("{status}\n")
}

enum Control {
    Down(std::sync::mpsc::Sender<()>),
    Up(std::sync::mpsc::Sender<Result<(), String>>),
    Stop,
}

/// The fake server, running on its own thread; stopped (connections cut,
/// thread joined) on drop.
pub struct FakeApiServer {
    shared: Shared,
    addr: SocketAddr,
    control: mpsc::UnboundedSender<Control>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeApiServer {
    /// Starts the server on `127.0.0.1:<free port>` inside `netns` (its
    /// thread enters the namespace first, so every socket it ever opens,
    /// including after [`FakeApiServer::come_up`], lives there).
    pub fn start_in(netns: &NetNs) -> FakeApiServer {
        let handle = std::fs::File::open(netns.path()).expect("open the namespace handle");
        let shared: Shared = Arc::default();
        let (control, control_rx) = mpsc::unbounded_channel();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("fake-apiserver".into())
            .spawn(move || {
                nix::sched::setns(&handle, nix::sched::CloneFlags::CLONE_NEWNET)
                    .expect("enter the namespace");
                drop(handle);
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                rt.block_on(async move {
                    let listener =
                        match tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await {
                            Ok(l) => l,
                            Err(e) => {
                                let _ = addr_tx.send(Err(e.to_string()));
                                return;
                            }
                        };
                    let addr = listener.local_addr().expect("local address");
                    let _ = addr_tx.send(Ok(addr));
                    serve(thread_shared, listener, addr, control_rx).await;
                });
            })
            .expect("spawn the fake API server thread");
        let addr = addr_rx
            .recv()
            .expect("the fake API server thread reports its address")
            .expect("the fake API server binds 127.0.0.1");
        FakeApiServer {
            shared,
            addr,
            control,
            thread: Some(thread),
        }
    }

    /// Writes a kubeconfig for this server into `dir` and returns its path.
    pub fn write_kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\ncurrent-context: fake\nusers:\n- name: fake\n  user: {{}}\n",
            self.addr
        );
        std::fs::write(&path, text).expect("write the kubeconfig");
        path
    }

    /// The current cluster-wide resource version.
    pub fn version(&self) -> u64 {
        lock(&self.shared).version
    }

    /// Adds or replaces an object (by `kind`, namespace, name) and announces
    /// it to open watches as ADDED or MODIFIED. Returns its resource version.
    pub fn apply(&self, object: Value) -> u64 {
        self.store(object, true)
    }

    /// Adds or replaces an object without announcing it (its event is "lost",
    /// as in the gap before a `410`): only a list shows it.
    pub fn apply_unannounced(&self, object: Value) -> u64 {
        self.store(object, false)
    }

    fn store(&self, mut object: Value, announce: bool) -> u64 {
        let res = object["kind"]
            .as_str()
            .and_then(Res::of_kind)
            .unwrap_or_else(|| panic!("test bug: object of unknown kind: {object}"));
        object["apiVersion"] = res.api_version().into();
        let key = key(&object);
        let mut inner = lock(&self.shared);
        inner.version += 1;
        let version = inner.version;
        let meta = &mut object["metadata"];
        meta["resourceVersion"] = version.to_string().into();
        if meta["uid"].is_null() {
            meta["uid"] = format!("uid-{}-{}-{}", res.kind(), key.0, key.1).into();
        }
        let c = inner.collections.entry(res).or_default();
        let kind = if c.objects.insert(key, object.clone()).is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        if announce {
            let line = format!("{}\n", json!({ "type": kind, "object": object }));
            c.history.push((version, line.clone()));
            c.broadcast(|| Feed::Line(line.clone()), false);
        }
        version
    }

    /// Deletes an object and announces it as DELETED. Panics if absent.
    pub fn delete(&self, res: Res, namespace: &str, name: &str) -> u64 {
        self.remove(res, namespace, name, true)
    }

    /// Deletes an object without announcing it.
    pub fn delete_unannounced(&self, res: Res, namespace: &str, name: &str) -> u64 {
        self.remove(res, namespace, name, false)
    }

    fn remove(&self, res: Res, namespace: &str, name: &str, announce: bool) -> u64 {
        let mut inner = lock(&self.shared);
        inner.version += 1;
        let version = inner.version;
        let c = inner.collections.entry(res).or_default();
        let mut object = c
            .objects
            .remove(&(namespace.to_string(), name.to_string()))
            .unwrap_or_else(|| panic!("test bug: no {} {namespace}/{name}", res.kind()));
        object["metadata"]["resourceVersion"] = version.to_string().into();
        if announce {
            let line = format!("{}\n", json!({ "type": "DELETED", "object": object }));
            c.history.push((version, line.clone()));
            c.broadcast(|| Feed::Line(line.clone()), false);
        }
        version
    }

    /// Sends a BOOKMARK at the current version to the watches of `res` that
    /// asked for bookmarks.
    pub fn bookmark(&self, res: Res) {
        let mut inner = lock(&self.shared);
        let version = inner.version;
        let line = format!(
            "{}\n",
            json!({
                "type": "BOOKMARK",
                "object": {
                    "kind": res.kind(),
                    "apiVersion": res.api_version(),
                    "metadata": { "resourceVersion": version.to_string() }
                }
            })
        );
        let c = inner.collections.entry(res).or_default();
        c.broadcast(|| Feed::Line(line.clone()), true);
    }

    /// Compacts `res`'s history at the current version: open watches get an
    /// `ERROR 410 Gone` event and end, and a watch from any older version
    /// answers the same, so the client has to list again.
    pub fn expire(&self, res: Res) {
        let mut inner = lock(&self.shared);
        let version = inner.version;
        let c = inner.collections.entry(res).or_default();
        c.compacted = version;
        c.history.clear();
        let line = gone_line(version.saturating_sub(1), version);
        c.broadcast(|| Feed::Line(line.clone()), false);
        c.broadcast(|| Feed::End, false);
        c.watchers.clear();
    }

    /// Cuts every open watch connection (the client sees the stream break
    /// and resumes from its last version).
    pub fn drop_watches(&self) {
        abort_watches(&self.shared);
    }

    /// Makes list requests for `res` wait until [`FakeApiServer::release_lists`].
    pub fn hold_lists(&self, res: Res) {
        lock(&self.shared).held.send_modify(|held| {
            held.insert(res);
        });
    }

    pub fn release_lists(&self, res: Res) {
        lock(&self.shared).held.send_modify(|held| {
            held.remove(&res);
        });
    }

    /// Takes the server down: open connections are cut and the port refuses
    /// connections until [`FakeApiServer::come_up`]. Returns once it is down.
    pub fn go_down(&self) {
        let (ack, done) = std::sync::mpsc::channel();
        self.control
            .send(Control::Down(ack))
            .expect("the fake API server runs");
        done.recv().expect("the fake API server answers");
    }

    /// Serves again on the same port.
    pub fn come_up(&self) {
        let (ack, done) = std::sync::mpsc::channel();
        self.control
            .send(Control::Up(ack))
            .expect("the fake API server runs");
        done.recv()
            .expect("the fake API server answers")
            .expect("the fake API server rebinds its port");
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.shared).requests.clone()
    }

    /// List requests for `res` so far (pages count one each).
    pub fn lists(&self, res: Res) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.res == Some(res) && !r.watch)
            .count()
    }

    /// The `resourceVersion`s watches of `res` started from, in order.
    pub fn watch_versions(&self, res: Res) -> Vec<String> {
        self.requests()
            .iter()
            .filter(|r| r.res == Some(res) && r.watch)
            .map(|r| r.query.get("resourceVersion").cloned().unwrap_or_default())
            .collect()
    }

    /// Watches of `res` open now.
    pub fn open_watches(&self, res: Res) -> usize {
        lock(&self.shared).collections.get(&res).map_or(0, |c| {
            c.watchers.iter().filter(|w| !w.feed.is_closed()).count()
        })
    }

    /// Installs the ClusterNetworkPolicy CRD: its resource is served from now on.
    pub fn install_crd(&self) {
        lock(&self.shared).crd_installed = true;
    }

    /// Removes the CRD: open watches of its resource end, and requests for
    /// it are answered 404 again.
    pub fn remove_crd(&self) {
        let mut inner = lock(&self.shared);
        inner.crd_installed = false;
        if let Some(c) = inner.collections.get_mut(&Res::ClusterNetworkPolicy) {
            c.broadcast(|| Feed::End, false);
            c.watchers.clear();
        }
    }

    /// Requests the fake does not serve (method and URI).
    pub fn unknown_requests(&self) -> Vec<String> {
        lock(&self.shared).unknown.clone()
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        let _ = self.control.send(Control::Stop);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            eprintln!("fake apiserver: its thread panicked");
        }
    }
}

fn abort_watches(shared: &Shared) {
    let mut inner = lock(shared);
    for c in inner.collections.values_mut() {
        c.broadcast(|| Feed::Abort, false);
        c.watchers.clear();
    }
}

type Running = (oneshot::Sender<()>, tokio::task::JoinHandle<()>);

fn start(shared: &Shared, listener: tokio::net::TcpListener) -> Running {
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let app = Router::new().fallback(handle).with_state(shared.clone());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop_rx.await;
            })
            .await;
    });
    (stop_tx, task)
}

/// Stops accepting, then cuts connections until none is left: requests on
/// connections accepted before are answered by a cut connection (see
/// `handle`), so a client racing the shutdown cannot keep a watch open.
async fn stop(shared: &Shared, running: Running) {
    let (stop_tx, task) = running;
    lock(shared).down = true;
    let _ = stop_tx.send(());
    let closed = Poll::new("the connections to close", Duration::from_secs(5))
        .every(Duration::from_millis(50))
        .until_async(
            || {
                abort_watches(shared);
                std::future::ready(task.is_finished())
            },
            |&finished| finished,
        )
        .await;
    if let Err(timed_out) = closed {
        eprintln!("fake apiserver: {timed_out}; aborting the server");
        task.abort();
    }
    let _ = task.await;
}

async fn serve(
    shared: Shared,
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let mut running = Some(start(&shared, listener));
    while let Some(c) = control.recv().await {
        match c {
            Control::Down(ack) => {
                if let Some(r) = running.take() {
                    stop(&shared, r).await;
                }
                let _ = ack.send(());
            }
            Control::Up(ack) => {
                if running.is_none() {
                    lock(&shared).down = false;
                    match tokio::net::TcpListener::bind(addr).await {
                        Ok(l) => {
                            running = Some(start(&shared, l));
                            let _ = ack.send(Ok(()));
                        }
                        Err(e) => {
                            let _ = ack.send(Err(format!("binding {addr}: {e}")));
                        }
                    }
                } else {
                    let _ = ack.send(Ok(()));
                }
            }
            Control::Stop => break,
        }
    }
    if let Some(r) = running.take() {
        stop(&shared, r).await;
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("a valid response")
}

fn status_response(code: StatusCode, reason: &str, message: String) -> Response {
    json_response(
        code,
        &json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code.as_u16()
        }),
    )
}

async fn handle(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let res = Res::of_path(uri.path()).filter(|_| method == Method::GET);
    let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    lock(&shared).requests.push(Request {
        res,
        watch,
        query: query.clone(),
    });
    if lock(&shared).down {
        let cut = futures::stream::once(async {
            Err::<Bytes, _>(std::io::Error::other("the server is down"))
        });
        return Response::builder()
            .status(StatusCode::OK)
            .body(Body::from_stream(cut))
            .expect("a valid response");
    }
    let Some(res) = res else {
        eprintln!("fake apiserver: UNKNOWN REQUEST {method} {uri} (answered 404)");
        lock(&shared).unknown.push(format!("{method} {uri}"));
        return status_response(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("the fake serves no {uri}"),
        );
    };
    if res == Res::ClusterNetworkPolicy && !lock(&shared).crd_installed {
        return status_response(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource".into(),
        );
    }
    if watch {
        watch_response(&shared, res, &query)
    } else {
        list_response(&shared, res, &query).await
    }
}

async fn list_response(shared: &Shared, res: Res, query: &BTreeMap<String, String>) -> Response {
    let mut held = lock(shared).held.subscribe();
    // Err: the sender is gone with the server, and so is the hold.
    let _ = held.wait_for(|held| !held.contains(&res)).await;
    let inner = lock(shared);
    let all: Vec<&Value> = inner
        .collections
        .get(&res)
        .map(|c| c.objects.values().collect())
        .unwrap_or_default();
    let offset: usize = match query.get("continue") {
        Some(token) => match token.parse() {
            Ok(o) => o,
            Err(_) => {
                return status_response(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    format!("bad continue token {token:?}"),
                );
            }
        },
        None => 0,
    };
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let end = offset.saturating_add(limit).min(all.len());
    let items: Vec<&Value> = all.get(offset..end).unwrap_or_default().to_vec();
    let mut metadata = json!({ "resourceVersion": inner.version.to_string() });
    if end < all.len() {
        metadata["continue"] = end.to_string().into();
    }
    json_response(
        StatusCode::OK,
        &json!({
            "kind": format!("{}List", res.kind()),
            "apiVersion": res.api_version(),
            "metadata": metadata,
            "items": items,
        }),
    )
}

fn watch_response(shared: &Shared, res: Res, query: &BTreeMap<String, String>) -> Response {
    let from: u64 = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|b| b == "true");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map_or(Duration::from_secs(3600), Duration::from_secs);
    let mut inner = lock(shared);
    let c = inner.collections.entry(res).or_default();
    let mut backlog: VecDeque<String> = VecDeque::new();
    let (feed, rx) = mpsc::unbounded_channel();
    if from == 0 {
        // "Any version": synthetic ADDED events for what exists.
        for object in c.objects.values() {
            backlog.push_back(format!(
                "{}\n",
                json!({ "type": "ADDED", "object": object })
            ));
        }
        c.watchers.push(Watcher { bookmarks, feed });
    } else if from < c.compacted {
        backlog.push_back(gone_line(from, c.compacted));
        let _ = feed.send(Feed::End);
    } else {
        backlog.extend(
            c.history
                .iter()
                .filter(|(v, _)| *v > from)
                .map(|(_, line)| line.clone()),
        );
        c.watchers.push(Watcher { bookmarks, feed });
    }
    drop(inner);
    let deadline = tokio::time::Instant::now() + timeout;
    let stream = futures::stream::unfold(Some((backlog, rx)), move |state| async move {
        let (mut backlog, mut rx) = state?;
        if let Some(line) = backlog.pop_front() {
            return Some((Ok(Bytes::from(line)), Some((backlog, rx))));
        }
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Feed::Line(line))) => Some((Ok(Bytes::from(line)), Some((backlog, rx)))),
            Ok(Some(Feed::Abort)) => Some((
                Err(std::io::Error::other("connection cut by the test")),
                None,
            )),
            Ok(Some(Feed::End) | None) | Err(_) => None,
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .expect("a valid response")
}
