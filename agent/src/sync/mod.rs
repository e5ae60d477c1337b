//! From plan to kernel: `render` turns a [`DatapathPlan`] into the exact map
//! entries it needs (a kept [`Renderer`] renders again only the endpoints
//! whose entries changed), `diff` orders the writes between two such states
//! make-before-break, and `apply` (the only map writer) performs them;
//! `hold` keeps deny entries back while an earlier build's programs may run.
//! `POLICY` is held per endpoint ([`PolicyMap`]), so states share the parts
//! of endpoints that did not change and the diff skips them.
//!
//! [`DatapathPlan`]: crate::policy::plan::DatapathPlan

pub mod apply;
pub mod diff;
pub mod hold;
pub mod policy_map;
pub mod render;

pub use apply::{ApplyReport, MapFull, MapWriter, Syncer, WriteError};
pub use diff::{MapOp, PrefixLen, diff};
pub use policy_map::PolicyMap;
pub use render::{KernelState, Renderer, render};
