//! `source::kube::run` in-process against the fake API server, both inside a
//! private network namespace.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use palisade_agent::source::{K8sObject, Kind, ObjectRef, SourceEvent, object_ref};
use palisade_tests::{NetNs, Poll};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::TempDir;
use crate::fake::{FakeApiServer, Res};
use crate::objects::*;

/// Longest wait for one expected event.
const WAIT: Duration = Duration::from_secs(20);
/// What a kind's health reason starts with once a watch could not be
/// (re)started, e.g. against a server that refuses connections.
const RESTART_REFUSED: &str = "watch failed:";
/// How often the source looks for a missing CRD here (30 s in the agent).
const CRD_RECHECK: Duration = Duration::from_millis(200);

/// The bed for `source::kube::run` in-process: a namespace, the fake inside
/// it and a kubeconfig for it. Fields drop in
/// order: the fake (its sockets), the directory, then the namespace.
struct SourceBed {
    fake: FakeApiServer,
    _dir: TempDir,
    kubeconfig: PathBuf,
    ns: NetNs,
}

impl SourceBed {
    fn new() -> SourceBed {
        let ns = NetNs::new("kubesrc").expect("namespace");
        ns.ip(["link", "set", "lo", "up"]).expect("lo up");
        let fake = FakeApiServer::start_in(&ns);
        let dir = TempDir::new();
        let kubeconfig = fake.write_kubeconfig(dir.path());
        SourceBed {
            fake,
            _dir: dir,
            kubeconfig,
            ns,
        }
    }

    /// Runs the source (on a runtime inside the namespace) and `body` with
    /// its events; everything stops when `body` returns or panics.
    fn run<F, Fut>(&self, body: F)
    where
        F: FnOnce(Events) -> Fut + Send,
        Fut: Future<Output = ()>,
    {
        let kubeconfig = self.kubeconfig.clone();
        self.ns.run(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(async move {
                let client = palisade_agent::source::kube::client(Some(&kubeconfig))
                    .await
                    .expect("a client from the kubeconfig");
                let (tx, rx) = mpsc::channel(1024);
                let source = tokio::spawn(palisade_agent::source::kube::run_with(
                    client,
                    tx,
                    CRD_RECHECK,
                ));
                body(Events { rx }).await;
                source.abort();
            });
        });
        let unknown = self.fake.unknown_requests();
        assert!(
            unknown.is_empty(),
            "requests the fake does not serve: {unknown:?}"
        );
    }
}

/// A small cluster: namespace, node, pods a and b, a policy, a service and
/// its slice.
fn seed(fake: &FakeApiServer) {
    let ip = |s: &str| -> IpAddr { s.parse().expect("address") };
    fake.apply(namespace("default"));
    fake.apply(node("node-0", &[ip("10.244.0.1")]));
    fake.apply(pod(
        "default",
        "a",
        "node-0",
        "a",
        &[ip("10.244.0.2"), ip("fd00:244::2")],
    ));
    fake.apply(pod("default", "b", "node-0", "b", &[ip("10.244.0.3")]));
    fake.apply(deny_ingress("default", "deny-b", "b"));
    fake.apply(service("default", "svc", "b"));
    fake.apply(endpoint_slice("default", "svc-1", "svc", ip("10.244.0.3")));
}

fn names(objects: &[K8sObject]) -> Vec<String> {
    let mut names: Vec<String> = objects
        .iter()
        .map(|o| {
            let r = object_ref(o);
            if r.namespace.is_empty() {
                r.name
            } else {
                format!("{}/{}", r.namespace, r.name)
            }
        })
        .collect();
    names.sort();
    names
}

fn describe(event: &SourceEvent) -> String {
    match event {
        SourceEvent::Replace { kinds, objects } => {
            format!("Replace {kinds:?} {:?}", names(objects))
        }
        SourceEvent::Apply(o) => format!("Apply {}", object_ref(o)),
        SourceEvent::Delete(r) => format!("Delete {r}"),
        SourceEvent::Health { up, detail } => format!("Health up={up} ({detail})"),
    }
}

fn pod_label(object: &K8sObject) -> Option<String> {
    match object {
        K8sObject::Pod(p) => p.metadata.labels.as_ref()?.get("app").cloned(),
        _ => None,
    }
}

struct Events {
    rx: mpsc::Receiver<SourceEvent>,
}

impl Events {
    async fn next(&mut self) -> SourceEvent {
        match tokio::time::timeout(WAIT, self.rx.recv()).await {
            Ok(Some(event)) => event,
            Ok(None) => panic!("the source stopped"),
            Err(_) => panic!("no source event within {WAIT:?}"),
        }
    }

    /// Everything that arrives within `period`.
    async fn during(&mut self, period: Duration) -> Vec<SourceEvent> {
        let deadline = Instant::now() + period;
        let mut got = Vec::new();
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            got.push(event);
        }
        got
    }

    /// The initial view: one `Replace` per kind in `Kind::ALL` then
    /// `Kind::OPTIONAL` order, then `Health { up: true }`. Returns the object
    /// names per kind.
    async fn initial(&mut self) -> BTreeMap<Kind, Vec<String>> {
        let mut lists = BTreeMap::new();
        for kind in Kind::ALL.into_iter().chain(Kind::OPTIONAL) {
            match self.next().await {
                SourceEvent::Replace { kinds, objects } => {
                    assert_eq!(kinds, vec![kind], "initial Replace of {kind}");
                    lists.insert(kind, names(&objects));
                }
                other => panic!(
                    "expected the initial Replace of {kind}, got {}",
                    describe(&other)
                ),
            }
        }
        match self.next().await {
            SourceEvent::Health { up: true, .. } => {}
            other => panic!(
                "expected Health up after the initial lists, got {}",
                describe(&other)
            ),
        }
        lists
    }

    /// Events until `done` says the collection is complete.
    async fn until(
        &mut self,
        what: &str,
        mut done: impl FnMut(&[SourceEvent]) -> bool,
    ) -> Vec<SourceEvent> {
        let deadline = Instant::now() + WAIT * 2;
        let mut got = Vec::new();
        while !done(&got) {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(event)) => got.push(event),
                Ok(None) => panic!("the source stopped"),
                Err(_) => panic!(
                    "timed out waiting for {what}; got {:?}",
                    got.iter().map(describe).collect::<Vec<_>>()
                ),
            }
        }
        got
    }
}

/// Per kind: watches open now, and the versions every watch so far started from.
fn watches(fake: &FakeApiServer) -> BTreeMap<Res, (usize, Vec<String>)> {
    Res::ALL
        .into_iter()
        .map(|r| (r, (fake.open_watches(r), fake.watch_versions(r))))
        .collect()
}

/// Polls [`watches`] until `accept` holds; panics after [`WAIT`].
async fn wait_for_watches(
    fake: &FakeApiServer,
    what: &str,
    accept: impl FnMut(&BTreeMap<Res, (usize, Vec<String>)>) -> bool,
) {
    Poll::new(what, WAIT)
        .until_async(|| std::future::ready(watches(fake)), accept)
        .await
        .unwrap();
}

fn pod_ref(name: &str) -> ObjectRef {
    ObjectRef {
        kind: Kind::Pod,
        namespace: "default".into(),
        name: name.into(),
    }
}

fn each_kind_listed_once(fake: &FakeApiServer) {
    for res in Res::ALL {
        assert_eq!(fake.lists(res), 1, "{res:?} listed once");
    }
}

#[test]
fn initial_lists_arrive_as_one_replace_per_kind_then_watch_events_follow() {
    let bed = SourceBed::new();
    let fake = &bed.fake;
    seed(fake);
    let ip: IpAddr = "10.244.0.4".parse().expect("address");
    bed.run(|mut events| async move {
        let lists = events.initial().await;
        let expect = |kind, names: &[&str]| {
            assert_eq!(lists[&kind], names, "initial {kind}");
        };
        expect(Kind::Namespace, &["default"]);
        expect(Kind::Pod, &["default/a", "default/b"]);
        expect(Kind::NetworkPolicy, &["default/deny-b"]);
        expect(Kind::Node, &["node-0"]);
        expect(Kind::Service, &["default/svc"]);
        expect(Kind::EndpointSlice, &["default/svc-1"]);
        // No CRD installed: no ClusterNetworkPolicies, and not a fault.
        expect(Kind::ClusterNetworkPolicy, &[]);

        fake.apply(pod("default", "a", "node-0", "relabelled", &[ip]));
        match events.next().await {
            SourceEvent::Apply(o) => {
                assert_eq!(object_ref(&o), pod_ref("a"));
                assert_eq!(pod_label(&o).as_deref(), Some("relabelled"));
            }
            other => panic!("expected Apply of pod a, got {}", describe(&other)),
        }
        fake.delete(Res::Pod, "default", "b");
        match events.next().await {
            SourceEvent::Delete(r) => assert_eq!(r, pod_ref("b")),
            other => panic!("expected Delete of pod b, got {}", describe(&other)),
        }
        fake.apply(deny_ingress("default", "deny-a", "a"));
        match events.next().await {
            SourceEvent::Apply(o) => {
                assert_eq!(object_ref(&o).to_string(), "NetworkPolicy default/deny-a")
            }
            other => panic!("expected Apply of deny-a, got {}", describe(&other)),
        }

        for res in Res::ALL {
            fake.bookmark(res);
        }
        let after_bookmarks = events.during(Duration::from_millis(300)).await;
        assert!(
            after_bookmarks.is_empty(),
            "bookmarks changed something: {:?}",
            after_bookmarks.iter().map(describe).collect::<Vec<_>>()
        );
        fake.apply(service("default", "svc2", "a"));
        match events.next().await {
            SourceEvent::Apply(o) => assert_eq!(object_ref(&o).to_string(), "Service default/svc2"),
            other => panic!("expected Apply of svc2, got {}", describe(&other)),
        }
    });
    each_kind_listed_once(fake);
}

#[test]
fn nothing_is_sent_before_every_list_is_complete_and_held_back_events_follow_the_replaces() {
    let bed = SourceBed::new();
    let fake = &bed.fake;
    seed(fake);
    fake.hold_lists(Res::EndpointSlice);
    let ip: IpAddr = "10.244.0.4".parse().expect("address");
    bed.run(|mut events| async move {
        // Five kinds list and watch; the sixth list hangs. Changes arriving
        // meanwhile must wait for the barrier like everything else.
        wait_for_watches(fake, "five watches", |watches| {
            watches
                .iter()
                .filter(|(r, _)| **r != Res::EndpointSlice)
                .all(|(_, (_, versions))| !versions.is_empty())
        })
        .await;
        fake.apply(pod("default", "c", "node-0", "c", &[ip]));
        fake.delete(Res::Pod, "default", "a");
        let early = events.during(Duration::from_millis(500)).await;
        assert!(
            early.is_empty(),
            "events before every list was complete: {:?}",
            early.iter().map(describe).collect::<Vec<_>>()
        );
        fake.release_lists(Res::EndpointSlice);
        let got = events
            .until("initial view, held-back events and health", |got| {
                got.iter()
                    .any(|e| matches!(e, SourceEvent::Health { up: true, .. }))
            })
            .await;
        let described: Vec<String> = got.iter().map(describe).collect();
        assert_eq!(
            described,
            [
                "Replace [Namespace] [\"default\"]",
                "Replace [Pod] [\"default/a\", \"default/b\"]",
                "Replace [NetworkPolicy] [\"default/deny-b\"]",
                "Replace [Node] [\"node-0\"]",
                "Replace [Service] [\"default/svc\"]",
                "Replace [EndpointSlice] [\"default/svc-1\"]",
                "Replace [ClusterNetworkPolicy] []",
                "Apply Pod default/c",
                "Delete Pod default/a",
                "Health up=true (every kind listed and watched)",
            ]
        );
    });
}

#[test]
fn a_410_relists_the_kind_as_a_new_replace_without_what_was_deleted_in_the_gap() {
    let bed = SourceBed::new();
    let fake = &bed.fake;
    seed(fake);
    bed.run(|mut events| async move {
        events.initial().await;
        // Changes whose events are lost, then the history is compacted: the
        // open watch gets ERROR 410 and the client must list again.
        fake.delete_unannounced(Res::NetworkPolicy, "default", "deny-b");
        fake.apply_unannounced(deny_ingress("default", "deny-a", "a"));
        fake.expire(Res::NetworkPolicy);
        match events.next().await {
            SourceEvent::Replace { kinds, objects } => {
                assert_eq!(kinds, vec![Kind::NetworkPolicy]);
                assert_eq!(names(&objects), ["default/deny-a"]);
            }
            other => panic!("expected a NetworkPolicy Replace, got {}", describe(&other)),
        }
        assert_eq!(fake.lists(Res::NetworkPolicy), 2, "relisted once");
        // The new watch works.
        fake.apply(deny_ingress("default", "deny-c", "c"));
        match events.next().await {
            SourceEvent::Apply(o) => {
                assert_eq!(object_ref(&o).to_string(), "NetworkPolicy default/deny-c")
            }
            other => panic!("expected Apply of deny-c, got {}", describe(&other)),
        }
        let rest = events.during(Duration::from_millis(300)).await;
        assert!(
            rest.is_empty(),
            "unexpected: {:?}",
            rest.iter().map(describe).collect::<Vec<_>>()
        );
    });
    for res in Res::ALL {
        let expect = if res == Res::NetworkPolicy { 2 } else { 1 };
        assert_eq!(fake.lists(res), expect, "{res:?} lists");
    }
}

#[test]
fn a_dropped_connection_resumes_from_the_last_version_without_relisting() {
    let bed = SourceBed::new();
    let fake = &bed.fake;
    seed(fake);
    let ip: IpAddr = "10.244.0.2".parse().expect("address");
    bed.run(|mut events| async move {
        events.initial().await;
        let listed_at = fake.version().to_string();
        wait_for_watches(fake, "every kind watching", |watches| {
            watches.values().all(|(open, _)| *open == 1)
        })
        .await;
        fake.drop_watches();
        fake.apply(pod("default", "a", "node-0", "moved", &[ip]));
        match events.next().await {
            SourceEvent::Apply(o) => assert_eq!(pod_label(&o).as_deref(), Some("moved")),
            other => panic!("expected Apply of pod a, got {}", describe(&other)),
        }
        wait_for_watches(fake, "every kind watching again", |watches| {
            watches
                .values()
                .all(|(open, versions)| *open == 1 && versions.len() == 2)
        })
        .await;
        assert_eq!(
            fake.watch_versions(Res::Pod)[1],
            listed_at,
            "resumed from the list's version"
        );
        let rest = events.during(Duration::from_millis(300)).await;
        assert!(
            rest.is_empty(),
            "unexpected: {:?}",
            rest.iter().map(describe).collect::<Vec<_>>()
        );
    });
    each_kind_listed_once(fake);
}

#[test]
fn an_unreachable_server_reports_down_then_up_and_resumes_without_losing_state() {
    let bed = SourceBed::new();
    let fake = &bed.fake;
    seed(fake);
    bed.run(|mut events| async move {
        events.initial().await;
        fake.go_down();
        let detail = match events.next().await {
            SourceEvent::Health { up: false, detail } => detail,
            other => panic!("expected Health down, got {}", describe(&other)),
        };
        assert!(!detail.is_empty());
        // A change made while the agent cannot see the server.
        fake.apply(deny_ingress("default", "deny-a", "a"));
        // The outage lasts until the source has tried the server again and
        // been refused (a kind's reason becomes "watch failed").
        if !detail.contains(RESTART_REFUSED) {
            events
                .until("a refused watch restart while the server is down", |got| {
                    got.iter().any(|e| {
                        matches!(e, SourceEvent::Health { up: false, detail } if detail.contains(RESTART_REFUSED))
                    })
                })
                .await;
        }
        fake.come_up();
        let got = events
            .until("Health up and the missed change", |got| {
                let up = got
                    .iter()
                    .any(|e| matches!(e, SourceEvent::Health { up: true, .. }));
                let change = got
                    .iter()
                    .any(|e| matches!(e, SourceEvent::Apply(o) if object_ref(o).name == "deny-a"));
                up && change
            })
            .await;
        let described: Vec<String> = got.iter().map(describe).collect();
        assert!(
            got.iter()
                .all(|e| matches!(e, SourceEvent::Health { .. } | SourceEvent::Apply(_))),
            "only health and the missed change: {described:?}"
        );
    });
    each_kind_listed_once(fake);
}

#[test]
fn an_outage_across_a_compaction_ends_in_a_relist_of_that_kind_only() {
    let bed = SourceBed::new();
    let fake = &bed.fake;
    seed(fake);
    bed.run(|mut events| async move {
        events.initial().await;
        fake.go_down();
        fake.delete_unannounced(Res::Pod, "default", "b");
        fake.expire(Res::Pod);
        match events.next().await {
            SourceEvent::Health { up: false, .. } => {}
            other => panic!("expected Health down, got {}", describe(&other)),
        }
        fake.come_up();
        let got = events
            .until("the Pod relist and Health up", |got| {
                got.iter().any(|e| matches!(e, SourceEvent::Replace { .. }))
                    && got
                        .iter()
                        .any(|e| matches!(e, SourceEvent::Health { up: true, .. }))
            })
            .await;
        let replaces: Vec<String> = got
            .iter()
            .filter(|e| matches!(e, SourceEvent::Replace { .. }))
            .map(describe)
            .collect();
        assert_eq!(replaces, ["Replace [Pod] [\"default/a\"]"]);
    });
    for res in Res::ALL {
        let expect = if res == Res::Pod { 2 } else { 1 };
        assert_eq!(fake.lists(res), expect, "{res:?} lists");
    }
}

fn cluster_network_policy(name: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name},
        "spec": {"tier": "Admin", "priority": 10, "subject": {"namespaces": {}},
                 "ingress": [{"action": "Deny", "from": [{"namespaces": {}}]}]},
    })
}

#[test]
fn cluster_network_policies_follow_their_crd_being_installed_and_removed() {
    let bed = SourceBed::new();
    let fake = &bed.fake;
    seed(fake);
    fake.apply(cluster_network_policy("deny-all"));
    bed.run(|mut events| async move {
        // Absent: the kind is empty and the source is up (not an error loop).
        let lists = events.initial().await;
        assert!(lists[&Kind::ClusterNetworkPolicy].is_empty());
        let quiet = events.during(CRD_RECHECK * 3).await;
        assert!(
            quiet.is_empty(),
            "the absent CRD is not a fault: {:?}",
            quiet.iter().map(describe).collect::<Vec<_>>()
        );
        // Installed: listed as a Replace of that kind, then watched.
        fake.install_crd();
        match events.next().await {
            SourceEvent::Replace { kinds, objects } => {
                assert_eq!(kinds, vec![Kind::ClusterNetworkPolicy]);
                assert_eq!(names(&objects), ["deny-all"]);
            }
            other => panic!("expected the CRD's first list, got {}", describe(&other)),
        }
        fake.apply(cluster_network_policy("deny-more"));
        match events.next().await {
            SourceEvent::Apply(o) => {
                assert_eq!(object_ref(&o).to_string(), "ClusterNetworkPolicy deny-more")
            }
            other => panic!("expected Apply of deny-more, got {}", describe(&other)),
        }
        // Removed: every ClusterNetworkPolicy is gone with it.
        fake.remove_crd();
        match events.next().await {
            SourceEvent::Replace { kinds, objects } => {
                assert_eq!(kinds, vec![Kind::ClusterNetworkPolicy]);
                assert!(objects.is_empty(), "{:?}", names(&objects));
            }
            other => panic!("expected the CRD's removal, got {}", describe(&other)),
        }
        let rest = events.during(CRD_RECHECK * 3).await;
        assert!(
            rest.iter()
                .all(|e| !matches!(e, SourceEvent::Health { up: false, .. })),
            "the removal is not a fault: {:?}",
            rest.iter().map(describe).collect::<Vec<_>>()
        );
    });
}

#[test]
fn cluster_network_policy_watch_events_and_a_410_relist_of_that_kind_only() {
    let bed = SourceBed::new();
    let fake = &bed.fake;
    seed(fake);
    fake.install_crd();
    fake.apply(cluster_network_policy("deny-all"));
    fake.apply(cluster_network_policy("deny-gone"));
    bed.run(|mut events| async move {
        let lists = events.initial().await;
        assert_eq!(
            lists[&Kind::ClusterNetworkPolicy],
            ["deny-all", "deny-gone"]
        );
        fake.delete(Res::ClusterNetworkPolicy, "", "deny-gone");
        match events.next().await {
            SourceEvent::Delete(r) => assert_eq!(r.to_string(), "ClusterNetworkPolicy deny-gone"),
            other => panic!("expected Delete of deny-gone, got {}", describe(&other)),
        }
        // Lost events, then the history is compacted: a relist of this kind.
        fake.delete_unannounced(Res::ClusterNetworkPolicy, "", "deny-all");
        fake.apply_unannounced(cluster_network_policy("deny-new"));
        let lists_before = fake.lists(Res::ClusterNetworkPolicy);
        fake.expire(Res::ClusterNetworkPolicy);
        match events.next().await {
            SourceEvent::Replace { kinds, objects } => {
                assert_eq!(kinds, vec![Kind::ClusterNetworkPolicy]);
                assert_eq!(names(&objects), ["deny-new"]);
            }
            other => panic!(
                "expected a ClusterNetworkPolicy Replace, got {}",
                describe(&other)
            ),
        }
        assert_eq!(
            fake.lists(Res::ClusterNetworkPolicy),
            lists_before + 1,
            "relisted once"
        );
        fake.apply(cluster_network_policy("deny-after"));
        match events.next().await {
            SourceEvent::Apply(o) => {
                assert_eq!(
                    object_ref(&o).to_string(),
                    "ClusterNetworkPolicy deny-after"
                )
            }
            other => panic!("expected Apply of deny-after, got {}", describe(&other)),
        }
    });
    for res in Res::ALL {
        assert_eq!(fake.lists(res), 1, "{res:?} not relisted");
    }
}
