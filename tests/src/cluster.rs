//! A virtual cluster driven through the real `palisade` binary: nodes and pods
//! from the bed, their objects written as manifests, one agent per node
//! (`palisade run --manifests`) running inside the node's namespace.
//!
//! Used by the end-to-end and conformance tests, and by `cargo xtask demo`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};

use crate::bpffs::BpffsDir;
use crate::netns::unique_tag;
use crate::node::{Layout, Node, Pod};
use crate::process::ChildGuard;
use crate::wait::Poll;

/// Where each agent serves health and status inside its node namespace.
pub const AGENT_HEALTH: &str = "127.0.0.1:9963";
/// Where each agent serves metrics inside its node namespace.
pub const AGENT_METRICS: &str = "127.0.0.1:9962";
/// Pause between two reads of an agent's `/status` while waiting on it.
const STATUS_EVERY: Duration = Duration::from_millis(50);

/// A container port: name, number, protocol (`TCP`, `UDP`, `SCTP`).
#[derive(Clone, Debug)]
pub struct PortSpec {
    /// Port name (may be empty).
    pub name: String,
    /// Port number.
    pub port: u16,
    /// Protocol.
    pub protocol: String,
}

/// A pod of the virtual cluster.
pub struct ClusterPod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Index of the node it runs on.
    pub node: usize,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Container ports.
    pub ports: Vec<PortSpec>,
    /// The bed pod (namespace, veth, addresses).
    pub pod: Pod,
    /// Whether the Pod object shows its addresses (false: like a pod whose
    /// sandbox is being set up and whose status the kubelet has not updated).
    pub report_ips: bool,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
}

/// A pod object whose addresses no bed pod carries.
struct GhostPod {
    namespace: String,
    name: String,
    node: usize,
    labels: BTreeMap<String, String>,
    ports: Vec<PortSpec>,
    ips: [IpAddr; 2],
    /// `spec.hostNetwork`: `ips` are then its node's.
    host_network: bool,
}

/// One running agent.
struct Agent {
    child: ChildGuard,
    bpffs: BpffsDir,
    log: PathBuf,
}

/// Nodes, pods, a manifest directory and the agents following it.
pub struct Cluster {
    /// The nodes.
    pub nodes: Vec<Node>,
    /// The pods, in creation order.
    pub pods: Vec<ClusterPod>,
    /// Pod objects without a bed pod (see [`Cluster::add_pod_object`]).
    ghosts: Vec<GhostPod>,
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// Labels of each Node object.
    node_labels: Vec<BTreeMap<String, String>>,
    dir: PathBuf,
    binary: PathBuf,
    agents: Vec<Option<Agent>>,
    /// Extra arguments of every `palisade run` (from the next start).
    agent_args: Vec<String>,
}

/// Environment variable that picks the agents' `--attach` mode for a test run
/// (`auto`, `tcx` or `tc`); unset or empty: the agent's default.
pub const ATTACH_ENV: &str = "PALISADE_TEST_ATTACH";

/// The `--attach` mode this test run asks for, if any.
pub fn attach_arg() -> Option<String> {
    std::env::var(ATTACH_ENV).ok().filter(|m| !m.is_empty())
}

/// The `palisade` binary the tests drive: `$PALISADE_BIN`, else next to the
/// test executable's `deps/` directory (where cargo puts workspace binaries).
pub fn palisade_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("PALISADE_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("current_exe")?;
    let mut dir = exe
        .parent()
        .map(Path::to_path_buf)
        .context("test executable has a parent")?;
    if dir.ends_with("deps") {
        dir.pop();
    }
    let candidate = dir.join("palisade");
    if candidate.exists() {
        return Ok(candidate);
    }
    bail!(
        "palisade binary not found at {} (run through `cargo xtask test`, or set PALISADE_BIN)",
        candidate.display()
    )
}

/// A pod object's addresses, as its status reports them.
enum PodNetwork<'a> {
    /// Sandbox being set up: the kubelet has not reported addresses yet.
    Pending,
    Own(&'a [IpAddr; 2]),
    /// `hostNetwork: true`, with its node's addresses.
    Host(&'a [IpAddr; 2]),
}

/// Appends one Pod document.
#[expect(
    clippy::too_many_arguments,
    reason = "one argument per field of the document"
)]
fn pod_yaml(
    out: &mut String,
    namespace: &str,
    name: &str,
    node: usize,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
    ports: &[PortSpec],
    network: PodNetwork,
) {
    let _ = write!(
        out,
        "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  labels:{}  annotations:{}spec:\n  nodeName: {}\n{}  containers:\n  - name: main\n    image: none\n    ports:",
        yaml_map(4, labels),
        yaml_map(4, annotations),
        Cluster::node_name(node),
        if matches!(network, PodNetwork::Host(_)) {
            "  hostNetwork: true\n"
        } else {
            ""
        }
    );
    if ports.is_empty() {
        out.push_str(" []\n");
    } else {
        out.push('\n');
        for port in ports {
            let _ = write!(
                out,
                "    - containerPort: {}\n      protocol: {}\n",
                port.port, port.protocol
            );
            if !port.name.is_empty() {
                let _ = writeln!(out, "      name: {}", port.name);
            }
        }
    }
    match network {
        PodNetwork::Own(ips) | PodNetwork::Host(ips) => {
            let _ = write!(
                out,
                "status:\n  phase: Running\n  podIP: {}\n  podIPs:\n  - ip: {}\n  - ip: {}\n",
                ips[0], ips[0], ips[1]
            );
        }
        PodNetwork::Pending => out.push_str("status:\n  phase: Pending\n"),
    }
}

/// Labels as the objects hold them.
fn owned(labels: &[(&str, &str)]) -> BTreeMap<String, String> {
    labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn yaml_map(indent: usize, map: &BTreeMap<String, String>) -> String {
    if map.is_empty() {
        return " {}\n".into();
    }
    let mut out = "\n".to_string();
    for (k, v) in map {
        let _ = writeln!(out, "{}{k:?}: {v:?}", " ".repeat(indent));
    }
    out
}

impl Cluster {
    /// A cluster of `nodes` nodes (linked to each other when more than one).
    pub fn new(nodes: usize) -> Result<Cluster> {
        Self::with_layout(nodes, Layout::Routed)
    }

    /// A cluster of `nodes` nodes wired as `layout`.
    pub fn with_layout(nodes: usize, layout: Layout) -> Result<Cluster> {
        let nodes: Vec<Node> = (0..nodes)
            .map(|i| Node::with_layout(i as u8, layout))
            .collect::<Result<_>>()?;
        for i in 0..nodes.len() {
            for j in i + 1..nodes.len() {
                crate::node::link_nodes(&nodes[i], &nodes[j])?;
            }
        }
        let dir = std::env::temp_dir().join(format!("palisade-test-{}", unique_tag()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let agents = (0..nodes.len()).map(|_| None).collect();
        let node_labels = vec![BTreeMap::new(); nodes.len()];
        let cluster = Cluster {
            nodes,
            pods: Vec::new(),
            ghosts: Vec::new(),
            namespaces: BTreeMap::new(),
            node_labels,
            dir,
            binary: palisade_binary()?,
            agents,
            agent_args: Vec::new(),
        };
        cluster.write_nodes()?;
        Ok(cluster)
    }

    /// The manifest directory.
    pub fn manifests(&self) -> &Path {
        &self.dir
    }

    /// Node name as pods reference it.
    pub fn node_name(index: usize) -> String {
        format!("node-{index}")
    }

    /// Writes a file into the manifest directory atomically (temp dotfile, rename).
    pub fn write_file(&self, name: &str, content: &str) -> Result<()> {
        let tmp = self.dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, content).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, self.dir.join(name))
            .with_context(|| format!("renaming to {name}"))?;
        Ok(())
    }

    /// Removes a file from the manifest directory.
    pub fn remove_file(&self, name: &str) -> Result<()> {
        std::fs::remove_file(self.dir.join(name)).with_context(|| format!("removing {name}"))
    }

    /// Replaces the labels of node `i`'s Node object and rewrites the nodes file.
    pub fn set_node_labels(&mut self, i: usize, labels: &[(&str, &str)]) -> Result<()> {
        self.node_labels[i] = owned(labels);
        self.write_nodes()
    }

    fn write_nodes(&self) -> Result<()> {
        let mut out = String::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let _ = write!(
                out,
                "---\napiVersion: v1\nkind: Node\nmetadata:\n  name: {}\n  labels:{}status:\n  addresses:\n  - type: InternalIP\n    address: {}\n  - type: InternalIP\n    address: {}\n",
                Self::node_name(i),
                yaml_map(4, &self.node_labels[i]),
                node.ipv4(),
                node.ipv6()
            );
        }
        self.write_file("00-nodes.yaml", &out)
    }

    /// Adds or relabels a namespace (also sets `kubernetes.io/metadata.name`).
    pub fn set_namespace(&mut self, name: &str, labels: &[(&str, &str)]) -> Result<()> {
        let mut map: BTreeMap<String, String> = owned(labels);
        map.insert("kubernetes.io/metadata.name".into(), name.into());
        self.namespaces.insert(name.into(), map);
        self.write_namespaces()
    }

    /// Sets an annotation-free namespace list file.
    fn write_namespaces(&self) -> Result<()> {
        let mut out = String::new();
        for (name, labels) in &self.namespaces {
            let _ = write!(
                out,
                "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels:{}",
                yaml_map(4, labels)
            );
        }
        self.write_file("01-namespaces.yaml", &out)
    }

    /// Writes raw extra namespace YAML (e.g. with annotations) under its own file.
    pub fn write_namespace_yaml(&self, file: &str, yaml: &str) -> Result<()> {
        self.write_file(file, yaml)
    }

    /// Adds a pod on `node` with labels and container ports, and writes it.
    pub fn add_pod(
        &mut self,
        node: usize,
        namespace: &str,
        name: &str,
        labels: &[(&str, &str)],
        ports: &[PortSpec],
    ) -> Result<&ClusterPod> {
        let pod = self.nodes[node].add_pod(&format!("{namespace}-{name}"))?;
        self.push_pod(node, namespace, name, labels, ports, pod)
    }

    /// [`Cluster::add_pod`] for a pod whose IPv6 addresses go through
    /// duplicate address detection, as on a real node.
    pub fn add_pod_with_dad(
        &mut self,
        node: usize,
        namespace: &str,
        name: &str,
        labels: &[(&str, &str)],
    ) -> Result<&ClusterPod> {
        let pod = self.nodes[node].add_pod_with(&format!("{namespace}-{name}"), true)?;
        self.push_pod(node, namespace, name, labels, &[], pod)
    }

    fn push_pod(
        &mut self,
        node: usize,
        namespace: &str,
        name: &str,
        labels: &[(&str, &str)],
        ports: &[PortSpec],
        pod: Pod,
    ) -> Result<&ClusterPod> {
        self.pods.push(ClusterPod {
            namespace: namespace.into(),
            name: name.into(),
            node,
            labels: owned(labels),
            ports: ports.to_vec(),
            pod,
            report_ips: true,
            annotations: BTreeMap::new(),
        });
        self.write_pods()?;
        Ok(self.pods.last().expect("just pushed"))
    }

    /// Sets (or, with `None`, removes) an annotation of a pod and rewrites
    /// the pods file.
    pub fn annotate_pod(
        &mut self,
        namespace: &str,
        name: &str,
        key: &str,
        value: Option<&str>,
    ) -> Result<()> {
        let pod = self
            .pods
            .iter_mut()
            .find(|p| p.namespace == namespace && p.name == name)
            .with_context(|| format!("no pod {namespace}/{name}"))?;
        match value {
            Some(v) => pod.annotations.insert(key.into(), v.into()),
            None => pod.annotations.remove(key),
        };
        self.write_pods()
    }

    /// Extra arguments for every agent started from now on.
    pub fn set_agent_args(&mut self, args: &[&str]) {
        self.agent_args = args.iter().map(ToString::to_string).collect();
    }

    /// Replaces a pod's labels and rewrites the pods file.
    pub fn relabel_pod(
        &mut self,
        namespace: &str,
        name: &str,
        labels: &[(&str, &str)],
    ) -> Result<()> {
        let pod = self
            .pods
            .iter_mut()
            .find(|p| p.namespace == namespace && p.name == name)
            .with_context(|| format!("no pod {namespace}/{name}"))?;
        pod.labels = owned(labels);
        self.write_pods()
    }

    /// Removes a pod's object (its namespace and veth stay, like a pod being
    /// torn down after the API deleted it).
    pub fn remove_pod_object(&mut self, namespace: &str, name: &str) -> Result<ClusterPod> {
        let at = self
            .pods
            .iter()
            .position(|p| p.namespace == namespace && p.name == name)
            .with_context(|| format!("no pod {namespace}/{name}"))?;
        let pod = self.pods.remove(at);
        self.write_pods()?;
        Ok(pod)
    }

    /// The pod with this namespace and name.
    pub fn pod(&self, namespace: &str, name: &str) -> &ClusterPod {
        self.pods
            .iter()
            .find(|p| p.namespace == namespace && p.name == name)
            .unwrap_or_else(|| panic!("test bug: no pod {namespace}/{name}"))
    }

    fn write_pods(&self) -> Result<()> {
        let mut out = String::new();
        for p in &self.pods {
            let ips = p.pod.ips();
            let network = if p.report_ips {
                PodNetwork::Own(&ips)
            } else {
                PodNetwork::Pending
            };
            pod_yaml(
                &mut out,
                &p.namespace,
                &p.name,
                p.node,
                &p.labels,
                &p.annotations,
                &p.ports,
                network,
            );
        }
        for g in &self.ghosts {
            pod_yaml(
                &mut out,
                &g.namespace,
                &g.name,
                g.node,
                &g.labels,
                &BTreeMap::new(),
                &g.ports,
                if g.host_network {
                    PodNetwork::Host(&g.ips)
                } else {
                    PodNetwork::Own(&g.ips)
                },
            );
        }
        self.write_file("10-pods.yaml", &out)
    }

    /// Adds a running pod object on `node` whose addresses (`ipv4`, `ipv6`)
    /// no bed pod carries: the agent finds no interface for it. Written with
    /// the other pods.
    pub fn add_pod_object(
        &mut self,
        node: usize,
        namespace: &str,
        name: &str,
        labels: &[(&str, &str)],
        ports: &[PortSpec],
        ips: [IpAddr; 2],
    ) -> Result<()> {
        self.push_ghost(GhostPod {
            namespace: namespace.into(),
            name: name.into(),
            node,
            labels: owned(labels),
            ports: ports.to_vec(),
            ips,
            host_network: false,
        })
    }

    /// Adds a running `hostNetwork: true` pod object on `node`: its
    /// addresses are the node's. Written with the other pods.
    pub fn add_host_network_pod_object(
        &mut self,
        node: usize,
        namespace: &str,
        name: &str,
        labels: &[(&str, &str)],
    ) -> Result<()> {
        let at = &self.nodes[node];
        self.push_ghost(GhostPod {
            namespace: namespace.into(),
            name: name.into(),
            node,
            labels: owned(labels),
            ports: Vec::new(),
            ips: [at.ipv4().into(), at.ipv6().into()],
            host_network: true,
        })
    }

    fn push_ghost(&mut self, ghost: GhostPod) -> Result<()> {
        let (namespace, name) = (&ghost.namespace, &ghost.name);
        if self
            .pods
            .iter()
            .any(|p| &p.namespace == namespace && &p.name == name)
            || self
                .ghosts
                .iter()
                .any(|g| &g.namespace == namespace && &g.name == name)
        {
            bail!("pod {namespace}/{name} exists already");
        }
        self.ghosts.push(ghost);
        self.write_pods()
    }

    /// Writes a NetworkPolicy (or any YAML) as `50-<file>.yaml`.
    pub fn apply_policy(&self, file: &str, yaml: &str) -> Result<()> {
        self.write_file(&format!("50-{file}.yaml"), yaml)
    }

    /// Deletes what [`Cluster::apply_policy`] wrote.
    pub fn delete_policy(&self, file: &str) -> Result<()> {
        self.remove_file(&format!("50-{file}.yaml"))
    }

    /// Starts (or restarts) the agent of every node.
    pub fn start_agents(&mut self) -> Result<()> {
        for i in 0..self.nodes.len() {
            self.start_agent(i)?;
        }
        Ok(())
    }

    /// Starts the agent of node `i`, reusing its bpffs directory on a restart.
    pub fn start_agent(&mut self, i: usize) -> Result<()> {
        let bpffs = match self.agents[i].take() {
            Some(mut old) => {
                let _ = old.child.child_mut().kill();
                let _ = old.child.child_mut().wait();
                old.bpffs
            }
            None => BpffsDir::new()?,
        };
        let log = self.dir.join(format!(".agent-{i}.log"));
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let mut cmd = self.nodes[i].netns().command(&self.binary);
        cmd.args(["run", "--manifests"])
            .arg(&self.dir)
            .args(["--node-name", &Self::node_name(i), "--bpffs"])
            .arg(bpffs.path())
            .args([
                "--health-addr",
                AGENT_HEALTH,
                "--metrics-addr",
                AGENT_METRICS,
            ])
            .arg("--cni-socket")
            .arg(self.cni_socket(i))
            .args(attach_arg().map(|mode| format!("--attach={mode}")))
            .args(&self.agent_args)
            .env("PALISADE_LOG", "info,palisade_agent=debug")
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        let child = ChildGuard::spawn(&mut cmd)?;
        self.agents[i] = Some(Agent { child, bpffs, log });
        Ok(())
    }

    /// The CNI socket of node `i`'s agent (per node: agents share the filesystem).
    pub fn cni_socket(&self, i: usize) -> PathBuf {
        self.dir.join(format!(".cni-{i}.sock"))
    }

    /// Sets whether a pod's object shows its addresses, and rewrites the pods file.
    pub fn set_report_ips(&mut self, namespace: &str, name: &str, report: bool) -> Result<()> {
        let pod = self
            .pods
            .iter_mut()
            .find(|p| p.namespace == namespace && p.name == name)
            .with_context(|| format!("no pod {namespace}/{name}"))?;
        pod.report_ips = report;
        self.write_pods()
    }

    /// Kills node `i`'s agent with SIGKILL (its pins stay, as after a crash).
    pub fn kill_agent(&mut self, i: usize) -> Result<()> {
        let agent = self.agents[i].as_mut().context("agent not running")?;
        agent.child.child_mut().kill()?;
        agent.child.child_mut().wait()?;
        Ok(())
    }

    /// Stops node `i`'s agent as a rolling update does: SIGTERM, then SIGKILL
    /// if it has not exited within `grace` (its pins stay either way).
    pub fn stop_agent(&mut self, i: usize, grace: Duration) -> Result<()> {
        let agent = self.agents[i].as_mut().context("agent not running")?;
        let child = agent.child.child_mut();
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id())?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        let exited = Poll::new("the agent to exit after SIGTERM", grace)
            .until(|| child.try_wait(), |status| !matches!(status, Ok(None)));
        match exited {
            Ok(status) => status.map(drop).map_err(Into::into),
            Err(timed_out) => {
                child.kill()?;
                child.wait()?;
                bail!("{timed_out}; killed it")
            }
        }
    }

    /// The agent log of node `i` (for failure messages).
    pub fn agent_log(&self, i: usize) -> String {
        self.agents[i]
            .as_ref()
            .and_then(|a| std::fs::read_to_string(&a.log).ok())
            .unwrap_or_default()
    }

    /// The last `lines` lines of node `i`'s agent log.
    pub fn agent_log_tail(&self, i: usize, lines: usize) -> String {
        let log = self.agent_log(i);
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Whether node `i`'s agent process is running.
    pub fn agent_running(&mut self, i: usize) -> bool {
        self.agents[i]
            .as_mut()
            .is_some_and(|a| a.child.is_running())
    }

    /// GETs `path` from node `i`'s agent (inside the node namespace).
    pub fn agent_get(&self, i: usize, addr: &str, path: &str) -> Result<(u16, String)> {
        let addr: SocketAddr = addr.parse()?;
        let path = path.to_string();
        self.nodes[i].netns().run(move || -> Result<(u16, String)> {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            write!(s, "GET {path} HTTP/1.0\r\nHost: agent\r\n\r\n")?;
            let mut body = String::new();
            s.read_to_string(&mut body)?;
            let code = body.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
            let body = body
                .split_once("\r\n\r\n")
                .map(|(_, b)| b.to_string())
                .unwrap_or_default();
            Ok((code, body))
        })
    }

    /// The agent's `/status` as JSON.
    pub fn status(&self, i: usize) -> Result<serde_json::Value> {
        let (_, body) = self.agent_get(i, AGENT_HEALTH, "/status")?;
        Ok(serde_json::from_str(&body)?)
    }

    /// Waits until every agent answers ready and has applied a plan after
    /// `since` (so a manifest written before `since` is in the kernel).
    pub fn wait_applied(&self, since: SystemTime, timeout: Duration) -> Result<()> {
        let poll = Poll::new("the change applied", timeout).every(STATUS_EVERY);
        for i in 0..self.nodes.len() {
            self.poll_status(i, &poll, |s| {
                s["ready"].as_bool() == Some(true) && applied_after(s, since)
            })?;
        }
        Ok(())
    }

    /// Waits until the agent on node `i` enforces every endpoint it knows.
    pub fn wait_enforced(&self, i: usize, timeout: Duration) -> Result<()> {
        self.wait_status(i, timeout, "every endpoint enforced", |s| {
            s["endpoints"]
                .as_array()
                .is_some_and(|eps| !eps.is_empty() && eps.iter().all(|e| e["enforced"] == true))
        })
    }

    /// Polls the `/status` of the agent on node `i` until `check` holds;
    /// after `timeout`, fails with `what`, the last status and the agent's log.
    pub fn wait_status(
        &self,
        i: usize,
        timeout: Duration,
        what: &str,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<()> {
        self.poll_status(i, &Poll::new(what, timeout).every(STATUS_EVERY), check)
    }

    fn poll_status(
        &self,
        i: usize,
        poll: &Poll,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<()> {
        match poll.until(|| self.status(i), |s| s.as_ref().is_ok_and(&check)) {
            Ok(_) => Ok(()),
            Err(timed_out) => bail!(
                "agent on node {i}: {timed_out}; its log:\n{}",
                self.agent_log(i)
            ),
        }
    }

    /// Addresses of a pod (IPv4, IPv6).
    pub fn ips(&self, namespace: &str, name: &str) -> [IpAddr; 2] {
        self.pod(namespace, name).pod.ips()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Agents first (they hold pins), then the directory; nodes and bpffs
        // directories clean up through their own guards.
        for agent in self.agents.iter_mut() {
            drop(agent.take());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether an agent's `/status` says it applied a plan after `since`.
pub fn applied_after(status: &serde_json::Value, since: SystemTime) -> bool {
    serde_json::from_value::<SystemTime>(status["last_applied"].clone()).is_ok_and(|t| t > since)
}
