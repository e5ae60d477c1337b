//! A deliberately simple reference evaluator: reads policies straight from
//! [`ClusterState`] (no identities, no plan) and answers whether a connection
//! is allowed. The property tests check the compiler against it.
//!
//! A connection from A to B on (protocol, port) is allowed when A's egress
//! allows it (or A is not a pod, or not egress-isolated) and B's ingress
//! allows it (or B is not a pod, or not ingress-isolated). A pod always
//! reaches itself and is always reachable from its node; connections from a
//! pod to its node are policed like any other address.

use std::net::IpAddr;

use crate::state::ClusterState;
use crate::state::Direction;
use crate::state::model::Pod;
use crate::state::netpol::{NamespaceScope, NetworkPolicy, Peer, PortRef, Rule};

/// Whether the connection `src` -> `dst` (`protocol`, destination `port`) is
/// allowed by both ends' policies.
pub fn allowed(cluster: &ClusterState, src: IpAddr, dst: IpAddr, protocol: u8, port: u16) -> bool {
    let egress = cluster
        .endpoint_pod_by_ip(src)
        .is_none_or(|p| direction_allows(cluster, p, Direction::Egress, dst, protocol, port));
    let ingress = cluster
        .endpoint_pod_by_ip(dst)
        .is_none_or(|p| direction_allows(cluster, p, Direction::Ingress, src, protocol, port));
    egress && ingress
}

/// Whether `pod`'s policies allow traffic with `remote` in `direction`
/// (`remote` is the source for ingress, the destination for egress; `port` is
/// the destination port).
pub fn direction_allows(
    cluster: &ClusterState,
    pod: &Pod,
    direction: Direction,
    remote: IpAddr,
    protocol: u8,
    port: u16,
) -> bool {
    let applying: Vec<&NetworkPolicy> = cluster
        .policies()
        .filter(|p| p.selects(&pod.namespace, &pod.labels) && p.policy_types.has(direction))
        .collect();
    let from_node = direction == Direction::Ingress && is_host(cluster, pod, remote);
    if applying.is_empty() || pod.ips.contains(&remote) || from_node {
        return true;
    }
    if rules_allow(cluster, pod, &applying, direction, remote, protocol, port) {
        return true;
    }
    direction == Direction::Egress
        && service_allows(cluster, pod, &applying, remote, protocol, port)
}

/// Whether `ip` is the pod's node (its addresses or a hostNetwork pod on it).
fn is_host(cluster: &ClusterState, pod: &Pod, ip: IpAddr) -> bool {
    pod.node_name
        .as_deref()
        .is_some_and(|n| cluster.node_addresses(n).contains(&ip))
}

fn rules_allow(
    cluster: &ClusterState,
    pod: &Pod,
    applying: &[&NetworkPolicy],
    direction: Direction,
    remote: IpAddr,
    protocol: u8,
    port: u16,
) -> bool {
    let remote_pod = cluster.endpoint_pod_by_ip(remote);
    // The pod whose named ports count: the server, i.e. the destination.
    let server = match direction {
        Direction::Ingress => Some(pod),
        Direction::Egress => remote_pod,
    };
    applying.iter().any(|pol| {
        pol.allowing_rules(direction).iter().any(|rule| {
            peer_matches(cluster, rule, remote, remote_pod)
                && port_matches(rule, server, protocol, port)
        })
    })
}

fn peer_matches(
    cluster: &ClusterState,
    rule: &Rule,
    remote: IpAddr,
    remote_pod: Option<&Pod>,
) -> bool {
    let Some(peers) = &rule.peers else {
        return true;
    };
    peers.iter().any(|peer| match peer {
        Peer::IpBlock(b) => b.contains(remote),
        Peer::Pods(pp) => remote_pod.is_some_and(|rp| {
            let ns_ok = match &pp.namespaces {
                NamespaceScope::Own(ns) => &rp.namespace == ns,
                NamespaceScope::Selected(sel) => {
                    sel.matches(&cluster.namespace_labels(&rp.namespace))
                }
            };
            ns_ok && pp.pods.matches(&rp.labels)
        }),
    })
}

fn port_matches(rule: &Rule, server: Option<&Pod>, protocol: u8, port: u16) -> bool {
    let Some(ports) = &rule.ports else {
        return true;
    };
    ports.iter().any(|spec| {
        spec.protocol.number() == protocol
            && match &spec.port {
                None => true,
                Some(PortRef::Range { first, last }) => (*first..=*last).contains(&port),
                Some(PortRef::Named(name)) => {
                    server.and_then(|s| s.named_port(name, spec.protocol)) == Some(port)
                }
            }
    })
}

/// Egress to a ClusterIP on a service port: allowed when the service has ready
/// backends and the pod may reach every one of them on its target port.
fn service_allows(
    cluster: &ClusterState,
    pod: &Pod,
    applying: &[&NetworkPolicy],
    remote: IpAddr,
    protocol: u8,
    port: u16,
) -> bool {
    cluster
        .services()
        .filter(|s| s.cluster_ips.contains(&remote))
        .any(|svc| {
            svc.ports
                .iter()
                .filter(|sp| sp.protocol.number() == protocol && sp.port == port)
                .any(|sp| {
                    let backends = cluster.service_backends(svc, sp, remote);
                    !backends.is_empty()
                        && backends.iter().all(|(addr, bport)| {
                            pod.ips.contains(addr)
                                || rules_allow(
                                    cluster,
                                    pod,
                                    applying,
                                    Direction::Egress,
                                    *addr,
                                    protocol,
                                    *bport,
                                )
                        })
                })
        })
}
