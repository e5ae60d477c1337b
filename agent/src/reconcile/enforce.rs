//! The programs on pod interfaces: attach where pods resolved, detach where
//! nobody is enforced any more, and on the first apply after a restart keep
//! a previous agent's interfaces closed until a pod claims them.

use std::collections::{BTreeMap, BTreeSet};

use crate::errors::chain;
use crate::node::Unresolved;
use crate::state::PodRef;

use super::interfaces::PodInterface;
use super::kernel::Kernel;
use super::lifecycle::{self, Placement};
use super::publish::Board;

/// Which interfaces carry the programs for whom.
#[derive(Default)]
pub struct Enforcement {
    /// Pods whose interface carries the programs, and where.
    pub attached: BTreeMap<PodRef, PodInterface>,
    /// Interfaces (ifindex -> name) a previous agent enforced on that no pod
    /// resolves to yet: kept closed (programs on, no endpoint entry) until a
    /// pod claims one or it disappears.
    retained: BTreeMap<u32, String>,
    /// Whether the first apply (the one that adopts a previous agent's links) ran.
    settled_once: bool,
}

impl Enforcement {
    /// Where each resolved pod is enforced; see [`lifecycle::place`].
    pub fn place(
        &self,
        resolved: &BTreeMap<PodRef, Result<PodInterface, Unresolved>>,
        kernel: &impl Kernel,
    ) -> Placement {
        lifecycle::place(resolved, &self.attached, |i| kernel.interface_name(i))
    }

    /// Puts the programs on every resolved interface that lacks them. A
    /// failure becomes the pod's reason (retried on the next reconcile);
    /// returns how many failed.
    pub fn attach(
        &mut self,
        kernel: &mut impl Kernel,
        resolved: &BTreeMap<PodRef, Result<PodInterface, Unresolved>>,
        placement: &mut Placement,
        board: &Board,
    ) -> usize {
        let mut failures = 0;
        for (pod, result) in resolved {
            let Ok(iface) = result else { continue };
            if self.attached.get(pod) == Some(iface) {
                continue;
            }
            match kernel.attach(&iface.name) {
                Ok(a) => {
                    tracing::info!(%pod, interface = %iface.name, mode = %a.mode, adopted = a.adopted, "enforcing");
                    self.attached.insert(pod.clone(), iface.clone());
                }
                Err(e) => {
                    tracing::error!(%pod, interface = %iface.name, error = %chain(&e), "attach failed; will retry");
                    board.error(e.label(), format!("{pod}: {}", chain(&e)));
                    placement.reasons.insert(pod.clone(), chain(&e));
                    failures += 1;
                }
            }
        }
        failures
    }

    /// After the maps are written and the programs attached: forgets pods
    /// that are gone or moved and takes the programs off interfaces nobody is
    /// enforced on. Links a previous agent pinned for interfaces no pod
    /// resolves to stay (closed) while the interface exists.
    pub fn settle(&mut self, kernel: &mut impl Kernel, ifaces: &BTreeMap<PodRef, u32>) {
        self.attached
            .retain(|pod, iface| ifaces.get(pod) == Some(&iface.ifindex));
        let claimed: BTreeSet<u32> = self.attached.values().map(|i| i.ifindex).collect();
        let carrying = kernel.attached();
        if !self.settled_once {
            self.retain_unclaimed(kernel, &carrying);
        }
        let detach = lifecycle::to_detach(carrying, &claimed, &mut self.retained, |i| {
            kernel.interface_name(i)
        });
        for ifindex in detach {
            if let Err(e) = kernel.detach(ifindex) {
                tracing::warn!(ifindex, error = %chain(&e), "detach failed");
            }
        }
        if !self.settled_once {
            // Every pinned link now carries this build's programs or is gone.
            kernel.finish_conntrack_upgrade();
            self.settled_once = true;
        }
    }

    /// Names of the interfaces held closed for a previous agent.
    pub fn held_closed(&self) -> Vec<String> {
        self.retained.values().cloned().collect()
    }

    /// On the first apply after a restart: links a previous agent pinned for
    /// interfaces no pod resolves to yet stay on the interface, carrying this
    /// build's programs. A pod whose interface cannot be resolved for a while
    /// (a route not yet back, an API object not yet listed) is then closed
    /// rather than left open; links of interfaces that are gone are removed.
    fn retain_unclaimed(&mut self, kernel: &mut impl Kernel, carrying: &BTreeSet<u32>) {
        for ifindex in kernel.pinned() {
            if carrying.contains(&ifindex) {
                continue;
            }
            match kernel.retain_pinned(ifindex) {
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
                    tracing::warn!(ifindex, error = %chain(&e), "cannot keep a previous agent's link; detaching it");
                    if let Err(e) = kernel.detach(ifindex) {
                        tracing::warn!(ifindex, error = %chain(&e), "detach failed");
                    }
                }
            }
        }
    }
}
