//! The loop against fakes of the kernel and the interfaces, on tokio's
//! paused clock: time moves only when every task waits, so windows, retries
//! and CNI deadlines are exact.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_common::endpoint::{EndpointInfo, IfIndex};
use palisade_common::ids::{EndpointId, IdentityId, Revision, RuleId};
use palisade_common::policy::{PolicyKey, PolicyValue};
use palisade_common::verdict::Direction;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::cni::protocol::{Request, Response};
use crate::cni::server::CniCall;
use crate::datapath::{self, AttachMode, Attachment};
use crate::node::Unresolved;
use crate::observe::{SharedStatus, Status};
use crate::source::fixtures::{all, pod, policy};
use crate::source::{K8sObject, Kind, SourceEvent};
use crate::state::PodRef;
use crate::sync::{KernelState, MapOp, MapWriter, WriteError};

use super::{Error, Hooks, Inputs, Interfaces, Kernel, PodInterface, Settings, run};

const COALESCE: Duration = Duration::from_millis(100);
const RETRY: Duration = Duration::from_secs(2);
const WEB_IFINDEX: u32 = 7;

/// What the fake kernel has been asked to do.
#[derive(Default)]
struct KernelLog {
    /// Policy entries the POLICY map has room for.
    policy_room: usize,
    policy_entries: usize,
    policy_deletes: usize,
    ipcache_writes: usize,
    endpoint_writes: usize,
    /// Interface names whose attach fails.
    failing: BTreeSet<String>,
    attach_calls: usize,
    /// In order: `attach`, `upgraded` (every link carries this build's
    /// programs), `endpoint <ifindex>`, `deny` (a deny entry written).
    trace: Vec<String>,
}

type SharedLog = Arc<Mutex<KernelLog>>;

struct FakeMaps(SharedLog);

impl MapWriter for FakeMaps {
    fn write(&mut self, op: &MapOp) -> Result<(), WriteError> {
        let mut log = self.0.lock().unwrap();
        match op {
            MapOp::PutPolicy(..) if log.policy_entries >= log.policy_room => {
                return Err(WriteError::Full {
                    map: palisade_common::maps::POLICY,
                });
            }
            MapOp::PutPolicy(_, _, value) => {
                log.policy_entries += 1;
                if value.denies() {
                    log.trace.push("deny".into());
                }
            }
            MapOp::DeletePolicy(..) => {
                log.policy_entries -= 1;
                log.policy_deletes += 1;
            }
            MapOp::PutIpcache(..) | MapOp::DeleteIpcache(..) => log.ipcache_writes += 1,
            MapOp::PutEndpoint(IfIndex(ifindex), _) => {
                log.endpoint_writes += 1;
                log.trace.push(format!("endpoint {ifindex}"));
            }
            _ => {}
        }
        Ok(())
    }

    fn set_revision(&mut self, _: Revision) -> Result<(), WriteError> {
        Ok(())
    }
}

/// Interfaces named `if<ifindex>` that exist as long as they carry programs.
struct FakeKernel {
    maps: FakeMaps,
    log: SharedLog,
    attachments: BTreeMap<u32, Attachment>,
    /// What the pinned maps hold at start.
    pinned: KernelState,
}

fn ifindex_of(name: &str) -> u32 {
    name.trim_start_matches("if").parse().unwrap()
}

impl Kernel for FakeKernel {
    type Maps = FakeMaps;

    fn read_state(&self) -> Result<(KernelState, Revision), datapath::Error> {
        Ok((self.pinned.clone(), Revision(1)))
    }

    fn maps(&mut self) -> &mut FakeMaps {
        &mut self.maps
    }

    fn attach(&mut self, interface: &str) -> Result<&Attachment, datapath::Error> {
        let mut log = self.log.lock().unwrap();
        log.attach_calls += 1;
        log.trace.push("attach".into());
        if log.failing.contains(interface) {
            return Err(datapath::Error::Interface {
                interface: interface.into(),
                source: std::io::Error::from_raw_os_error(libc::EBUSY),
            });
        }
        let ifindex = ifindex_of(interface);
        Ok(self.attachments.entry(ifindex).or_insert(Attachment {
            ifindex,
            interface: interface.into(),
            mode: AttachMode::Tcx,
            adopted: false,
        }))
    }

    fn detach(&mut self, ifindex: u32) -> Result<(), datapath::Error> {
        self.attachments.remove(&ifindex);
        Ok(())
    }

    fn attached(&self) -> BTreeSet<u32> {
        self.attachments.keys().copied().collect()
    }

    fn pinned(&self) -> Vec<u32> {
        Vec::new()
    }

    fn retain_pinned(&mut self, _: u32) -> Result<Option<String>, datapath::Error> {
        Ok(None)
    }

    fn finish_conntrack_upgrade(&mut self) {
        self.log.lock().unwrap().trace.push("upgraded".into());
    }

    fn interface_name(&self, ifindex: u32) -> Option<String> {
        Some(format!("if{ifindex}"))
    }
}

/// Pods (by name) whose interface can be found, and how often the loop asked.
#[derive(Clone, Default)]
struct FakeInterfaces {
    found: Arc<Mutex<BTreeMap<String, u32>>>,
    resolves: Arc<AtomicUsize>,
}

impl Interfaces for FakeInterfaces {
    async fn resolve(
        &mut self,
        pods: Vec<(PodRef, Vec<IpAddr>)>,
    ) -> BTreeMap<PodRef, Result<PodInterface, Unresolved>> {
        self.resolves.fetch_add(1, Ordering::SeqCst);
        let found = self.found.lock().unwrap();
        pods.into_iter()
            .map(|(pod, _)| {
                let result = match found.get(&pod.name) {
                    Some(&ifindex) => Ok(PodInterface {
                        ifindex,
                        name: format!("if{ifindex}"),
                    }),
                    None => Err(Unresolved {
                        reason: "no route to the pod's address".into(),
                    }),
                };
                (pod, result)
            })
            .collect()
    }

    async fn changed(&mut self) {
        std::future::pending().await
    }
}

/// The loop running against the fakes.
struct Loop {
    source: mpsc::Sender<SourceEvent>,
    cni: mpsc::Sender<CniCall>,
    status: SharedStatus,
    log: SharedLog,
    interfaces: FakeInterfaces,
    /// The burst durations `on_programmed` reported.
    programmed: Arc<Mutex<Vec<Duration>>>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), Error>>,
}

/// `web` in `prod`, isolated for ingress by a policy that allows everything
/// from its namespace: one endpoint and some policy entries.
fn initial(web: K8sObject) -> SourceEvent {
    SourceEvent::Replace {
        kinds: Kind::ALL.to_vec(),
        objects: vec![
            crate::source::fixtures::namespace("prod").into(),
            web,
            policy("prod", "allow-prod")
                .select(all())
                .ingress(crate::source::fixtures::rule().peer(crate::source::fixtures::pods(all())))
                .into(),
        ],
    }
}

/// [`initial`] plus an Admin ClusterNetworkPolicy denying TCP 22 from every
/// pod: deny entries for web.
fn initial_with_deny(web: K8sObject) -> SourceEvent {
    let SourceEvent::Replace {
        mut kinds,
        mut objects,
    } = initial(web)
    else {
        unreachable!("initial is a Replace")
    };
    kinds.extend(Kind::OPTIONAL);
    objects.push(crate::source::fixtures::cluster_network_policy(
        "no-ssh",
        serde_json::json!({"tier": "Admin", "priority": 1, "subject": {"namespaces": {}},
                 "ingress": [{"action": "Deny", "from": [{"namespaces": {}}],
                              "protocols": [{"tcp": {"destinationPort": {"number": 22}}}]}]}),
    ));
    SourceEvent::Replace { kinds, objects }
}

fn changed(object: impl Into<K8sObject>) -> SourceEvent {
    SourceEvent::Apply(object.into())
}

fn web() -> crate::source::fixtures::PodB {
    pod("web").ns("prod").label("app", "web").ip("10.0.0.7")
}

impl Loop {
    fn start(policy_room: usize) -> Loop {
        Loop::start_on(policy_room, KernelState::default())
    }

    /// The loop on maps a previous agent pinned holding `pinned`.
    fn start_on(policy_room: usize, pinned: KernelState) -> Loop {
        let (source, source_rx) = mpsc::channel(64);
        let (cni, cni_rx) = mpsc::channel(8);
        let (stop, stopped) = oneshot::channel::<()>();
        let status = SharedStatus::default();
        let log = Arc::new(Mutex::new(KernelLog {
            policy_room,
            ..KernelLog::default()
        }));
        let kernel = FakeKernel {
            maps: FakeMaps(log.clone()),
            log: log.clone(),
            attachments: BTreeMap::new(),
            pinned,
        };
        let interfaces = FakeInterfaces::default();
        let programmed = Arc::new(Mutex::new(Vec::new()));
        let hooks = Hooks {
            on_compiled: Box::new(|_| {}),
            on_programmed: Box::new({
                let programmed = programmed.clone();
                move |elapsed, _, _| programmed.lock().unwrap().push(elapsed)
            }),
        };
        let settings = Settings {
            node_name: "node-1".into(),
            coalesce: COALESCE,
            retry: RETRY,
            source_prefix_namespaces: BTreeSet::new(),
        };
        let inputs = Inputs {
            source: source_rx,
            required: Kind::ALL.to_vec(),
            cni_calls: cni_rx,
            shutdown: async move {
                let _ = stopped.await;
            },
        };
        let task = tokio::spawn(run(
            settings,
            inputs,
            interfaces.clone(),
            kernel,
            status.clone(),
            hooks,
        ));
        Loop {
            source,
            cni,
            status,
            log,
            interfaces,
            programmed,
            stop: Some(stop),
            task,
        }
    }

    async fn send(&self, event: SourceEvent) {
        self.source.send(event).await.unwrap();
    }

    fn programmed(&self) -> usize {
        self.programmed.lock().unwrap().len()
    }

    fn status(&self) -> Status {
        self.status.read().unwrap().clone()
    }

    fn web_enforced(&self) -> bool {
        self.status()
            .endpoints
            .iter()
            .any(|e| e.pod == "prod/web" && e.enforced)
    }

    fn find(&self, pod: &str, ifindex: u32) {
        self.interfaces
            .found
            .lock()
            .unwrap()
            .insert(pod.into(), ifindex);
    }

    async fn cni_add(
        &self,
        pod: &str,
        ips: &[&str],
        timeout_ms: u64,
    ) -> oneshot::Receiver<Response> {
        let (reply, answer) = oneshot::channel();
        let request = Request::Add {
            namespace: "prod".into(),
            name: pod.into(),
            interface: None,
            ips: ips.iter().map(|ip| ip.parse().unwrap()).collect(),
            timeout_ms,
        };
        self.cni.send(CniCall { request, reply }).await.unwrap();
        answer
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

async fn wait(d: Duration) {
    tokio::time::sleep(d).await;
}

#[tokio::test(start_paused = true)]
async fn nothing_is_enforced_before_every_kind_is_listed() {
    let l = Loop::start(100);
    l.find("web", WEB_IFINDEX);
    l.send(SourceEvent::Replace {
        kinds: vec![Kind::Namespace, Kind::Pod],
        objects: vec![web().into()],
    })
    .await;
    wait(COALESCE * 3).await;
    assert_eq!(l.programmed(), 0);
    let status = l.status();
    assert!(!status.ready);
    assert!(
        status.waiting_for.contains(&"NetworkPolicy".to_string()),
        "{:?}",
        status.waiting_for
    );
    assert_eq!(l.log.lock().unwrap().endpoint_writes, 0);
    // The rest arrives: now it is.
    l.send(initial(web().into())).await;
    wait(COALESCE * 3).await;
    assert_eq!(l.programmed(), 1);
    assert!(l.web_enforced());
    assert!(l.status().ready);
    l.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_events_is_one_reconcile_and_no_change_is_none() {
    let l = Loop::start(100);
    l.find("web", WEB_IFINDEX);
    l.send(initial(web().into())).await;
    wait(COALESCE * 3).await;
    assert_eq!(l.programmed(), 1);
    let resolves = l.interfaces.resolves.load(Ordering::SeqCst);

    // Five label changes 10 ms apart: one window, one reconcile, timed from
    // the first of them.
    for n in 0..5 {
        l.send(changed(web().label("rev", &n.to_string()))).await;
        wait(Duration::from_millis(10)).await;
    }
    wait(COALESCE * 3).await;
    assert_eq!(l.programmed(), 2);
    assert_eq!(l.interfaces.resolves.load(Ordering::SeqCst), resolves + 1);
    let burst = l.programmed.lock().unwrap()[1];
    assert!(
        burst >= COALESCE && burst < COALESCE + Duration::from_millis(10),
        "{burst:?}"
    );

    // The same object again changes nothing the state keeps: no reconcile.
    l.send(changed(web().label("rev", "4"))).await;
    wait(COALESCE * 3).await;
    assert_eq!(l.programmed(), 2);
    assert_eq!(l.interfaces.resolves.load(Ordering::SeqCst), resolves + 1);
    l.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_unresolved_pod_is_retried_on_its_own_timer_and_does_not_hold_readiness() {
    let l = Loop::start(100);
    l.send(initial(web().into())).await;
    wait(COALESCE * 2).await;
    assert_eq!(l.interfaces.resolves.load(Ordering::SeqCst), 1);
    let status = l.status();
    let endpoint = status
        .endpoints
        .iter()
        .find(|e| e.pod == "prod/web")
        .unwrap();
    assert!(!endpoint.enforced);
    assert!(
        endpoint.reason.as_deref().unwrap().contains("no route"),
        "{endpoint:?}"
    );
    assert!(status.ready, "{:?}", status.not_ready_reason);

    // Not retried before the timer, and other wake-ups (CNI CHECKs every
    // 500 ms) neither trigger nor postpone it.
    for _ in 0..3 {
        let (reply, _answer) = oneshot::channel();
        l.cni
            .send(CniCall {
                request: Request::Check {
                    namespace: "prod".into(),
                    name: "web".into(),
                },
                reply,
            })
            .await
            .unwrap();
        wait(Duration::from_millis(500)).await;
    }
    wait(RETRY - COALESCE * 2 - Duration::from_millis(1_550)).await;
    assert_eq!(l.interfaces.resolves.load(Ordering::SeqCst), 1);
    // The interface appears; the timer finds it.
    l.find("web", WEB_IFINDEX);
    wait(Duration::from_millis(200) + COALESCE).await;
    assert_eq!(l.interfaces.resolves.load(Ordering::SeqCst), 2);
    assert!(l.web_enforced());
    // Nothing left to retry: the timer stops.
    wait(RETRY * 3).await;
    assert_eq!(l.interfaces.resolves.load(Ordering::SeqCst), 2);
    l.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_attach_is_not_ready_and_retried() {
    let l = Loop::start(100);
    l.find("web", WEB_IFINDEX);
    l.log
        .lock()
        .unwrap()
        .failing
        .insert(format!("if{WEB_IFINDEX}"));
    l.send(initial(web().into())).await;
    wait(COALESCE * 2).await;
    let status = l.status();
    assert!(!status.ready);
    assert!(
        status
            .not_ready_reason
            .as_deref()
            .unwrap()
            .contains("could not be attached"),
        "{:?}",
        status.not_ready_reason
    );
    assert_eq!(status.errors_total.get("interface"), Some(&1));
    l.log.lock().unwrap().failing.clear();
    wait(RETRY + COALESCE).await;
    assert!(l.web_enforced());
    assert!(l.status().ready);
    assert_eq!(l.log.lock().unwrap().attach_calls, 2);
    l.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_full_map_is_not_ready_until_a_later_event_finds_room() {
    let l = Loop::start(0);
    l.find("web", WEB_IFINDEX);
    l.send(initial(web().into())).await;
    wait(COALESCE * 2).await;
    let status = l.status();
    assert!(!status.ready);
    assert!(
        status
            .not_ready_reason
            .as_deref()
            .unwrap()
            .contains("a map is full"),
        "{:?}",
        status.not_ready_reason
    );
    assert!(status.errors_total.get("map_full").is_some_and(|n| *n >= 1));
    l.log.lock().unwrap().policy_room = 100;
    // An event that changes nothing still reconciles: the kernel is behind.
    l.send(changed(web())).await;
    wait(COALESCE * 2).await;
    let status = l.status();
    assert!(status.ready, "{:?}", status.not_ready_reason);
    assert!(l.log.lock().unwrap().policy_entries > 0);
    l.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_cni_add_is_answered_once_its_pod_is_enforced() {
    let l = Loop::start(100);
    l.find("web", WEB_IFINDEX);
    // The API server does not show the pod's address yet: no endpoint.
    l.send(initial(pod("web").ns("prod").label("app", "web").into()))
        .await;
    wait(COALESCE * 2).await;
    assert!(!l.web_enforced());
    // The plugin reports it: enforced within one window, and the ADD says so.
    let mut answer = l.cni_add("web", &["10.0.0.7"], 5_000).await;
    wait(COALESCE * 2).await;
    let response = answer.try_recv().expect("answered");
    assert_eq!(response, Response::ok());
    assert!(l.web_enforced());
    l.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_cni_add_for_a_pod_never_enforced_is_answered_just_before_the_plugin_gives_up() {
    let l = Loop::start(100);
    l.send(initial(web().into())).await;
    wait(COALESCE * 2).await;
    let mut answer = l.cni_add("ghost", &["10.0.0.9"], 3_000).await;
    // The plugin waits 3 s; the agent answers 500 ms before that, not earlier.
    wait(Duration::from_millis(2_400)).await;
    assert!(answer.try_recv().is_err());
    wait(Duration::from_millis(200)).await;
    let response = answer.try_recv().expect("answered by the deadline");
    assert_ne!(response, Response::ok());
    assert!(
        format!("{response:?}").contains("has not seen this pod"),
        "{response:?}"
    );
    l.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_loop_stops_with_an_error_when_the_source_ends() {
    let l = Loop::start(100);
    l.send(initial(web().into())).await;
    wait(COALESCE * 2).await;
    drop(l.source);
    let result = l.task.await.unwrap();
    assert!(matches!(result, Err(Error::SourceEnded)), "{result:?}");
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_held_from_its_deny_entries_is_written_right_after_the_first_settle() {
    // An earlier build pinned web's interface open, with one allow entry.
    let mut pinned = KernelState::default();
    pinned.endpoints.insert(
        WEB_IFINDEX,
        EndpointInfo {
            id: EndpointId(1),
            ..Default::default()
        },
    );
    let key = PolicyKey::new(EndpointId(1), IdentityId::ANY, Direction::Ingress, 6, 80);
    pinned
        .policy
        .insert((96, key), PolicyValue::allow(RuleId(1)));
    let l = Loop::start_on(100, pinned);
    l.find("web", WEB_IFINDEX);
    l.send(initial_with_deny(web().into())).await;
    wait(COALESCE * 2).await;

    let trace = l.log.lock().unwrap().trace.clone();
    let endpoint = format!("endpoint {WEB_IFINDEX}");
    let at = |what: &str| trace.iter().position(|t| t == what);
    let upgraded = at("upgraded").expect("settled");
    assert!(at("attach").unwrap() < upgraded, "{trace:?}");
    assert!(
        at("deny").is_some_and(|d| d > upgraded),
        "no deny entry before the programs are upgraded, one right after: {trace:?}"
    );
    assert!(
        at(&endpoint).is_some_and(|e| e > upgraded),
        "web's pinned entry is untouched until then: {trace:?}"
    );
    assert_eq!(l.programmed(), 1, "within the first pass");
    assert!(l.web_enforced());
    assert!(l.status().ready);
    l.stop().await;
}

#[tokio::test(start_paused = true)]
async fn deny_entries_stay_held_while_an_attach_fails() {
    // The failed link may still carry an earlier build's programs.
    let l = Loop::start(100);
    l.find("web", WEB_IFINDEX);
    l.log
        .lock()
        .unwrap()
        .failing
        .insert(format!("if{WEB_IFINDEX}"));
    l.send(initial_with_deny(web().into())).await;
    wait(COALESCE * 2).await;
    let has_deny = |l: &Loop| l.log.lock().unwrap().trace.iter().any(|t| t == "deny");
    assert!(!has_deny(&l), "no deny entry while an attach failed");
    l.log.lock().unwrap().failing.clear();
    wait(RETRY + COALESCE).await;
    assert!(l.web_enforced());
    assert!(has_deny(&l), "written once every link carries this build");
    l.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_without_deny_entries_is_written_before_attach() {
    // The control: nothing to hold, web's endpoint goes in before attach.
    let l = Loop::start(100);
    l.find("web", WEB_IFINDEX);
    l.send(initial(web().into())).await;
    wait(COALESCE * 2).await;
    let trace = l.log.lock().unwrap().trace.clone();
    assert_eq!(
        trace,
        [
            format!("endpoint {WEB_IFINDEX}"),
            "attach".into(),
            "upgraded".into()
        ]
    );
    l.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_restart_takes_over_the_pinned_ids_and_rewrites_no_address_or_endpoint() {
    use crate::policy::Compiler;
    use crate::source::fixtures::{labels, pods, rule, tcp};
    use crate::state::ClusterState;
    use crate::sync::render;

    let SourceEvent::Replace { objects, .. } = initial(web().into()) else {
        unreachable!("initial is a Replace")
    };
    let mut objects = objects;
    objects.push(
        pod("db")
            .ns("prod")
            .label("app", "db")
            .ip("10.0.1.9")
            .node("node-2")
            .into(),
    );
    // The previous agent also saw a local pod and a policy that are gone now,
    // so its ids are not the ones a fresh compiler gives.
    let gone: Vec<K8sObject> = vec![
        pod("aaa")
            .ns("prod")
            .label("app", "aaa")
            .ip("10.0.0.3")
            .into(),
        policy("prod", "aaa-first")
            .select(labels(&[("app", "web")]))
            .ingress(rule().peer(pods(labels(&[("app", "db")]))).port(tcp(5432)))
            .into(),
    ];
    let state = |objects: &[K8sObject]| {
        let mut c = ClusterState::new();
        for o in objects {
            c.apply(o).expect("a valid object");
        }
        c
    };
    let before = state(&[objects.clone(), gone].concat());
    let now = state(&objects);
    let mut previous = Compiler::new();
    previous.compile(&before, "node-1");
    let pinned_plan = previous.compile(&now, "node-1");
    let fresh = Compiler::new().compile(&now, "node-1");
    let web_ref = PodRef {
        namespace: "prod".into(),
        name: "web".into(),
    };
    assert_ne!(
        fresh.endpoints[&web_ref].id, pinned_plan.endpoints[&web_ref].id,
        "the control: numbered afresh, web's pinned entry would be rewritten"
    );
    let pinned = render(&pinned_plan, &BTreeMap::from([(web_ref, WEB_IFINDEX)]));

    let l = Loop::start_on(100, pinned);
    l.find("web", WEB_IFINDEX);
    l.send(SourceEvent::Replace {
        kinds: Kind::ALL.to_vec(),
        objects,
    })
    .await;
    wait(COALESCE * 2).await;
    assert!(l.web_enforced());
    {
        let log = l.log.lock().unwrap();
        let endpoint = format!("endpoint {WEB_IFINDEX}");
        assert!(!log.trace.contains(&endpoint), "{:?}", log.trace);
        assert_eq!(log.ipcache_writes, 0, "every address keeps its identity id");
        assert_eq!(log.policy_deletes, 0, "every pinned entry keeps its key");
    }
    l.stop().await;
}
