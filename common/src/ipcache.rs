//! `IPCACHE`: remote address (longest prefix) to identity.
//!
//! LPM trie key: `prefix_len` (native `u32`, counted over the 128-bit
//! [`Addr16`]; an IPv4 /n is stored as /(96+n) of its v4-mapped form) followed
//! by the address bytes in network order. Value: [`IpcacheValue`]. An address
//! with no entry has identity [`crate::ids::IdentityId::WORLD`].

use crate::addr::Addr16;
use crate::ids::IdentityId;

/// Data part of the LPM key (aya supplies the `prefix_len` header).
pub type IpcacheKey = Addr16;

/// The prefix is one of this node's own addresses: connections from it to a
/// pod are always allowed (kubelet probes). Connections from a pod to it are
/// policed like any other address, by `identity`.
pub const IPCACHE_FLAG_HOST: u32 = 1 << 0;

/// Value of `IPCACHE`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IpcacheValue {
    /// The identity every address under this prefix has.
    pub identity: IdentityId,
    /// `IPCACHE_FLAG_*` bits.
    pub flags: u32,
}

const _: () = assert!(core::mem::size_of::<IpcacheValue>() == 8);

crate::user_pod!(IpcacheValue);
