//! What the agent shows: status (readiness, endpoints, errors), Prometheus
//! metrics (its own and the kernel's counters), the denied-flow log, and the
//! HTTP endpoints that serve them.

pub mod counters;
pub mod flows;
pub mod http;
pub mod ledger;
pub mod metrics;
pub mod status;

pub use status::{ClusterPolicyStatus, EndpointStatus, SharedStatus, Status, UnsupportedStatus};
