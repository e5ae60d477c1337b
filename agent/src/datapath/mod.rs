//! The kernel side: probing what the kernel offers, loading the eBPF object
//! with pinned maps, attaching its programs to pod interfaces (tcx links or tc
//! filters), and typed handles on its maps. The only module (with `node/`)
//! that talks to the kernel.

mod attach;
mod cleanup;
mod error;
mod kernel;
mod load;
pub mod maps;
mod tc;

pub use attach::{AttachMode, Attachment, interface_name};
pub use cleanup::{CleanupReport, cleanup};
pub use error::Error;
pub use kernel::{AttachRequest, KernelError, KernelSupport, MINIMUM_KERNEL, default_attach_mode};
pub use load::{Capacities, Datapath, DatapathConfig, OBJECT_EMBEDDED, TestRunOutcome, maps_dir};
pub use tc::{FILTER_HANDLE, FILTER_PRIORITY};
