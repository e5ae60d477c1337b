//! The loop's state and what it does with each input: source events and CNI
//! calls change the cluster state; a reconcile pass compiles it, writes the
//! maps and moves the programs.

use std::collections::BTreeMap;
use std::net::IpAddr;

use tokio::time::Instant;

use crate::cni::protocol::Response;
use crate::cni::server::CniCall;
use crate::errors::chain;
use crate::policy::Compiler;
use crate::policy::plan::DatapathPlan;
use crate::source::{K8sObject, Kind, ObjectRef, SourceEvent, object_ref};
use crate::state::{ClusterState, PodRef};
use crate::sync::{ApplyReport, Renderer, Syncer, pinned_ids};

use super::cni::{CniDesk, Follow};
use super::enforce::Enforcement;
use super::error::Error;
use super::inputs::{Hooks, Settings};
use super::intake::{Intake, Step};
use super::interfaces::Interfaces;
use super::kernel::Kernel;
use super::publish::{Board, Outcome};

/// Everything the loop keeps between wake-ups.
pub struct Reconciler<I, K> {
    pub settings: Settings,
    pub kernel: K,
    pub interfaces: I,
    pub board: Board,
    pub hooks: Hooks,
    pub intake: Intake,
    pub cluster: ClusterState,
    syncer: Syncer,
    renderer: Renderer,
    compiler: Compiler,
    enforcement: Enforcement,
    cni: CniDesk,
    /// The cluster state generation the kernel was last fully programmed
    /// from (`None` until then, or after a pass failed or a map was full).
    pub reconciled: Option<u64>,
    /// Why each unenforced pod is not enforced (from the last pass).
    reasons: BTreeMap<PodRef, String>,
    /// Whether the compiler has taken over the pinned state's ids (on the
    /// first pass, once the pods' interfaces are known).
    ids_adopted: bool,
}

impl<I: Interfaces, K: Kernel> Reconciler<I, K> {
    /// Adopts what the pinned maps hold (a previous agent's state), so the
    /// first apply writes only differences.
    pub fn new(
        settings: Settings,
        kernel: K,
        interfaces: I,
        board: Board,
        hooks: Hooks,
    ) -> Result<Self, Error> {
        let (pinned, revision) = kernel.read_state()?;
        let syncer = Syncer::adopt(pinned, revision);
        tracing::info!(
            endpoints = syncer.current().endpoints.len(),
            policy_entries = syncer.current().policy.len(),
            "adopted the kernel's pinned state"
        );
        let compiler = Compiler::new()
            .with_source_prefix_namespaces(settings.source_prefix_namespaces.clone());
        Ok(Reconciler {
            settings,
            kernel,
            interfaces,
            board,
            hooks,
            intake: Intake::default(),
            cluster: ClusterState::new(),
            syncer,
            renderer: Renderer::default(),
            compiler,
            enforcement: Enforcement::default(),
            cni: CniDesk::default(),
            reconciled: None,
            reasons: BTreeMap::new(),
            ids_adopted: false,
        })
    }

    /// Whether pods were left unenforced by the last pass (retried on a timer).
    pub fn has_unenforced(&self) -> bool {
        !self.reasons.is_empty()
    }

    /// Whether the kernel already holds the current cluster state.
    pub fn up_to_date(&self) -> bool {
        self.reconciled == Some(self.cluster.generation())
    }

    /// The earliest deadline of a waiting CNI ADD.
    pub fn next_cni_deadline(&self) -> Option<Instant> {
        self.cni.next_deadline()
    }

    pub fn on_event(&mut self, event: SourceEvent) {
        self.board.event_arrived();
        for step in self.intake.steps(&event) {
            match step {
                Step::Apply(object) => self.apply(object),
                Step::Delete(r) => self.delete(&r),
            }
        }
        if let SourceEvent::Health { up, detail } = &event {
            self.board.source_health(*up, detail);
        }
    }

    /// Takes a CNI plugin call; returns whether the state may have changed.
    pub fn on_cni(&mut self, call: CniCall) -> bool {
        let (enforcement, reasons) = (&self.enforcement, &self.reasons);
        let follow = self.cni.take(call, Instant::now(), |pod| {
            if enforcement.attached.contains_key(pod) {
                Response::ok()
            } else {
                Response::error(
                    reasons
                        .get(pod)
                        .cloned()
                        .unwrap_or_else(|| "not an enforced local pod".into()),
                )
            }
        });
        match follow {
            Follow::Nothing => false,
            Follow::Reconcile(pod) => {
                if let Some(pod) = pod {
                    self.apply(&K8sObject::Pod(*pod));
                }
                true
            }
        }
    }

    /// Answers CNI ADDs whose pod is now enforced, or whose time is up.
    pub fn answer_cni(&mut self) {
        let (enforcement, reasons, cluster) = (&self.enforcement, &self.reasons, &self.cluster);
        self.cni.answer(
            Instant::now(),
            |pod| enforcement.attached.contains_key(pod),
            |pod| match reasons.get(pod) {
                Some(r) => r.clone(),
                None if cluster.pod(pod).is_none() => {
                    "the agent has not seen this pod from the API server yet".into()
                }
                None => {
                    "the pod is not a local endpoint (not on this node, host network, or no IP)"
                        .into()
                }
            },
        );
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
                patched = K8sObject::Pod(self.cni.pod_object(&key, pod, local).into_owned());
                &patched
            }
            other => other,
        };
        match self.cluster.apply(object) {
            Ok(()) => self.intake.accepted(r),
            Err(e) => {
                tracing::error!(object = %r, error = %chain(&e), "object rejected");
                self.board
                    .error("object_rejected", format!("{r}: {}", chain(&e)));
            }
        }
    }

    fn delete(&mut self, r: &ObjectRef) {
        let (ns, name) = (r.namespace.as_str(), r.name.as_str());
        match r.kind {
            Kind::Namespace => self.cluster.delete_namespace(name),
            Kind::Pod => {
                self.cni.forget(&PodRef {
                    namespace: r.namespace.clone(),
                    name: r.name.clone(),
                });
                self.cluster.delete_pod(ns, name);
            }
            Kind::NetworkPolicy => self.cluster.delete_policy(ns, name),
            Kind::Node => self.cluster.delete_node(name),
            Kind::Service => self.cluster.delete_service(ns, name),
            Kind::EndpointSlice => self.cluster.delete_endpoint_slice(ns, name),
            Kind::ClusterNetworkPolicy => self.cluster.delete_cluster_policy(name),
        }
    }

    /// One pass: compile, resolve the pods' interfaces, write the maps
    /// (entries exist before programs look them up), attach, detach what
    /// nobody is enforced on, publish.
    pub async fn reconcile(&mut self) -> Result<DatapathPlan, Error> {
        let generation = self.cluster.generation();
        self.reconciled = None;
        let mut plan = self
            .compiler
            .compile(&self.cluster, &self.settings.node_name);
        let resolved = self.interfaces.resolve(addresses(&plan)).await;
        let mut placement = self.enforcement.place(&resolved, &self.kernel);
        if !self.ids_adopted {
            self.ids_adopted = true;
            let pinned = pinned_ids(self.syncer.current(), &placement.ifaces);
            if self.compiler.adopt_pinned_ids(&plan, &pinned) {
                tracing::info!(
                    endpoints = pinned.endpoint_ids.len(),
                    identities = pinned.identity_ids.len(),
                    "took over the pinned state's ids"
                );
                // The same pods and addresses, so the interfaces still hold.
                plan = self
                    .compiler
                    .compile(&self.cluster, &self.settings.node_name);
            }
        }
        for rejection in &plan.rejections {
            tracing::warn!(object = %rejection.object, field = %rejection.field, reason = %rejection.reason,
                "rejected: a rejected NetworkPolicy still isolates the pods it selects but allows nothing; a rejected annotation is not honoured; the reason says what happens instead");
        }

        (self.hooks.on_compiled)(&plan);
        let target = self.renderer.render(&plan, &placement.ifaces);
        let mut report = self.syncer.apply(self.kernel.maps(), &target)?;
        self.report_full(&report);
        let attach_failures =
            self.enforcement
                .attach(&mut self.kernel, &resolved, &mut placement, &self.board);
        self.enforcement.settle(&mut self.kernel, &placement.ifaces);
        // Every link carries this build's programs now, unless an attach
        // failed (that link may still run an earlier build's, which reads a
        // deny entry as an allow): endpoints held back from their deny
        // entries get them at once, not on the next event.
        if attach_failures == 0 {
            self.syncer.programs_upgraded();
        }
        if attach_failures == 0 && report.held > 0 {
            tracing::info!(
                endpoints = report.held,
                "every link carries this build's programs: writing the held endpoints' deny entries"
            );
            report = self.syncer.apply(self.kernel.maps(), &target)?;
            self.report_full(&report);
        }
        // A partial write (a full map) is tried again on the next event.
        self.reconciled = report.complete().then_some(generation);

        for (pod, reason) in &placement.reasons {
            tracing::warn!(%pod, %reason, "pod not enforced yet");
        }
        self.reasons = placement.reasons;
        self.board.reconciled(Outcome {
            node: &self.settings.node_name,
            plan: &plan,
            attached: &self.enforcement.attached,
            reasons: &self.reasons,
            held_closed: self.enforcement.held_closed(),
            policies: self.cluster.policies().count(),
            cluster_policies: self
                .cluster
                .cluster_policies()
                .iter()
                .map(|p| crate::observe::ClusterPolicyStatus::of(p))
                .collect(),
            revision: report.revision.0,
            unready: unready(&report, attach_failures),
        });
        Ok(plan)
    }

    fn report_full(&self, report: &ApplyReport) {
        for full in &report.map_full {
            self.board
                .error("map_full", format!("map full, failing closed: {full}"));
        }
    }
}

/// Each endpoint's addresses, for the interface lookup.
fn addresses(plan: &DatapathPlan) -> Vec<(PodRef, Vec<IpAddr>)> {
    plan.endpoints
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
        .collect()
}

/// Ready means what is known is enforced: every map write done and every pod
/// interface found carries the programs. A pod whose interface cannot be
/// found (not created yet, or another node's mistake) does not hold
/// readiness back, so one such pod cannot block a rollout; it shows in the
/// status and the endpoint gauges.
fn unready(report: &ApplyReport, attach_failures: usize) -> Option<String> {
    if !report.complete() {
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
    }
}
