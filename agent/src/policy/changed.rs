//! The objects changed since a compile, read from the state's journal: what
//! the kept parts of the compiler (rule indices, subjects, expansions)
//! check before they reuse what they kept.

use std::collections::HashSet;

use crate::state::journal::{Change, Mark};
use crate::state::{ClusterState, PodRef, PolicyRef};

/// NetworkPolicies, ClusterNetworkPolicies, Pods and Namespaces (by name)
/// changed since a point of the state.
#[derive(Debug, Default)]
pub(super) struct Changed<'c> {
    pub(super) policies: HashSet<&'c PolicyRef>,
    pub(super) cluster_policies: HashSet<&'c str>,
    pub(super) pods: HashSet<&'c PodRef>,
    pub(super) namespaces: HashSet<&'c str>,
}

impl<'c> Changed<'c> {
    /// The changes since `mark`; `None` when that is unknown (no mark, or
    /// the journal no longer reaches back to it).
    pub(super) fn since(cluster: &'c ClusterState, mark: Option<Mark>) -> Option<Self> {
        let mut out = Changed::default();
        for change in mark.and_then(|m| cluster.changes_since(m))? {
            match change {
                Change::Policy(p) => {
                    out.policies.insert(p);
                }
                Change::ClusterPolicy(name) => {
                    out.cluster_policies.insert(name);
                }
                Change::Pod(pod) => {
                    out.pods.insert(pod);
                }
                Change::Namespace(name) => {
                    out.namespaces.insert(name);
                }
            }
        }
        Some(out)
    }
}
