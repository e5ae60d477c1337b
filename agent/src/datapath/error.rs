//! Errors of the datapath layer; each names the map, program, path or interface.

use std::path::PathBuf;

/// Why a datapath operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The binary was built without its eBPF object.
    #[error(
        "this palisade binary was built without its eBPF object; build it with `cargo xtask build`"
    )]
    NoObject,
    /// A bpffs directory could not be prepared.
    #[error("bpffs directory {path}")]
    Bpffs {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The object failed to load (maps or programs).
    #[error("loading the eBPF object (pins under {pins})")]
    Load {
        /// Map pin directory.
        pins: PathBuf,
        /// The cause.
        #[source]
        source: Box<aya::EbpfError>,
    },
    /// A program the agent needs is not in the object.
    #[error("program {name} is missing from the eBPF object")]
    ProgramMissing {
        /// Program name.
        name: &'static str,
    },
    /// A program operation failed.
    #[error("program {name}")]
    Program {
        /// Program name.
        name: &'static str,
        /// The cause.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// A map the agent needs is not in the object.
    #[error("map {name} is missing from the eBPF object")]
    MapMissing {
        /// Map name.
        name: &'static str,
    },
    /// A map operation failed.
    #[error("map {name}")]
    Map {
        /// Map name.
        name: &'static str,
        /// The cause.
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// An interface name could not be resolved.
    #[error("interface {interface}")]
    Interface {
        /// Interface name.
        interface: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Attaching a program to an interface failed.
    #[error("attaching {program} to {interface}")]
    Attach {
        /// Program name.
        program: &'static str,
        /// Interface name.
        interface: String,
        /// The cause.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// Reading or changing the clsact filters of an interface failed.
    #[error("tc filters on the {hook} hook of {interface}")]
    Filter {
        /// Interface name.
        interface: String,
        /// `ingress` or `egress`.
        hook: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Another owner's filter sits in Palisade's filter slot.
    #[error(
        "the {hook} hook of {interface} has another owner's filter ({owner}) at Palisade's \
         priority {priority} and handle {handle:#x}; remove it or use --attach tcx"
    )]
    FilterSlotTaken {
        /// Interface name.
        interface: String,
        /// `ingress` or `egress`.
        hook: &'static str,
        /// What is there (kind and program name).
        owner: String,
        /// Palisade's filter priority.
        priority: u16,
        /// Palisade's filter handle.
        handle: u32,
    },
    /// The kernel lacks something the agent needs.
    #[error(transparent)]
    Kernel(#[from] super::kernel::KernelError),
    /// Pinning a map the agent creates itself failed.
    #[error("pinning a map at {path}")]
    Pin {
        /// Pin path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: aya::pin::PinError,
    },
    /// The counter ledger outgrew its map.
    #[error("a counter ledger of {bytes} bytes exceeds the {limit} its map holds")]
    LedgerTooLarge {
        /// The ledger's size.
        bytes: usize,
        /// What the map holds.
        limit: usize,
    },
    /// The jiffy length (CLOCK_MONOTONIC_COARSE's resolution) could not be read.
    #[error("reading the resolution of CLOCK_MONOTONIC_COARSE")]
    ClockTick {
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `clock_anchor` refused to anchor the programs' clock.
    #[error("clock_anchor refused a tick of {tick} ns (returned {outcome})")]
    ClockAnchor {
        /// The tick it was given.
        tick: u64,
        /// Its return code.
        outcome: i32,
    },
    /// Pinning or adopting a pinned link failed.
    #[error("link pin {path}")]
    LinkPin {
        /// Pin path.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: PinError,
    },
}

impl Error {
    pub(crate) fn map(name: &'static str, source: aya::maps::MapError) -> Self {
        Error::Map {
            name,
            source: Box::new(source),
        }
    }

    /// What kind of error this is, as a metric label (`palisade_errors_total`).
    pub fn label(&self) -> &'static str {
        match self {
            Error::NoObject => "no_object",
            Error::Bpffs { .. } => "bpffs",
            Error::Load { .. } => "load",
            Error::ProgramMissing { .. } => "program_missing",
            Error::Program { .. } => "program",
            Error::MapMissing { .. } => "map_missing",
            Error::Map { .. } if self.is_map_full() => "map_full",
            Error::Map { .. } => "map",
            Error::Interface { .. } => "interface",
            Error::Attach { .. } => "attach",
            Error::Filter { .. } => "tc_filter",
            Error::FilterSlotTaken { .. } => "tc_filter_slot_taken",
            Error::Kernel(_) => "kernel",
            Error::Pin { .. } => "pin",
            Error::LedgerTooLarge { .. } => "ledger_too_large",
            Error::LinkPin { .. } => "link_pin",
            Error::ClockTick { .. } => "clock_tick",
            Error::ClockAnchor { .. } => "clock_anchor",
        }
    }

    /// Whether this is a map insert that failed because the map is full.
    pub fn is_map_full(&self) -> bool {
        match self {
            Error::Map { source, .. } => matches!(
                source.as_ref(),
                aya::maps::MapError::SyscallError(e)
                    if matches!(e.io_error.raw_os_error(), Some(libc::E2BIG) | Some(libc::ENOSPC) | Some(libc::ENOMEM))
            ),
            _ => false,
        }
    }

    /// The syncer's view of a failed map write: full, or failed.
    pub(crate) fn into_write_error(self) -> crate::sync::WriteError {
        use crate::sync::WriteError;
        let full = self.is_map_full();
        match self {
            Error::Map { name, .. } if full => WriteError::Full { map: name },
            Error::Map { name, source } => WriteError::Failed { map: name, source },
            other => WriteError::Failed {
                map: "unknown",
                source: Box::new(other),
            },
        }
    }
}

/// What went wrong with a tcx link's pin.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// The link is not one that can be pinned (not a tcx link).
    #[error("not a pinnable link")]
    Link(#[source] aya::programs::links::LinkError),
    /// The stale pin file could not be removed.
    #[error("removing the previous pin")]
    Remove(#[source] std::io::Error),
    /// Pinning failed.
    #[error("pinning")]
    Pin(#[source] aya::pin::PinError),
    /// Unpinning failed.
    #[error("unpinning")]
    Unpin(#[source] std::io::Error),
}
