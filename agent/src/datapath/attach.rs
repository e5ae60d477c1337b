//! Attaching the programs to a pod's host-side interface, in one of two modes
//! ([`AttachMode`]); both outlive the agent.
//!
//! tcx links (kernel >= 6.6) are pinned under `<bpffs>/links/<ifindex>-<hook>`:
//! a restarted or upgraded agent finds the pin and swaps its program into the
//! same link atomically (`bpf_link_update`). Netlink clsact filters (`tc`,
//! every kernel) sit in a fixed slot a new agent finds by a dump and replaces
//! in place (see [`super::tc`]). Either way no packet ever crosses the
//! interface unpoliced, and our programs go first on the hook, so a CNI
//! program that redirects cannot skip policy. Switching modes attaches the new
//! one before removing the other.

use std::fs;
use std::io;
use std::path::PathBuf;

use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::{NlOptions, SchedClassifierLink, TcAttachOptions};
use aya::programs::{LinkOrder, SchedClassifier, TcAttachType};

use super::bpffs::links_dir;
use super::error::{Error, PinError};
use super::load::{Datapath, program_mut};
use super::mode::{AttachMode, Attachment};
use super::object::{PROG_POD_EGRESS, PROG_POD_INGRESS};
use super::tc::{self, FILTER_HANDLE, FILTER_PRIORITY};

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
    /// namespace) in this datapath's mode, taking over what a previous agent
    /// attached there.
    pub fn attach(&mut self, interface: &str) -> Result<&Attachment, Error> {
        let ifindex = if_index(interface)?;
        let adopted = self.attach_hooks(interface, ifindex)?;
        let attachment = Attachment {
            ifindex,
            interface: interface.to_string(),
            mode: self.mode,
            adopted,
        };
        self.attachments.insert(ifindex, attachment);
        Ok(&self.attachments[&ifindex])
    }

    /// Both hooks in this datapath's mode, then the other mode's hooks gone
    /// (make before break). Returns whether a previous agent's were adopted.
    fn attach_hooks(&mut self, interface: &str, ifindex: u32) -> Result<bool, Error> {
        let mut adopted = false;
        for (program, hook, suffix) in HOOKS {
            adopted |= match self.mode {
                AttachMode::Tcx => self.attach_tcx(interface, ifindex, program, hook, suffix)?,
                AttachMode::Tc => self.attach_tc(interface, ifindex, program, hook)?,
            };
        }
        match self.mode {
            AttachMode::Tcx => self.remove_filters(interface, ifindex)?,
            AttachMode::Tc => self.remove_pins(ifindex)?,
        }
        Ok(adopted)
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
        let pin_err = |source: PinError| Error::LinkPin {
            path: pin.clone(),
            source,
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

    /// Puts `program` into Palisade's filter slot of `hook`: replaces the
    /// program of the filter a previous agent left there, or creates the
    /// filter. Returns whether one was there.
    fn attach_tc(
        &mut self,
        interface: &str,
        ifindex: u32,
        program: &'static str,
        hook: TcAttachType,
    ) -> Result<bool, Error> {
        let attach_err = |source| Error::Attach {
            program,
            interface: interface.to_string(),
            source: Box::new(source),
        };
        let filter_err = |source| Error::Filter {
            interface: interface.to_string(),
            hook: tc::hook_name(hook),
            source,
        };
        let want = self.program_id(program)?;
        let existing = tc::filters(ifindex, hook).map_err(filter_err)?;
        let slot = existing.iter().find(|f| f.in_palisade_slot());
        if let Some(other) = slot.filter(|f| !f.is_palisade(program)) {
            return Err(Error::FilterSlotTaken {
                interface: interface.to_string(),
                hook: tc::hook_name(hook),
                owner: format!("{} {}", other.kind, other.name.as_deref().unwrap_or("")),
                priority: FILTER_PRIORITY,
                handle: FILTER_HANDLE,
            });
        }
        let prog = program_mut(&mut self.ebpf, program)?;
        let id = if slot.is_some() {
            let link = SchedClassifierLink::attached(
                interface,
                hook,
                FILTER_PRIORITY,
                tc::aya_handle(FILTER_HANDLE),
                None,
            )
            .map_err(filter_err)?;
            prog.attach_to_link(link).map_err(attach_err)?
        } else {
            ensure_clsact(interface).map_err(filter_err)?;
            prog.attach_with_options(
                interface,
                hook,
                TcAttachOptions::Netlink(NlOptions {
                    priority: FILTER_PRIORITY,
                    handle: tc::aya_handle(FILTER_HANDLE),
                    classid: None,
                }),
            )
            .map_err(attach_err)?
        };
        // The filter is not the program's to detach: it outlives this agent.
        std::mem::forget(prog.take_link(id).map_err(attach_err)?);
        let now = tc::filters(ifindex, hook).map_err(filter_err)?;
        if !now
            .iter()
            .any(|f| f.is_palisade(program) && f.program_id == Some(want))
        {
            return Err(Error::Filter {
                interface: interface.to_string(),
                hook: tc::hook_name(hook),
                source: io::Error::other(format!("{program} is not in the filter after attaching")),
            });
        }
        self.remove_legacy_filters(interface, ifindex, hook)?;
        Ok(slot.is_some())
    }

    /// Removes an older build's filters from a hook (ours now runs first).
    fn remove_legacy_filters(
        &self,
        interface: &str,
        ifindex: u32,
        hook: TcAttachType,
    ) -> Result<(), Error> {
        let filter_err = |source| Error::Filter {
            interface: interface.to_string(),
            hook: tc::hook_name(hook),
            source,
        };
        let ours = tc::pinned_map_ids(&self.bpffs);
        for f in tc::filters(ifindex, hook).map_err(filter_err)? {
            if f.is_legacy_palisade(&ours, tc::program_map_ids) {
                tc::delete(interface, hook, f.priority, f.handle)
                    .map_err(|e| filter_err(io::Error::other(e)))?;
                tracing::info!(
                    interface,
                    hook = tc::hook_name(hook),
                    priority = f.priority,
                    "removed an older Palisade build's filter"
                );
            }
        }
        Ok(())
    }

    /// Removes Palisade's filters from both hooks of an interface.
    fn remove_filters(&self, interface: &str, ifindex: u32) -> Result<(), Error> {
        for (program, hook, _) in HOOKS {
            let filter_err = |source| Error::Filter {
                interface: interface.to_string(),
                hook: tc::hook_name(hook),
                source,
            };
            let present = tc::filters(ifindex, hook)
                .map_err(filter_err)?
                .iter()
                .any(|f| f.is_palisade(program));
            if present {
                tc::delete(interface, hook, FILTER_PRIORITY, FILTER_HANDLE)
                    .map_err(|e| filter_err(io::Error::other(e)))?;
            }
        }
        Ok(())
    }

    /// Whether an interface carries Palisade's filter on either hook.
    fn has_filters(ifindex: u32) -> bool {
        HOOKS.iter().any(|(program, hook, _)| {
            tc::filters(ifindex, *hook).is_ok_and(|fs| fs.iter().any(|f| f.is_palisade(program)))
        })
    }

    /// Keeps enforcing on an interface that a previous agent attached but that
    /// no pod resolves to yet: puts this build's programs on it in this
    /// datapath's mode, only where a previous agent's live link or filter is.
    /// Returns the interface's name, or `None` when it is gone or carries
    /// nothing live of ours; its pins are then removed.
    ///
    /// Without its endpoint entry the programs drop every packet on that
    /// interface (`endpoint_unknown`): closed, rather than the open interface
    /// a detach would leave.
    pub fn retain_pinned(&mut self, ifindex: u32) -> Result<Option<String>, Error> {
        let Some(interface) = interface_name(ifindex) else {
            self.detach(ifindex)?;
            return Ok(None);
        };
        let mut tcx_live = true;
        for (program, hook, suffix) in HOOKS {
            let pin = self.link_pin(ifindex, suffix);
            if !pin.exists() {
                tcx_live = false;
                continue;
            }
            let want = self.program_id(program)?;
            let prog = program_mut(&mut self.ebpf, program)?;
            tcx_live &= adopt_pin(prog, &interface, hook, want, &pin)
                .map_err(|e| e.into_error(program, &interface, &pin))?;
        }
        if !tcx_live && !Self::has_filters(ifindex) {
            self.detach(ifindex)?;
            return Ok(None);
        }
        if !(tcx_live && self.mode == AttachMode::Tcx) {
            self.attach_hooks(&interface, ifindex)?;
        } else {
            self.remove_filters(&interface, ifindex)?;
        }
        Ok(Some(interface))
    }

    /// Detaches both programs from an interface and forgets it: its pinned
    /// links and its filters. Interfaces that vanished take their links and
    /// filters with them; this then only removes the pins.
    pub fn detach(&mut self, ifindex: u32) -> Result<(), Error> {
        self.attachments.remove(&ifindex);
        self.remove_pins(ifindex)?;
        if let Some(interface) = interface_name(ifindex) {
            self.remove_filters(&interface, ifindex)?;
        }
        Ok(())
    }

    /// Unpins (and so detaches) the tcx links of an interface.
    fn remove_pins(&self, ifindex: u32) -> Result<(), Error> {
        for (_, _, suffix) in HOOKS {
            let pin = self.link_pin(ifindex, suffix);
            match PinnedLink::from_pin(&pin) {
                Ok(pinned) => {
                    let link = pinned.unpin().map_err(|e| Error::LinkPin {
                        path: pin.clone(),
                        source: PinError::Unpin(e),
                    })?;
                    // Dropping the last reference releases (detaches) the link.
                    drop(link);
                }
                Err(_) if !pin.exists() => {}
                Err(e) => {
                    let _ = fs::remove_file(&pin);
                    tracing::warn!(path = %pin.display(), error = %crate::errors::chain(&e), "removed unreadable link pin");
                }
            }
        }
        Ok(())
    }

    /// Interfaces currently carrying the programs, by ifindex.
    pub fn attachments(&self) -> impl Iterator<Item = &Attachment> {
        self.attachments.values()
    }

    /// This datapath's attach mode.
    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    /// Ifindexes that carry what a previous agent attached: pinned links
    /// under this agent's bpffs directory, or Palisade's filters on an
    /// interface of this network namespace. For adoption or cleanup.
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
        out.extend(
            tc::interfaces()
                .into_iter()
                .map(|(ifindex, _)| ifindex)
                .filter(|ifindex| Self::has_filters(*ifindex)),
        );
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// Adds the clsact qdisc to `interface`; one that is there already (the
/// CNI's, or a previous run's) is fine, any other failure is not.
fn ensure_clsact(interface: &str) -> Result<(), io::Error> {
    use aya::programs::tc::TcError;
    match aya::programs::tc::qdisc_add_clsact(interface) {
        Ok(()) => Ok(()),
        Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        Err(TcError::NetlinkError(e)) => Err(match e.raw_os_error() {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::other(format!("adding the clsact qdisc: {e}")),
        }),
        Err(e) => Err(io::Error::other(format!("adding the clsact qdisc: {e}"))),
    }
}

enum AdoptError {
    Attach(aya::programs::ProgramError),
    Pin(PinError),
}

impl AdoptError {
    fn into_error(self, program: &'static str, interface: &str, pin: &std::path::Path) -> Error {
        match self {
            AdoptError::Attach(source) => Error::Attach {
                program,
                interface: interface.to_string(),
                source: Box::new(source),
            },
            AdoptError::Pin(source) => Error::LinkPin {
                path: pin.to_path_buf(),
                source,
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
    let link = SchedClassifierLink::try_from(fd).map_err(|e| AdoptError::Pin(PinError::Link(e)))?;
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
fn keep_pinned(link: SchedClassifierLink, pin: &std::path::Path) -> Result<PinnedLink, PinError> {
    let fd: FdLink = link.try_into().map_err(PinError::Link)?;
    match fs::remove_file(pin) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(PinError::Remove(e)),
    }
    fd.pin(pin).map_err(PinError::Pin)
}

/// Program ids attached by tcx on one hook of an interface.
fn attached_ids(
    interface: &str,
    hook: TcAttachType,
) -> Result<Vec<u32>, aya::programs::ProgramError> {
    let (_, programs) = SchedClassifier::query_tcx(interface, hook)?;
    Ok(programs.iter().map(|p| p.id()).collect())
}
