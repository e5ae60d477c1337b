//! One node, a client pod and a server pod in namespaces the test creates, a
//! policy `guard` on the server (rule 0: TCP 8080 from the client namespace,
//! rule 1: UDP 5353 from it), echo servers, and scrape helpers.

use std::net::{IpAddr, UdpSocket};
use std::time::{Duration, SystemTime};

use palisade_tests::cluster::{AGENT_HEALTH, AGENT_METRICS, Cluster, PortSpec};
use palisade_tests::{Poll, Server};
use prometheus_parse::{Scrape, Value};

pub const CLIENT_NS: &str = "obs-client";
pub const SERVER_NS: &str = "obs-server";
pub const AUDIT_NS: &str = "obs-audit";
pub const TCP_PORT: u16 = 8080;
pub const UDP_PORT: u16 = 5353;
/// A UDP port no rule allows.
pub const DENIED_PORT: u16 = 9999;
pub const PROBE: Duration = Duration::from_millis(1500);
pub const APPLY: Duration = Duration::from_secs(30);

pub const GUARD: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: guard
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
      port: 8080
  - from:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: obs-client
    ports:
    - protocol: UDP
      port: 5353
"#;

/// A one-node cluster run by a real agent: the client and server pods, the
/// `guard` policy on the server, echo servers (and, with audit, the locked-down
/// audit namespace); observed through the agent's status, metrics and flows.
pub struct GuardedCluster {
    /// Echo servers (dropped before the cluster that owns their namespaces).
    _servers: Vec<Server>,
    pub cluster: Cluster,
}

fn port(name: &str, port: u16, protocol: &str) -> PortSpec {
    PortSpec {
        name: name.into(),
        port,
        protocol: protocol.into(),
    }
}

impl GuardedCluster {
    /// Client and server (and, with `audit`, a server in an audit-mode
    /// namespace locked down by `lockdown`), the guard policy, the agent.
    pub fn new(audit: bool) -> GuardedCluster {
        let mut cluster = Cluster::new(1).expect("cluster");
        cluster.set_namespace(CLIENT_NS, &[]).expect("ns");
        cluster.set_namespace(SERVER_NS, &[]).expect("ns");
        cluster
            .add_pod(0, CLIENT_NS, "client", &[("app", "client")], &[])
            .expect("client pod");
        let ports = [port("http", TCP_PORT, "TCP"), port("dns", UDP_PORT, "UDP")];
        cluster
            .add_pod(0, SERVER_NS, "server", &[("app", "server")], &ports)
            .expect("server pod");
        cluster.apply_policy("guard", GUARD).expect("policy");
        let mut servers = Vec::new();
        {
            let server = &cluster.pod(SERVER_NS, "server").pod;
            servers.push(server.serve_tcp(TCP_PORT).expect("tcp server"));
            servers.push(server.serve_udp(UDP_PORT).expect("udp server"));
            servers.push(server.serve_udp(DENIED_PORT).expect("udp server"));
        }
        if audit {
            cluster
                .write_namespace_yaml(
                    "02-audit-namespace.yaml",
                    &format!(
                        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {AUDIT_NS}\n  labels:\n    kubernetes.io/metadata.name: {AUDIT_NS}\n  annotations:\n    palisade.dev/audit-mode: \"true\"\n"
                    ),
                )
                .expect("audit namespace");
            cluster
                .add_pod(0, AUDIT_NS, "legacy", &[("app", "legacy")], &ports)
                .expect("audit pod");
            cluster
                .apply_policy(
                    "lockdown",
                    "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: lockdown\n  namespace: obs-audit\nspec:\n  podSelector: {}\n  policyTypes: [Ingress]\n",
                )
                .expect("lockdown");
            let legacy = &cluster.pod(AUDIT_NS, "legacy").pod;
            servers.push(legacy.serve_udp(UDP_PORT).expect("udp server"));
        }
        let since = SystemTime::now();
        cluster.start_agents().expect("agent");
        cluster.wait_applied(since, APPLY).expect("applied");
        GuardedCluster {
            _servers: servers,
            cluster,
        }
    }

    pub fn ipv4(&self, ns: &str, pod: &str) -> IpAddr {
        self.cluster.ips(ns, pod)[0]
    }

    pub fn ipv6(&self, ns: &str, pod: &str) -> IpAddr {
        self.cluster.ips(ns, pod)[1]
    }

    /// `n` TCP connections (each a new flow) from the client, all answered.
    pub fn tcp_connects(&self, dst: IpAddr, port: u16, n: usize) {
        let client = &self.cluster.pod(CLIENT_NS, "client").pod;
        for i in 0..n {
            assert!(
                client.probe_tcp(dst, port, PROBE).is_reachable(),
                "connection {i} to {dst}:{port} must pass"
            );
        }
    }

    /// `n` UDP exchanges (each from a fresh socket: a new flow), all answered.
    pub fn udp_exchanges(&self, from: (&str, &str), dst: IpAddr, port: u16, n: usize) {
        let pod = &self.cluster.pod(from.0, from.1).pod;
        for i in 0..n {
            assert!(
                pod.probe_udp(dst, port, PROBE).is_reachable(),
                "datagram {i} to {dst}:{port} must pass"
            );
        }
    }

    /// `n` single datagrams from the client, each from a fresh socket.
    pub fn udp_datagrams(&self, dst: IpAddr, port: u16, n: usize) {
        let client = &self.cluster.pod(CLIENT_NS, "client").pod;
        client.netns().run(move || {
            for _ in 0..n {
                let bind = if dst.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
                let s = UdpSocket::bind(bind).expect("bind");
                s.send_to(b"palisade", (dst, port)).expect("send");
            }
        });
    }

    pub fn scrape(&self) -> Scrape {
        let (code, body) = self
            .cluster
            .agent_get(0, AGENT_METRICS, "/metrics")
            .expect("scrape");
        assert_eq!(code, 200, "{body}");
        parse(&body)
    }

    pub fn metrics_text(&self) -> String {
        self.cluster
            .agent_get(0, AGENT_METRICS, "/metrics")
            .expect("scrape")
            .1
    }

    /// Where the flow log is now (pass to [`GuardedCluster::flows_since`]).
    pub fn flow_cursor(&self) -> u64 {
        let (_, body) = self
            .cluster
            .agent_get(0, AGENT_HEALTH, "/flows")
            .expect("flows");
        let page: serde_json::Value = serde_json::from_str(&body).expect("json");
        page["next"].as_u64().unwrap_or(0)
    }

    /// Every flow after `cursor`.
    pub fn flows_since(&self, cursor: u64) -> Vec<serde_json::Value> {
        let (_, body) = self
            .cluster
            .agent_get(0, AGENT_HEALTH, &format!("/flows?since={cursor}"))
            .expect("flows");
        let page: serde_json::Value = serde_json::from_str(&body).expect("json");
        page["flows"].as_array().cloned().unwrap_or_default()
    }

    /// `/flows` filtered by namespace, as JSON records.
    pub fn flows(&self, namespace: &str) -> Vec<serde_json::Value> {
        let (code, body) = self
            .cluster
            .agent_get(0, AGENT_HEALTH, &format!("/flows?namespace={namespace}"))
            .expect("flows");
        assert_eq!(code, 200, "{body}");
        let page: serde_json::Value = serde_json::from_str(&body).expect("json");
        page["flows"].as_array().cloned().unwrap_or_default()
    }
}

pub fn parse(body: &str) -> Scrape {
    Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("prometheus-parse")
}

/// Sum of the samples of `name` whose labels include `labels`.
pub fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .filter(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match &x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
            Value::Summary(_) => 0.0,
        })
        .sum()
}

pub fn hits(s: &Scrape, ns: &str, policy: &str, rule: &str, verdict: &str) -> f64 {
    value(
        s,
        "palisade_policy_rule_hits_total",
        &[
            ("namespace", ns),
            ("policy", policy),
            ("direction", "ingress"),
            ("rule", rule),
            ("verdict", verdict),
        ],
    )
}

pub fn denied(s: &Scrape) -> f64 {
    value(
        s,
        "palisade_drops_total",
        &[("direction", "ingress"), ("reason", "policy_denied")],
    )
}

/// Flows after `cursor` seen at `endpoint` with `verdict`, and of those the
/// ones from the client pod. The host veth's own link-local traffic (IPv6
/// MLD reports from fe80::1) is policed too and shows up beside the test's
/// packets, so counters are compared with the flow log, which names both.
pub fn flows_at(
    bed: &GuardedCluster,
    cursor: u64,
    endpoint: &str,
    verdict: &str,
) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    let all: Vec<_> = bed
        .flows_since(cursor)
        .into_iter()
        .filter(|f| {
            f["endpoint"] == endpoint && f["verdict"] == verdict && f["direction"] == "ingress"
        })
        .collect();
    let ours = all
        .iter()
        .filter(|f| f["source"] == format!("{CLIENT_NS}/client"))
        .cloned()
        .collect();
    (all, ours)
}

/// Polls until `f(scrape)` holds, then returns that scrape.
#[track_caller]
pub fn scrape_until(bed: &GuardedCluster, what: &str, f: impl Fn(&Scrape) -> bool) -> Scrape {
    Poll::new(what, Duration::from_secs(10))
        .every(Duration::from_millis(50))
        .until(|| bed.scrape(), f)
        .unwrap_or_else(|timed_out| panic!("{timed_out}; agent log:\n{}", bed.cluster.agent_log(0)))
}
