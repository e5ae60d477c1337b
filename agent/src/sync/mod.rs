//! From plan to kernel: `render` turns a [`DatapathPlan`] into the exact map
//! entries it needs, `diff` orders the writes between two such states
//! make-before-break, and `apply` (the only map writer) performs them;
//! `hold` keeps deny entries back while an earlier build's programs may run;
//! `pinned` reads the ids a previous agent left, for the compiler to take over.
//!
//! [`DatapathPlan`]: crate::policy::plan::DatapathPlan

pub mod apply;
pub mod diff;
pub mod hold;
pub mod pinned;
pub mod render;
pub mod waypoint;

pub use apply::{ApplyReport, MapFull, MapWriter, Syncer, WriteError};
pub use diff::{MapOp, PrefixLen, diff};
pub use pinned::pinned_ids;
pub use render::{KernelState, render};
