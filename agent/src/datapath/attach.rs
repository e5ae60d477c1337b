//! Attaching the programs to a pod's host-side interface.
//!
//! tcx links (kernel >= 6.6) are pinned under `<bpffs>/links/<ifindex>-<hook>`,
//! so they outlive the agent: a restarted or upgraded agent finds the pin and
//! swaps its program into the same link atomically (`bpf_link_update`), and no
//! packet ever crosses the interface unpoliced. Our programs go first on the
//! hook, so a CNI program that redirects cannot skip policy. Older kernels fall
//! back to a netlink clsact filter, which is not pinned (a restart re-attaches).

use std::fs;
use std::io;
use std::path::PathBuf;

use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::{SchedClassifierLink, TcAttachOptions};
use aya::programs::{LinkOrder, SchedClassifier, TcAttachType};
use aya::util::KernelVersion;

use super::error::Error;
use super::load::{Datapath, PROG_POD_EGRESS, PROG_POD_INGRESS, links_dir, program_mut};

/// How the programs are attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// tcx links, pinned.
    Tcx,
    /// netlink clsact filters.
    Netlink,
}

/// An interface carrying both programs.
#[derive(Debug)]
pub struct Attachment {
    /// Host-side interface index.
    pub ifindex: u32,
    /// Interface name at attach time.
    pub interface: String,
    /// tcx or netlink.
    pub mode: AttachMode,
    /// Whether an existing pinned link was adopted (agent restart or upgrade).
    pub adopted: bool,
}

/// (program, TC hook, pin suffix): the pod's egress is the host's ingress hook.
const HOOKS: [(&str, TcAttachType, &str); 2] = [
    (PROG_POD_EGRESS, TcAttachType::Ingress, "tc-ingress"),
    (PROG_POD_INGRESS, TcAttachType::Egress, "tc-egress"),
];

fn if_index(interface: &str) -> Result<u32, Error> {
    let c = std::ffi::CString::new(interface).map_err(|e| Error::Interface {
        interface: interface.to_string(),
        source: io::Error::other(e),
    })?;
    // SAFETY: `c` is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(Error::Interface {
            interface: interface.to_string(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(index)
}

impl Datapath {
    /// Path of the pinned link of one hook of an interface.
    fn link_pin(&self, ifindex: u32, suffix: &str) -> PathBuf {
        links_dir(&self.bpffs).join(format!("{ifindex}-{suffix}"))
    }

    /// Attaches both programs to `interface` (in the calling thread's network
    /// namespace), adopting pinned links left by a previous agent.
    pub fn attach(&mut self, interface: &str) -> Result<&Attachment, Error> {
        let ifindex = if_index(interface)?;
        let tcx = KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0));
        let mut adopted = false;
        for (program, hook, suffix) in HOOKS {
            if tcx {
                adopted |= self.attach_tcx(interface, ifindex, program, hook, suffix)?;
            } else {
                self.attach_netlink(interface, program, hook)?;
            }
        }
        let attachment = Attachment {
            ifindex,
            interface: interface.to_string(),
            mode: if tcx {
                AttachMode::Tcx
            } else {
                AttachMode::Netlink
            },
            adopted,
        };
        self.attachments.insert(ifindex, attachment);
        Ok(&self.attachments[&ifindex])
    }

    fn attach_tcx(
        &mut self,
        interface: &str,
        ifindex: u32,
        program: &'static str,
        hook: TcAttachType,
        suffix: &str,
    ) -> Result<bool, Error> {
        let pin = self.link_pin(ifindex, suffix);
        let attach_err = |source| Error::Attach {
            program,
            interface: interface.to_string(),
            source: Box::new(source),
        };
        let pin_err = |reason: String| Error::LinkPin {
            path: pin.clone(),
            reason,
        };
        let want = self.program_id(program)?;
        let prog = program_mut(&mut self.ebpf, program)?;

        let adopted = adopt_pin(prog, interface, hook, want, &pin)
            .map_err(|e| e.into_error(program, interface, &pin))?;
        if !adopted {
            let id = prog
                .attach_with_options(
                    interface,
                    hook,
                    TcAttachOptions::TcxOrder(LinkOrder::first()),
                )
                .map_err(attach_err)?;
            let link = prog.take_link(id).map_err(attach_err)?;
            drop(keep_pinned(link, &pin).map_err(pin_err)?);
        }
        Ok(adopted)
    }

    fn attach_netlink(
        &mut self,
        interface: &str,
        program: &'static str,
        hook: TcAttachType,
    ) -> Result<(), Error> {
        // EEXIST when the CNI (or a previous run) already added clsact.
        let _ = aya::programs::tc::qdisc_add_clsact(interface);
        let prog = program_mut(&mut self.ebpf, program)?;
        prog.attach_with_options(
            interface,
            hook,
            TcAttachOptions::Netlink(Default::default()),
        )
        .map_err(|source| Error::Attach {
            program,
            interface: interface.to_string(),
            source: Box::new(source),
        })?;
        Ok(())
    }

    /// Keeps enforcing on an interface that a previous agent attached but that
    /// no pod resolves to yet: swaps this build's programs into its pinned
    /// links, and never creates a link. Returns the interface's name, or
    /// `None` when it is gone or its links are defunct; their pins are then
    /// removed.
    ///
    /// Without its endpoint entry the programs drop every packet on that
    /// interface (`endpoint_unknown`): closed, rather than the open interface
    /// a detach would leave.
    pub fn retain_pinned(&mut self, ifindex: u32) -> Result<Option<String>, Error> {
        let Some(interface) = interface_name(ifindex) else {
            self.detach(ifindex)?;
            return Ok(None);
        };
        let mut live = true;
        for (program, hook, suffix) in HOOKS {
            let pin = self.link_pin(ifindex, suffix);
            let want = self.program_id(program)?;
            let prog = program_mut(&mut self.ebpf, program)?;
            live &= adopt_pin(prog, &interface, hook, want, &pin)
                .map_err(|e| e.into_error(program, &interface, &pin))?;
        }
        if !live {
            self.detach(ifindex)?;
            return Ok(None);
        }
        Ok(Some(interface))
    }

    /// Detaches both programs from an interface and forgets it. Interfaces that
    /// vanished detach by themselves; this then only removes the pins.
    pub fn detach(&mut self, ifindex: u32) -> Result<(), Error> {
        self.attachments.remove(&ifindex);
        for (_, _, suffix) in HOOKS {
            let pin = self.link_pin(ifindex, suffix);
            match PinnedLink::from_pin(&pin) {
                Ok(pinned) => {
                    let link = pinned.unpin().map_err(|e| Error::LinkPin {
                        path: pin.clone(),
                        reason: e.to_string(),
                    })?;
                    // Dropping the last reference releases (detaches) the link.
                    drop(link);
                }
                Err(_) if !pin.exists() => {}
                Err(e) => {
                    let _ = fs::remove_file(&pin);
                    tracing::warn!(path = %pin.display(), error = %e, "removed unreadable link pin");
                }
            }
        }
        Ok(())
    }

    /// Interfaces currently carrying the programs, by ifindex.
    pub fn attachments(&self) -> impl Iterator<Item = &Attachment> {
        self.attachments.values()
    }

    /// Ifindexes that have pinned links under this agent's bpffs directory
    /// (what a previous agent attached), for adoption or cleanup.
    pub fn pinned_ifindexes(&self) -> Vec<u32> {
        let mut out: Vec<u32> = fs::read_dir(links_dir(&self.bpffs))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.split('-').next())
                    .and_then(|n| n.parse().ok())
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

enum AdoptError {
    Attach(aya::programs::ProgramError),
    Pin(String),
}

impl AdoptError {
    fn into_error(self, program: &'static str, interface: &str, pin: &std::path::Path) -> Error {
        match self {
            AdoptError::Attach(source) => Error::Attach {
                program,
                interface: interface.to_string(),
                source: Box::new(source),
            },
            AdoptError::Pin(reason) => Error::LinkPin {
                path: pin.to_path_buf(),
                reason,
            },
        }
    }
}

/// Swaps `prog` into the link pinned at `pin`, if there is one, and keeps the
/// pin when the link is live on `interface` (our program `want` now runs on
/// `hook`). A link left by a vanished interface whose ifindex was reused is
/// defunct: its pin is removed. Returns whether the pin was adopted.
fn adopt_pin(
    prog: &mut SchedClassifier,
    interface: &str,
    hook: TcAttachType,
    want: u32,
    pin: &std::path::Path,
) -> Result<bool, AdoptError> {
    let Ok(pinned) = PinnedLink::from_pin(pin) else {
        if pin.exists() {
            let _ = fs::remove_file(pin);
        }
        return Ok(false);
    };
    let fd: FdLink = pinned.into();
    let link = SchedClassifierLink::try_from(fd).map_err(|e| AdoptError::Pin(e.to_string()))?;
    let id = prog.attach_to_link(link).map_err(AdoptError::Attach)?;
    let link = prog.take_link(id).map_err(AdoptError::Attach)?;
    if attached_ids(interface, hook)
        .map_err(AdoptError::Attach)?
        .contains(&want)
    {
        drop(keep_pinned(link, pin).map_err(AdoptError::Pin)?);
        Ok(true)
    } else {
        drop(link);
        let _ = fs::remove_file(pin);
        Ok(false)
    }
}

/// The name of the interface with index `ifindex` in this network namespace.
pub fn interface_name(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has room for IF_NAMESIZE bytes, as if_indextoname needs.
    let name = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if name.is_null() {
        return None;
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

/// Pins a tcx link at `pin` (replacing a pin file of the same link).
fn keep_pinned(link: SchedClassifierLink, pin: &std::path::Path) -> Result<PinnedLink, String> {
    let fd: FdLink = link
        .try_into()
        .map_err(|e: aya::programs::links::LinkError| e.to_string())?;
    match fs::remove_file(pin) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.to_string()),
    }
    fd.pin(pin).map_err(|e| e.to_string())
}

/// Program ids attached by tcx on one hook of an interface.
fn attached_ids(
    interface: &str,
    hook: TcAttachType,
) -> Result<Vec<u32>, aya::programs::ProgramError> {
    let (_, programs) = SchedClassifier::query_tcx(interface, hook)?;
    Ok(programs.iter().map(|p| p.id()).collect())
}
