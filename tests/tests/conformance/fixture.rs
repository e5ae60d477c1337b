//! The conformance cluster: namespaces x, y, z with pods a, b, c each, every
//! pod serving TCP, UDP and SCTP on ports 80 and 81, the real agent on each
//! node; and the parallel probe matrix that is compared with a model.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use palisade_tests::cluster::{Cluster, PortSpec};
use palisade_tests::{Outcome, Pod, Poll, Server};

use crate::model::{Observed, PodInfo, mismatches, render};

pub use crate::model::Family::{V4, V6};
pub use crate::model::Proto::{Sctp, Tcp, Udp};
pub use crate::model::{Case, Family, Proto, Reachability, in_ip_block};

pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
pub const PODS: [&str; 3] = ["a", "b", "c"];
pub const PORTS: [u16; 2] = [80, 81];
/// The matrix's "namespace" of hosts without a Pod object ([`Fixture::add_outside_host`]).
pub const OUTSIDE: &str = "outside";

/// How long one probe may wait for its answer.
pub const PROBE: Duration = Duration::from_millis(500);
/// How long the observed matrix may take to match after a change.
const CONVERGE: Duration = Duration::from_secs(10);
/// How long an agent may take to apply a change.
pub const APPLY: Duration = Duration::from_secs(20);
/// Cases probed at the same time (each is one probe per ordered pair).
const CASES_AT_ONCE: usize = 3;

/// The container ports every pod declares: `serve-<port>-<protocol>`.
pub fn standard_ports() -> Vec<PortSpec> {
    let mut out = Vec::new();
    for proto in ["tcp", "udp", "sctp"] {
        for port in PORTS {
            out.push(PortSpec {
                name: format!("serve-{port}-{proto}"),
                port,
                protocol: proto.to_uppercase(),
            });
        }
    }
    out
}

/// A probed pod: its place in the matrix and its bed pod. It stays in the
/// matrix after its object is removed (its veth and servers remain).
pub struct Endpoint {
    pub info: PodInfo,
    pub pod: Pod,
}

/// How to build a [`Fixture`].
pub struct Builder {
    nodes: usize,
    placement: fn(usize, usize) -> usize,
    ports: BTreeMap<String, Vec<PortSpec>>,
    namespace_labels: BTreeMap<String, Vec<(String, String)>>,
}

impl Builder {
    /// Number of nodes (pods go where `placement(namespace index, pod index)` says).
    pub fn nodes(mut self, nodes: usize, placement: fn(usize, usize) -> usize) -> Self {
        self.nodes = nodes;
        self.placement = placement;
        self
    }

    /// Declares these container ports for pod `ns/name` instead of the standard ones.
    pub fn ports(mut self, pod: &str, ports: &[(&str, u16, &str)]) -> Self {
        self.ports.insert(
            pod.to_string(),
            ports
                .iter()
                .map(|(name, port, protocol)| PortSpec {
                    name: (*name).to_string(),
                    port: *port,
                    protocol: (*protocol).to_string(),
                })
                .collect(),
        );
        self
    }

    /// Extra labels of namespace `ns` (besides `ns=<name>`).
    pub fn namespace_labels(mut self, ns: &str, labels: &[(&str, &str)]) -> Self {
        self.namespace_labels.insert(
            ns.to_string(),
            labels
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
        );
        self
    }

    /// Creates nodes, namespaces, pods and servers, starts the agents and
    /// waits until they have applied the initial state.
    pub fn build(self) -> Fixture {
        let cluster = Cluster::new(self.nodes).expect("cluster nodes");
        let mut fx = Fixture {
            servers: Vec::new(),
            endpoints: Vec::new(),
            cluster,
        };
        for ns in NAMESPACES {
            let extra = self.namespace_labels.get(ns).cloned().unwrap_or_default();
            let mut labels: Vec<(&str, &str)> = vec![("ns", ns)];
            labels.extend(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            fx.cluster
                .set_namespace(ns, &labels)
                .expect("namespace object");
        }
        for (i, ns) in NAMESPACES.iter().enumerate() {
            for (j, name) in PODS.iter().enumerate() {
                let ports = self
                    .ports
                    .get(&format!("{ns}/{name}"))
                    .cloned()
                    .unwrap_or_else(standard_ports);
                fx.add_pod_with_ports((self.placement)(i, j), ns, name, &[("pod", name)], &ports);
            }
        }
        let since = SystemTime::now();
        fx.cluster.start_agents().expect("start agents");
        if let Err(e) = fx.cluster.wait_applied(since, Duration::from_secs(30)) {
            let running: Vec<bool> = (0..self.nodes)
                .map(|i| fx.cluster.agent_running(i))
                .collect();
            panic!(
                "agents did not come up (running per node: {running:?}): {}",
                strip_ansi(&format!("{e:#}"))
            );
        }
        fx
    }
}

/// A conformance cluster. Dropping it stops the servers (in parallel), the
/// agents, and removes the namespaces, manifests and pins.
pub struct Fixture {
    servers: Vec<Server>,
    pub endpoints: Vec<Endpoint>,
    pub cluster: Cluster,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let servers = std::mem::take(&mut self.servers);
        std::thread::scope(|s| {
            for server in servers {
                s.spawn(move || drop(server));
            }
        });
    }
}

impl Fixture {
    /// The standard single-node cluster.
    pub fn new() -> Fixture {
        Fixture::builder().build()
    }

    pub fn builder() -> Builder {
        Builder {
            nodes: 1,
            placement: |_, _| 0,
            ports: BTreeMap::new(),
            namespace_labels: BTreeMap::new(),
        }
    }

    /// Adds pod `ns/name` on `node` with the standard ports and starts its servers.
    pub fn add_pod(&mut self, node: usize, ns: &str, name: &str, labels: &[(&str, &str)]) {
        self.add_pod_with_ports(node, ns, name, labels, &standard_ports());
    }

    fn add_pod_with_ports(
        &mut self,
        node: usize,
        ns: &str,
        name: &str,
        labels: &[(&str, &str)],
        ports: &[PortSpec],
    ) {
        let pod = self
            .cluster
            .add_pod(node, ns, name, labels, ports)
            .unwrap_or_else(|e| panic!("pod {ns}/{name}: {e:#}"))
            .pod
            .clone();
        self.serve_and_probe(ns, name, pod);
    }

    /// Starts `pod`'s servers and puts it in the matrix as `ns/name`.
    fn serve_and_probe(&mut self, ns: &str, name: &str, pod: Pod) {
        for port in PORTS {
            self.servers.push(pod.serve_tcp(port).expect("tcp server"));
            self.servers.push(pod.serve_udp(port).expect("udp server"));
            self.servers
                .push(pod.serve_sctp(port).expect("sctp server"));
        }
        self.endpoints.push(Endpoint {
            info: PodInfo {
                namespace: ns.into(),
                name: name.into(),
                ips: pod.ips(),
            },
            pod,
        });
    }

    /// Adds `outside/<name>`: a host on `node`'s pod network with the
    /// standard servers but no Pod object, so its addresses are no pod's
    /// and no node's (the agent attaches nothing to it).
    pub fn add_outside_host(&mut self, node: usize, name: &str) {
        let host = self.cluster.nodes[node]
            .add_pod(&format!("outside-{name}"))
            .unwrap_or_else(|e| panic!("outside host {name}: {e:#}"));
        self.serve_and_probe(OUTSIDE, name, host);
    }

    /// The bed pod of `ns/name`.
    pub fn pod(&self, id: &str) -> &Pod {
        &self.endpoint(id).pod
    }

    /// The addresses of `ns/name`.
    pub fn ip(&self, id: &str, family: Family) -> IpAddr {
        self.endpoint(id).info.ip(family)
    }

    fn endpoint(&self, id: &str) -> &Endpoint {
        self.endpoints
            .iter()
            .find(|e| e.info.id() == id)
            .unwrap_or_else(|| panic!("test bug: no pod {id}"))
    }

    /// A table over the current endpoints with every pair set to `all`.
    pub fn reach(&self, all: bool) -> Reachability {
        let pods: Vec<PodInfo> = self.endpoints.iter().map(|e| e.info.clone()).collect();
        Reachability::new(&pods, all)
    }

    /// Writes policy manifest `file` and waits until every agent applied it.
    pub fn apply(&self, file: &str, yaml: &str) {
        let since = SystemTime::now();
        self.cluster.apply_policy(file, yaml).expect("write policy");
        self.wait_applied(since);
    }

    /// Deletes policy manifest `file` and waits until every agent applied that.
    pub fn delete(&self, file: &str) {
        let since = SystemTime::now();
        self.cluster.delete_policy(file).expect("delete policy");
        self.wait_applied(since);
    }

    /// Waits until every agent applied a plan after `since`.
    pub fn wait_applied(&self, since: SystemTime) {
        if let Err(e) = self.cluster.wait_applied(since, APPLY) {
            panic!("{e:#}");
        }
    }

    /// Relabels a pod object and waits for the agents.
    pub fn relabel_pod(&mut self, id: &str, labels: &[(&str, &str)]) {
        let (ns, name) = id.split_once('/').expect("ns/name");
        let since = SystemTime::now();
        self.cluster
            .relabel_pod(ns, name, labels)
            .expect("relabel pod");
        self.wait_applied(since);
    }

    /// Relabels a namespace (`ns=<name>` is always kept) and waits for the agents.
    pub fn relabel_namespace(&mut self, ns: &str, extra: &[(&str, &str)]) {
        let mut labels = vec![("ns", ns)];
        labels.extend_from_slice(extra);
        let since = SystemTime::now();
        self.cluster
            .set_namespace(ns, &labels)
            .expect("relabel namespace");
        self.wait_applied(since);
    }

    /// Probes every ordered pair for each case in parallel, retrying for a
    /// bounded time until all match; on a lasting mismatch panics with the
    /// tables side by side and the agents' log tails.
    #[track_caller]
    pub fn expect(&self, cases: &[Case]) {
        let matched = Poll::new("the observed reachability to match the model", CONVERGE)
            .every(Duration::from_millis(100))
            .until(
                || self.observe(cases),
                |observed| (0..cases.len()).all(|k| mismatches(&cases[k], &observed[k]) == 0),
            );
        if let Err(timed_out) = matched {
            let observed = timed_out.last;
            let mut msg = format!(
                "the observed reachability did not match the model within {:?}\n\n",
                timed_out.waited
            );
            for k in (0..cases.len()).filter(|&k| mismatches(&cases[k], &observed[k]) > 0) {
                msg.push_str(&render(&cases[k], &observed[k]));
                msg.push('\n');
            }
            msg.push_str(&self.diagnostics());
            panic!("{msg}");
        }
    }

    /// Shorthand: one table checked for several (protocol, port, family).
    #[track_caller]
    pub fn expect_for(&self, expected: &Reachability, on: &[(Proto, u16, Family)]) {
        let cases: Vec<Case> = on
            .iter()
            .map(|&(proto, port, family)| Case::new(proto, port, family, expected))
            .collect();
        self.expect(&cases);
    }

    /// One probe per checked cell of each case, all in parallel (a few cases at a time).
    pub fn observe(&self, cases: &[Case]) -> Vec<Observed> {
        let mut out = Vec::new();
        for chunk in cases.chunks(CASES_AT_ONCE) {
            out.extend(std::thread::scope(|s| {
                let handles: Vec<Vec<_>> = chunk
                    .iter()
                    .map(|case| {
                        let pods = case.expected.pods();
                        let n = pods.len();
                        (0..n * n)
                            .map(|k| {
                                let (from, to) = (&pods[k / n], &pods[k % n]);
                                let probe = case.expected.get(k / n, k % n).is_some();
                                let src = self.pod(&from.id());
                                let dst = to.ip(case.family);
                                probe.then(|| s.spawn(move || probe_once(src, dst, case)))
                            })
                            .collect()
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|row| {
                        row.into_iter()
                            .map(|h| h.map(|h| h.join().expect("probe thread")))
                            .collect::<Observed>()
                    })
                    .collect::<Vec<_>>()
            }));
        }
        out
    }

    /// Agent status (errors, rejections) and log tails of every node.
    pub fn diagnostics(&self) -> String {
        let mut out = String::new();
        for i in 0..self.cluster.nodes.len() {
            let status = self
                .cluster
                .status(i)
                .map(|s| format!("errors: {}\nrejections: {}", s["errors"], s["rejections"]))
                .unwrap_or_else(|e| format!("status unavailable: {e:#}"));
            out.push_str(&format!(
                "--- agent on node {i}: {status}\n--- its log (tail):\n{}\n",
                strip_ansi(&self.cluster.agent_log_tail(i, 40))
            ));
        }
        out
    }

    /// The status of node `i`'s agent.
    pub fn status(&self, i: usize) -> serde_json::Value {
        self.cluster
            .status(i)
            .unwrap_or_else(|e| panic!("status of node {i}: {e:#}"))
    }

    /// The status entry of local endpoint `ns/name` on node `i`.
    pub fn endpoint_status(&self, i: usize, id: &str) -> Option<serde_json::Value> {
        self.status(i)["endpoints"]
            .as_array()
            .and_then(|eps| eps.iter().find(|e| e["pod"] == id).cloned())
    }
}

fn probe_once(src: &Pod, dst: IpAddr, case: &Case) -> Outcome {
    match case.proto {
        Proto::Tcp => src.probe_tcp(dst, case.port, PROBE),
        Proto::Udp => src.probe_udp(dst, case.port, PROBE),
        Proto::Sctp => src.probe_sctp(dst, case.port, PROBE),
    }
}

/// A NetworkPolicy manifest; `spec` is YAML at column 0.
pub fn policy(namespace: &str, name: &str, spec: &str) -> String {
    let mut out = format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n"
    );
    for line in spec.lines() {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// `text` without ANSI colour sequences (the agent colours its log).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ parameters final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
