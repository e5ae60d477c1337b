//! What the loop is given: its settings, its inputs and the hooks through
//! which it tells the rest of the agent.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::cni::server::CniCall;
use crate::policy::plan::DatapathPlan;
use crate::source::{Kind, SourceEvent};
use crate::state::ClusterState;

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

/// The loop's inputs.
pub struct Inputs<S> {
    /// Source events; the initial `Replace` events come first.
    pub source: mpsc::Receiver<SourceEvent>,
    /// Kinds whose initial list must have arrived before anything is enforced.
    pub required: Vec<Kind>,
    /// CNI plugin calls (a closed channel: no CNI socket).
    pub cni_calls: mpsc::Receiver<CniCall>,
    /// Resolves when the agent stops.
    pub shutdown: S,
}
