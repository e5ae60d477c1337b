//! The bookkeeping of source events: which objects of each kind the state
//! holds and which kinds have had their complete initial list, so that a
//! `Replace` turns into the deletes of what it no longer lists.

use std::collections::{BTreeMap, BTreeSet};

use crate::source::{K8sObject, Kind, ObjectRef, SourceEvent, object_ref};

/// One change to the cluster state an event asks for, in order.
#[derive(Debug)]
pub enum Step<'a> {
    /// Apply (add or replace) this object.
    Apply(&'a K8sObject),
    /// Delete this object.
    Delete(ObjectRef),
}

/// What the source has said so far.
#[derive(Debug, Default)]
pub struct Intake {
    /// Objects applied without rejection, by kind.
    known: BTreeMap<Kind, BTreeSet<ObjectRef>>,
    /// Kinds whose complete list has arrived.
    synced: BTreeSet<Kind>,
}

impl Intake {
    /// The state changes `event` asks for (none for `Health`).
    pub fn steps<'a>(&mut self, event: &'a SourceEvent) -> Vec<Step<'a>> {
        match event {
            SourceEvent::Replace { kinds, objects } => {
                let listed: BTreeSet<ObjectRef> = objects.iter().map(object_ref).collect();
                let mut steps = Vec::new();
                for kind in kinds {
                    let old = self.known.remove(kind).unwrap_or_default();
                    steps.extend(
                        old.into_iter()
                            .filter(|r| !listed.contains(r))
                            .map(Step::Delete),
                    );
                    self.synced.insert(*kind);
                }
                steps.extend(objects.iter().map(Step::Apply));
                steps
            }
            SourceEvent::Apply(object) => vec![Step::Apply(object)],
            SourceEvent::Delete(r) => {
                if let Some(set) = self.known.get_mut(&r.kind) {
                    set.remove(r);
                }
                vec![Step::Delete(r.clone())]
            }
            SourceEvent::Health { .. } => Vec::new(),
        }
    }

    /// Records that the state accepted `object`.
    pub fn accepted(&mut self, object: ObjectRef) {
        self.known.entry(object.kind).or_default().insert(object);
    }

    /// The kinds of `required` whose complete list has not arrived yet.
    pub fn waiting_for(&self, required: &[Kind]) -> Vec<Kind> {
        required
            .iter()
            .filter(|k| !self.synced.contains(k))
            .copied()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::fixtures::{namespace, pod};

    fn refs(steps: &[Step<'_>]) -> Vec<String> {
        steps
            .iter()
            .map(|s| match s {
                Step::Apply(o) => format!("apply {}", object_ref(o)),
                Step::Delete(r) => format!("delete {r}"),
            })
            .collect()
    }

    fn replace(kinds: &[Kind], objects: Vec<K8sObject>) -> SourceEvent {
        SourceEvent::Replace {
            kinds: kinds.to_vec(),
            objects,
        }
    }

    fn accept_all(intake: &mut Intake, steps: &[Step<'_>]) {
        for step in steps {
            if let Step::Apply(o) = step {
                intake.accepted(object_ref(o));
            }
        }
    }

    #[test]
    fn a_replace_deletes_what_it_no_longer_lists_of_its_kinds_only() {
        let mut intake = Intake::default();
        let first = replace(
            &[Kind::Pod, Kind::Namespace],
            vec![
                pod("a").ns("x").into(),
                pod("b").ns("x").into(),
                namespace("x").into(),
            ],
        );
        let steps = intake.steps(&first);
        accept_all(&mut intake, &steps);
        assert_eq!(
            refs(&steps),
            ["apply Pod x/a", "apply Pod x/b", "apply Namespace x"]
        );

        let relist = replace(&[Kind::Pod], vec![pod("b").ns("x").into()]);
        let steps = intake.steps(&relist);
        assert_eq!(refs(&steps), ["delete Pod x/a", "apply Pod x/b"]);
    }

    #[test]
    fn a_deleted_object_is_not_deleted_again_by_the_next_replace() {
        let mut intake = Intake::default();
        let first = replace(&[Kind::Pod], vec![pod("a").ns("x").into()]);
        let steps = intake.steps(&first);
        accept_all(&mut intake, &steps);
        let gone = object_ref(&pod("a").ns("x").into());
        intake.steps(&SourceEvent::Delete(gone));
        assert!(refs(&intake.steps(&replace(&[Kind::Pod], vec![]))).is_empty());
    }

    #[test]
    fn a_rejected_object_is_not_known_so_a_relist_without_it_deletes_nothing() {
        let mut intake = Intake::default();
        let event = replace(&[Kind::Pod], vec![pod("bad").ns("x").into()]);
        intake.steps(&event); // the state rejected it: no `accepted`
        assert!(refs(&intake.steps(&replace(&[Kind::Pod], vec![]))).is_empty());
    }

    #[test]
    fn kinds_wait_until_their_first_complete_list() {
        let mut intake = Intake::default();
        let required = [Kind::Pod, Kind::NetworkPolicy];
        assert_eq!(intake.waiting_for(&required), required);
        intake.steps(&SourceEvent::Apply(pod("a").ns("x").into()));
        assert_eq!(
            intake.waiting_for(&required),
            required,
            "an apply is no list"
        );
        intake.steps(&replace(&[Kind::Pod], vec![]));
        assert_eq!(intake.waiting_for(&required), [Kind::NetworkPolicy]);
        intake.steps(&replace(&[Kind::NetworkPolicy], vec![]));
        assert!(intake.waiting_for(&required).is_empty());
    }
}
