//! Which interfaces keep the programs after an apply (pure): the decisions of
//! the attach/retain/detach lifecycle, apart from the kernel calls.

use std::collections::{BTreeMap, BTreeSet};

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
