//! `POLICY`: does a rule allow this flow? Two lookups: the remote's identity,
//! then ANY (see the key layout in `palisade_common::policy`).

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

/// The rule allowing `endpoint` to talk to `identity` in `direction` on
/// `protocol`/`port` (the server's port; 0 for protocols without ports).
#[inline(always)]
pub fn allowing_rule(
    endpoint: EndpointId,
    identity: IdentityId,
    direction: Direction,
    protocol: u8,
    port: u16,
) -> Option<RuleId> {
    let key = Key::new(
        PREFIX_FULL,
        PolicyKey::new(endpoint, identity, direction, protocol, port),
    );
    if let Some(v) = POLICY.get(&key) {
        return Some(v.rule);
    }
    let any = Key::new(
        PREFIX_FULL,
        PolicyKey::new(endpoint, IdentityId::ANY, direction, protocol, port),
    );
    POLICY.get(&any).map(|v| v.rule)
}
