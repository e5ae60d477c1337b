//! Netlink clsact filters: how the programs attach where there is no tcx
//! (kernels before 6.6), or with `--attach tc`.
//!
//! Palisade's filters sit at one fixed slot of each hook, [`FILTER_PRIORITY`]
//! and [`FILTER_HANDLE`], carry the program's name (`palisade_egress` on the
//! host's ingress hook, `palisade_ingress` on its egress hook) and run
//! direct-action. Priority 1 runs before every filter at a higher number, so
//! a CNI's own programs cannot skip policy. A filter is not owned by a file
//! descriptor: it stays attached and enforcing when the agent exits, however
//! it exits, until `palisade cleanup` removes it or its interface goes. A new
//! agent replaces the program of the filter in place (the kernel swaps it
//! under RCU), so no packet passes between the old program and the new one.
//!
//! Filters of other owners are never changed; builds from before the fixed
//! slot (auto-assigned priorities, programs named `pod_egress` and
//! `pod_ingress`) are recognised by name *and* by using this agent's pinned
//! maps, and removed once Palisade's own filter is in place.

use std::collections::BTreeSet;
use std::io;

use aya::programs::TcAttachType;
use aya::programs::links::Link as _;
use aya::programs::tc::{SchedClassifierLink, TcHandle};
use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::tc::{
    TcAttribute, TcFilterBpfOption, TcHandle as NlTcHandle, TcMessage, TcOption,
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// The priority of Palisade's filters on both clsact hooks.
pub const FILTER_PRIORITY: u16 = 1;
/// The handle of Palisade's filters on both clsact hooks (`tc` prints `0x9a15`).
pub const FILTER_HANDLE: u32 = 0x9a15;

/// Program names of builds that let the kernel pick the filter's slot.
const LEGACY_NAMES: [&str; 2] = ["pod_egress", "pod_ingress"];

/// One filter on a clsact hook, as the kernel dumps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    /// Priority (lower runs first).
    pub priority: u16,
    /// Handle within the priority.
    pub handle: u32,
    /// Classifier kind (`bpf`, `u32`, `flower`, ...).
    pub kind: String,
    /// For `bpf` filters: the program's name.
    pub name: Option<String>,
    /// For `bpf` filters: the program's kernel id.
    pub program_id: Option<u32>,
}

impl Filter {
    /// Whether this filter sits in Palisade's slot.
    pub fn in_palisade_slot(&self) -> bool {
        self.priority == FILTER_PRIORITY && self.handle == FILTER_HANDLE
    }

    /// Whether this is Palisade's filter carrying program `program`.
    pub fn is_palisade(&self, program: &str) -> bool {
        self.in_palisade_slot() && self.kind == "bpf" && self.name.as_deref() == Some(program)
    }

    /// Whether this is an older build's filter: a legacy program name, and
    /// a program that uses one of `our_maps` (map ids).
    pub fn is_legacy_palisade(
        &self,
        our_maps: &BTreeSet<u32>,
        map_ids: impl Fn(u32) -> Vec<u32>,
    ) -> bool {
        !self.in_palisade_slot()
            && self.kind == "bpf"
            && self
                .name
                .as_deref()
                .is_some_and(|n| LEGACY_NAMES.contains(&n))
            && self
                .program_id
                .is_some_and(|id| map_ids(id).iter().any(|m| our_maps.contains(m)))
    }
}

/// The clsact parent of a hook.
fn parent(hook: TcAttachType) -> NlTcHandle {
    NlTcHandle {
        major: 0xffff,
        minor: match hook {
            TcAttachType::Ingress => NlTcHandle::MIN_INGRESS,
            _ => NlTcHandle::MIN_EGRESS,
        },
    }
}

/// Every filter on one clsact hook of interface `ifindex` (in the calling
/// thread's network namespace). No clsact qdisc: no filters.
pub fn filters(ifindex: u32, hook: TcAttachType) -> io::Result<Vec<Filter>> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;

    let mut request = TcMessage::default();
    request.header.index = ifindex as i32;
    request.header.parent = parent(hook);
    let mut message = NetlinkMessage::from(RouteNetlinkMessage::GetTrafficFilter(request));
    message.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    message.header.sequence_number = 1;
    message.finalize();
    let mut buf = vec![0; message.buffer_len()];
    message.serialize(&mut buf);
    socket.send(&buf, 0)?;

    let mut out = Vec::new();
    loop {
        let (bytes, _) = socket.recv_from_full()?;
        let mut offset = 0;
        while offset < bytes.len() {
            let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[offset..])
                .map_err(io::Error::other)?;
            let length = reply.header.length as usize;
            match reply.payload {
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => {
                    return Err(e
                        .code
                        .map(|c| io::Error::from_raw_os_error(-c.get()))
                        .unwrap_or_else(|| io::Error::other("netlink error")));
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewTrafficFilter(m)) => {
                    out.extend(filter(&m));
                }
                _ => {}
            }
            if length == 0 {
                break;
            }
            offset += length;
        }
    }
}

/// A dumped filter; `None` for the entry that only announces a priority.
fn filter(message: &TcMessage) -> Option<Filter> {
    let handle = u32::from(message.header.handle);
    if handle == 0 {
        return None;
    }
    let mut filter = Filter {
        priority: (message.header.info >> 16) as u16,
        handle,
        kind: String::new(),
        name: None,
        program_id: None,
    };
    for attribute in &message.attributes {
        match attribute {
            TcAttribute::Kind(kind) => filter.kind = kind.clone(),
            TcAttribute::Options(options) => {
                for option in options {
                    match option {
                        TcOption::Bpf(TcFilterBpfOption::ProgName(n)) => {
                            filter.name = Some(n.clone())
                        }
                        TcOption::Bpf(TcFilterBpfOption::ProgId(id)) => {
                            filter.program_id = Some(*id)
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(filter)
}

/// aya's handle of a filter handle.
pub fn aya_handle(handle: u32) -> TcHandle {
    TcHandle::new((handle >> 16) as u16, handle as u16)
}

/// Removes the filter at (`priority`, `handle`) of a hook.
pub fn delete(
    interface: &str,
    hook: TcAttachType,
    priority: u16,
    handle: u32,
) -> Result<(), aya::programs::ProgramError> {
    let link = SchedClassifierLink::attached(interface, hook, priority, aya_handle(handle), None)
        .map_err(|e| {
        aya::programs::ProgramError::from(aya::programs::tc::TcError::IoError(e))
    })?;
    link.detach()
}

/// Kernel ids of the maps pinned under `bpffs` (this agent's maps).
pub fn pinned_map_ids(bpffs: &std::path::Path) -> BTreeSet<u32> {
    std::fs::read_dir(super::bpffs::maps_dir(bpffs))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| aya::maps::MapData::from_pin(e.path()).ok())
        .filter_map(|m| m.info().ok().map(|i| i.id()))
        .collect()
}

/// Kernel ids of the maps program `id` uses (none when it is gone).
pub fn program_map_ids(id: u32) -> Vec<u32> {
    aya::programs::loaded_programs()
        .flatten()
        .find(|p| p.id() == id)
        .and_then(|p| p.map_ids().ok().flatten())
        .unwrap_or_default()
}

/// Every interface of the calling thread's network namespace.
pub fn interfaces() -> Vec<(u32, String)> {
    let mut out = Vec::new();
    // SAFETY: if_nameindex returns an array ended by a zero entry, or null;
    // it is freed with if_freenameindex after being read.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return out;
        }
        let mut entry = list;
        while (*entry).if_index != 0 {
            let name = std::ffi::CStr::from_ptr((*entry).if_name);
            out.push(((*entry).if_index, name.to_string_lossy().into_owned()));
            entry = entry.add(1);
        }
        libc::if_freenameindex(list);
    }
    out
}

/// The hook's name in errors and logs.
pub(crate) fn hook_name(hook: TcAttachType) -> &'static str {
    match hook {
        TcAttachType::Ingress => "ingress",
        _ => "egress",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bpf(priority: u16, handle: u32, name: &str, id: u32) -> Filter {
        Filter {
            priority,
            handle,
            kind: "bpf".into(),
            name: Some(name.into()),
            program_id: Some(id),
        }
    }

    #[test]
    fn only_the_fixed_slot_with_the_programs_name_is_palisades() {
        assert!(
            bpf(FILTER_PRIORITY, FILTER_HANDLE, "palisade_egress", 1)
                .is_palisade("palisade_egress")
        );
        assert!(
            !bpf(FILTER_PRIORITY, FILTER_HANDLE, "palisade_egress", 1)
                .is_palisade("palisade_ingress")
        );
        assert!(!bpf(FILTER_PRIORITY, 1, "palisade_egress", 1).is_palisade("palisade_egress"));
        assert!(!bpf(2, FILTER_HANDLE, "palisade_egress", 1).is_palisade("palisade_egress"));
        let mut u32_filter = bpf(FILTER_PRIORITY, FILTER_HANDLE, "palisade_egress", 1);
        u32_filter.kind = "u32".into();
        assert!(!u32_filter.is_palisade("palisade_egress"));
    }

    #[test]
    fn a_legacy_filter_needs_its_name_and_one_of_our_maps() {
        let ours: BTreeSet<u32> = [7, 8].into();
        let maps = |id: u32| if id == 42 { vec![3, 8] } else { vec![3] };
        assert!(bpf(49152, 1, "pod_egress", 42).is_legacy_palisade(&ours, maps));
        // Another owner's program of the same name, on other maps.
        assert!(!bpf(49152, 1, "pod_egress", 43).is_legacy_palisade(&ours, maps));
        // Our maps, another name.
        assert!(!bpf(49152, 1, "cni_prog", 42).is_legacy_palisade(&ours, maps));
        // The fixed slot is never legacy.
        assert!(
            !bpf(FILTER_PRIORITY, FILTER_HANDLE, "pod_egress", 42).is_legacy_palisade(&ours, maps)
        );
    }
}
