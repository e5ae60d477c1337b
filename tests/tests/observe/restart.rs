//! Counters across an agent crash and restart: kernel counters are pinned and
//! the rule ledger too, so no series goes backwards, packets counted while no
//! agent ran are credited to the rules that allowed them, and a restart that
//! numbers rules differently (a policy sorting first) changes nothing.

use std::time::SystemTime;

use crate::fixture::*;

const EXTRA: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: aaa-extra
  namespace: obs-server
spec:
  podSelector:
    matchLabels:
      app: server
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: obs-client
    ports:
    - protocol: TCP
      port: 7070
"#;

#[test]
fn counters_survive_an_agent_restart_without_going_backwards() {
    let mut bed = GuardedCluster::new(true);
    let server = bed.ipv4(SERVER_NS, "server");
    let legacy = bed.ipv4(AUDIT_NS, "legacy");
    // A policy added later gets the next rule ids; a restarted agent, which
    // numbers policies in name order, gives it the first ones.
    let since = SystemTime::now();
    bed.cluster.apply_policy("extra", EXTRA).expect("policy");
    bed.cluster.wait_applied(since, APPLY).expect("applied");
    let _extra = bed
        .cluster
        .pod(SERVER_NS, "server")
        .pod
        .serve_tcp(7070)
        .expect("tcp 7070");

    bed.tcp_connects(server, TCP_PORT, 3);
    bed.tcp_connects(server, 7070, 2);
    bed.udp_datagrams(server, DENIED_PORT, 2);
    bed.udp_exchanges((CLIENT_NS, "client"), legacy, UDP_PORT, 2);
    let audit = |s: &prometheus_parse::Scrape| hits(s, AUDIT_NS, "lockdown", "none", "audit");
    scrape_until(&bed, "audited flows", |s| audit(s) >= 2.0);
    // Whatever a scrape shows is persisted before it is served.
    let before = bed.scrape();

    bed.cluster.kill_agent(0).expect("kill");
    // The pinned programs keep enforcing and counting while no agent runs.
    bed.tcp_connects(server, TCP_PORT, 4);
    let since = SystemTime::now();
    bed.cluster.start_agent(0).expect("restart");
    bed.cluster
        .wait_applied(since, APPLY)
        .expect("applied after restart");
    let after = bed.scrape();

    let rule = |s, policy, rule| hits(s, SERVER_NS, policy, rule, "allow");
    assert_eq!(
        rule(&after, "guard", "0"),
        rule(&before, "guard", "0") + 4.0
    );
    assert_eq!(rule(&after, "guard", "1"), rule(&before, "guard", "1"));
    assert_eq!(
        rule(&after, "aaa-extra", "0"),
        rule(&before, "aaa-extra", "0")
    );
    assert_eq!(rule(&before, "aaa-extra", "0"), 2.0);
    assert!(audit(&after) >= audit(&before), "audited flows persist");
    assert!(denied(&after) >= denied(&before));

    // Every counter series of the first scrape is still there and not lower.
    for s in before
        .samples
        .iter()
        .filter(|s| s.metric.ends_with("_total"))
    {
        let labels: Vec<(&str, &str)> = s
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let old = value(&before, &s.metric, &labels);
        let new = value(&after, &s.metric, &labels);
        assert!(
            new >= old,
            "{} {:?} went from {old} to {new}",
            s.metric,
            s.labels
        );
    }

    // And the restarted agent keeps counting on the right rules.
    bed.tcp_connects(server, 7070, 1);
    let later = bed.scrape();
    assert_eq!(
        rule(&later, "aaa-extra", "0"),
        rule(&after, "aaa-extra", "0") + 1.0
    );
    assert_eq!(rule(&later, "guard", "0"), rule(&after, "guard", "0"));
}
