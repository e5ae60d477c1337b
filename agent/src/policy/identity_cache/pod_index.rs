//! Pods of the cluster indexed for selector evaluation.

use std::collections::{BTreeMap, HashMap};

use crate::state::ClusterState;
use crate::state::model::Pod;
use crate::state::selector::{Requirement, Selector};

/// Pods of the cluster that can be peers, indexed for selector evaluation.
pub(super) struct PodIndex<'a> {
    pub(super) pods: Vec<&'a Pod>,
    pub(super) by_ns: BTreeMap<&'a str, Vec<usize>>,
    pub(super) by_label: HashMap<(&'a str, &'a str, &'a str), Vec<usize>>,
    pub(super) by_key: HashMap<(&'a str, &'a str), Vec<usize>>,
}

impl<'a> PodIndex<'a> {
    pub(super) fn new(cluster: &'a ClusterState) -> Self {
        let pods: Vec<&Pod> = cluster.pods().filter(|p| p.is_endpoint()).collect();
        let mut idx = PodIndex {
            pods,
            by_ns: BTreeMap::new(),
            by_label: HashMap::new(),
            by_key: HashMap::new(),
        };
        for (i, p) in idx.pods.iter().enumerate() {
            let ns = p.namespace.as_str();
            idx.by_ns.entry(ns).or_default().push(i);
            for (k, v) in &p.labels {
                idx.by_label
                    .entry((ns, k.as_str(), v.as_str()))
                    .or_default()
                    .push(i);
                idx.by_key.entry((ns, k.as_str())).or_default().push(i);
            }
        }
        idx
    }

    /// Pods of `ns` matching `sel`, in index order.
    pub(super) fn select(&self, ns: &str, sel: &Selector) -> Vec<usize> {
        const EMPTY: &[usize] = &[];
        let all = self.by_ns.get(ns).map_or(EMPTY, Vec::as_slice);
        // Narrow with the smallest posting list among In/Exists requirements.
        let mut best: Option<Vec<usize>> = None;
        for r in sel.requirements() {
            let cand: Vec<usize> = match r {
                Requirement::In(k, vs) => {
                    let mut v: Vec<usize> = vs
                        .iter()
                        .flat_map(|val| {
                            self.by_label
                                .get(&(ns, k.as_str(), val.as_str()))
                                .map_or(EMPTY, Vec::as_slice)
                        })
                        .copied()
                        .collect();
                    v.sort_unstable();
                    v
                }
                Requirement::Exists(k) => self
                    .by_key
                    .get(&(ns, k.as_str()))
                    .cloned()
                    .unwrap_or_default(),
                _ => continue,
            };
            if best.as_ref().is_none_or(|b| cand.len() < b.len()) {
                best = Some(cand);
            }
        }
        let cands = best.unwrap_or_else(|| all.to_vec());
        cands
            .into_iter()
            .filter(|i| sel.matches(&self.pods[*i].labels))
            .collect()
    }
}
