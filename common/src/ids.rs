//! Newtypes for ids stored in maps, so an identity can never be passed as a rule.

/// A remote security identity: the set of peer selectors and ipBlocks an address
/// satisfies. Every address with the same answers shares one identity.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(
    feature = "user",
    derive(serde::Serialize, serde::Deserialize),
    serde(transparent)
)]
pub struct IdentityId(pub u32);

impl IdentityId {
    /// Wildcard used in [`crate::policy::PolicyKey`] for rules that allow every peer.
    pub const ANY: IdentityId = IdentityId(0);
    /// Reserved (the node's addresses carry a flag in the ipcache instead,
    /// keeping their ipBlock membership for egress rules).
    pub const RESERVED: IdentityId = IdentityId(1);
    /// Addresses the ipcache does not know.
    pub const WORLD: IdentityId = IdentityId(2);
    /// First id available for identities allocated by the compiler.
    pub const FIRST_ALLOCATED: u32 = 16;
    /// Ids from here up are temporary identities the map writer uses while
    /// addresses move (never the compiler's).
    pub const FIRST_WAYPOINT: u32 = 1 << 31;
}

/// A local endpoint (pod) on this node; keys its rules in the policy map.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(
    feature = "user",
    derive(serde::Serialize, serde::Deserialize),
    serde(transparent)
)]
pub struct EndpointId(pub u32);

/// A rule's id: indexes [`crate::maps::RULE_COUNTERS`] and maps back to
/// namespace/policy/direction/rule index in the agent.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(
    feature = "user",
    derive(serde::Serialize, serde::Deserialize),
    serde(transparent)
)]
pub struct RuleId(pub u32);

impl RuleId {
    /// Counter slot for traffic allowed without a rule (not isolated, node, self, reply).
    pub const NONE: RuleId = RuleId(0);
}

/// Policy revision: bumped by the agent on every applied plan. Conntrack entries
/// remember the revision that allowed them and are re-checked when it changes.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(
    feature = "user",
    derive(serde::Serialize, serde::Deserialize),
    serde(transparent)
)]
pub struct Revision(pub u32);

crate::user_pod!(IdentityId, EndpointId, RuleId, Revision);
