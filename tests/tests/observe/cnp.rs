//! ClusterNetworkPolicy verdicts as an operator sees them, with real traffic:
//! rule counters labelled with tier, policy and rule, `denied_by` in the flow
//! log, namespace audit mode applied to a `Deny`, `palisade explain` naming
//! the deciding rule (and the `Pass` on the way), `palisade status` listing
//! the policies.
//!
//! On top of the guarded bed (with its audit namespace):
//! - `protect-servers` (Admin 10) on obs-server and obs-audit, ingress from
//!   obs-client: `no-dns` denies UDP 5353 (which `guard` allows), `web`
//!   accepts TCP 8080, `to-np` passes TCP 7070 on to NetworkPolicy (where
//!   `guard` allows nothing of it);
//! - `egress-pass` (Admin 20) on obs-client: `skip-admin` passes its egress
//!   to obs-server TCP 7070 on to the Baseline tier;
//! - `client-baseline` (Baseline 50) on obs-client: `no-7070` denies that
//!   egress; `docs` accepts a `domainNames` peer (unsupported).
//!
//! UDP 9999 to the server is the control no ClusterNetworkPolicy rule covers
//! (`guard` isolates the server and allows nothing of it).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::Output;
use std::time::{Duration, SystemTime};

use palisade_tests::cluster::{AGENT_HEALTH, palisade_binary};
use palisade_tests::{Poll, Server};
use prometheus_parse::Scrape;
use serde_json::{Value as Json, json};

use crate::fixture::*;

const PASSED_PORT: u16 = 7070;

const POLICIES: &str = r#"
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata:
  name: protect-servers
spec:
  tier: Admin
  priority: 10
  subject:
    namespaces:
      matchExpressions:
      - {key: kubernetes.io/metadata.name, operator: In, values: [obs-server, obs-audit]}
  ingress:
  - name: no-dns
    action: Deny
    from:
    - namespaces: {matchLabels: {kubernetes.io/metadata.name: obs-client}}
    protocols:
    - udp: {destinationPort: {number: 5353}}
  - name: web
    action: Accept
    from:
    - namespaces: {matchLabels: {kubernetes.io/metadata.name: obs-client}}
    protocols:
    - tcp: {destinationPort: {number: 8080}}
  - name: to-np
    action: Pass
    from:
    - namespaces: {matchLabels: {kubernetes.io/metadata.name: obs-client}}
    protocols:
    - tcp: {destinationPort: {number: 7070}}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata:
  name: egress-pass
spec:
  tier: Admin
  priority: 20
  subject:
    namespaces: {matchLabels: {kubernetes.io/metadata.name: obs-client}}
  egress:
  - name: skip-admin
    action: Pass
    to:
    - namespaces: {matchLabels: {kubernetes.io/metadata.name: obs-server}}
    protocols:
    - tcp: {destinationPort: {number: 7070}}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata:
  name: client-baseline
spec:
  tier: Baseline
  priority: 50
  subject:
    namespaces: {matchLabels: {kubernetes.io/metadata.name: obs-client}}
  egress:
  - name: docs
    action: Accept
    to:
    - domainNames: ["docs.example.com"]
  - name: no-7070
    action: Deny
    to:
    - namespaces: {matchLabels: {kubernetes.io/metadata.name: obs-server}}
    protocols:
    - tcp: {destinationPort: {number: 7070}}
"#;

/// The guarded bed with audit namespace, the three policies applied and a
/// server on the passed port.
struct CnpBed {
    bed: GuardedCluster,
    _passed: Server,
}

impl CnpBed {
    fn new() -> CnpBed {
        let bed = GuardedCluster::new(true);
        let passed = bed
            .cluster
            .pod(SERVER_NS, "server")
            .pod
            .serve_tcp(PASSED_PORT)
            .expect("tcp server");
        let since = SystemTime::now();
        bed.cluster
            .apply_policy("cluster-policies", POLICIES)
            .expect("write the policies");
        bed.cluster.wait_applied(since, APPLY).expect("applied");
        CnpBed {
            bed,
            _passed: passed,
        }
    }

    /// The palisade CLI run inside the node (where the agent listens); it
    /// must exit with `code`.
    fn cli_exits(&self, args: &[&str], code: i32) -> Output {
        let binary = palisade_binary().expect("palisade binary");
        let out = self.bed.cluster.nodes[0]
            .netns()
            .command(&binary)
            .args(args)
            .output()
            .expect("run palisade");
        assert_eq!(
            out.status.code(),
            Some(code),
            "palisade {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn cli(&self, args: &[&str]) -> Output {
        self.cli_exits(args, 0)
    }
}

/// `palisade_policy_rule_hits_total` of a ClusterNetworkPolicy rule.
fn cluster_rule(
    s: &Scrape,
    tier: &str,
    policy: &str,
    direction: &str,
    rule: &str,
    verdict: &str,
) -> f64 {
    value(
        s,
        "palisade_policy_rule_hits_total",
        &[
            ("namespace", ""),
            ("policy", policy),
            ("direction", direction),
            ("tier", tier),
            ("rule", rule),
            ("verdict", verdict),
        ],
    )
}

fn no_dns(s: &Scrape, verdict: &str) -> f64 {
    cluster_rule(s, "admin", "protect-servers", "ingress", "no-dns", verdict)
}

/// Every counter series of the three policies: `metric{labels}` -> value.
fn cluster_series(s: &Scrape) -> BTreeMap<String, f64> {
    s.samples
        .iter()
        .filter(|x| x.metric.starts_with("palisade_policy_rule_"))
        .filter(|x| {
            x.labels
                .get("policy")
                .is_some_and(|p| ["protect-servers", "egress-pass", "client-baseline"].contains(&p))
        })
        .map(|x| {
            let labels: BTreeMap<&str, &str> = x
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let all: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, *v)).collect();
            (format!("{}{labels:?}", x.metric), value(s, &x.metric, &all))
        })
        .collect()
}

fn denied_by_rule(tier: &str, policy: &str, rule: &str) -> Json {
    json!({"by": "rule", "tier": tier, "namespace": "", "policy": policy, "rule": rule})
}

/// Polls the flows after `cursor` until `pick` selects `n` of them.
#[track_caller]
fn wait_flows(
    bed: &GuardedCluster,
    cursor: u64,
    n: usize,
    pick: impl Fn(&Json) -> bool,
) -> Vec<Json> {
    Poll::new(format!("{n} flows"), Duration::from_secs(10))
        .every(Duration::from_millis(50))
        .until(
            || {
                bed.flows_since(cursor)
                    .into_iter()
                    .filter(|f| pick(f))
                    .collect::<Vec<_>>()
            },
            |flows| flows.len() >= n,
        )
        .unwrap_or_else(|timed_out| {
            panic!("{timed_out}; all flows: {:#?}", bed.flows_since(cursor))
        })
}

fn from_client_at(f: &Json, endpoint: &str, direction: &str, verdict: &str) -> bool {
    f["source"] == format!("{CLIENT_NS}/client")
        && f["endpoint"] == endpoint
        && f["direction"] == direction
        && f["verdict"] == verdict
}

#[test]
fn cluster_rules_count_their_flows_and_name_themselves_in_the_flow_log() {
    let cnp = CnpBed::new();
    let bed = &cnp.bed;
    let (v4, v6) = (bed.ipv4(SERVER_NS, "server"), bed.ipv6(SERVER_NS, "server"));
    let server = format!("{SERVER_NS}/server");

    // Denied by the Admin `Deny` (which `guard` would allow), accepted by
    // the Admin `Accept`: each datagram and each connection a new flow.
    let cursor = bed.flow_cursor();
    let before = bed.scrape();
    bed.udp_datagrams(v4, UDP_PORT, 2);
    bed.udp_datagrams(v6, UDP_PORT, 1);
    bed.tcp_connects(v4, TCP_PORT, 4);
    let dropped = wait_flows(bed, cursor, 3, |f| {
        from_client_at(f, &server, "ingress", "drop") && f["destination_port"] == UDP_PORT
    });
    let after = scrape_until(bed, "the denies to be counted", |s| {
        no_dns(s, "deny") >= no_dns(&before, "deny") + 3.0
    });
    assert_eq!(
        no_dns(&after, "deny") - no_dns(&before, "deny"),
        3.0,
        "the Deny rule's drop counter: one per denied datagram"
    );
    let web = |s| cluster_rule(s, "admin", "protect-servers", "ingress", "web", "allow");
    assert_eq!(
        web(&after) - web(&before),
        4.0,
        "the Accept rule's hits: one per connection"
    );
    // The Admin tier decided: guard's rules, which allow both, are not credited.
    for rule in ["0", "1"] {
        assert_eq!(
            hits(&after, SERVER_NS, "guard", rule, "allow"),
            hits(&before, SERVER_NS, "guard", rule, "allow"),
            "guard rule {rule}"
        );
    }
    assert_eq!(dropped.len(), 3, "{dropped:#?}");
    for f in &dropped {
        assert_eq!(f["reason"], "policy_denied");
        assert_eq!(f["protocol"], "UDP");
        assert_eq!(
            f["denied_by"],
            denied_by_rule("admin", "protect-servers", "no-dns"),
            "{f:#}"
        );
    }

    // Passed by the Admin tier to the Baseline tier, which denies it at the
    // client's egress.
    let cursor = bed.flow_cursor();
    let client = &bed.cluster.pod(CLIENT_NS, "client").pod;
    assert!(
        client.probe_tcp(v4, PASSED_PORT, PROBE).is_blocked(),
        "TCP {PASSED_PORT}: denied by the Baseline tier"
    );
    let egress = wait_flows(bed, cursor, 1, |f| {
        from_client_at(f, &format!("{CLIENT_NS}/client"), "egress", "drop")
            && f["destination_port"] == PASSED_PORT
    });
    assert_eq!(
        egress[0]["denied_by"],
        denied_by_rule("baseline", "client-baseline", "no-7070"),
        "{:#}",
        egress[0]
    );
    let baseline = |s| {
        cluster_rule(
            s,
            "baseline",
            "client-baseline",
            "egress",
            "no-7070",
            "deny",
        )
    };
    // At least the SYN (its retransmits are counted too).
    assert!(
        baseline(&bed.scrape()) >= baseline(&before) + 1.0,
        "the Baseline Deny's drop counter"
    );

    // The control no ClusterNetworkPolicy rule covers: dropped by guard's
    // isolation, and no series of the cluster policies moves.
    let cursor = bed.flow_cursor();
    let before = bed.scrape();
    bed.udp_datagrams(v4, DENIED_PORT, 3);
    let control = wait_flows(bed, cursor, 3, |f| {
        from_client_at(f, &server, "ingress", "drop") && f["destination_port"] == DENIED_PORT
    });
    let after = scrape_until(bed, "the control drops to be counted", |s| {
        denied(s) >= denied(&before) + 3.0
    });
    for f in &control {
        assert_eq!(f["denied_by"], json!({"by": "isolation"}), "{f:#}");
    }
    assert!(
        cluster_series(&before).len() >= 3,
        "the series of no-dns, web and no-7070 are exported"
    );
    assert_eq!(
        cluster_series(&after),
        cluster_series(&before),
        "no cluster policy series moves for the control"
    );

    // The CLI's text form names the rule.
    let out = cnp.cli(&[
        "flows",
        "--health-addr",
        AGENT_HEALTH,
        "--namespace",
        SERVER_NS,
        "--pod",
        "server",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    let ours: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("obs-client/client:"))
        .collect();
    let on = |port: u16| {
        ours.iter()
            .filter(move |l| l.contains(&format!(":{port} UDP")))
    };
    assert_eq!(on(UDP_PORT).count(), 3, "{text}");
    assert!(
        on(UDP_PORT).all(|l| l.contains("by admin policy protect-servers rule no-dns")),
        "{text}"
    );
    assert!(
        on(DENIED_PORT).all(|l| l.contains("by isolation, no rule allowed")),
        "{text}"
    );
    assert_eq!(on(DENIED_PORT).count(), 3, "{text}");
}

#[test]
fn a_cluster_deny_in_an_audit_namespace_passes_and_is_reported_as_that_rule() {
    let cnp = CnpBed::new();
    let bed = &cnp.bed;
    let legacy = bed.ipv4(AUDIT_NS, "legacy");
    let at_legacy = format!("{AUDIT_NS}/legacy");
    let cursor = bed.flow_cursor();
    let before = bed.scrape();
    let n = 3;
    // `no-dns` covers obs-audit, which is in audit mode: every exchange passes.
    bed.udp_exchanges((CLIENT_NS, "client"), legacy, UDP_PORT, n);
    let audited = wait_flows(bed, cursor, n, |f| {
        from_client_at(f, &at_legacy, "ingress", "audit")
    });
    let after = scrape_until(bed, "the audited flows to be counted", |s| {
        no_dns(s, "audit") >= no_dns(&before, "audit") + n as f64
    });
    assert_eq!(audited.len(), n, "{audited:#?}");
    for f in &audited {
        assert_eq!(f["destination_port"], UDP_PORT);
        assert_eq!(
            f["denied_by"],
            denied_by_rule("admin", "protect-servers", "no-dns"),
            "{f:#}"
        );
    }
    assert_eq!(
        no_dns(&after, "audit") - no_dns(&before, "audit"),
        n as f64,
        "verdict=audit: once per audited flow, on the rule that would have denied it"
    );
    assert_eq!(
        no_dns(&after, "deny") - no_dns(&before, "deny"),
        n as f64,
        "the kernel's deny counter: the first packet of each flow (the rest ride conntrack)"
    );
    let dropped: Vec<Json> = bed
        .flows_since(cursor)
        .into_iter()
        .filter(|f| from_client_at(f, &at_legacy, "ingress", "drop"))
        .collect();
    assert!(
        dropped.is_empty(),
        "nothing of the client's dropped: {dropped:#?}"
    );

    // Control: the same rule on a pod of a namespace not in audit mode drops.
    let cursor = bed.flow_cursor();
    let server = bed.ipv4(SERVER_NS, "server");
    let client = &bed.cluster.pod(CLIENT_NS, "client").pod;
    assert!(
        client.probe_udp(server, UDP_PORT, PROBE).is_blocked(),
        "really dropped outside the audit namespace"
    );
    let at_server = format!("{SERVER_NS}/server");
    let dropped = wait_flows(bed, cursor, 1, |f| {
        from_client_at(f, &at_server, "ingress", "drop") && f["destination_port"] == UDP_PORT
    });
    assert_eq!(
        dropped[0]["denied_by"],
        denied_by_rule("admin", "protect-servers", "no-dns")
    );
    assert!(
        !bed.flows_since(cursor)
            .iter()
            .any(|f| from_client_at(f, &at_server, "ingress", "audit")),
        "not audited outside the audit namespace"
    );
}

/// `palisade explain` of the client to the server, as JSON and as text; its
/// exit code says `allowed` (0) or denied (1).
fn explain(cnp: &CnpBed, port: u16, protocol: &str, allowed: bool) -> (Json, String) {
    let code = if allowed { 0 } else { 1 };
    let manifests = cnp.bed.cluster.manifests().display().to_string();
    let port = port.to_string();
    let args = [
        "explain",
        "--manifests",
        manifests.as_str(),
        "--from",
        "obs-client/client",
        "--to",
        "obs-server/server",
        "--port",
        port.as_str(),
        "--protocol",
        protocol,
    ];
    let json_out = cnp.cli_exits(&[&args[..], &["--output", "json"]].concat(), code);
    let text = cnp.cli_exits(&args, code);
    (
        serde_json::from_slice(&json_out.stdout).expect("explain JSON"),
        String::from_utf8_lossy(&text.stdout).into_owned(),
    )
}

fn rule_ref(
    tier: &str,
    policy: &str,
    priority: u16,
    rule: &str,
    index: usize,
    action: &str,
) -> Json {
    json!({
        "tier": tier, "policy": policy, "priority": priority,
        "rule": rule, "index": index, "action": action,
    })
}

fn decided_by_rule(r: Json) -> Json {
    let mut r = r;
    r["by"] = json!("cluster_rule");
    r
}

#[test]
fn explain_and_status_name_the_cluster_rules_that_decide_real_flows() {
    let cnp = CnpBed::new();
    let bed = &cnp.bed;
    let server: IpAddr = bed.ipv4(SERVER_NS, "server");
    let client = &bed.cluster.pod(CLIENT_NS, "client").pod;

    // The Admin Deny: explain names it, and the flow is really dropped.
    let (e, text) = explain(&cnp, UDP_PORT, "UDP", false);
    assert!(client.probe_udp(server, UDP_PORT, PROBE).is_blocked());
    assert_eq!(e["ingress"]["allowed"], false, "{e:#}");
    assert_eq!(e["egress"]["allowed"], true, "{e:#}");
    assert_eq!(
        e["ingress"]["tiers"]["decided_by"],
        decided_by_rule(rule_ref(
            "admin",
            "protect-servers",
            10,
            "no-dns",
            0,
            "Deny"
        )),
        "{e:#}"
    );
    assert_eq!(e["egress"]["tiers"]["decided_by"], json!({"by": "default"}));
    assert!(
        text.contains("decided by admin policy protect-servers (priority 10) rule no-dns: Deny"),
        "{text}"
    );
    assert!(!text.contains("WARNING"), "{text}");

    // The Admin Accept.
    let (e, text) = explain(&cnp, TCP_PORT, "TCP", true);
    assert!(client.probe_tcp(server, TCP_PORT, PROBE).is_reachable());
    assert_eq!(e["ingress"]["allowed"], true, "{e:#}");
    assert_eq!(
        e["ingress"]["tiers"]["decided_by"],
        decided_by_rule(rule_ref("admin", "protect-servers", 10, "web", 1, "Accept")),
        "{e:#}"
    );
    assert!(
        text.contains("decided by admin policy protect-servers (priority 10) rule web: Accept"),
        "{text}"
    );

    // The Passes: ingress goes on to NetworkPolicy (guard isolates the
    // server and allows nothing of TCP 7070), egress to the Baseline tier.
    let (e, text) = explain(&cnp, PASSED_PORT, "TCP", false);
    assert!(client.probe_tcp(server, PASSED_PORT, PROBE).is_blocked());
    let ingress = &e["ingress"]["tiers"];
    assert_eq!(
        ingress["passed"],
        json!([rule_ref("admin", "protect-servers", 10, "to-np", 2, "Pass")]),
        "{e:#}"
    );
    assert_eq!(
        ingress["decided_by"],
        json!({"by": "network_policy"}),
        "{e:#}"
    );
    assert_eq!(e["ingress"]["allowed"], false, "{e:#}");
    let egress = &e["egress"]["tiers"];
    assert_eq!(
        egress["passed"],
        json!([rule_ref(
            "admin",
            "egress-pass",
            20,
            "skip-admin",
            0,
            "Pass"
        )]),
        "{e:#}"
    );
    assert_eq!(
        egress["decided_by"],
        decided_by_rule(rule_ref(
            "baseline",
            "client-baseline",
            50,
            "no-7070",
            1,
            "Deny"
        )),
        "{e:#}"
    );
    assert_eq!(e["egress"]["allowed"], false, "{e:#}");
    for line in [
        "passed by admin policy protect-servers (priority 10) rule to-np: Pass (skips the rest of the admin tier)",
        "passed by admin policy egress-pass (priority 20) rule skip-admin: Pass (skips the rest of the admin tier)",
        "decided by baseline policy client-baseline (priority 50) rule no-7070: Deny",
        "decided by NetworkPolicy",
    ] {
        assert!(text.contains(line), "{line:?} in:\n{text}");
    }
    assert!(!text.contains("WARNING"), "{text}");

    // status: every policy with tier and priority, in precedence order, and
    // the domainNames peer as unsupported.
    let s = bed.cluster.status(0).expect("status");
    let listed: Vec<(String, String, u64, usize)> = s["cluster_policies"]
        .as_array()
        .expect("cluster_policies")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_owned(),
                p["tier"].as_str().unwrap_or_default().to_owned(),
                p["priority"].as_u64().unwrap_or(u64::MAX),
                p["unsupported"].as_array().map_or(usize::MAX, Vec::len),
            )
        })
        .collect();
    let row = |name: &str, tier: &str, priority, unsupported| {
        (name.to_owned(), tier.to_owned(), priority, unsupported)
    };
    assert_eq!(
        listed,
        [
            row("protect-servers", "Admin", 10, 0),
            row("egress-pass", "Admin", 20, 0),
            row("client-baseline", "Baseline", 50, 1),
        ],
        "{s:#}"
    );
    let baseline = &s["cluster_policies"][2];
    assert_eq!(
        baseline["unsupported"][0]["field"],
        "spec.egress[0].to[0].domainNames"
    );
    assert_eq!(baseline["unsupported"][0]["part"], "domain_names");
    assert_eq!(baseline["rejections"], json!([]));
    let scrape = bed.scrape();
    let gauge = |tier| {
        value(
            &scrape,
            "palisade_cluster_network_policies",
            &[("tier", tier)],
        )
    };
    assert_eq!((gauge("admin"), gauge("baseline")), (2.0, 1.0));
    assert_eq!(
        value(
            &scrape,
            "palisade_cluster_network_policy_unsupported_fields",
            &[("part", "domain_names")]
        ),
        1.0
    );

    let out = cnp.cli(&["status", "--health-addr", AGENT_HEALTH]);
    let text = String::from_utf8_lossy(&out.stdout);
    // TIER PRIORITY NAME ...
    let row_of = |name: &str| {
        text.lines()
            .find(|l| l.split_whitespace().nth(2) == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}: {text}"))
            .to_owned()
    };
    let protect = row_of("protect-servers");
    assert!(
        protect.starts_with("Admin") && protect.contains(" 10 ") && protect.ends_with(" -"),
        "{protect}"
    );
    let baseline = row_of("client-baseline");
    assert!(
        baseline.starts_with("Baseline")
            && baseline.contains(" 50 ")
            && baseline.contains("0 rejected, 1 unsupported"),
        "{baseline}"
    );
    assert!(
        text.contains("unsupported (matches nothing): spec.egress[0].to[0].domainNames"),
        "{text}"
    );
}
