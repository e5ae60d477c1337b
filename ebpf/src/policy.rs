//! `POLICY`: what the entries say about this flow. Two lookups: the remote's
//! identity, then ANY (see the key layout in `palisade_common::policy`). The
//! first lookup that finds an entry decides, allow or deny.

use aya_ebpf::{
    macros::map,
    maps::{LpmTrie, lpm_trie::Key},
};
use palisade_common::{
    ids::{EndpointId, IdentityId, RuleId},
    maps::DEFAULT_POLICY_MAX,
    policy::{PREFIX_FULL, PolicyKey, PolicyValue},
    verdict::Direction,
};

#[map]
static POLICY: LpmTrie<PolicyKey, PolicyValue> = LpmTrie::pinned(DEFAULT_POLICY_MAX, 0);

/// The entry deciding for `endpoint` talking to `identity` in `direction` on
/// `protocol`/`port` (the server's port; 0 for protocols without ports): the
/// most specific one of the first lookup that finds one. A miss reads as a
/// deny credited to no rule, which is what isolation without an entry means.
#[inline(always)]
pub fn lookup(
    endpoint: EndpointId,
    identity: IdentityId,
    direction: Direction,
    protocol: u8,
    port: u16,
) -> PolicyValue {
    let key = Key::new(
        PREFIX_FULL,
        PolicyKey::new(endpoint, identity, direction, protocol, port),
    );
    if let Some(v) = POLICY.get(&key) {
        return *v;
    }
    let any = Key::new(
        PREFIX_FULL,
        PolicyKey::new(endpoint, IdentityId::ANY, direction, protocol, port),
    );
    match POLICY.get(&any) {
        Some(v) => *v,
        None => PolicyValue::deny(RuleId::NONE),
    }
}
