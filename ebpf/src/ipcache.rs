//! `IPCACHE`: the identity of a remote address.

use aya_ebpf::{
    macros::map,
    maps::{LpmTrie, lpm_trie::Key},
};
use palisade_common::{
    addr::Addr16,
    ids::IdentityId,
    ipcache::{IpcacheKey, IpcacheValue},
    maps::DEFAULT_IPCACHE_MAX,
};

#[map]
static IPCACHE: LpmTrie<IpcacheKey, IpcacheValue> =
    LpmTrie::pinned(DEFAULT_IPCACHE_MAX, 0);

/// Longest-prefix match on the remote address; WORLD when nothing covers it.
#[inline(always)]
pub fn identity_of(addr: &Addr16) -> IdentityId {
    let key = Key::new(128, *addr);
    match IPCACHE.get(&key) {
        Some(v) => v.identity,
        None => IdentityId::WORLD,
    }
}
