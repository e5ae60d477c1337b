//! The kernel side: probing what the kernel offers, loading the eBPF object
//! with pinned maps, attaching its programs to pod interfaces (tcx links or tc
//! filters), and typed handles on its maps. The only module (with `node/`)
//! that talks to the kernel.

mod attach;
mod batch;
mod bpffs;
mod cleanup;
mod clock;
mod error;
mod events;
mod kernel;
pub mod ledger_store;
mod load;
pub mod maps;
mod mode;
mod object;
mod tc;
pub mod view;

pub use attach::interface_name;
pub use bpffs::maps_dir;
pub use cleanup::{CleanupReport, cleanup};
pub use clock::{Anchored, coarse_tick_ns};
pub use error::{Error, PinError};
pub use events::{EventReader, monotonic_ns};
pub use kernel::{AttachRequest, KernelError, KernelSupport, MINIMUM_KERNEL, default_attach_mode};
pub use load::{Datapath, DatapathConfig, TestRunOutcome};
pub use maps::Capacities;
pub use mode::{AttachMode, Attachment};
pub use object::OBJECT_EMBEDDED;
pub use tc::{FILTER_HANDLE, FILTER_PRIORITY};
