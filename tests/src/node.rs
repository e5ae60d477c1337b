//! Virtual nodes and pods, wired the way Calico wires them ([`Layout::Routed`])
//! or the way bridge CNIs (flannel, the `bridge` plugin) do
//! ([`Layout::Bridged`]).
//!
//! A [`Node`] is a network namespace acting as the node's root namespace.
//! Each [`Pod`] is its own namespace joined to the node by a veth pair. Routed:
//!
//! ```text
//!   pod netns                          node netns
//!   eth0  10.244.I.N/32               <tag><N>  (proxy_arp=1, fe80::1/64)
//!         fd00:244:I::N/128   <--veth-->   routes 10.244.I.N/32, fd00:244:I::N/128
//!   default via 169.254.1.1 onlink     lo: 10.244.I.1/32, fd00:244:I::1/128
//!   default via fe80::1                route 169.254.1.1/32 dev lo
//! ```
//!
//! The pod's IPv4 gateway 169.254.1.1 is no address of anyone: the host veth
//! answers ARP for it by proxy ARP. Proxy ARP only answers for addresses the
//! node routes out of another interface, hence the route for 169.254.1.1 via
//! `lo` (the kernel here has no dummy interfaces; nothing is ever sent to
//! the gateway address itself). For IPv6 the host veth owns `fe80::1`.
//!
//! Bridged: every host veth is a port of the bridge `br0`, which holds the
//! node's `10.244.I.1/24` and `fd00:244:I::1/64`; pods hold `/24` and `/64`
//! addresses, route through `.1` / `::1`, and reach each other on the bridge
//! at layer 2 (so nothing on the node ever checks their source address).
//!
//! [`link_nodes`] joins two nodes with a veth so their pods reach each other.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::netns::NetNs;

/// First host number handed to a pod (`.1` is the node itself).
const FIRST_POD: u16 = 2;
/// Last host number handed to a pod.
const LAST_POD: u16 = 254;

/// How long a new veth may take to come up.
const LINK_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The link-local IPv4 gateway every pod routes through.
pub const POD_GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The link-local IPv6 gateway every pod routes through.
pub const POD_GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

/// IPv4 address of host `host` on node `node`: `10.244.<node>.<host>`.
pub fn node_ipv4(node: u8, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, node, host)
}

/// IPv6 address of host `host` on node `node`: `fd00:244:<node>::<host>`.
pub fn node_ipv6(node: u8, host: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x244, u16::from(node), 0, 0, 0, 0, host)
}

/// Sysctls of a fresh node namespace.
const NODE_SYSCTLS: &[(&str, &str)] = &[
    ("net.ipv4.ip_forward", "1"),
    ("net.ipv6.conf.all.forwarding", "1"),
    ("net.ipv6.conf.default.forwarding", "1"),
    ("net.ipv6.conf.all.accept_dad", "0"),
    ("net.ipv6.conf.default.accept_dad", "0"),
    // IPv4 defaults are inherited from the root namespace: pin the ones the
    // topology relies on.
    ("net.ipv4.conf.all.rp_filter", "0"),
    ("net.ipv4.conf.default.rp_filter", "0"),
    ("net.ipv4.conf.all.arp_ignore", "0"),
    ("net.ipv4.conf.default.arp_ignore", "0"),
];

/// Sysctls of a fresh pod namespace (before its `eth0` exists, so the
/// interface inherits them).
const POD_SYSCTLS: &[(&str, &str)] = &[
    ("net.ipv6.conf.all.accept_dad", "0"),
    ("net.ipv6.conf.default.accept_dad", "0"),
];

/// How a node wires its pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// A /32 and /128 route per pod on its veth, proxy ARP (Calico).
    Routed,
    /// Every pod veth a port of one bridge, pods on a shared subnet.
    Bridged,
}

/// Name of the bridge of a [`Layout::Bridged`] node.
pub const BRIDGE: &str = "br0";

/// A pod: its own namespace, joined to its node by a veth pair.
///
/// Cheap to clone (shared handle). Its namespace is deleted when the node is
/// dropped, or when the last handle goes if that comes first.
#[derive(Debug, Clone)]
pub struct Pod {
    inner: Arc<PodInner>,
}

#[derive(Debug)]
struct PodInner {
    name: String,
    netns: NetNs,
    ipv4: Ipv4Addr,
    ipv6: Ipv6Addr,
    host_veth: String,
    host_ifindex: u32,
    node_name: String,
    node_index: u8,
}

impl Pod {
    /// The pod's name as given to [`Node::add_pod`].
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The pod's network namespace.
    pub fn netns(&self) -> &NetNs {
        &self.inner.netns
    }

    /// The pod's IPv4 address (on `eth0`, /32).
    pub fn ipv4(&self) -> Ipv4Addr {
        self.inner.ipv4
    }

    /// The pod's IPv6 address (on `eth0`, /128).
    pub fn ipv6(&self) -> Ipv6Addr {
        self.inner.ipv6
    }

    /// The pod's address of the same family as `like`.
    pub fn ip_like(&self, like: IpAddr) -> IpAddr {
        match like {
            IpAddr::V4(_) => self.ipv4().into(),
            IpAddr::V6(_) => self.ipv6().into(),
        }
    }

    /// The MAC address of the pod's `eth0`, as `ip` prints it.
    pub fn mac(&self) -> Result<String> {
        let out = self.netns().ip(["link", "show", "eth0"])?;
        out.split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .map(str::to_string)
            .with_context(|| format!("no MAC on eth0 of {}", self.name()))
    }

    /// Both pod addresses, IPv4 first.
    pub fn ips(&self) -> [IpAddr; 2] {
        [self.ipv4().into(), self.ipv6().into()]
    }

    /// Name of the host-side veth, in the node namespace.
    pub fn host_veth(&self) -> &str {
        &self.inner.host_veth
    }

    /// Interface index of the host-side veth in the node namespace.
    pub fn host_ifindex(&self) -> u32 {
        self.inner.host_ifindex
    }

    /// Name of the node (its namespace name) the pod runs on.
    pub fn node_name(&self) -> &str {
        &self.inner.node_name
    }

    /// Index of the node the pod runs on.
    pub fn node_index(&self) -> u8 {
        self.inner.node_index
    }
}

/// A virtual node: a namespace with forwarding on, holding its pods' host
/// veths and routes. Dropping it deletes its pods' namespaces and its own
/// (which removes all veths).
#[derive(Debug)]
pub struct Node {
    index: u8,
    layout: Layout,
    netns: NetNs,
    pods: Mutex<Vec<Pod>>,
}

impl Node {
    /// Creates node `index`: pods get `10.244.<index>.N` and
    /// `fd00:244:<index>::N`; the node itself holds `.1` / `::1` on `lo`.
    /// Give nodes that will be linked different indexes.
    pub fn new(index: u8) -> Result<Self> {
        Self::with_layout(index, Layout::Routed)
    }

    /// Creates node `index` wired as `layout`.
    pub fn with_layout(index: u8, layout: Layout) -> Result<Self> {
        let netns = NetNs::new(&format!("node{index}"))?;
        netns.sysctls(NODE_SYSCTLS)?;
        let (v4, v6) = (node_ipv4(index, 1), node_ipv6(index, 1));
        match layout {
            Layout::Routed => {
                netns.ip_batch(&[
                    "link set lo up".to_owned(),
                    format!("addr add {v4}/32 dev lo"),
                    format!("addr add {v6}/128 dev lo"),
                    format!("route add {POD_GATEWAY_V4}/32 dev lo"),
                ])?;
                // Pod routes use the lo addresses as sources: they must be usable.
                netns.wait_link_ready("lo", LINK_READY_TIMEOUT)?;
            }
            Layout::Bridged => {
                netns.ip_batch(&[
                    "link set lo up".to_owned(),
                    // A fixed address, as bridge CNIs set: a bridge that
                    // takes its ports' lowest MAC changes it when a port
                    // joins, and the kernel then flushes its neighbours.
                    format!("link add {BRIDGE} address 02:b7:00:00:00:{index:02x} type bridge"),
                    format!("link set {BRIDGE} up"),
                    format!("addr add {v4}/24 dev {BRIDGE}"),
                    format!("addr add {v6}/64 dev {BRIDGE} nodad"),
                ])?;
                netns.sysctls(&[(&format!("net.ipv6.conf.{BRIDGE}.accept_dad"), "0")])?;
                // No port yet, so no carrier: its ports are waited for instead.
            }
        }
        Ok(Self {
            index,
            layout,
            netns,
            pods: Mutex::new(Vec::new()),
        })
    }

    /// How the node wires its pods.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The node index given to [`Node::new`].
    pub fn index(&self) -> u8 {
        self.index
    }

    /// The node's name (its namespace name).
    pub fn name(&self) -> &str {
        self.netns.name()
    }

    /// The node's network namespace (where host veths live and where an
    /// agent under test would attach its programs).
    pub fn netns(&self) -> &NetNs {
        &self.netns
    }

    /// The node's own IPv4 address `10.244.<index>.1` (on `lo`), the source
    /// of node-originated traffic.
    pub fn ipv4(&self) -> Ipv4Addr {
        node_ipv4(self.index, 1)
    }

    /// The node's own IPv6 address `fd00:244:<index>::1` (on `lo`).
    pub fn ipv6(&self) -> Ipv6Addr {
        node_ipv6(self.index, 1)
    }

    /// The node's address of the same family as `like`.
    pub fn ip_like(&self, like: IpAddr) -> IpAddr {
        match like {
            IpAddr::V4(_) => self.ipv4().into(),
            IpAddr::V6(_) => self.ipv6().into(),
        }
    }

    /// The pods added so far, in order.
    pub fn pods(&self) -> Vec<Pod> {
        self.lock_pods().clone()
    }

    /// The pod called `name`, if any.
    pub fn pod(&self, name: &str) -> Option<Pod> {
        self.lock_pods().iter().find(|p| p.name() == name).cloned()
    }

    fn lock_pods(&self) -> std::sync::MutexGuard<'_, Vec<Pod>> {
        self.pods
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a pod called `name` (unique on this node; `[A-Za-z0-9_-]`, at
    /// most 40 characters). Its addresses are the next free host number on
    /// this node; its host veth is `<node tag><host number>`.
    pub fn add_pod(&self, name: &str) -> Result<Pod> {
        self.add_pod_with(name, false)
    }

    /// [`Node::add_pod`], with duplicate address detection on for the pod's
    /// IPv6 addresses when `dad` is set (as on a real node: the address is
    /// tentative until DAD completes).
    pub fn add_pod_with(&self, name: &str, dad: bool) -> Result<Pod> {
        let mut pods = self.lock_pods();
        if pods.iter().any(|p| p.name() == name) {
            bail!("node {} already has a pod called {name:?}", self.name());
        }
        let host = FIRST_POD + pods.len() as u16;
        if host > LAST_POD {
            bail!("node {} is full", self.name());
        }
        let host_v4 = u8::try_from(host).expect("invariant: host number <= 254");
        let ipv4 = node_ipv4(self.index, host_v4);
        let ipv6 = node_ipv6(self.index, host);
        let host_veth = format!("{}{host}", self.netns.tag());
        debug_assert!(host_veth.len() <= 15, "interface name {host_veth} too long");

        let netns = NetNs::new(name)?;
        if dad {
            netns.sysctls(&[
                ("net.ipv6.conf.all.accept_dad", "1"),
                ("net.ipv6.conf.default.accept_dad", "1"),
            ])?;
        } else {
            netns.sysctls(POD_SYSCTLS)?;
        }
        let nodad = if dad { "" } else { " nodad" };

        // Node side: the veth pair (peer straight into the pod namespace),
        // then gateway duties and per-pod routes, or a bridge port.
        self.netns
            .ip_batch(&[format!(
                "link add {host_veth} type veth peer name eth0 netns {}",
                netns.name()
            )])
            .with_context(|| format!("creating the veth of pod {name}"))?;
        self.netns
            .sysctls(&[(&format!("net.ipv6.conf.{host_veth}.accept_dad"), "0")])?;
        let node_v4 = self.ipv4();
        let node_v6 = self.ipv6();
        let pod_side = match self.layout {
            Layout::Routed => {
                self.netns.sysctls(&[
                    (&format!("net.ipv4.conf.{host_veth}.proxy_arp"), "1"),
                    // Answer ARP at once instead of after a random proxy delay.
                    (&format!("net.ipv4.neigh.{host_veth}.proxy_delay"), "0"),
                ])?;
                self.netns
                    .ip_batch(&[
                        format!("link set {host_veth} up"),
                        format!("addr add {POD_GATEWAY_V6}/64 dev {host_veth} nodad"),
                        format!("route add {ipv4}/32 dev {host_veth} src {node_v4}"),
                        format!("route add {ipv6}/128 dev {host_veth} src {node_v6}"),
                    ])
                    .with_context(|| format!("routing to pod {name}"))?;
                vec![
                    "link set lo up".to_owned(),
                    format!("addr add {ipv4}/32 dev eth0"),
                    format!("addr add {ipv6}/128 dev eth0{nodad}"),
                    "link set eth0 up".to_owned(),
                    format!("route add default via {POD_GATEWAY_V4} dev eth0 onlink"),
                    format!("route add ::/0 via {POD_GATEWAY_V6} dev eth0"),
                ]
            }
            Layout::Bridged => {
                self.netns
                    .ip_batch(&[format!("link set {host_veth} master {BRIDGE} up")])
                    .with_context(|| format!("bridging pod {name}"))?;
                vec![
                    "link set lo up".to_owned(),
                    format!("addr add {ipv4}/24 dev eth0"),
                    format!("addr add {ipv6}/64 dev eth0{nodad}"),
                    "link set eth0 up".to_owned(),
                    format!("route add default via {node_v4} dev eth0"),
                    format!("route add ::/0 via {node_v6} dev eth0"),
                ]
            }
        };
        netns
            .ip_batch(&pod_side)
            .with_context(|| format!("configuring pod {name}"))?;

        self.netns.wait_link_ready(&host_veth, LINK_READY_TIMEOUT)?;
        netns.wait_link_ready("eth0", LINK_READY_TIMEOUT)?;

        let host_ifindex = self
            .netns
            .try_run(|| nix::net::if_::if_nametoindex(host_veth.as_str()))?
            .with_context(|| format!("ifindex of {host_veth} in {}", self.name()))?;

        let pod = Pod {
            inner: Arc::new(PodInner {
                name: name.to_owned(),
                netns,
                ipv4,
                ipv6,
                host_veth,
                host_ifindex,
                node_name: self.name().to_owned(),
                node_index: self.index,
            }),
        };
        if self.layout == Layout::Bridged {
            // A bridge CNI's node learns where a pod is from its traffic (the
            // agent finds the pod's port by its neighbour entry and the FDB).
            // Made permanent here, so that the kernel's neighbour collection
            // under the load of parallel tests cannot take them away before
            // an agent first resolves the pod.
            let mac = pod.mac()?;
            self.netns
                .ip_batch(&[
                    format!("neigh replace {ipv4} lladdr {mac} dev {BRIDGE} nud permanent"),
                    format!("neigh replace {ipv6} lladdr {mac} dev {BRIDGE} nud permanent"),
                ])
                .with_context(|| format!("neighbour entries of pod {name}"))?;
            let fdb = self
                .netns
                .command("bridge")
                .args([
                    "fdb",
                    "replace",
                    &mac,
                    "dev",
                    &pod.inner.host_veth,
                    "master",
                    "static",
                ])
                .output()
                .context("running bridge fdb")?;
            if !fdb.status.success() {
                bail!(
                    "bridge fdb for pod {name}: {}",
                    String::from_utf8_lossy(&fdb.stderr)
                );
            }
            for gateway in [IpAddr::from(node_v4), IpAddr::from(node_v6)] {
                let outcome =
                    crate::probes::probe_icmp(pod.netns(), None, gateway, Duration::from_secs(5));
                if !outcome.is_reachable() {
                    bail!("pod {name} cannot reach its gateway {gateway} on the bridge: {outcome}");
                }
            }
        }
        pods.push(pod.clone());
        Ok(pod)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        for pod in self.lock_pods().iter() {
            if let Err(e) = pod.netns().delete() {
                eprintln!("palisade-tests: deleting pod {}: {e:#}", pod.name());
            }
        }
        // The node's own namespace goes with `self.netns`'s drop.
    }
}

/// Name of the interface on node `from` that leads to node `to`.
pub fn node_link_name(to: u8) -> String {
    format!("to-node{to}")
}

/// Link-local address of node `index` on its inter-node links.
fn node_link_local(index: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0xff, u16::from(index))
}

/// Joins two nodes with a veth pair (`to-node<b>` in `a`, `to-node<a>` in
/// `b`) and routes each node's pod ranges (`10.244.<i>.0/24`,
/// `fd00:244:<i>::/64`) over it, so pods (and nodes) reach each other.
/// Each side's IPv4 next hop is the peer node's `lo` address (onlink); the
/// IPv6 next hop is the peer's `fe80::ff:<index>` on the link. Lives as long
/// as both nodes.
pub fn link_nodes(a: &Node, b: &Node) -> Result<()> {
    if a.index == b.index {
        bail!("cannot link two nodes with the same index {}", a.index);
    }
    let (a_if, b_if) = (node_link_name(b.index), node_link_name(a.index));
    a.netns.ip_batch(&[format!(
        "link add {a_if} type veth peer name {b_if} netns {}",
        b.netns.name()
    )])?;
    for (node, ifname, peer) in [(a, &a_if, b), (b, &b_if, a)] {
        node.netns
            .sysctls(&[(&format!("net.ipv6.conf.{ifname}.accept_dad"), "0")])?;
        node.netns.ip_batch(&[
            format!("link set {ifname} up"),
            format!(
                "addr add {}/64 dev {ifname} nodad",
                node_link_local(node.index)
            ),
            format!(
                "route add {}/24 via {} dev {ifname} onlink src {}",
                node_ipv4(peer.index, 0),
                peer.ipv4(),
                node.ipv4()
            ),
            format!(
                "route add {}/64 via {} dev {ifname} src {}",
                node_ipv6(peer.index, 0),
                node_link_local(peer.index),
                node.ipv6()
            ),
        ])?;
    }
    a.netns.wait_link_ready(&a_if, LINK_READY_TIMEOUT)?;
    b.netns.wait_link_ready(&b_if, LINK_READY_TIMEOUT)?;
    Ok(())
}
