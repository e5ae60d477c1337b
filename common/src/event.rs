//! The ring-buffer record for denied and audited flows.

use crate::addr::Addr16;

/// One denied (or audited) packet, as written to `EVENTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEvent {
    /// `bpf_ktime_get_ns` at the drop (monotonic since boot).
    pub timestamp_ns: u64,
    /// Host-side interface index of the endpoint.
    pub ifindex: u32,
    /// Endpoint id (0 when the endpoint was unknown).
    pub endpoint: u32,
    /// [`crate::verdict::DropReason`] as u32.
    pub reason: u32,
    /// [`crate::verdict::Direction`] as u8.
    pub direction: u8,
    /// IP protocol.
    pub protocol: u8,
    /// 1 when audit mode let the packet pass.
    pub audited: u8,
    /// Always zero.
    pub _pad: u8,
    /// Source address.
    pub src: Addr16,
    /// Destination address.
    pub dst: Addr16,
    /// Source port, host order (0 when the protocol has none).
    pub src_port: u16,
    /// Destination port, host order.
    pub dst_port: u16,
    /// Remote identity as resolved by the ipcache.
    pub remote_identity: u32,
}

const _: () = assert!(core::mem::size_of::<FlowEvent>() == 64);

crate::user_pod!(FlowEvent);
