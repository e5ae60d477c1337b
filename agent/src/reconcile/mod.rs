//! The loop that keeps the kernel in step with the source:
//! events -> state -> (coalesced) compile -> interfaces -> sync -> attach.
//!
//! Nothing reaches the kernel before the source has delivered its complete
//! initial view. On start the loop adopts what the pinned maps hold (a
//! previous agent's state), so the first apply writes only differences and
//! enforcement never pauses across a restart.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;

use crate::cni::protocol::{Request, Response};
use crate::cni::server::CniCall;
use crate::datapath::{self, Datapath};
use crate::node::Unresolved;
use crate::observe::{EndpointStatus, SharedStatus};
use crate::policy::Compiler;
use crate::policy::plan::DatapathPlan;
use crate::source::K8sObject;
use crate::source::{Kind, ObjectRef, SourceEvent, object_ref};
use crate::state::ClusterState;
use crate::state::PodRef;
use crate::sync::{Syncer, render};

mod intake;
mod lifecycle;

use intake::{Intake, Step};

/// A pod's host-side interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInterface {
    /// Interface index in the agent's network namespace.
    pub ifindex: u32,
    /// Interface name.
    pub name: String,
}

/// Finds pod interfaces and tells when they may have changed (netlink in the
/// agent, a fixed table in tests).
pub trait Interfaces: Send {
    /// Resolves each pod's addresses to its host-side interface, or says why not.
    fn resolve(
        &mut self,
        pods: Vec<(PodRef, Vec<IpAddr>)>,
    ) -> impl Future<Output = BTreeMap<PodRef, Result<PodInterface, Unresolved>>> + Send;

    /// Resolves when links, routes or neighbours changed.
    fn changed(&mut self) -> impl Future<Output = ()> + Send;
}

/// Called after each apply with the time from the first event of the burst to
/// maps written (the programming-latency histogram), the plan now in the
/// kernel and the cluster state it was compiled from (metrics and flow log).
pub type OnProgrammed = Box<dyn FnMut(Duration, &DatapathPlan, &ClusterState) + Send>;

/// Called with every plan before its maps are written (rule counters change
/// owners there, before the new entries can count a packet).
pub type OnCompiled = Box<dyn FnMut(&DatapathPlan) + Send>;

/// What the loop tells the rest of the agent.
pub struct Hooks {
    /// Before a plan's maps are written.
    pub on_compiled: OnCompiled,
    /// After a burst of events is programmed.
    pub on_programmed: OnProgrammed,
}

/// Errors that stop the loop.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The datapath failed in a way the loop cannot work around.
    #[error(transparent)]
    Datapath(#[from] datapath::Error),
    /// A map write failed for a reason other than a full map.
    #[error(transparent)]
    MapWrite(#[from] crate::sync::WriteError),
    /// The source ended (its task died).
    #[error("the source stopped sending events")]
    SourceEnded,
}

/// Settings of the loop.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The node whose pods this agent enforces.
    pub node_name: String,
    /// How long to gather a burst of events before recompiling.
    pub coalesce: Duration,
    /// How often to retry pods whose interface was not found.
    pub retry: Duration,
    /// Namespaces whose pods' allowed-source-prefixes annotation is honoured.
    pub source_prefix_namespaces: BTreeSet<String>,
}

/// The loop's state.
struct Reconciler<I: Interfaces> {
    settings: Settings,
    datapath: Datapath,
    syncer: Syncer,
    interfaces: I,
    status: SharedStatus,
    cluster: ClusterState,
    intake: Intake,
    compiler: Compiler,
    /// Pods whose interface carries the programs, and where.
    attached: BTreeMap<PodRef, PodInterface>,
    unresolved: usize,
    first_apply_done: bool,
    /// Interfaces (ifindex -> name) a previous agent enforced on that no pod
    /// resolves to yet: kept closed (programs on, no endpoint entry) until a
    /// pod claims one or it disappears.
    retained: BTreeMap<u32, String>,
    /// The cluster state generation the kernel was last fully programmed
    /// from (`None` until then, or after a reconcile failed).
    reconciled: Option<u64>,
    /// Called around programming.
    hooks: Hooks,
    /// This node's Pod objects as received, to re-apply them when the CNI
    /// plugin reports addresses the API server does not show yet.
    raw_pods: BTreeMap<PodRef, k8s_openapi::api::core::v1::Pod>,
    /// Addresses the CNI plugin reported for pods being set up.
    cni_ips: BTreeMap<PodRef, Vec<IpAddr>>,
    /// CNI ADDs waiting for their pod to be enforced.
    cni_waiters: Vec<CniWaiter>,
    /// Why each unenforced pod is not enforced (from the last reconcile).
    last_reasons: BTreeMap<PodRef, String>,
}

/// A CNI ADD waiting for its pod to be enforced.
struct CniWaiter {
    pod: PodRef,
    deadline: Instant,
    reply: tokio::sync::oneshot::Sender<Response>,
}

/// Runs until `shutdown` resolves. The source must send its initial
/// `Replace` events first; `required` lists the kinds whose initial list must
/// have arrived before anything is enforced.
#[expect(
    clippy::too_many_arguments,
    reason = "the loop's dependencies are injected, as in mini-redis' server::run"
)]
pub async fn run<I: Interfaces>(
    settings: Settings,
    required: &[Kind],
    mut source: mpsc::Receiver<SourceEvent>,
    interfaces: I,
    datapath: Datapath,
    status: SharedStatus,
    hooks: Hooks,
    mut cni_calls: mpsc::Receiver<CniCall>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let (pinned, revision) = datapath.maps.read_state()?;
    let syncer = Syncer::adopt(pinned, revision);
    tracing::info!(
        endpoints = syncer.current().endpoints.len(),
        policy_entries = syncer.current().policy.len(),
        "adopted the kernel's pinned state"
    );
    let compiler =
        Compiler::new().with_source_prefix_namespaces(settings.source_prefix_namespaces.clone());
    let mut r = Reconciler {
        settings,
        datapath,
        syncer,
        interfaces,
        status,
        cluster: ClusterState::new(),
        intake: Intake::default(),
        compiler,
        attached: BTreeMap::new(),
        unresolved: 0,
        first_apply_done: false,
        retained: BTreeMap::new(),
        reconciled: None,
        hooks,
        raw_pods: BTreeMap::new(),
        cni_ips: BTreeMap::new(),
        cni_waiters: Vec::new(),
        last_reasons: BTreeMap::new(),
    };
    r.set_not_ready("waiting for the source's initial state");
    tokio::pin!(shutdown);
    let mut burst_started: Option<Instant> = None;
    let mut cni_open = true;
    // Unresolved pods are retried on a timer of its own: other wake-ups (a
    // CNI call, a waiter's deadline) must not keep pushing it back.
    let mut next_retry = tokio::time::Instant::now() + r.settings.retry;
    loop {
        let first_cni_deadline = r.cni_waiters.iter().map(|w| w.deadline).min();
        // Whether something happened that the kernel may need to follow (a
        // CNI waiter's deadline tick, or a CNI CHECK/DEL, does not).
        let mut dirty = true;
        // Whether to reconcile even if the cluster state did not change.
        let mut forced = true;
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            event = source.recv() => {
                let Some(event) = event else { return Err(Error::SourceEnded) };
                burst_started.get_or_insert_with(Instant::now);
                r.note_event();
                r.on_event(event);
                forced = false;
            }
            _ = r.interfaces.changed() => {}
            _ = tokio::time::sleep_until(next_retry), if r.unresolved > 0 => {
                next_retry = tokio::time::Instant::now() + r.settings.retry;
            }
            call = cni_calls.recv(), if cni_open => {
                // A closed channel means no CNI socket: stop polling it.
                cni_open = call.is_some();
                dirty = call.is_some_and(|call| r.on_cni(call));
                if dirty {
                    burst_started.get_or_insert_with(Instant::now);
                }
            }
            _ = sleep_until_std(first_cni_deadline), if first_cni_deadline.is_some() => {
                dirty = false;
            }
        }
        if !dirty {
            r.answer_cni_waiters();
            continue;
        }
        // Coalesce: take whatever else arrives within the window.
        let deadline = tokio::time::Instant::now() + r.settings.coalesce;
        loop {
            tokio::select! {
                event = source.recv() => match event {
                    Some(event) => {
                        burst_started.get_or_insert_with(Instant::now);
                        r.note_event();
                        r.on_event(event);
                    }
                    None => return Err(Error::SourceEnded),
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        r.note_sync(required);
        if !r.intake.waiting_for(required).is_empty() {
            continue;
        }
        if !forced && r.first_apply_done && r.reconciled == Some(r.cluster.generation()) {
            // Only events that changed nothing we keep (status updates, node
            // heartbeats, resyncs): the kernel already has this state.
            burst_started = None;
            if let Ok(mut s) = r.status.write() {
                s.pending_since = None;
            }
            r.answer_cni_waiters();
            continue;
        }
        let plan = r.reconcile().await?;
        next_retry = tokio::time::Instant::now() + r.settings.retry;
        if let Some(started) = burst_started.take() {
            (r.hooks.on_programmed)(started.elapsed(), &plan, &r.cluster);
        }
        r.answer_cni_waiters();
    }
}

/// Sleeps until `deadline` (forever without one).
async fn sleep_until_std(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

impl<I: Interfaces> Reconciler<I> {
    fn set_not_ready(&self, reason: &str) {
        if let Ok(mut s) = self.status.write() {
            s.ready = false;
            s.not_ready_reason = Some(reason.to_string());
        }
    }

    /// Records a source event's arrival (sync lag in status).
    fn note_event(&self) {
        if let Ok(mut s) = self.status.write() {
            let now = SystemTime::now();
            s.last_source_event = Some(now);
            s.pending_since.get_or_insert(now);
        }
    }

    /// Records which kinds still lack their initial list.
    fn note_sync(&self, required: &[Kind]) {
        if let Ok(mut s) = self.status.write() {
            s.waiting_for = self
                .intake
                .waiting_for(required)
                .iter()
                .map(|k| format!("{k:?}"))
                .collect();
            s.source_synced = s.waiting_for.is_empty();
        }
    }

    fn on_event(&mut self, event: SourceEvent) {
        for step in self.intake.steps(&event) {
            match step {
                Step::Apply(object) => self.apply(object),
                Step::Delete(r) => self.delete(&r),
            }
        }
        if let SourceEvent::Health { up, detail } = event {
            if up {
                tracing::info!(%detail, "source is up to date");
            } else {
                tracing::warn!(%detail, "source problem; the last good state stays enforced");
            }
            if let Ok(mut s) = self.status.write() {
                s.source_up = up;
                if up {
                    s.source_down_since = None;
                } else if s.source_down_since.is_none() {
                    s.source_down_since = Some(SystemTime::now());
                }
                s.source_detail = (!detail.is_empty()).then_some(detail.clone());
                if !up {
                    s.error(detail);
                }
            }
        }
    }

    /// Handles a CNI plugin request; returns whether the state changed.
    fn on_cni(&mut self, call: CniCall) -> bool {
        let pod = |namespace: String, name: String| PodRef { namespace, name };
        match call.request {
            Request::Add {
                namespace,
                name,
                interface,
                ips,
                timeout_ms,
            } => {
                let pod = pod(namespace, name);
                tracing::info!(%pod, ?interface, ?ips, "CNI ADD: enforcing before the pod starts");
                // Answer a little before the plugin gives up, with a reason.
                let wait = Duration::from_millis(timeout_ms.saturating_sub(500).max(100));
                self.cni_waiters.push(CniWaiter {
                    pod: pod.clone(),
                    deadline: Instant::now() + wait,
                    reply: call.reply,
                });
                self.cni_ips.insert(pod.clone(), ips);
                if let Some(raw) = self.raw_pods.get(&pod).cloned() {
                    self.apply(&K8sObject::Pod(raw));
                }
                true
            }
            Request::Del { namespace, name } => {
                let pod = pod(namespace, name);
                let _ = call.reply.send(Response::ok());
                // The sandbox and its addresses are gone: only what the API
                // says of the pod stays (its addresses may be reused).
                if self.cni_ips.remove(&pod).is_none() {
                    return false;
                }
                if let Some(raw) = self.raw_pods.get(&pod).cloned() {
                    self.apply(&K8sObject::Pod(raw));
                }
                true
            }
            Request::Check { namespace, name } => {
                let pod = pod(namespace, name);
                let answer = if self.attached.contains_key(&pod) {
                    Response::ok()
                } else {
                    Response::error(
                        self.last_reasons
                            .get(&pod)
                            .cloned()
                            .unwrap_or_else(|| "not an enforced local pod".into()),
                    )
                };
                let _ = call.reply.send(answer);
                false
            }
        }
    }

    /// Answers CNI ADDs whose pod is now enforced, or whose time is up.
    fn answer_cni_waiters(&mut self) {
        let now = Instant::now();
        let waiters = std::mem::take(&mut self.cni_waiters);
        for w in waiters {
            if self.attached.contains_key(&w.pod) {
                let _ = w.reply.send(Response::ok());
            } else if now >= w.deadline {
                let reason = match self.last_reasons.get(&w.pod) {
                    Some(r) => r.clone(),
                    None if self.cluster.pod(&w.pod).is_none() => {
                        "the agent has not seen this pod from the API server yet".into()
                    }
                    None => {
                        "the pod is not a local endpoint (not on this node, host network, or no IP)"
                            .into()
                    }
                };
                tracing::warn!(pod = %w.pod, %reason, "CNI ADD timed out");
                let _ = w.reply.send(Response::error(reason));
            } else {
                self.cni_waiters.push(w);
            }
        }
    }

    fn apply(&mut self, object: &K8sObject) {
        let r = object_ref(object);
        let patched;
        let object = match object {
            K8sObject::Pod(pod) => {
                let key = PodRef {
                    namespace: r.namespace.clone(),
                    name: r.name.clone(),
                };
                // Only this node's pods can be the subject of a CNI ADD.
                let local = pod.spec.as_ref().and_then(|s| s.node_name.as_deref())
                    == Some(self.settings.node_name.as_str());
                if local {
                    self.raw_pods.insert(key.clone(), pod.clone());
                } else {
                    self.raw_pods.remove(&key);
                }
                match self.cni_ips.get(&key) {
                    Some(ips)
                        if !ips.is_empty()
                            && pod.status.as_ref().is_none_or(|s| s.pod_ip.is_none()) =>
                    {
                        patched = K8sObject::Pod(with_ips(pod, ips));
                        &patched
                    }
                    _ => object,
                }
            }
            other => other,
        };
        match self.cluster.apply(object) {
            Ok(()) => {
                self.intake.accepted(r);
            }
            Err(e) => {
                tracing::error!(object = %r, error = %crate::errors::chain(&e), "object rejected");
                if let Ok(mut s) = self.status.write() {
                    s.error(format!("{r}: {}", crate::errors::chain(&e)));
                }
            }
        }
    }

    fn delete(&mut self, r: &ObjectRef) {
        let (ns, name) = (r.namespace.as_str(), r.name.as_str());
        if r.kind == Kind::Pod {
            let pod = PodRef {
                namespace: r.namespace.clone(),
                name: r.name.clone(),
            };
            self.raw_pods.remove(&pod);
            // A pod re-created under the same name must not inherit these.
            self.cni_ips.remove(&pod);
        }
        match r.kind {
            Kind::Namespace => self.cluster.delete_namespace(name),
            Kind::Pod => self.cluster.delete_pod(ns, name),
            Kind::NetworkPolicy => self.cluster.delete_policy(ns, name),
            Kind::Node => self.cluster.delete_node(name),
            Kind::Service => self.cluster.delete_service(ns, name),
            Kind::EndpointSlice => self.cluster.delete_endpoint_slice(ns, name),
        }
    }

    async fn reconcile(&mut self) -> Result<DatapathPlan, Error> {
        let generation = self.cluster.generation();
        self.reconciled = None;
        let plan = self
            .compiler
            .compile(&self.cluster, &self.settings.node_name);
        for rejection in &plan.rejections {
            tracing::warn!(object = %rejection.object, field = %rejection.field, reason = %rejection.reason,
                "rejected: a rejected NetworkPolicy still isolates the pods it selects but allows nothing; a rejected annotation is not honoured");
        }
        let pods: Vec<(PodRef, Vec<IpAddr>)> = plan
            .endpoints
            .iter()
            .map(|(pod, ep)| {
                let ips = ep
                    .ipv4
                    .map(IpAddr::V4)
                    .into_iter()
                    .chain(ep.ipv6.map(IpAddr::V6))
                    .collect();
                (pod.clone(), ips)
            })
            .collect();
        let resolved = self.interfaces.resolve(pods).await;
        let mut ifaces: BTreeMap<PodRef, u32> = BTreeMap::new();
        let mut reasons: BTreeMap<PodRef, String> = BTreeMap::new();
        for (pod, result) in &resolved {
            match result {
                Ok(iface) => {
                    ifaces.insert(pod.clone(), iface.ifindex);
                }
                // A pod enforced on an interface that is still there keeps
                // it when its route or neighbour entry goes missing for a
                // while (a CNI restarting, a neighbour entry collected):
                // detaching would open it.
                Err(reason)
                    if self.attached.get(pod).is_some_and(|iface| {
                        datapath::interface_name(iface.ifindex).as_ref() == Some(&iface.name)
                    }) =>
                {
                    let iface = &self.attached[pod];
                    tracing::debug!(%pod, interface = %iface.name, %reason,
                        "pod's interface not found again; keeping the one it is enforced on");
                    ifaces.insert(pod.clone(), iface.ifindex);
                }
                Err(reason) => {
                    reasons.insert(pod.clone(), reason.to_string());
                }
            }
        }
        self.unresolved = reasons.len();

        // Maps first (entries exist before programs look them up), then attach.
        (self.hooks.on_compiled)(&plan);
        let target = render(&plan, &ifaces);
        let report = self.syncer.apply(&mut self.datapath.maps, &target)?;
        if !report.complete()
            && let Ok(mut s) = self.status.write()
        {
            for e in &report.map_full {
                s.error(format!("map full, failing closed: {e}"));
            }
        }

        let mut attach_failures = 0;
        for (pod, result) in &resolved {
            let Ok(iface) = result else { continue };
            if self.attached.get(pod) == Some(iface) {
                continue;
            }
            match self.datapath.attach(&iface.name) {
                Ok(a) => {
                    tracing::info!(%pod, interface = %iface.name, mode = %a.mode, adopted = a.adopted, "enforcing");
                    self.attached.insert(pod.clone(), iface.clone());
                }
                Err(e) => {
                    tracing::error!(%pod, interface = %iface.name, error = %crate::errors::chain(&e), "attach failed; will retry");
                    reasons.insert(pod.clone(), crate::errors::chain(&e));
                    self.unresolved += 1;
                    attach_failures += 1;
                }
            }
        }
        // Forget interfaces of pods that are gone or moved. Links a previous
        // agent pinned for interfaces no pod resolves to stay (closed) while
        // the interface exists.
        let keep: BTreeSet<u32> = self
            .attached
            .iter()
            .filter(|(pod, iface)| ifaces.get(*pod) == Some(&iface.ifindex))
            .map(|(_, iface)| iface.ifindex)
            .collect();
        self.attached
            .retain(|pod, iface| ifaces.get(pod) == Some(&iface.ifindex));
        let carrying: BTreeSet<u32> = self.datapath.attachments().map(|a| a.ifindex).collect();
        if !self.first_apply_done {
            self.retain_unclaimed(&carrying);
        }
        let detach = lifecycle::to_detach(
            carrying,
            &keep,
            &mut self.retained,
            crate::datapath::interface_name,
        );
        for ifindex in &detach {
            if let Err(e) = self.datapath.detach(*ifindex) {
                tracing::warn!(ifindex, error = %crate::errors::chain(&e), "detach failed");
            }
        }
        if !self.first_apply_done {
            // Every pinned link now carries this build's programs or is gone.
            self.datapath.finish_conntrack_upgrade();
        }
        self.first_apply_done = true;
        // A partial write (a full map) is tried again on the next event.
        self.reconciled = report.complete().then_some(generation);

        for (pod, reason) in &reasons {
            tracing::warn!(%pod, %reason, "pod not enforced yet");
        }
        self.last_reasons = reasons.clone();
        // Ready means what is known is enforced: every map write done and
        // every pod interface found carries the programs. A pod whose
        // interface cannot be found (not created yet, or another node's
        // mistake) does not hold readiness back, so one such pod cannot
        // block a rollout; it shows in the status and the endpoint gauges.
        let unready = if !report.complete() {
            Some(format!(
                "a map is full, failing closed: {}",
                report
                    .map_full
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ))
        } else if attach_failures > 0 {
            Some(format!(
                "{attach_failures} pod interface(s) could not be attached; see the endpoints in the status"
            ))
        } else {
            None
        };
        self.publish(&plan, &reasons, report.revision.0, unready);
        Ok(plan)
    }

    /// On the first apply after a restart: links a previous agent pinned for
    /// interfaces no pod resolves to yet stay on the interface, carrying this
    /// build's programs. A pod whose interface cannot be resolved for a while
    /// (a route not yet back, an API object not yet listed) is then closed
    /// rather than left open; links of interfaces that are gone are removed.
    fn retain_unclaimed(&mut self, attached: &BTreeSet<u32>) {
        for ifindex in self.datapath.pinned_ifindexes() {
            if attached.contains(&ifindex) {
                continue;
            }
            match self.datapath.retain_pinned(ifindex) {
                Ok(Some(interface)) => {
                    tracing::warn!(
                        ifindex,
                        %interface,
                        "keeping the programs a previous agent attached to this interface: no pod \
                         resolves to it yet, so its traffic is dropped until one does or it goes away"
                    );
                    self.retained.insert(ifindex, interface);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(ifindex, error = %crate::errors::chain(&e), "cannot keep a previous agent's link; detaching it");
                    if let Err(e) = self.datapath.detach(ifindex) {
                        tracing::warn!(ifindex, error = %crate::errors::chain(&e), "detach failed");
                    }
                }
            }
        }
    }

    fn publish(
        &self,
        plan: &DatapathPlan,
        reasons: &BTreeMap<PodRef, String>,
        revision: u32,
        unready: Option<String>,
    ) {
        let Ok(mut s) = self.status.write() else {
            return;
        };
        s.node = self.settings.node_name.clone();
        s.endpoints = plan
            .endpoints
            .iter()
            .map(|(pod, ep)| EndpointStatus {
                pod: pod.to_string(),
                interface: self.attached.get(pod).map(|i| i.name.clone()),
                enforced: self.attached.contains_key(pod),
                reason: reasons.get(pod).cloned(),
                ingress_isolated: ep.ingress_isolated,
                egress_isolated: ep.egress_isolated,
                audit: ep.audit,
                policies: ep.policies.iter().map(ToString::to_string).collect(),
            })
            .collect();
        s.held_closed = self.retained.values().cloned().collect();
        s.policies = self.cluster.policies().count();
        s.identities = plan.identities.len();
        s.rejections = plan.rejections.clone();
        s.revision = revision;
        s.last_applied = Some(SystemTime::now());
        s.pending_since = None;
        s.ready = unready.is_none();
        s.not_ready_reason = unready;
    }
}

/// A pod object with the addresses the CNI plugin reported (the API server
/// shows them only after the kubelet's next status update).
fn with_ips(
    pod: &k8s_openapi::api::core::v1::Pod,
    ips: &[IpAddr],
) -> k8s_openapi::api::core::v1::Pod {
    use k8s_openapi::api::core::v1::{PodIP, PodStatus};
    let mut pod = pod.clone();
    let status = pod.status.get_or_insert_with(PodStatus::default);
    status.pod_ip = Some(ips[0].to_string());
    status.pod_ips = Some(ips.iter().map(|ip| PodIP { ip: ip.to_string() }).collect());
    if status.phase.is_none() {
        status.phase = Some("Pending".into());
    }
    pod
}
