//! Palisade: Kubernetes NetworkPolicy enforcement on eBPF.
//!
//! # Layout
//! Modules in data-flow order; each stage imports only from stages to its left.
//! - [`source`]: the Kubernetes API or a manifest directory, as typed events.
//! - [`state`]: the validated in-memory view of the cluster.
//! - [`policy`] (pure): NetworkPolicy semantics, the compiler to a
//!   [`policy::plan::DatapathPlan`], explain and reference evaluators.
//! - [`sync`]: plan -> map entries -> ordered, make-before-break writes.
//! - [`datapath`]: loading, pinning and attaching the eBPF programs; typed maps.
//! - [`reconcile`]: the loop tying the stages together.
//! - [`observe`]: status and the HTTP endpoints.
pub mod cli;
pub mod cmd;
pub mod cni;
pub mod datapath;
pub mod errors;
pub mod node;
pub mod observe;
pub mod policy;
pub mod reconcile;
pub mod source;
pub mod state;
pub mod sync;
pub mod telemetry;
