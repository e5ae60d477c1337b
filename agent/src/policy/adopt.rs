//! Taking over a previous agent's ids (pure).
//!
//! A restarted or upgraded agent finds the kernel holding the previous
//! agent's endpoint and identity ids. Its own compiler numbers afresh, so the
//! same id could mean another pod or another set of addresses, and the first
//! apply's make-before-break order would then pass, for a moment, traffic
//! that both states deny: the new entries of an id are written while the
//! ipcache and endpoints still point the old meaning at it. So the first plan
//! is renumbered to the pinned ids where the meanings match (an endpoint by
//! its interface, an identity by the prefixes it covers), and every other
//! pinned id is kept out of use.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ipnet::IpNet;
use palisade_common::ids::{EndpointId, IdentityId};

use super::plan::DatapathPlan;
use crate::state::PodRef;

/// What the kernel's pinned maps say about ids.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PinnedIds {
    /// Each endpoint pod's pinned id (through the interface it has now).
    pub endpoints: BTreeMap<PodRef, EndpointId>,
    /// Each pinned ipcache prefix's identity.
    pub identities: BTreeMap<IpNet, IdentityId>,
    /// Every endpoint id any pinned entry holds.
    pub endpoint_ids: BTreeSet<u32>,
    /// Every allocated identity id any pinned entry holds.
    pub identity_ids: BTreeSet<u32>,
}

/// The id moves that make a plan use the pinned ids.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Renumbering {
    /// Plan endpoint id -> pinned id.
    pub endpoints: HashMap<u32, u32>,
    /// Plan identity id -> pinned id.
    pub identities: HashMap<u32, u32>,
}

/// Matches `plan`'s ids to `pinned`'s. An identity takes the pinned id that
/// covered most of its prefixes (ties: the lower ids first), each pinned id
/// going to one identity at most; reserved identities and waypoints are
/// never matched.
pub fn renumbering(plan: &DatapathPlan, pinned: &PinnedIds) -> Renumbering {
    let mut endpoints = HashMap::new();
    let mut claimed = BTreeSet::new();
    for (pod, ep) in &plan.endpoints {
        if let Some(id) = pinned.endpoints.get(pod)
            && claimed.insert(id.0)
        {
            endpoints.insert(ep.id.0, id.0);
        }
    }

    // A waypoint left by an interrupted apply is no identity to take over.
    let allocated =
        |id: &IdentityId| (IdentityId::FIRST_ALLOCATED..IdentityId::FIRST_WAYPOINT).contains(&id.0);
    let mut overlap: BTreeMap<(u32, u32), usize> = BTreeMap::new();
    for (net, id) in plan.ipcache.iter().filter(|(_, id)| allocated(id)) {
        if let Some(old) = pinned.identities.get(net).filter(|old| allocated(old)) {
            *overlap.entry((id.0, old.0)).or_default() += 1;
        }
    }
    let mut pairs: Vec<((u32, u32), usize)> = overlap.into_iter().collect();
    pairs.sort_by_key(|&(pair, count)| (std::cmp::Reverse(count), pair));
    let mut identities = HashMap::new();
    let mut claimed = BTreeSet::new();
    for ((id, old), _) in pairs {
        if !identities.contains_key(&id) && claimed.insert(old) {
            identities.insert(id, old);
        }
    }
    Renumbering {
        endpoints,
        identities,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::plan::EndpointPlan;

    fn pod(name: &str) -> PodRef {
        PodRef {
            namespace: "t".into(),
            name: name.into(),
        }
    }

    fn endpoint(id: u32) -> EndpointPlan {
        EndpointPlan {
            id: EndpointId(id),
            ipv4: None,
            ipv6: None,
            ingress_isolated: true,
            egress_isolated: false,
            audit: false,
            source_prefixes: Vec::new(),
            policies: Vec::new(),
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().expect("valid cidr")
    }

    #[test]
    fn endpoints_follow_their_pods_and_identities_their_prefixes() {
        let mut plan = DatapathPlan::default();
        plan.endpoints.insert(pod("a"), endpoint(1));
        plan.endpoints.insert(pod("b"), endpoint(2));
        plan.endpoints.insert(pod("new"), endpoint(3));
        for (prefix, id) in [
            ("10.0.0.1/32", 16),
            ("10.0.0.2/32", 16),
            ("10.0.0.3/32", 17),
            ("10.0.0.9/32", 18),
            ("0.0.0.0/0", IdentityId::WORLD.0),
        ] {
            std::sync::Arc::make_mut(&mut plan.ipcache).insert(net(prefix), IdentityId(id));
        }
        let pinned = PinnedIds {
            endpoints: BTreeMap::from([(pod("a"), EndpointId(2)), (pod("b"), EndpointId(1))]),
            identities: BTreeMap::from([
                // 16's prefixes were 17 and 20: the majority decides.
                (net("10.0.0.1/32"), IdentityId(17)),
                (net("10.0.0.2/32"), IdentityId(17)),
                (net("10.0.0.3/32"), IdentityId(17)),
                (net("0.0.0.0/0"), IdentityId(20)),
            ]),
            ..PinnedIds::default()
        };
        let r = renumbering(&plan, &pinned);
        assert_eq!(r.endpoints, HashMap::from([(1, 2), (2, 1)]));
        // 17 lost its pinned id to 16 (two prefixes against one); WORLD stays.
        assert_eq!(r.identities, HashMap::from([(16, 17)]));
    }
}
