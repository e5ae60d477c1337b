//! Palisade: Kubernetes NetworkPolicy enforcement on eBPF.
//!
//! # Layout
//! The stages in data-flow order; each imports only from stages above it in
//! this list, never from one below.
//! - [`source`]: the Kubernetes API or a manifest directory, as typed events
//!   of raw API objects ([`source::K8sObject`]).
//! - [`state`]: the validated in-memory view of the cluster, and the
//!   vocabulary every later stage speaks (pod and policy refs, labels,
//!   selectors, rejections).
//! - [`policy`] (pure): NetworkPolicy semantics, the compiler to a
//!   [`policy::plan::DatapathPlan`], explain and reference evaluators.
//! - [`sync`]: plan -> map entries -> ordered, make-before-break writes
//!   through [`sync::MapWriter`].
//! - [`datapath`]: the only userspace door to the kernel's BPF side: probing,
//!   loading and pinning the object, attaching (tcx or tc), the typed maps
//!   (which implement `sync::MapWriter`), a read-only view and the event reader.
//!
//! Beside the stages, importing none of them:
//! - [`node`]: which host interface carries a pod (rtnetlink).
//! - [`cni`]: the chained CNI plugin and the agent's side of its socket.
//! - [`errors`]: writing an error with its causes.
//! - [`telemetry`]: logging set-up.
//!
//! Above them:
//! - [`observe`]: status, metrics (own and kernel counters), the flow log and
//!   the HTTP endpoints; reads the kernel only through [`datapath`].
//! - [`reconcile`]: the loop tying the stages together; it reaches the kernel
//!   through its `Kernel` trait (implemented by [`datapath::Datapath`]), so
//!   it runs against fakes in its tests.
//! - [`cli`] and [`cmd`]: the command line and one module per subcommand.
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
