use proptest::prelude::*;

use super::*;
use crate::policy::lookup::{l4_matches, match_prefix_len};

fn allow(r: u32) -> Outcome {
    Outcome::Allow(RuleId(r))
}

fn deny(r: u32) -> Outcome {
    Outcome::Deny(RuleId(r))
}

fn tcp(first: u16, last: u16) -> L4Match {
    L4Match::Ports {
        protocol: 6,
        first,
        last,
    }
}

/// What the kernel returns: the most specific of `entries` matching, else
/// `fallback`.
fn looked_up(
    entries: &[(L4Match, Outcome)],
    fallback: &Decision,
    protocol: u8,
    port: u16,
) -> Outcome {
    let port = if PORTED.contains(&protocol) { port } else { 0 };
    entries
        .iter()
        .filter(|(l4, _)| l4_matches(*l4, protocol, port))
        .max_by_key(|(l4, _)| match_prefix_len(*l4, port))
        .map_or_else(|| fallback.at(protocol, port), |(_, o)| *o)
}

const PROBES: [u16; 12] = [0, 1, 79, 80, 81, 443, 999, 1000, 1500, 2000, 2001, 65535];

fn assert_lookups_equal(decision: &Decision, fallback: &Decision) {
    let entries = emit(decision, fallback);
    let ports = PROBES
        .iter()
        .flat_map(|p| [p.saturating_sub(1), *p, p.saturating_add(1)]);
    for protocol in [1, 6, 17, 132] {
        for port in ports.clone() {
            assert_eq!(
                looked_up(&entries, fallback, protocol, port),
                decision.at(protocol, port),
                "protocol {protocol} port {port}, entries {entries:?}"
            );
        }
    }
}

#[test]
fn first_fill_wins_and_blanks_take_the_fallback() {
    let mut paint = Paint::new();
    paint.fill(tcp(1000, 2000), deny(1));
    paint.fill(L4Match::Protocol(6), allow(2));
    paint.fill(tcp(1500, 1600), allow(3));
    let d = paint.complete(MISS);
    assert_eq!(d.at(6, 999), allow(2));
    assert_eq!(d.at(6, 1000), deny(1));
    assert_eq!(d.at(6, 1550), deny(1), "the earlier fill keeps its points");
    assert_eq!(d.at(6, 2001), allow(2));
    assert_eq!(d.at(17, 53), MISS);
    assert_eq!(d.at(1, 0), MISS);
}

#[test]
fn fill_from_only_sets_blank_points() {
    let mut first = Paint::new();
    first.fill(tcp(80, 80), deny(1));
    let mut next = Paint::new();
    next.fill(L4Match::Any, allow(2));
    first.fill_from(&next);
    let d = first.complete(MISS);
    assert_eq!(d.at(6, 80), deny(1));
    assert_eq!(d.at(6, 81), allow(2));
    assert_eq!(d.at(1, 0), allow(2));
}

#[test]
fn a_deny_carved_out_of_an_allowed_range_is_split() {
    let mut paint = Paint::new();
    paint.fill(tcp(1500, 1600), deny(1));
    paint.fill(tcp(1000, 2000), allow(2));
    let d = paint.complete(MISS);
    let entries = emit(&d, &Decision::constant(MISS));
    assert!(entries.iter().any(|(_, o)| *o == deny(1)));
    assert_lookups_equal(&d, &Decision::constant(MISS));
}

#[test]
fn an_identity_equal_to_its_fallback_needs_no_entry() {
    let mut paint = Paint::new();
    paint.fill(tcp(80, 80), allow(1));
    let d = paint.complete(MISS);
    assert!(emit(&d, &d).is_empty());
    assert!(emit(&Decision::constant(MISS), &Decision::constant(MISS)).is_empty());
}

#[test]
fn a_mostly_denied_protocol_is_one_entry_and_its_exceptions() {
    let mut paint = Paint::new();
    paint.fill(tcp(80, 80), allow(1));
    paint.fill(L4Match::Any, deny(2));
    let d = paint.complete(MISS);
    let fallback = Decision::constant(allow(0));
    let entries = emit(&d, &fallback);
    assert!(entries.len() <= 3, "{entries:?}");
    assert_lookups_equal(&d, &fallback);
}

#[test]
fn set_replaces_one_port() {
    let mut d = Decision::constant(allow(1));
    d.set(6, 443, deny(2));
    assert_eq!(d.at(6, 442), allow(1));
    assert_eq!(d.at(6, 443), deny(2));
    assert_eq!(d.at(6, 444), allow(1));
    d.set(6, 443, allow(1));
    assert_eq!(d, Decision::constant(allow(1)));
}

fn l4() -> impl Strategy<Value = L4Match> {
    let port = prop::sample::select(PROBES.to_vec());
    prop_oneof![
        Just(L4Match::Any),
        prop::sample::select(vec![6u8, 17, 132]).prop_map(L4Match::Protocol),
        (prop::sample::select(vec![6u8, 17]), port.clone(), port).prop_map(|(protocol, a, b)| {
            L4Match::Ports {
                protocol,
                first: a.min(b),
                last: a.max(b),
            }
        }),
    ]
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![(0u32..3).prop_map(allow), (0u32..3).prop_map(deny)]
}

fn decision() -> impl Strategy<Value = Decision> {
    (prop::collection::vec((l4(), outcome()), 0..6), outcome()).prop_map(|(fills, last)| {
        let mut paint = Paint::new();
        for (l4, o) in fills {
            paint.fill(l4, o);
        }
        paint.complete(last)
    })
}

proptest! {
    #[test]
    fn emitted_entries_over_any_fallback_give_the_decision(d in decision(), fallback in decision()) {
        assert_lookups_equal(&d, &fallback);
        assert_lookups_equal(&d, &Decision::constant(MISS));
    }
}
