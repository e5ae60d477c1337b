//! The kernel side: loading the eBPF object with pinned maps, attaching its
//! programs to pod interfaces, and typed handles on its maps. The only module
//! (with `node/`) that talks to the kernel.

mod attach;
mod cleanup;
mod error;
mod load;
pub mod maps;

pub use attach::{AttachMode, Attachment, interface_name};
pub use cleanup::{CleanupReport, cleanup};
pub use error::Error;
pub use load::{Capacities, Datapath, DatapathConfig, OBJECT_EMBEDDED, TestRunOutcome, maps_dir};
