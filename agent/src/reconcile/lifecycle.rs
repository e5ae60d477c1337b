//! The attach/retain/detach lifecycle as pure decisions, apart from the
//! kernel calls: which interface enforces each pod, and which interfaces
//! keep the programs after an apply.

use std::collections::{BTreeMap, BTreeSet};

use crate::node::Unresolved;
use crate::state::PodRef;

use super::interfaces::PodInterface;

/// Where each pod of a plan is enforced, and why the others are not.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// Pod -> the ifindex whose endpoint entry and programs enforce it.
    pub ifaces: BTreeMap<PodRef, u32>,
    /// Why each other pod is not enforced.
    pub reasons: BTreeMap<PodRef, String>,
}

/// Places each pod on the interface it resolved to. A pod enforced on an
/// interface that is still there (`name_of` gives the name it had) keeps it
/// when its route or neighbour entry goes missing for a while (a CNI
/// restarting, a neighbour entry collected): detaching would open it.
pub fn place(
    resolved: &BTreeMap<PodRef, Result<PodInterface, Unresolved>>,
    attached: &BTreeMap<PodRef, PodInterface>,
    name_of: impl Fn(u32) -> Option<String>,
) -> Placement {
    let mut placement = Placement::default();
    for (pod, result) in resolved {
        match (result, attached.get(pod)) {
            (Ok(iface), _) => {
                placement.ifaces.insert(pod.clone(), iface.ifindex);
            }
            (Err(reason), Some(iface)) if name_of(iface.ifindex).as_ref() == Some(&iface.name) => {
                tracing::debug!(%pod, interface = %iface.name, %reason,
                    "pod's interface not found again; keeping the one it is enforced on");
                placement.ifaces.insert(pod.clone(), iface.ifindex);
            }
            (Err(reason), _) => {
                placement.reasons.insert(pod.clone(), reason.to_string());
            }
        }
    }
    placement
}

/// The interfaces whose programs come off, given those carrying them now,
/// those a pod resolves to (`claimed`), and those held closed for a previous
/// agent (`retained`, ifindex -> name). A retained interface a pod now claims
/// stops being retained; one that is gone, or whose index another interface
/// took over (`name_of` no longer gives its name), is detached.
pub fn to_detach(
    carrying: BTreeSet<u32>,
    claimed: &BTreeSet<u32>,
    retained: &mut BTreeMap<u32, String>,
    name_of: impl Fn(u32) -> Option<String>,
) -> BTreeSet<u32> {
    retained.retain(|ifindex, _| !claimed.contains(ifindex));
    let vanished: Vec<u32> = retained
        .iter()
        .filter(|(ifindex, name)| name_of(**ifindex).as_ref() != Some(*name))
        .map(|(ifindex, _)| *ifindex)
        .collect();
    let mut stale = carrying;
    for ifindex in vanished {
        retained.remove(&ifindex);
        stale.insert(ifindex);
    }
    stale.difference(claimed).copied().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> PodRef {
        PodRef {
            namespace: "prod".into(),
            name: name.into(),
        }
    }

    fn iface(ifindex: u32, name: &str) -> PodInterface {
        PodInterface {
            ifindex,
            name: name.into(),
        }
    }

    fn unresolved() -> Unresolved {
        Unresolved {
            reason: "no route".into(),
        }
    }

    #[test]
    fn resolved_pods_are_placed_and_the_others_say_why() {
        let resolved = BTreeMap::from([
            (pod("web"), Ok(iface(7, "cali7"))),
            (pod("api"), Err(unresolved())),
        ]);
        let placement = place(&resolved, &BTreeMap::new(), names(&[(7, "cali7")]));
        assert_eq!(placement.ifaces, BTreeMap::from([(pod("web"), 7)]));
        assert_eq!(placement.reasons.len(), 1);
        assert!(placement.reasons[&pod("api")].contains("no route"));
    }

    #[test]
    fn an_enforced_pod_keeps_its_interface_through_a_resolution_gap() {
        let resolved = BTreeMap::from([(pod("web"), Err(unresolved()))]);
        let attached = BTreeMap::from([(pod("web"), iface(7, "cali7"))]);
        let kept = place(&resolved, &attached, names(&[(7, "cali7")]));
        assert_eq!(kept.ifaces, BTreeMap::from([(pod("web"), 7)]));
        assert!(kept.reasons.is_empty());
        // Not when the interface is gone, or its index now names another one.
        for known in [&[][..], &[(7, "cali9")][..]] {
            let gone = place(&resolved, &attached, names(known));
            assert!(gone.ifaces.is_empty(), "{known:?}");
            assert!(gone.reasons.contains_key(&pod("web")));
        }
    }

    #[test]
    fn a_pod_that_resolves_elsewhere_moves() {
        let resolved = BTreeMap::from([(pod("web"), Ok(iface(9, "cali9")))]);
        let attached = BTreeMap::from([(pod("web"), iface(7, "cali7"))]);
        let moved = place(&resolved, &attached, names(&[(7, "cali7"), (9, "cali9")]));
        assert_eq!(moved.ifaces, BTreeMap::from([(pod("web"), 9)]));
    }

    fn names(known: &[(u32, &str)]) -> impl Fn(u32) -> Option<String> {
        let known: BTreeMap<u32, String> = known.iter().map(|(i, n)| (*i, n.to_string())).collect();
        move |ifindex| known.get(&ifindex).cloned()
    }

    #[test]
    fn interfaces_no_pod_claims_lose_the_programs_and_claimed_ones_keep_them() {
        let mut retained = BTreeMap::new();
        let detach = to_detach(
            BTreeSet::from([1, 2, 3]),
            &BTreeSet::from([1, 3]),
            &mut retained,
            names(&[]),
        );
        assert_eq!(detach, BTreeSet::from([2]));
    }

    #[test]
    fn a_retained_interface_stays_closed_until_claimed_or_gone() {
        let mut retained = BTreeMap::from([(7, "veth7".to_string()), (8, "veth8".to_string())]);
        let live = names(&[(7, "veth7"), (8, "veth8")]);
        assert!(to_detach(BTreeSet::new(), &BTreeSet::new(), &mut retained, &live).is_empty());
        assert_eq!(retained.len(), 2, "held closed while the interfaces exist");

        let detach = to_detach(
            BTreeSet::from([7]),
            &BTreeSet::from([7]),
            &mut retained,
            &live,
        );
        assert!(detach.is_empty(), "a claimed interface keeps its programs");
        assert_eq!(retained.keys().copied().collect::<Vec<_>>(), [8]);
    }

    #[test]
    fn a_retained_interface_that_vanished_or_was_renumbered_is_detached() {
        let mut retained = BTreeMap::from([(7, "veth7".to_string()), (8, "veth8".to_string())]);
        // 7 is gone; 8's index now belongs to another interface.
        let detach = to_detach(
            BTreeSet::new(),
            &BTreeSet::new(),
            &mut retained,
            names(&[(8, "eth0")]),
        );
        assert_eq!(detach, BTreeSet::from([7, 8]));
        assert!(retained.is_empty());
    }
}
