//! From plan to kernel: `render` turns a [`DatapathPlan`] into the exact map
//! entries it needs (a kept [`Renderer`] renders again only the endpoints
//! whose entries changed), `diff` orders the writes between two such states
//! make-before-break, and `apply` (the only map writer) performs them;
//! `hold` keeps deny entries back while an earlier build's programs may run;
//! `pinned` reads the ids a previous agent left, for the compiler to take
//! over; `waypoint` routes address moves the plain order cannot make safe.
//! `POLICY` is held per endpoint ([`PolicyMap`]), so states share the parts
//! of endpoints that did not change and the diff skips them.
//!
//! [`DatapathPlan`]: crate::policy::plan::DatapathPlan

pub mod apply;
pub mod changes;
pub mod diff;
pub mod hold;
pub mod ipcache_map;
pub mod pinned;
pub mod policy_map;
pub mod render;
pub mod waypoint;

pub use apply::{ApplyReport, MapFull, MapWriter, Syncer, WriteError};
pub use diff::{MapOp, PrefixLen, diff};
pub use ipcache_map::IpcacheMap;
pub use pinned::pinned_ids;
pub use policy_map::PolicyMap;
pub use render::{KernelState, Renderer, render};
