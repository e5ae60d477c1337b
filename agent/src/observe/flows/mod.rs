//! The denied-flow log: a task reads `EVENTS` (the kernel's ring buffer of
//! denied and audited packets), resolves addresses to pods through the current
//! plan, logs each flow (tracing target `flows`) and keeps the most recent ones
//! in a bounded buffer that `/flows` serves (with long polling for `--follow`).
//!
//! - `record`: one flow as `/flows` serves it.
//! - `directory`: addresses and endpoint ids to pods and policies, and the
//!   rule that denied, from the last plan; turns kernel events into records.
//! - `clock`: kernel timestamps to wall time, and wall time as RFC 3339.
//! - `log`: the bounded buffer with long polling.
//! - `reader`: the task reading `EVENTS` into the log.

mod clock;
mod directory;
mod log;
mod reader;
mod record;

pub use clock::{Clock, rfc3339};
pub use directory::Directory;
pub use log::{BUFFER, FlowLog, FlowPage};
pub use reader::{Flows, read_events};
pub use record::{DeniedBy, FlowRecord, Verdict};
