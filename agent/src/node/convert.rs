//! Pure conversion of rtnetlink messages into the owned [`Snapshot`] types.
//!
//! Kept apart from the socket code so each mapping is unit-tested with
//! hand-built messages.

use std::net::IpAddr;

use netlink_packet_route::AddressFamily;
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState as NlState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteType, RouteVia,
};

use super::resolve::{
    FdbEntry, Link, LinkKind, MacAddr, Neighbour, NeighbourState, Route, RouteKind,
};

/// A link message as `(ifindex, Link)`.
pub fn link(msg: &LinkMessage) -> (u32, Link) {
    let mut link = Link {
        name: String::new(),
        kind: LinkKind::Other(String::new()),
        master: None,
        mac: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => link.name.clone_from(name),
            LinkAttribute::Address(bytes) => link.mac = MacAddr::from_slice(bytes),
            LinkAttribute::Controller(master) if *master != 0 => link.master = Some(*master),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(kind) = info {
                        link.kind = match kind {
                            InfoKind::Veth => LinkKind::Veth,
                            InfoKind::Bridge => LinkKind::Bridge,
                            other => LinkKind::Other(other.to_string()),
                        };
                    }
                }
            }
            _ => {}
        }
    }
    if link.name.is_empty() {
        link.name = format!("ifindex {}", msg.header.index);
    }
    (msg.header.index, link)
}

fn route_address(addr: &RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn via_address(via: &RouteVia) -> Option<IpAddr> {
    match via {
        RouteVia::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteVia::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// A route message as a [`Route`]; `None` for families other than IPv4/IPv6.
///
/// Multipath routes are flattened: a gateway on any next hop makes the route
/// a gateway route; the output device is kept only when all next hops share
/// it. Routes using a nexthop object (`RTA_NH_ID`) have no output device.
pub fn route(msg: &RouteMessage) -> Option<Route> {
    let unspecified = match msg.header.address_family {
        AddressFamily::Inet => IpAddr::from([0u8; 4]),
        AddressFamily::Inet6 => IpAddr::from([0u8; 16]),
        _ => return None,
    };
    let mut route = Route {
        dst: unspecified,
        prefix_len: msg.header.destination_prefix_length,
        oif: None,
        gateway: None,
        table: u32::from(msg.header.table),
        kind: match msg.header.kind {
            RouteType::Unicast => RouteKind::Unicast,
            RouteType::BlackHole
            | RouteType::Unreachable
            | RouteType::Prohibit
            | RouteType::Throw => RouteKind::Reject,
            _ => RouteKind::Other,
        },
        priority: 0,
    };
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(dst) => {
                if let Some(dst) = route_address(dst) {
                    route.dst = dst;
                }
            }
            RouteAttribute::Oif(oif) => route.oif = Some(*oif),
            RouteAttribute::Gateway(gw) => route.gateway = route.gateway.or(route_address(gw)),
            RouteAttribute::Via(via) => route.gateway = route.gateway.or(via_address(via)),
            RouteAttribute::Table(table) => route.table = *table,
            RouteAttribute::Priority(priority) => route.priority = *priority,
            RouteAttribute::MultiPath(hops) => {
                let mut devices = hops.iter().map(|h| h.interface_index);
                let first = devices.next();
                route.oif = first.filter(|f| devices.all(|d| d == *f));
                route.gateway = route.gateway.or_else(|| {
                    hops.iter()
                        .flat_map(|h| &h.attributes)
                        .find_map(|a| match a {
                            RouteAttribute::Gateway(gw) => route_address(gw),
                            RouteAttribute::Via(via) => via_address(via),
                            _ => None,
                        })
                });
            }
            _ => {}
        }
    }
    Some(route)
}

fn neighbour_state(state: NlState) -> NeighbourState {
    match state {
        NlState::Incomplete => NeighbourState::Incomplete,
        NlState::Reachable => NeighbourState::Reachable,
        NlState::Stale => NeighbourState::Stale,
        NlState::Delay => NeighbourState::Delay,
        NlState::Probe => NeighbourState::Probe,
        NlState::Failed => NeighbourState::Failed,
        NlState::Noarp => NeighbourState::Noarp,
        NlState::Permanent => NeighbourState::Permanent,
        NlState::None => NeighbourState::None,
        NlState::Other(raw) => NeighbourState::Other(raw),
        // The enum is non-exhaustive; keep the raw value for diagnostics.
        other => NeighbourState::Other(u16::from(other)),
    }
}

/// An ARP/NDP entry as a [`Neighbour`]; `None` when it has no IP destination.
pub fn neighbour(msg: &NeighbourMessage) -> Option<Neighbour> {
    let mut ip = None;
    let mut mac = None;
    for attr in &msg.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                ip = Some(IpAddr::V4(*v4));
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                ip = Some(IpAddr::V6(*v6));
            }
            NeighbourAttribute::LinkLayerAddress(bytes) => mac = MacAddr::from_slice(bytes),
            _ => {}
        }
    }
    Some(Neighbour {
        ip: ip?,
        ifindex: msg.header.ifindex,
        mac,
        state: neighbour_state(msg.header.state),
    })
}

/// An `AF_BRIDGE` neighbour message as an [`FdbEntry`]; `None` without an
/// Ethernet address.
pub fn fdb_entry(msg: &NeighbourMessage) -> Option<FdbEntry> {
    let mut mac = None;
    let mut bridge = None;
    for attr in &msg.attributes {
        match attr {
            NeighbourAttribute::LinkLayerAddress(bytes) => mac = MacAddr::from_slice(bytes),
            NeighbourAttribute::Controller(master) if *master != 0 => bridge = Some(*master),
            _ => {}
        }
    }
    Some(FdbEntry {
        mac: mac?,
        port: msg.header.ifindex,
        bridge,
    })
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use netlink_packet_route::route::RouteNextHop;

    use super::*;

    #[test]
    fn veth_link_with_master_and_mac() {
        let mut msg = LinkMessage::default();
        msg.header.index = 7;
        msg.attributes = vec![
            LinkAttribute::IfName("veth1".into()),
            LinkAttribute::Address(vec![2, 0, 0, 0, 0, 1]),
            LinkAttribute::Controller(3),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Veth)]),
        ];
        let (index, link) = link(&msg);
        assert_eq!(index, 7);
        assert_eq!(link.name, "veth1");
        assert_eq!(link.kind, LinkKind::Veth);
        assert_eq!(link.master, Some(3));
        assert_eq!(link.mac, Some(MacAddr([2, 0, 0, 0, 0, 1])));
    }

    #[test]
    fn link_kinds() {
        let kind = |info: Vec<LinkInfo>| {
            let mut msg = LinkMessage::default();
            msg.attributes = vec![LinkAttribute::LinkInfo(info)];
            link(&msg).1.kind
        };
        assert_eq!(
            kind(vec![LinkInfo::Kind(InfoKind::Bridge)]),
            LinkKind::Bridge
        );
        assert_eq!(
            kind(vec![LinkInfo::Kind(InfoKind::Vxlan)]),
            LinkKind::Other("vxlan".into())
        );
        assert_eq!(kind(vec![]), LinkKind::Other(String::new()));
    }

    #[test]
    fn v4_route_with_gateway_and_table() {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.destination_prefix_length = 24;
        msg.header.table = 252;
        msg.header.kind = RouteType::Unicast;
        msg.attributes = vec![
            RouteAttribute::Destination(RouteAddress::Inet(Ipv4Addr::new(10, 0, 1, 0))),
            RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(192, 168, 0, 1))),
            RouteAttribute::Oif(2),
            RouteAttribute::Table(1000),
            RouteAttribute::Priority(5),
        ];
        let r = route(&msg).expect("inet route");
        assert_eq!(r.dst, IpAddr::V4(Ipv4Addr::new(10, 0, 1, 0)));
        assert_eq!(r.prefix_len, 24);
        assert_eq!(r.gateway, Some(IpAddr::V4(Ipv4Addr::new(192, 168, 0, 1))));
        assert_eq!(r.oif, Some(2));
        assert_eq!(r.table, 1000);
        assert_eq!(r.priority, 5);
        assert_eq!(r.kind, RouteKind::Unicast);
    }

    #[test]
    fn v6_default_blackhole_and_unknown_family() {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet6;
        msg.header.table = 254;
        msg.header.kind = RouteType::BlackHole;
        let r = route(&msg).expect("inet6 route");
        assert_eq!(r.dst, IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        assert_eq!(r.prefix_len, 0);
        assert_eq!(r.table, 254);
        assert_eq!(r.kind, RouteKind::Reject);
        msg.header.address_family = AddressFamily::Mpls;
        assert_eq!(route(&msg), None);
    }

    #[test]
    fn multipath_route_is_flattened() {
        let hop = |ifindex: u32, gw: Option<Ipv4Addr>| {
            let mut h = RouteNextHop::default();
            h.interface_index = ifindex;
            h.attributes = gw
                .map(|g| RouteAttribute::Gateway(RouteAddress::Inet(g)))
                .into_iter()
                .collect();
            h
        };
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.kind = RouteType::Unicast;
        msg.attributes = vec![RouteAttribute::MultiPath(vec![hop(3, None), hop(3, None)])];
        let r = route(&msg).expect("route");
        assert_eq!((r.oif, r.gateway), (Some(3), None));
        msg.attributes = vec![RouteAttribute::MultiPath(vec![
            hop(3, None),
            hop(4, Some(Ipv4Addr::new(192, 168, 0, 2))),
        ])];
        let r = route(&msg).expect("route");
        assert_eq!(r.oif, None);
        assert_eq!(r.gateway, Some(IpAddr::V4(Ipv4Addr::new(192, 168, 0, 2))));
    }

    #[test]
    fn neighbour_entries() {
        let mut msg = NeighbourMessage::default();
        msg.header.ifindex = 9;
        msg.header.state = NlState::Stale;
        msg.attributes = vec![
            NeighbourAttribute::Destination(NeighbourAddress::Inet(Ipv4Addr::new(10, 2, 0, 7))),
            NeighbourAttribute::LinkLayerAddress(vec![2, 0, 0, 0, 0, 7]),
        ];
        let n = neighbour(&msg).expect("neighbour");
        assert_eq!(n.ip, IpAddr::V4(Ipv4Addr::new(10, 2, 0, 7)));
        assert_eq!(n.ifindex, 9);
        assert_eq!(n.mac, Some(MacAddr([2, 0, 0, 0, 0, 7])));
        assert_eq!(n.state, NeighbourState::Stale);
        msg.attributes.remove(0);
        assert_eq!(neighbour(&msg), None);
    }

    #[test]
    fn fdb_entries() {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Bridge;
        msg.header.ifindex = 21;
        msg.attributes = vec![
            NeighbourAttribute::LinkLayerAddress(vec![2, 0, 0, 0, 0, 7]),
            NeighbourAttribute::Controller(20),
        ];
        assert_eq!(
            fdb_entry(&msg),
            Some(FdbEntry {
                mac: MacAddr([2, 0, 0, 0, 0, 7]),
                port: 21,
                bridge: Some(20),
            })
        );
        msg.attributes.truncate(1);
        assert_eq!(fdb_entry(&msg).and_then(|e| e.bridge), None);
        msg.attributes.clear();
        assert_eq!(fdb_entry(&msg), None);
    }
}
