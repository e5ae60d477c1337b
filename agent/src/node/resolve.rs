//! Pure resolution of a pod IP to the host-side interface it sits behind.
//!
//! Works on a [`Snapshot`] of the node's links, routes, neighbours and bridge
//! FDB (taken by [`super::netlink`]), so every rule here is testable without a
//! kernel. The rules, in order:
//!
//! 1. Route lookup in the main table: the most specific route covering the
//!    address (an exact /32 or /128 wins), lowest metric among equals. Routes
//!    via a gateway lead off-node, and reject-type routes (blackhole,
//!    unreachable, ...) lead nowhere; neither names a pod interface.
//! 2. Routed CNIs (Calico-style): the route's output device is a veth → that
//!    veth is the pod's interface.
//! 3. Bridge CNIs (`bridge` plugin, flannel): the output device is a bridge →
//!    the neighbour entry for the address on that bridge gives the pod's MAC,
//!    the bridge FDB entry for that MAC gives the bridge port, which must be a
//!    veth.
//!
//! Anything else is [`Unresolved`] with a human-readable reason; the agent
//! retries when the node's network configuration changes.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

/// The main routing table (`RT_TABLE_MAIN`).
pub const MAIN_TABLE: u32 = 254;

/// An Ethernet (EUI-48) hardware address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The address if `bytes` is exactly six bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 6]>::try_from(bytes).ok().map(Self)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// What kind of device a link is, as far as resolution cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkKind {
    /// One end of a veth pair: the host side of a pod.
    Veth,
    /// A Linux bridge.
    Bridge,
    /// Anything else; carries the kernel's kind string (`IFLA_INFO_KIND`),
    /// empty for devices without one (physical NICs, loopback).
    Other(String),
}

impl fmt::Display for LinkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Veth => f.write_str("veth"),
            Self::Bridge => f.write_str("bridge"),
            Self::Other(kind) if kind.is_empty() => f.write_str("device"),
            Self::Other(kind) => f.write_str(kind),
        }
    }
}

/// One network device of the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface name.
    pub name: String,
    /// Device kind.
    pub kind: LinkKind,
    /// Ifindex of the master device (the bridge of a bridge port).
    pub master: Option<u32>,
    /// Hardware address, when the device has an Ethernet one.
    pub mac: Option<MacAddr>,
}

/// The type of a route, reduced to what matters for pod lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// A forwarding route (direct or via a gateway).
    Unicast,
    /// A route that drops: blackhole, unreachable, prohibit, throw.
    Reject,
    /// Local, broadcast, multicast, anycast, NAT, ... routes.
    Other,
}

/// One route of the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination prefix address.
    pub dst: IpAddr,
    /// Destination prefix length (0 for a default route).
    pub prefix_len: u8,
    /// Output device, if the route has exactly one.
    pub oif: Option<u32>,
    /// Gateway (next hop) address, if any.
    pub gateway: Option<IpAddr>,
    /// Routing table id.
    pub table: u32,
    /// Route type.
    pub kind: RouteKind,
    /// Metric (`RTA_PRIORITY`); lower wins among equally specific routes.
    pub priority: u32,
}

impl Route {
    /// Whether this route's prefix covers `ip` (same family only).
    pub fn covers(&self, ip: IpAddr) -> bool {
        match (self.dst, ip) {
            (IpAddr::V4(dst), IpAddr::V4(ip)) => {
                prefix_match(&dst.octets(), &ip.octets(), self.prefix_len)
            }
            (IpAddr::V6(dst), IpAddr::V6(ip)) => {
                prefix_match(&dst.octets(), &ip.octets(), self.prefix_len)
            }
            _ => false,
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.dst, self.prefix_len)
    }
}

/// Whether the first `len` bits of `a` and `b` are equal. A `len` longer than
/// the address never matches.
fn prefix_match(a: &[u8], b: &[u8], len: u8) -> bool {
    let len = usize::from(len);
    if len > a.len() * 8 {
        return false;
    }
    let (bytes, bits) = (len / 8, len % 8);
    if a[..bytes] != b[..bytes] {
        return false;
    }
    if bits == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - bits);
    a[bytes] & mask == b[bytes] & mask
}

/// Neighbour (ARP/NDP) cache state, mirroring `NUD_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeighbourState {
    /// Resolution in progress, no address yet.
    Incomplete,
    /// Confirmed recently.
    Reachable,
    /// Valid but unconfirmed.
    Stale,
    /// Waiting before probing.
    Delay,
    /// Being probed.
    Probe,
    /// Resolution failed.
    Failed,
    /// No resolution needed.
    Noarp,
    /// Static entry.
    Permanent,
    /// No state.
    None,
    /// A state this code does not know.
    Other(u16),
}

impl NeighbourState {
    /// Whether an entry in this state carries a usable hardware address.
    pub fn is_valid(self) -> bool {
        matches!(
            self,
            Self::Reachable
                | Self::Stale
                | Self::Delay
                | Self::Probe
                | Self::Noarp
                | Self::Permanent
        )
    }
}

/// One neighbour (ARP/NDP) entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    /// The neighbour's IP address.
    pub ip: IpAddr,
    /// The device the entry is on.
    pub ifindex: u32,
    /// Its hardware address, once resolved.
    pub mac: Option<MacAddr>,
    /// Cache state.
    pub state: NeighbourState,
}

/// One bridge forwarding-database entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdbEntry {
    /// The MAC address the bridge forwards.
    pub mac: MacAddr,
    /// The device (bridge port, or the bridge itself) it is forwarded to.
    pub port: u32,
    /// The bridge owning the entry (`NDA_MASTER`); `None` for entries a
    /// device holds on its own (`self` entries).
    pub bridge: Option<u32>,
}

/// Everything resolution needs, taken at one point in time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Links by ifindex.
    pub links: BTreeMap<u32, Link>,
    /// Routes (IPv4 and IPv6).
    pub routes: Vec<Route>,
    /// Neighbour entries (IPv4 and IPv6).
    pub neighbours: Vec<Neighbour>,
    /// Bridge FDB entries.
    pub fdb: Vec<FdbEntry>,
}

/// A resolved pod interface: the host-side device a pod sits behind.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Interface {
    /// Interface index in the node's namespace.
    pub ifindex: u32,
    /// Interface name.
    pub name: String,
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (ifindex {})", self.name, self.ifindex)
    }
}

/// Why an address could not be mapped to a pod interface (yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    /// Human-readable explanation.
    pub reason: String,
}

impl Unresolved {
    fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Unresolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unresolved: {}", self.reason)
    }
}

impl std::error::Error for Unresolved {}

/// Formats a link for reasons: its name, or its ifindex when it is unknown.
fn link_name(snapshot: &Snapshot, ifindex: u32) -> String {
    snapshot
        .links
        .get(&ifindex)
        .map_or_else(|| format!("ifindex {ifindex}"), |l| l.name.clone())
}

/// The route the kernel would pick for `ip` in the main table: longest prefix
/// first, then lowest metric, then first listed.
pub fn lookup_route(ip: IpAddr, snapshot: &Snapshot) -> Option<&Route> {
    snapshot
        .routes
        .iter()
        .filter(|r| r.table == MAIN_TABLE && r.covers(ip))
        // Later candidates replace the best only when strictly better, so the
        // first of equally good routes wins.
        .fold(None, |best: Option<&Route>, r| match best {
            Some(b)
                if (b.prefix_len, std::cmp::Reverse(b.priority))
                    >= (r.prefix_len, std::cmp::Reverse(r.priority)) =>
            {
                Some(b)
            }
            _ => Some(r),
        })
}

/// Maps one pod address to the host-side interface it sits behind.
pub fn resolve(ip: IpAddr, snapshot: &Snapshot) -> Result<Interface, Unresolved> {
    let route = lookup_route(ip, snapshot)
        .ok_or_else(|| Unresolved::new(format!("no route in the main table covers {ip}")))?;
    match route.kind {
        RouteKind::Unicast => {}
        RouteKind::Reject => {
            return Err(Unresolved::new(format!(
                "route {route} for {ip} is a reject route (blackhole/unreachable/prohibit)"
            )));
        }
        RouteKind::Other => {
            return Err(Unresolved::new(format!(
                "route {route} for {ip} is not a unicast route"
            )));
        }
    }
    if let Some(gateway) = route.gateway {
        return Err(Unresolved::new(format!(
            "route {route} for {ip} goes via gateway {gateway}: the address is not on this node"
        )));
    }
    let oif = route.oif.ok_or_else(|| {
        Unresolved::new(format!(
            "route {route} for {ip} has no single output device (multipath or nexthop object)"
        ))
    })?;
    let link = snapshot.links.get(&oif).ok_or_else(|| {
        Unresolved::new(format!(
            "route {route} for {ip} points at ifindex {oif}, which is not in the link table"
        ))
    })?;
    match link.kind {
        LinkKind::Veth => Ok(Interface {
            ifindex: oif,
            name: link.name.clone(),
        }),
        LinkKind::Bridge => resolve_on_bridge(ip, oif, link, snapshot),
        LinkKind::Other(_) => Err(Unresolved::new(format!(
            "route {route} for {ip} points at {} ({}), which is neither a veth nor a bridge",
            link.name, link.kind
        ))),
    }
}

/// Bridge layout: neighbour entry on the bridge → MAC → FDB entry → port.
fn resolve_on_bridge(
    ip: IpAddr,
    bridge: u32,
    bridge_link: &Link,
    snapshot: &Snapshot,
) -> Result<Interface, Unresolved> {
    let br = &bridge_link.name;
    let entries: Vec<&Neighbour> = snapshot
        .neighbours
        .iter()
        .filter(|n| n.ip == ip && n.ifindex == bridge)
        .collect();
    let Some(first) = entries.first() else {
        return Err(Unresolved::new(format!(
            "no neighbour entry for {ip} on bridge {br}"
        )));
    };
    let mac = entries
        .iter()
        .find(|n| n.state.is_valid())
        .and_then(|n| n.mac)
        .ok_or_else(|| {
            Unresolved::new(format!(
                "neighbour entry for {ip} on bridge {br} has no valid MAC (state {:?})",
                first.state
            ))
        })?;

    let mut ports: Vec<u32> = snapshot
        .fdb
        .iter()
        .filter(|e| e.mac == mac && e.bridge == Some(bridge) && e.port != bridge)
        .map(|e| e.port)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    let port = match ports.as_slice() {
        [] => {
            return Err(Unresolved::new(format!(
                "no FDB entry for {mac} ({ip}) on bridge {br}"
            )));
        }
        [port] => *port,
        many => {
            let names: Vec<String> = many.iter().map(|p| link_name(snapshot, *p)).collect();
            return Err(Unresolved::new(format!(
                "{mac} ({ip}) is on several ports of bridge {br}: {}",
                names.join(", ")
            )));
        }
    };
    let link = snapshot.links.get(&port).ok_or_else(|| {
        Unresolved::new(format!(
            "FDB of bridge {br} puts {mac} ({ip}) on ifindex {port}, which is not in the link table"
        ))
    })?;
    if link.kind != LinkKind::Veth {
        return Err(Unresolved::new(format!(
            "FDB of bridge {br} puts {mac} ({ip}) on {} ({}), which is not a veth",
            link.name, link.kind
        )));
    }
    Ok(Interface {
        ifindex: port,
        name: link.name.clone(),
    })
}

/// Maps a pod (all its addresses) to one interface. The pod resolves when at
/// least one address resolves and all resolving addresses agree; addresses
/// that do not resolve are tolerated (e.g. the IPv6 route is not there yet).
pub fn resolve_pod(ips: &[IpAddr], snapshot: &Snapshot) -> Result<Interface, Unresolved> {
    if ips.is_empty() {
        return Err(Unresolved::new("the pod has no IP addresses"));
    }
    let mut found: Vec<(IpAddr, Interface)> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    for &ip in ips {
        match resolve(ip, snapshot) {
            Ok(iface) => found.push((ip, iface)),
            Err(unresolved) => failures.push(unresolved.reason),
        }
    }
    let Some((_, first)) = found.first() else {
        return Err(Unresolved::new(failures.join("; ")));
    };
    if found.iter().all(|(_, iface)| iface == first) {
        return Ok(first.clone());
    }
    let named: Vec<String> = found
        .iter()
        .map(|(ip, iface)| format!("{ip} → {iface}"))
        .collect();
    Err(Unresolved::new(format!(
        "the pod's addresses resolve to different interfaces: {}",
        named.join(", ")
    )))
}

/// Resolves every pod with [`resolve_pod`]. A key listed twice keeps the
/// result of its last entry.
pub fn resolve_pods<K: Ord + Clone>(
    pods: &[(K, Vec<IpAddr>)],
    snapshot: &Snapshot,
) -> BTreeMap<K, Result<Interface, Unresolved>> {
    pods.iter()
        .map(|(key, ips)| (key.clone(), resolve_pod(ips, snapshot)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test IP")
    }

    fn mac(last: u8) -> MacAddr {
        MacAddr([0x02, 0, 0, 0, 0, last])
    }

    fn link(name: &str, kind: LinkKind, master: Option<u32>) -> Link {
        Link {
            name: name.to_owned(),
            kind,
            master,
            mac: None,
        }
    }

    fn route(dst: &str, len: u8, oif: u32) -> Route {
        Route {
            dst: ip(dst),
            prefix_len: len,
            oif: Some(oif),
            gateway: None,
            table: MAIN_TABLE,
            kind: RouteKind::Unicast,
            priority: 0,
        }
    }

    /// eth0 (2) with a default route; veths calia (10), calib (11); bridge
    /// cni0 (20) with veth ports vetha (21), vethb (22).
    fn node() -> Snapshot {
        let mut s = Snapshot::default();
        s.links
            .insert(2, link("eth0", LinkKind::Other(String::new()), None));
        s.links.insert(10, link("calia", LinkKind::Veth, None));
        s.links.insert(11, link("calib", LinkKind::Veth, None));
        s.links.insert(20, link("cni0", LinkKind::Bridge, None));
        s.links.insert(21, link("vetha", LinkKind::Veth, Some(20)));
        s.links.insert(22, link("vethb", LinkKind::Veth, Some(20)));
        s.routes = vec![
            Route {
                gateway: Some(ip("192.168.0.1")),
                ..route("0.0.0.0", 0, 2)
            },
            route("192.168.0.0", 24, 2),
            route("10.1.0.5", 32, 10),
            route("fd00::5", 128, 10),
            route("10.2.0.0", 24, 20),
        ];
        s
    }

    fn with_bridge_pod(mut s: Snapshot) -> Snapshot {
        s.neighbours.push(Neighbour {
            ip: ip("10.2.0.7"),
            ifindex: 20,
            mac: Some(mac(7)),
            state: NeighbourState::Reachable,
        });
        s.fdb.push(FdbEntry {
            mac: mac(7),
            port: 21,
            bridge: Some(20),
        });
        s
    }

    fn iface(ifindex: u32, name: &str) -> Interface {
        Interface {
            ifindex,
            name: name.to_owned(),
        }
    }

    #[test]
    fn exact_v4_route_to_veth() {
        assert_eq!(resolve(ip("10.1.0.5"), &node()), Ok(iface(10, "calia")));
    }

    #[test]
    fn exact_v6_route_to_veth() {
        assert_eq!(resolve(ip("fd00::5"), &node()), Ok(iface(10, "calia")));
    }

    #[test]
    fn longest_prefix_wins() {
        let mut s = node();
        // A covering /16 to the other veth and a /24 to calia: the /24 wins
        // for addresses in it, the /16 for the rest.
        s.routes.push(route("10.3.0.0", 16, 11));
        s.routes.push(route("10.3.1.0", 24, 10));
        assert_eq!(resolve(ip("10.3.1.9"), &s), Ok(iface(10, "calia")));
        assert_eq!(resolve(ip("10.3.2.9"), &s), Ok(iface(11, "calib")));
        // The exact /32 beats the bridge /24.
        s.routes.push(route("10.2.0.9", 32, 11));
        assert_eq!(resolve(ip("10.2.0.9"), &s), Ok(iface(11, "calib")));
    }

    #[test]
    fn lower_metric_wins_among_equal_prefixes() {
        let mut s = node();
        s.routes.push(Route {
            priority: 100,
            ..route("10.4.0.1", 32, 10)
        });
        s.routes.push(Route {
            priority: 10,
            ..route("10.4.0.1", 32, 11)
        });
        assert_eq!(resolve(ip("10.4.0.1"), &s), Ok(iface(11, "calib")));
    }

    #[test]
    fn other_tables_are_ignored() {
        let mut s = node();
        s.routes.push(Route {
            table: 255,
            ..route("10.5.0.1", 32, 10)
        });
        // Only the default route (via a gateway) covers it in main.
        let err = resolve(ip("10.5.0.1"), &s).expect_err("not local");
        assert!(err.reason.contains("gateway 192.168.0.1"), "{err}");
    }

    #[test]
    fn gateway_route_is_not_local() {
        let mut s = node();
        s.routes.push(Route {
            gateway: Some(ip("192.168.0.9")),
            ..route("10.9.0.0", 24, 2)
        });
        let err = resolve(ip("10.9.0.3"), &s).expect_err("off-node");
        assert!(err.reason.contains("via gateway 192.168.0.9"), "{err}");
        assert!(err.reason.contains("not on this node"), "{err}");
    }

    #[test]
    fn reject_route_is_not_local() {
        let mut s = node();
        s.routes.push(Route {
            kind: RouteKind::Reject,
            oif: None,
            ..route("10.1.0.0", 26, 0)
        });
        // The /32 still wins for the pod it was made for...
        assert_eq!(resolve(ip("10.1.0.5"), &s), Ok(iface(10, "calia")));
        // ...the blackholed rest of the block is unresolved.
        let err = resolve(ip("10.1.0.6"), &s).expect_err("blackhole");
        assert!(err.reason.contains("reject route"), "{err}");
    }

    #[test]
    fn route_to_a_physical_device_is_not_a_pod() {
        let err = resolve(ip("192.168.0.44"), &node()).expect_err("node subnet");
        assert!(err.reason.contains("eth0"), "{err}");
        assert!(err.reason.contains("neither a veth nor a bridge"), "{err}");
    }

    #[test]
    fn no_route_at_all() {
        let err = resolve(ip("fd99::1"), &node()).expect_err("no v6 default");
        assert!(err.reason.contains("no route"), "{err}");
    }

    #[test]
    fn bridge_neighbour_fdb_port() {
        let s = with_bridge_pod(node());
        assert_eq!(resolve(ip("10.2.0.7"), &s), Ok(iface(21, "vetha")));
    }

    #[test]
    fn bridge_ignores_entries_of_other_bridges_and_the_bridge_itself() {
        let mut s = with_bridge_pod(node());
        s.fdb.insert(
            0,
            FdbEntry {
                mac: mac(7),
                port: 20,
                bridge: Some(20),
            },
        );
        s.fdb.insert(
            0,
            FdbEntry {
                mac: mac(7),
                port: 22,
                bridge: Some(99),
            },
        );
        s.fdb.insert(
            0,
            FdbEntry {
                mac: mac(7),
                port: 22,
                bridge: None,
            },
        );
        assert_eq!(resolve(ip("10.2.0.7"), &s), Ok(iface(21, "vetha")));
    }

    #[test]
    fn bridge_without_neighbour_is_unresolved() {
        let err = resolve(ip("10.2.0.8"), &with_bridge_pod(node())).expect_err("no neigh");
        assert_eq!(err.reason, "no neighbour entry for 10.2.0.8 on bridge cni0");
    }

    #[test]
    fn bridge_with_failed_neighbour_is_unresolved() {
        let mut s = with_bridge_pod(node());
        s.neighbours[0].state = NeighbourState::Failed;
        let err = resolve(ip("10.2.0.7"), &s).expect_err("failed neigh");
        assert!(err.reason.contains("no valid MAC"), "{err}");
        assert!(err.reason.contains("cni0"), "{err}");
    }

    #[test]
    fn bridge_without_fdb_entry_is_unresolved() {
        let mut s = with_bridge_pod(node());
        s.fdb.clear();
        let err = resolve(ip("10.2.0.7"), &s).expect_err("no fdb");
        assert_eq!(
            err.reason,
            "no FDB entry for 02:00:00:00:00:07 (10.2.0.7) on bridge cni0"
        );
    }

    #[test]
    fn bridge_port_that_is_not_a_veth_is_unresolved() {
        let mut s = with_bridge_pod(node());
        s.links.insert(
            23,
            link("vxlan0", LinkKind::Other("vxlan".into()), Some(20)),
        );
        s.fdb[0].port = 23;
        let err = resolve(ip("10.2.0.7"), &s).expect_err("vxlan port");
        assert!(err.reason.contains("vxlan0 (vxlan)"), "{err}");
    }

    #[test]
    fn route_to_missing_link_is_unresolved() {
        let mut s = node();
        s.routes.push(route("10.1.0.77", 32, 404));
        let err = resolve(ip("10.1.0.77"), &s).expect_err("vanished veth");
        assert!(err.reason.contains("ifindex 404"), "{err}");
        assert!(err.reason.contains("not in the link table"), "{err}");
    }

    #[test]
    fn dual_stack_pod_agrees() {
        let s = node();
        let ips = [ip("10.1.0.5"), ip("fd00::5")];
        assert_eq!(resolve_pod(&ips, &s), Ok(iface(10, "calia")));
    }

    #[test]
    fn dual_stack_pod_resolves_on_one_address() {
        let s = node();
        let ips = [ip("fd99::5"), ip("10.1.0.5")];
        assert_eq!(resolve_pod(&ips, &s), Ok(iface(10, "calia")));
    }

    #[test]
    fn dual_stack_pod_disagreeing_names_both() {
        let mut s = node();
        s.routes.push(route("fd00::6", 128, 11));
        let ips = [ip("10.1.0.5"), ip("fd00::6")];
        let err = resolve_pod(&ips, &s).expect_err("disagree");
        assert!(err.reason.contains("calia (ifindex 10)"), "{err}");
        assert!(err.reason.contains("calib (ifindex 11)"), "{err}");
    }

    #[test]
    fn pod_with_nothing_resolving_lists_every_reason() {
        let s = node();
        let err = resolve_pod(&[ip("10.2.0.50"), ip("fd99::1")], &s).expect_err("none");
        assert!(err.reason.contains("bridge cni0"), "{err}");
        assert!(
            err.reason
                .contains("no route in the main table covers fd99::1"),
            "{err}"
        );
        let err = resolve_pod(&[], &s).expect_err("no ips");
        assert!(err.reason.contains("no IP addresses"), "{err}");
    }

    #[test]
    fn resolves_pods_by_key() {
        let s = with_bridge_pod(node());
        let pods = vec![
            ("a", vec![ip("10.1.0.5")]),
            ("b", vec![ip("10.2.0.7")]),
            ("c", vec![ip("10.2.0.8")]),
        ];
        let out = resolve_pods(&pods, &s);
        assert_eq!(out.len(), 3);
        assert_eq!(out["a"], Ok(iface(10, "calia")));
        assert_eq!(out["b"], Ok(iface(21, "vetha")));
        assert!(out["c"].is_err());
    }

    #[test]
    fn prefix_matching_edges() {
        assert!(route("0.0.0.0", 0, 1).covers(ip("255.1.2.3")));
        assert!(!route("0.0.0.0", 0, 1).covers(ip("::1")));
        assert!(route("10.0.0.0", 7, 1).covers(ip("11.255.0.0")));
        assert!(!route("10.0.0.0", 7, 1).covers(ip("12.0.0.0")));
        assert!(!route("10.0.0.1", 33, 1).covers(ip("10.0.0.1")));
        assert!(route("fd00::", 63, 1).covers(ip("fd00:0:0:1::9")));
        assert!(!route("fd00::", 64, 1).covers(ip("fd00:0:0:1::9")));
    }

    #[test]
    fn mac_formatting() {
        assert_eq!(
            MacAddr::from_slice(&[0xde, 0xad, 0xbe, 0xef, 0, 1]).map(|m| m.to_string()),
            Some("de:ad:be:ef:00:01".to_owned())
        );
        assert_eq!(MacAddr::from_slice(&[1, 2, 3]), None);
    }
}
