//! Which objects changed, so a consumer that saw the state at some point can
//! catch up on the difference instead of re-reading everything.
//!
//! The journal keeps the last [`Journal::CAPACITY`] changes. A consumer that
//! falls further behind, or that reads a different state (a clone starts a new
//! history), is told so and starts over from the whole state.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use super::refs::{PodRef, PolicyRef};

/// One changed object (added, replaced or removed).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Change {
    /// A Pod.
    Pod(PodRef),
    /// A Namespace, by name.
    Namespace(String),
    /// A NetworkPolicy.
    Policy(PolicyRef),
    /// A ClusterNetworkPolicy, by name.
    ClusterPolicy(String),
}

/// A point in one state's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    history: u64,
    seq: u64,
}

/// A bounded log of changes.
#[derive(Debug)]
pub struct Journal {
    history: u64,
    seq: u64,
    entries: VecDeque<(u64, Change)>,
}

fn new_history() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Default for Journal {
    fn default() -> Self {
        Journal {
            history: new_history(),
            seq: 0,
            entries: VecDeque::new(),
        }
    }
}

/// A copy has its own future, so it starts its own history: marks taken on
/// the original never match it.
impl Clone for Journal {
    fn clone(&self) -> Self {
        Journal::default()
    }
}

impl Journal {
    /// Changes kept; a consumer further behind re-reads the whole state.
    pub const CAPACITY: usize = 1 << 16;

    /// Records a change.
    pub fn record(&mut self, change: Change) {
        self.seq += 1;
        if self.entries.len() == Self::CAPACITY {
            self.entries.pop_front();
        }
        self.entries.push_back((self.seq, change));
    }

    /// The current point.
    pub fn mark(&self) -> Mark {
        Mark {
            history: self.history,
            seq: self.seq,
        }
    }

    /// The changes after `mark`, oldest first (an object may appear several
    /// times); `None` when `mark` is from another history or the changes are
    /// no longer all kept.
    pub fn since(&self, mark: Mark) -> Option<impl Iterator<Item = &Change>> {
        if mark.history != self.history || mark.seq > self.seq {
            return None;
        }
        let oldest_kept = self.entries.front().map_or(self.seq + 1, |(s, _)| *s);
        if mark.seq + 1 < oldest_kept {
            return None;
        }
        let skip = self.entries.len() - (self.seq - mark.seq) as usize;
        Some(self.entries.iter().skip(skip).map(|(_, c)| c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> Change {
        Change::Pod(PodRef {
            namespace: "ns".into(),
            name: name.into(),
        })
    }

    #[test]
    fn changes_since_a_mark_are_exactly_the_later_ones() {
        let mut j = Journal::default();
        j.record(pod("a"));
        let m = j.mark();
        assert_eq!(j.since(m).map(|c| c.count()), Some(0));
        j.record(pod("b"));
        j.record(Change::Namespace("ns".into()));
        let seen: Vec<Change> = j.since(m).expect("kept").cloned().collect();
        assert_eq!(seen, vec![pod("b"), Change::Namespace("ns".into())]);
    }

    #[test]
    fn a_clone_or_a_consumer_too_far_behind_must_start_over() {
        let mut j = Journal::default();
        let m = j.mark();
        assert!(j.clone().since(m).is_none());
        for i in 0..Journal::CAPACITY {
            j.record(pod(&i.to_string()));
        }
        assert!(
            j.since(m).is_some(),
            "exactly CAPACITY behind is still complete"
        );
        j.record(pod("one more"));
        assert!(j.since(m).is_none());
        assert_eq!(j.since(j.mark()).map(|c| c.count()), Some(0));
    }
}
