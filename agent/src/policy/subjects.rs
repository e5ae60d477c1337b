//! Which ClusterNetworkPolicies' subjects hold each local pod, kept across
//! compiles. A subject reads only the policy, the pod's labels and host
//! networking, and its namespace's labels, so a compile evaluates again only
//! the pods and namespaces the state's journal names as changed (and every
//! local pod against the changed policies), not every pod against every
//! policy.

use std::collections::{BTreeSet, HashMap};

use super::changed::Changed;
use super::tiers::selects_in;
use crate::state::cnp::ClusterNetworkPolicy;
use crate::state::model::Pod;
use crate::state::{ClusterState, PodRef};

/// Per local pod, the names of the ClusterNetworkPolicies whose subject
/// holds it, as of the last compile.
#[derive(Debug, Default)]
pub(super) struct Subjects {
    held: HashMap<PodRef, BTreeSet<String>>,
}

impl Subjects {
    /// For each of `pods`, the indices in `policies` (precedence order) of
    /// those whose subject holds it, ascending. `changes` are the changes
    /// since the last call; `None` (unknown) evaluates every pod again.
    pub(super) fn update(
        &mut self,
        cluster: &ClusterState,
        policies: &[&ClusterNetworkPolicy],
        pods: &[&Pod],
        changes: Option<&Changed<'_>>,
    ) -> Vec<Vec<usize>> {
        let mut previous = std::mem::take(&mut self.held);
        let index: HashMap<&str, usize> = (policies.iter().enumerate())
            .map(|(ci, p)| (p.name.as_str(), ci))
            .collect();
        let changed_policies: Vec<usize> = changes
            .map(|c| {
                (c.cluster_policies.iter())
                    .filter_map(|name| index.get(name).copied())
                    .collect()
            })
            .unwrap_or_default();
        let mut out = Vec::with_capacity(pods.len());
        for pod in pods {
            let key = pod.pod_ref();
            let namespace = || cluster.namespace_labels(&pod.namespace);
            let kept = changes
                .filter(|c| {
                    !c.pods.contains(&key) && !c.namespaces.contains(pod.namespace.as_str())
                })
                .and_then(|c| Some((c, previous.remove(&key)?)));
            let held: BTreeSet<String> = match kept {
                Some((c, mut held)) => {
                    held.retain(|name| !c.cluster_policies.contains(name.as_str()));
                    if !changed_policies.is_empty() {
                        let labels = namespace();
                        held.extend(
                            (changed_policies.iter())
                                .map(|&ci| policies[ci])
                                .filter(|p| selects_in(&p.subject, &labels, pod))
                                .map(|p| p.name.clone()),
                        );
                    }
                    held
                }
                None => {
                    let labels = namespace();
                    (policies.iter())
                        .filter(|p| selects_in(&p.subject, &labels, pod))
                        .map(|p| p.name.clone())
                        .collect()
                }
            };
            let mut indices: Vec<usize> = held
                .iter()
                .filter_map(|name| index.get(name.as_str()).copied())
                .collect();
            indices.sort_unstable();
            out.push(indices);
            self.held.insert(key, held);
        }
        out
    }
}
