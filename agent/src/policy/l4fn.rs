//! Decisions over every protocol and port, for one remote identity, and the
//! fewest LPM entries that make the kernel's lookup return them.
//!
//! A [`Paint`] starts blank and is filled first-come: each fill sets only the
//! points still blank, so painting rules in precedence order is "the first
//! matching rule decides". The domain is the three protocols with ports
//! (each port 0-65535) and "every other protocol" (no ports).
//!
//! [`emit`] turns a complete decision into entries relative to what the
//! lookup falls back to without them: the ANY identity's decision for a
//! specific identity, and "no entry" (deny) for ANY. Within one identity a
//! coarser entry (every protocol, then one protocol) is written only where
//! it saves entries, and a finer one only where the decision differs from
//! what the coarser level already gives, so the longest-prefix match always
//! lands on the right decision.

use palisade_common::ids::RuleId;

use super::plan::L4Match;

/// What one entry does with the traffic it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// Allowed, credited to the rule ([`RuleId::NONE`]: no rule).
    Allow(RuleId),
    /// Denied, credited to the rule ([`RuleId::NONE`]: no rule).
    Deny(RuleId),
}

/// What the lookup gives where an identity has no entry of its own... and,
/// for ANY, where nothing matches at all: denied, no rule.
pub const MISS: Outcome = Outcome::Deny(RuleId::NONE);

/// The protocols with ports, in the order of [`Paint`]'s runs.
pub const PORTED: [u8; 3] = [6, 17, 132];

/// One past the last port.
const PORT_END: u32 = 1 << 16;

/// Runs of equal values over the ports: `(first port, value)`, sorted, the
/// first at port 0; each run ends where the next begins.
type Runs<T> = Vec<(u32, Option<T>)>;

/// A partly filled decision over protocols and ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paint<T> {
    other: Option<T>,
    ported: [Runs<T>; 3],
}

impl<T: Copy + PartialEq> Default for Paint<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Copy + PartialEq> Paint<T> {
    /// Nothing decided.
    pub fn new() -> Self {
        Paint {
            other: None,
            ported: [vec![(0, None)], vec![(0, None)], vec![(0, None)]],
        }
    }

    /// Sets `value` on the blank points of `l4`.
    pub fn fill(&mut self, l4: L4Match, value: T) {
        match l4 {
            L4Match::Any => {
                self.other.get_or_insert(value);
                for runs in &mut self.ported {
                    fill_range(runs, 0, PORT_END - 1, value);
                }
            }
            L4Match::Protocol(p) => {
                if let Some(i) = ported_index(p) {
                    fill_range(&mut self.ported[i], 0, PORT_END - 1, value);
                }
            }
            L4Match::Ports {
                protocol,
                first,
                last,
            } => {
                if let Some(i) = ported_index(protocol) {
                    fill_range(
                        &mut self.ported[i],
                        u32::from(first),
                        u32::from(last),
                        value,
                    );
                }
            }
        }
    }

    /// Sets the blank points from `other`'s values there.
    pub fn fill_from(&mut self, other: &Paint<T>) {
        if self.other.is_none() {
            self.other = other.other;
        }
        for (mine, theirs) in self.ported.iter_mut().zip(&other.ported) {
            for (i, (start, value)) in theirs.iter().enumerate() {
                if let Some(v) = value {
                    let end = theirs.get(i + 1).map_or(PORT_END, |(s, _)| *s);
                    fill_range(mine, *start, end - 1, *v);
                }
            }
        }
    }

    /// The same shape with every point's value mapped.
    pub fn map<U: Copy + PartialEq>(&self, f: impl Fn(Option<T>) -> Option<U>) -> Paint<U> {
        let runs = |r: &Runs<T>| merged(r.iter().map(|(s, v)| (*s, f(*v))).collect());
        Paint {
            other: f(self.other),
            ported: [
                runs(&self.ported[0]),
                runs(&self.ported[1]),
                runs(&self.ported[2]),
            ],
        }
    }

    /// The value at one protocol and port (blank: `None`).
    pub fn at(&self, protocol: u8, port: u16) -> Option<T> {
        let Some(i) = ported_index(protocol) else {
            return self.other;
        };
        let runs = &self.ported[i];
        let at = runs.partition_point(|(s, _)| *s <= u32::from(port));
        runs[at - 1].1
    }
}

impl Paint<Outcome> {
    /// The decision, with every blank point `fallback`.
    pub fn complete(mut self, fallback: Outcome) -> Decision {
        self.fill(L4Match::Any, fallback);
        let runs = |r: &Runs<Outcome>| r.iter().map(|(s, v)| (*s, v.unwrap_or(fallback))).collect();
        Decision {
            other: self.other.unwrap_or(fallback),
            ported: [
                runs(&self.ported[0]),
                runs(&self.ported[1]),
                runs(&self.ported[2]),
            ],
        }
    }
}

/// A decision for every protocol and port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Decision {
    /// Protocols without ports.
    pub other: Outcome,
    /// Runs per protocol of [`PORTED`].
    pub ported: [Vec<(u32, Outcome)>; 3],
}

impl Decision {
    /// The same outcome everywhere.
    pub fn constant(outcome: Outcome) -> Decision {
        Decision {
            other: outcome,
            ported: [vec![(0, outcome)], vec![(0, outcome)], vec![(0, outcome)]],
        }
    }

    /// The outcome at one protocol and port.
    pub fn at(&self, protocol: u8, port: u16) -> Outcome {
        let Some(i) = ported_index(protocol) else {
            return self.other;
        };
        outcome_at(&self.ported[i], u32::from(port))
    }

    /// Replaces the outcome of one port of a protocol with ports.
    pub fn set(&mut self, protocol: u8, port: u16, outcome: Outcome) {
        if let Some(i) = ported_index(protocol) {
            let mut runs: Runs<Outcome> =
                self.ported[i].iter().map(|(s, o)| (*s, Some(*o))).collect();
            let port = u32::from(port);
            split(&mut runs, port);
            split(&mut runs, port + 1);
            for run in runs.iter_mut().filter(|(s, _)| *s == port) {
                run.1 = Some(outcome);
            }
            self.ported[i] = merged(runs)
                .into_iter()
                .map(|(s, o)| (s, o.unwrap_or(outcome)))
                .collect();
        }
    }
}

/// The entries that make the lookup return `decision` where, without them,
/// it returns `fallback`.
pub fn emit(decision: &Decision, fallback: &Decision) -> Vec<(L4Match, Outcome)> {
    let mut out = Vec::new();
    // Below a whole-protocol or every-protocol entry, the identity's own
    // coarser entry is what finer ports fall back to.
    let below: [Vec<(u32, Outcome)>; 3] = if decision.other != fallback.other {
        out.push((L4Match::Any, decision.other));
        [0, 1, 2].map(|_| vec![(0, decision.other)])
    } else {
        fallback.ported.clone()
    };
    for (i, protocol) in PORTED.into_iter().enumerate() {
        let runs = &decision.ported[i];
        if *runs == below[i] {
            continue;
        }
        let exact = differences(runs, &below[i]);
        // Or one whole-protocol entry of the commonest outcome, and the
        // ports that differ from it.
        let common = commonest(runs);
        let under_common = differences(runs, &[(0, common)]);
        if 1 + under_common.len() < exact.len() {
            out.push((L4Match::Protocol(protocol), common));
            out.extend(ports(protocol, under_common));
        } else {
            out.extend(ports(protocol, exact));
        }
    }
    out
}

fn ports(
    protocol: u8,
    ranges: Vec<(u32, u32, Outcome)>,
) -> impl Iterator<Item = (L4Match, Outcome)> {
    ranges.into_iter().map(move |(first, last, outcome)| {
        let l4 = L4Match::Ports {
            protocol,
            first: first as u16,
            last: last as u16,
        };
        (l4, outcome)
    })
}

/// The port ranges (inclusive) where `runs` differ from `base`, with `runs`'
/// outcome there, adjacent ranges of one outcome joined.
fn differences(runs: &[(u32, Outcome)], base: &[(u32, Outcome)]) -> Vec<(u32, u32, Outcome)> {
    let mut starts: Vec<u32> = runs.iter().chain(base).map(|(s, _)| *s).collect();
    starts.sort_unstable();
    starts.dedup();
    let mut out: Vec<(u32, u32, Outcome)> = Vec::new();
    for (i, start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(PORT_END);
        let mine = outcome_at(runs, *start);
        if mine == outcome_at(base, *start) {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.1 + 1 == *start && last.2 == mine => last.1 = end - 1,
            _ => out.push((*start, end - 1, mine)),
        }
    }
    out
}

/// The outcome covering the most ports (ties: the least).
fn commonest(runs: &[(u32, Outcome)]) -> Outcome {
    let mut sizes: Vec<(Outcome, u32)> = Vec::new();
    for (i, (start, outcome)) in runs.iter().enumerate() {
        let end = runs.get(i + 1).map_or(PORT_END, |(s, _)| *s);
        match sizes.iter_mut().find(|(o, _)| o == outcome) {
            Some((_, n)) => *n += end - start,
            None => sizes.push((*outcome, end - start)),
        }
    }
    sizes
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
        .map_or(MISS, |(o, _)| o)
}

fn outcome_at(runs: &[(u32, Outcome)], port: u32) -> Outcome {
    let at = runs.partition_point(|(s, _)| *s <= port);
    runs[at - 1].1
}

fn ported_index(protocol: u8) -> Option<usize> {
    PORTED.iter().position(|p| *p == protocol)
}

/// Makes `at` the start of a run.
fn split<T: Copy>(runs: &mut Runs<T>, at: u32) {
    if at >= PORT_END {
        return;
    }
    let i = runs.partition_point(|(s, _)| *s <= at);
    if runs[i - 1].0 != at {
        let value = runs[i - 1].1;
        runs.insert(i, (at, value));
    }
}

fn fill_range<T: Copy + PartialEq>(runs: &mut Runs<T>, first: u32, last: u32, value: T) {
    // Already decided everywhere in the range: nothing to paint or split.
    let lo = runs.partition_point(|(s, _)| *s <= first) - 1;
    let hi = runs.partition_point(|(s, _)| *s <= last);
    if runs[lo..hi].iter().all(|(_, v)| v.is_some()) {
        return;
    }
    split(runs, first);
    split(runs, last + 1);
    let lo = runs.partition_point(|(s, _)| *s < first);
    let hi = runs.partition_point(|(s, _)| *s <= last);
    for run in &mut runs[lo..hi] {
        if run.1.is_none() {
            run.1 = Some(value);
        }
    }
    // Joins adjacent runs of one value, in place (the first start stays).
    runs.dedup_by(|later, earlier| later.1 == earlier.1);
}

/// Joins adjacent runs of one value.
fn merged<T: Copy + PartialEq>(runs: Runs<T>) -> Runs<T> {
    let mut out: Runs<T> = Vec::with_capacity(runs.len());
    for (start, value) in runs {
        if out.last().is_none_or(|(_, v)| *v != value) {
            out.push((start, value));
        }
    }
    out
}

#[cfg(test)]
#[path = "l4fn_tests.rs"]
mod tests;
