//! The CNI plugin's side of the loop: ADDs waiting for their pod to be
//! enforced, the addresses the plugin reported before the API server shows
//! them, and this node's Pod objects to re-apply with those addresses.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodIP, PodStatus};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::cni::protocol::{Request, Response};
use crate::cni::server::CniCall;
use crate::state::PodRef;

/// How much earlier than the plugin's own timeout an ADD is answered, so the
/// plugin gets the agent's reason rather than its own timeout.
const ANSWER_MARGIN: Duration = Duration::from_millis(500);
/// The shortest wait an ADD gets, whatever timeout the plugin sent.
const MIN_WAIT: Duration = Duration::from_millis(100);

/// What a CNI call asks of the loop.
#[derive(Debug)]
pub enum Follow {
    /// Nothing the kernel follows changed.
    Nothing,
    /// Reconcile; first re-apply this pod object (it now carries, or no
    /// longer carries, the plugin's addresses) when the agent has it.
    Reconcile(Option<Box<Pod>>),
}

/// A CNI ADD waiting for its pod to be enforced.
struct Waiter {
    pod: PodRef,
    deadline: Instant,
    reply: oneshot::Sender<Response>,
}

/// CNI bookkeeping between the plugin's calls and the reconciles.
#[derive(Default)]
pub struct CniDesk {
    /// This node's Pod objects as received, to re-apply them when the plugin
    /// reports addresses the API server does not show yet.
    local_pods: BTreeMap<PodRef, Pod>,
    /// Addresses the plugin reported for pods being set up.
    reported: BTreeMap<PodRef, Vec<IpAddr>>,
    waiters: Vec<Waiter>,
}

impl CniDesk {
    /// The earliest deadline of a waiting ADD.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.waiters.iter().map(|w| w.deadline).min()
    }

    /// Takes a plugin call. `check` answers a CHECK from what is enforced.
    pub fn take(
        &mut self,
        call: CniCall,
        now: Instant,
        check: impl FnOnce(&PodRef) -> Response,
    ) -> Follow {
        match call.request {
            Request::Add {
                namespace,
                name,
                interface,
                ips,
                timeout_ms,
            } => {
                let pod = PodRef { namespace, name };
                tracing::info!(%pod, ?interface, ?ips, "CNI ADD: enforcing before the pod starts");
                let wait = Duration::from_millis(timeout_ms)
                    .saturating_sub(ANSWER_MARGIN)
                    .max(MIN_WAIT);
                self.waiters.push(Waiter {
                    pod: pod.clone(),
                    deadline: now + wait,
                    reply: call.reply,
                });
                self.reported.insert(pod.clone(), ips);
                Follow::Reconcile(self.local_pods.get(&pod).cloned().map(Box::new))
            }
            Request::Del { namespace, name } => {
                let pod = PodRef { namespace, name };
                let _ = call.reply.send(Response::ok());
                // The sandbox and its addresses are gone: only what the API
                // says of the pod stays (its addresses may be reused).
                if self.reported.remove(&pod).is_none() {
                    return Follow::Nothing;
                }
                Follow::Reconcile(self.local_pods.get(&pod).cloned().map(Box::new))
            }
            Request::Check { namespace, name } => {
                let _ = call.reply.send(check(&PodRef { namespace, name }));
                Follow::Nothing
            }
        }
    }

    /// The object to apply for a Pod from the source: recorded when it is on
    /// this node, and carrying the plugin's addresses while the API server
    /// shows none.
    pub fn pod_object<'a>(&mut self, key: &PodRef, pod: &'a Pod, local: bool) -> Cow<'a, Pod> {
        if local {
            self.local_pods.insert(key.clone(), pod.clone());
        } else {
            self.local_pods.remove(key);
        }
        match self.reported.get(key) {
            Some(ips)
                if !ips.is_empty() && pod.status.as_ref().is_none_or(|s| s.pod_ip.is_none()) =>
            {
                Cow::Owned(with_ips(pod, ips))
            }
            _ => Cow::Borrowed(pod),
        }
    }

    /// Forgets a deleted pod (one re-created under its name must not inherit
    /// its addresses).
    pub fn forget(&mut self, pod: &PodRef) {
        self.local_pods.remove(pod);
        self.reported.remove(pod);
    }

    /// Answers the ADDs whose pod is now enforced (ok) or whose time is up
    /// (`reason` says why not); the others keep waiting.
    pub fn answer(
        &mut self,
        now: Instant,
        enforced: impl Fn(&PodRef) -> bool,
        reason: impl Fn(&PodRef) -> String,
    ) {
        let waiters = std::mem::take(&mut self.waiters);
        for w in waiters {
            if enforced(&w.pod) {
                let _ = w.reply.send(Response::ok());
            } else if now >= w.deadline {
                let reason = reason(&w.pod);
                tracing::warn!(pod = %w.pod, %reason, "CNI ADD timed out");
                let _ = w.reply.send(Response::error(reason));
            } else {
                self.waiters.push(w);
            }
        }
    }
}

/// A pod object with the addresses the CNI plugin reported (the API server
/// shows them only after the kubelet's next status update).
fn with_ips(pod: &Pod, ips: &[IpAddr]) -> Pod {
    let mut pod = pod.clone();
    let status = pod.status.get_or_insert_with(PodStatus::default);
    status.pod_ip = Some(ips[0].to_string());
    status.pod_ips = Some(ips.iter().map(|ip| PodIP { ip: ip.to_string() }).collect());
    if status.phase.is_none() {
        status.phase = Some("Pending".into());
    }
    pod
}
