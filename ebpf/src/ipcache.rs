//! `IPCACHE`: the identity of a remote address.

use aya_ebpf::{
    macros::map,
    maps::{LpmTrie, lpm_trie::Key},
};
use palisade_common::{
    addr::Addr16,
    ids::IdentityId,
    ipcache::{IPCACHE_FLAG_HOST, IpcacheKey, IpcacheValue},
    maps::DEFAULT_IPCACHE_MAX,
};

#[map]
static IPCACHE: LpmTrie<IpcacheKey, IpcacheValue> = LpmTrie::pinned(DEFAULT_IPCACHE_MAX, 0);

/// Longest-prefix match on the remote address: its identity (WORLD when
/// nothing covers it) and whether it is one of this node's own addresses.
#[inline(always)]
pub fn lookup(addr: &Addr16) -> (IdentityId, bool) {
    let key = Key::new(128, *addr);
    match IPCACHE.get(&key) {
        Some(v) => (v.identity, v.flags & IPCACHE_FLAG_HOST != 0),
        None => (IdentityId::WORLD, false),
    }
}
