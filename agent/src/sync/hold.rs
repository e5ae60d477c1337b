//! The upgrade gate (pure): programs of an earlier build read every `POLICY`
//! entry as an allow, so while one of them may still run on a link no deny
//! entry is written. Pins that already hold deny entries open the gate at
//! once (`Syncer::adopt`): the agent that wrote them had its own gate open. Endpoints whose target has deny entries are held: their
//! `ENDPOINTS` value and all their `POLICY` and `SOURCE_PREFIXES` entries stay
//! as the kernel holds them. Absent stays absent (old programs then drop as
//! `endpoint_unknown`, closed); present stays present (the earlier build's
//! decisions, which keep established flows).
//!
//! A new agent takes over the pinned ids where it can (`policy::adopt`), but
//! an interface's pinned id may still be another endpoint's id in the target
//! (a pod that moved interface, one it could not place). Holding is by
//! interface and by id together: an endpoint is held when its target id or
//! its pinned id is a held one, until that closes.

use std::collections::BTreeSet;

use palisade_common::policy::PolicyKey;

use super::render::KernelState;

/// A target with its deny-carrying endpoints held.
#[derive(Debug)]
pub struct Held {
    /// What to write.
    pub state: KernelState,
    /// How many of the target's endpoints (interfaces) were held.
    pub endpoints: usize,
}

fn endpoint_of(key: &PolicyKey) -> u32 {
    u32::from_be_bytes(key.endpoint_be)
}

/// `target` with every endpoint that has deny entries (and every endpoint
/// sharing an id with a held one, pinned or targeted) left as in `current`.
pub fn hold_denies(current: &KernelState, target: &KernelState) -> Held {
    let mut ids: BTreeSet<u32> = target
        .policy
        .iter()
        .filter(|(_, v)| v.denies())
        .map(|((_, k), _)| endpoint_of(k))
        .collect();
    let mut held: BTreeSet<u32> = BTreeSet::new();
    loop {
        let before = (ids.len(), held.len());
        for (ifindex, info) in &target.endpoints {
            let pinned = current.endpoints.get(ifindex).map(|e| e.id.0);
            if ids.contains(&info.id.0) || pinned.is_some_and(|id| ids.contains(&id)) {
                held.insert(*ifindex);
                ids.insert(info.id.0);
                ids.extend(pinned);
            }
        }
        if (ids.len(), held.len()) == before {
            break;
        }
    }
    let mut state = target.clone();
    for ifindex in &held {
        match current.endpoints.get(ifindex) {
            Some(info) => state.endpoints.insert(*ifindex, *info),
            None => state.endpoints.remove(ifindex),
        };
    }
    let of_held = |key: &PolicyKey| ids.contains(&endpoint_of(key));
    state.policy.retain(|(_, k), _| !of_held(k));
    state.policy.extend(
        current
            .policy
            .iter()
            .filter(|((_, k), _)| of_held(k))
            .map(|(k, v)| (*k, *v)),
    );
    let prefix_of_held = |endpoint_be: [u8; 4]| ids.contains(&u32::from_be_bytes(endpoint_be));
    state
        .source_prefixes
        .retain(|(_, k), _| !prefix_of_held(k.endpoint_be));
    state.source_prefixes.extend(
        current
            .source_prefixes
            .keys()
            .filter(|(_, k)| prefix_of_held(k.endpoint_be))
            .map(|k| (*k, ())),
    );
    Held {
        state,
        endpoints: held.len(),
    }
}

#[cfg(test)]
mod tests {
    use palisade_common::endpoint::{EndpointInfo, FLAG_INGRESS_ISOLATED};
    use palisade_common::ids::{EndpointId, IdentityId, RuleId};
    use palisade_common::policy::PolicyValue;
    use palisade_common::verdict::Direction;

    use super::*;

    fn endpoint(id: u32) -> EndpointInfo {
        EndpointInfo {
            id: EndpointId(id),
            flags: FLAG_INGRESS_ISOLATED,
            ..Default::default()
        }
    }

    fn key(endpoint: u32, port: u16) -> (u32, PolicyKey) {
        let k = PolicyKey::new(
            EndpointId(endpoint),
            IdentityId(20),
            Direction::Ingress,
            6,
            port,
        );
        (96, k)
    }

    #[test]
    fn a_target_without_denies_is_written_as_it_is() {
        let mut target = KernelState::default();
        target.endpoints.insert(10, endpoint(1));
        target
            .policy
            .insert(key(1, 80), PolicyValue::allow(RuleId(1)));
        let held = hold_denies(&KernelState::default(), &target);
        assert_eq!((held.endpoints, &held.state), (0, &target));
    }

    #[test]
    fn an_endpoint_sharing_an_id_with_a_held_one_is_held_too() {
        // Pinned: interface 10 is endpoint 1. Target: interface 10 is
        // endpoint 2 (with a deny), interface 11 gets id 1 (allows only),
        // interface 12 (endpoint 3) is unrelated.
        let mut current = KernelState::default();
        current.endpoints.insert(10, endpoint(1));
        current
            .policy
            .insert(key(1, 80), PolicyValue::allow(RuleId(5)));
        let mut target = KernelState::default();
        target.endpoints.insert(10, endpoint(2));
        target.endpoints.insert(11, endpoint(1));
        target.endpoints.insert(12, endpoint(3));
        target
            .policy
            .insert(key(2, 22), PolicyValue::deny(RuleId(1)));
        target
            .policy
            .insert(key(1, 443), PolicyValue::allow(RuleId(2)));
        target
            .policy
            .insert(key(3, 443), PolicyValue::allow(RuleId(3)));

        let held = hold_denies(&current, &target);
        assert_eq!(held.endpoints, 2);
        let s = &held.state;
        assert_eq!(s.endpoints.get(&10), Some(&endpoint(1)), "as pinned");
        assert_eq!(s.endpoints.get(&11), None, "absent stays absent");
        assert_eq!(s.endpoints.get(&12), Some(&endpoint(3)));
        assert_eq!(
            s.policy.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>(),
            vec![
                (key(1, 80), PolicyValue::allow(RuleId(5))),
                (key(3, 443), PolicyValue::allow(RuleId(3))),
            ],
            "held ids keep their pinned entries, the rest is the target's"
        );
        assert!(!s.policy.values().any(PolicyValue::denies));
    }
}
