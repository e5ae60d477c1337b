//! Deliberately simple reference evaluators: no identities, no plan, just
//! whether a connection is allowed. Two readings:
//! - [`allowed`] reads the parsed policies of a [`ClusterState`] (services
//!   and nodes included); the per-rule compiler tests check against it.
//! - [`api::Objects`] reads the Kubernetes objects themselves (namespaces,
//!   pods, NetworkPolicy and ClusterNetworkPolicy specs, Nodes) with none of
//!   `state`'s parsing or defaulting, so the property tests compare the whole
//!   path, parsing included.
//!
//! A connection from A to B on (protocol, port) is allowed when A's egress
//! allows it (or A is not a pod, or not egress-isolated) and B's ingress
//! allows it (or B is not a pod, or not ingress-isolated). A pod always
//! reaches itself and is always reachable from its node; connections from a
//! pod to its node are policed like any other address.
//!
//! [`allowed`] reads ClusterNetworkPolicies too, through the tiered reading
//! of [`super::tiers`] with NetworkPolicy's answer in the middle. Egress to a
//! ClusterIP on a Service port, for a pod a ClusterNetworkPolicy applies to,
//! is decided by the backends: allowed when every ready one is (the datapath
//! sees the ClusterIP before kube-proxy translates it, and a Deny for a
//! backend must not be reached around through its Service).

use std::net::IpAddr;

use super::tiers::{self, Traffic};
use crate::state::ClusterState;
use crate::state::Direction;
use crate::state::cnp::ClusterNetworkPolicy;
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
    let cluster_policies: Vec<ClusterNetworkPolicy> = cluster
        .cluster_policies()
        .into_iter()
        .filter(|c| !c.rules(direction).is_empty() && tiers::selects(cluster, &c.subject, pod))
        .cloned()
        .collect();
    if cluster_policies.is_empty() {
        return network_policy_allows(cluster, pod, &applying, direction, remote, protocol, port)
            .unwrap_or(true);
    }
    if direction == Direction::Egress
        && let Some(allowed) = backends_allow(cluster, pod, remote, protocol, port)
    {
        return allowed;
    }
    let traffic = Traffic {
        pod,
        direction,
        remote,
        protocol,
        port,
    };
    tiers::verdict(cluster, &cluster_policies, traffic, || {
        (!applying.is_empty())
            .then(|| rules_allow(cluster, pod, &applying, direction, remote, protocol, port))
    })
    .allowed
}

/// NetworkPolicy's answer: `None` when it does not isolate the pod.
fn network_policy_allows(
    cluster: &ClusterState,
    pod: &Pod,
    applying: &[&NetworkPolicy],
    direction: Direction,
    remote: IpAddr,
    protocol: u8,
    port: u16,
) -> Option<bool> {
    let from_node = direction == Direction::Ingress && cluster.is_node_of(pod, remote);
    if applying.is_empty() {
        return None;
    }
    if pod.ips.contains(&remote) || from_node {
        return Some(true);
    }
    if rules_allow(cluster, pod, applying, direction, remote, protocol, port) {
        return Some(true);
    }
    Some(
        direction == Direction::Egress
            && service_allows(cluster, pod, applying, remote, protocol, port),
    )
}

/// Egress to `remote` as a ClusterIP on a Service port with ready backends:
/// whether every backend is allowed (itself always is). `None` when `remote`
/// is no such ClusterIP and port.
fn backends_allow(
    cluster: &ClusterState,
    pod: &Pod,
    remote: IpAddr,
    protocol: u8,
    port: u16,
) -> Option<bool> {
    let mut verdict = None;
    for svc in cluster
        .services()
        .filter(|s| s.cluster_ips.contains(&remote))
    {
        for sp in svc
            .ports
            .iter()
            .filter(|sp| sp.protocol.number() == protocol && sp.port == port)
        {
            let backends = cluster.service_backends(svc, sp, remote);
            if backends.is_empty() {
                continue;
            }
            let all = backends.iter().all(|(addr, bport)| {
                pod.ips.contains(addr)
                    || direction_allows(cluster, pod, Direction::Egress, *addr, protocol, *bport)
            });
            verdict = Some(verdict.unwrap_or(true) && all);
        }
    }
    verdict
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

/// The reading straight from the API objects, following the
/// networking.k8s.io/v1 reference, plus the agent's documented answers where
/// the API leaves a choice: a policy with any invalid field still isolates
/// what it selects but allows nothing; an invalid podSelector selects every
/// pod of its namespace; an unknown policy type isolates both directions.
///
/// ClusterNetworkPolicies (policy.networking.k8s.io/v1alpha2) are read by
/// [`api::cnp`] around NetworkPolicy's answer: Admin tier, NetworkPolicy,
/// Baseline tier, allow. Not subject to either kind: a pod reaching its own
/// address, and its Node's addresses reaching it.
pub mod api {
    use std::collections::{BTreeMap, BTreeSet};
    use std::net::IpAddr;

    use ipnet::IpNet;
    use k8s_openapi::api::core::v1 as core;
    use k8s_openapi::api::networking::v1 as net;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    use crate::source::K8sObject;
    use crate::source::cnp::ClusterNetworkPolicy;
    use crate::state::Direction;

    pub mod cnp;

    type Labels = BTreeMap<String, String>;

    /// Namespaces, pods, NetworkPolicies, Nodes and ClusterNetworkPolicies as
    /// applied in order (a later object with the same namespace and name
    /// replaces an earlier one). Services are not read: the cluster has no
    /// ClusterIPs.
    #[derive(Debug, Default)]
    pub struct Objects {
        namespaces: BTreeMap<String, core::Namespace>,
        pods: BTreeMap<(String, String), core::Pod>,
        policies: BTreeMap<(String, String), net::NetworkPolicy>,
        nodes: BTreeMap<String, core::Node>,
        cluster_policies: BTreeMap<String, ClusterNetworkPolicy>,
    }

    fn key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
        (
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        )
    }

    impl Objects {
        /// Reads `objects`; panics on a kind it does not read, and if two
        /// endpoint pods share an address (which of them the agent picks is
        /// not API semantics).
        pub fn new(objects: &[K8sObject]) -> Objects {
            let mut read = Objects::default();
            for object in objects {
                match object {
                    K8sObject::Namespace(n) => {
                        read.namespaces.insert(key(&n.metadata).1, n.clone());
                    }
                    K8sObject::Pod(p) => {
                        read.pods.insert(key(&p.metadata), p.clone());
                    }
                    K8sObject::NetworkPolicy(np) => {
                        read.policies.insert(key(&np.metadata), np.clone());
                    }
                    K8sObject::Node(n) => {
                        read.nodes.insert(key(&n.metadata).1, n.clone());
                    }
                    K8sObject::ClusterNetworkPolicy(c) => {
                        read.cluster_policies.insert(key(&c.metadata).1, c.clone());
                    }
                    other => panic!("the API reading does not read {other:?}"),
                }
            }
            let mut seen = BTreeMap::new();
            for pod in read.endpoints() {
                for ip in pod_ips(pod) {
                    if let Some(other) = seen.insert(ip, key(&pod.metadata)) {
                        panic!("{ip} belongs to {other:?} and {:?}", key(&pod.metadata));
                    }
                }
            }
            read
        }

        /// The pods that are policy subjects and peers: not finished, not on
        /// the host network, holding an address.
        pub fn endpoints(&self) -> impl Iterator<Item = &core::Pod> {
            self.pods.values().filter(|pod| {
                let finished = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.phase.as_deref())
                    .is_some_and(|phase| phase == "Succeeded" || phase == "Failed");
                let host_network = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.host_network)
                    .unwrap_or(false);
                !finished && !host_network && !pod_ips(pod).is_empty()
            })
        }

        /// The endpoint pod holding `ip`.
        pub fn endpoint(&self, ip: IpAddr) -> Option<&core::Pod> {
            self.endpoints().find(|pod| pod_ips(pod).contains(&ip))
        }

        /// Whether `src` -> `dst` (`protocol`, destination `port`) is allowed
        /// by both ends' policies.
        pub fn allowed(&self, src: IpAddr, dst: IpAddr, protocol: u8, port: u16) -> bool {
            let egress = self
                .endpoint(src)
                .is_none_or(|p| self.direction_allows(p, Direction::Egress, dst, protocol, port));
            let ingress = self
                .endpoint(dst)
                .is_none_or(|p| self.direction_allows(p, Direction::Ingress, src, protocol, port));
            egress && ingress
        }

        /// The InternalIP and ExternalIP addresses of the Node `name`.
        pub fn node_addresses(&self, name: &str) -> BTreeSet<IpAddr> {
            self.nodes.get(name).map(node_ips).unwrap_or_default()
        }

        /// Whether the policies of `pod` allow traffic with `remote` in
        /// `direction` (`remote` is the source for ingress, the destination
        /// for egress; `port` is the destination port).
        pub fn direction_allows(
            &self,
            pod: &core::Pod,
            direction: Direction,
            remote: IpAddr,
            protocol: u8,
            port: u16,
        ) -> bool {
            let own_node = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(|n| self.node_addresses(n).contains(&remote));
            if pod_ips(pod).contains(&remote) || (direction == Direction::Ingress && own_node) {
                return true;
            }
            let traffic = cnp::Traffic {
                pod,
                direction,
                remote,
                protocol,
                port,
            };
            cnp::verdict(self, traffic, || {
                self.network_policy(pod, direction, remote, protocol, port)
            })
        }

        /// NetworkPolicy's answer: `None` when no policy isolates `pod` in
        /// `direction`.
        fn network_policy(
            &self,
            pod: &core::Pod,
            direction: Direction,
            remote: IpAddr,
            protocol: u8,
            port: u16,
        ) -> Option<bool> {
            let default_spec = net::NetworkPolicySpec::default();
            let (pod_ns, _) = key(&pod.metadata);
            let pod_labels = pod.metadata.labels.clone().unwrap_or_default();
            let applying: Vec<(&str, &net::NetworkPolicySpec)> = self
                .policies
                .values()
                .filter_map(|np| {
                    let (ns, _) = key(&np.metadata);
                    let spec = np.spec.as_ref().unwrap_or(&default_spec);
                    (ns == pod_ns
                        && subject_selector_matches(spec, &pod_labels)
                        && isolates(spec, direction))
                    .then_some((np.metadata.namespace.as_deref().unwrap_or_default(), spec))
                })
                .collect();
            if applying.is_empty() {
                return None;
            }
            let remote_pod = self.endpoint(remote);
            // Named ports are the server's: the destination's.
            let server = match direction {
                Direction::Ingress => Some(pod),
                Direction::Egress => remote_pod,
            };
            let allowed = applying
                .iter()
                .filter(|(_, spec)| valid(spec))
                .flat_map(|(ns, spec)| rules(spec, direction).map(move |r| (*ns, r)))
                .any(|(ns, (peers, ports))| {
                    let peer_ok = peers.is_none_or(<[_]>::is_empty)
                        || peers
                            .into_iter()
                            .flatten()
                            .any(|peer| self.peer_matches(ns, peer, remote, remote_pod));
                    let port_ok = ports.is_none_or(<[_]>::is_empty)
                        || ports
                            .into_iter()
                            .flatten()
                            .any(|p| port_matches(p, server, protocol, port));
                    peer_ok && port_ok
                });
            Some(allowed)
        }

        fn namespace_labels(&self, name: &str) -> Labels {
            let mut labels = self
                .namespaces
                .get(name)
                .and_then(|n| n.metadata.labels.clone())
                .unwrap_or_default();
            // The API server sets this label on every namespace.
            labels.insert("kubernetes.io/metadata.name".into(), name.into());
            labels
        }

        /// Whether `peer` (of a valid policy in namespace `policy_ns`) matches.
        fn peer_matches(
            &self,
            policy_ns: &str,
            peer: &net::NetworkPolicyPeer,
            remote: IpAddr,
            remote_pod: Option<&core::Pod>,
        ) -> bool {
            if let Some(block) = &peer.ip_block {
                let cidr: IpNet = block.cidr.parse().expect("a valid policy's cidr");
                let excepted = block.except.iter().flatten().any(|e| {
                    e.parse::<IpNet>()
                        .expect("a valid policy's except")
                        .contains(&remote)
                });
                return cidr.contains(&remote) && !excepted;
            }
            let Some(rp) = remote_pod else {
                return false;
            };
            let (rp_ns, _) = key(&rp.metadata);
            let ns_ok = match &peer.namespace_selector {
                None => rp_ns == policy_ns,
                Some(sel) => selector_matches(sel, &self.namespace_labels(&rp_ns)),
            };
            let pod_ok = peer.pod_selector.as_ref().is_none_or(|sel| {
                selector_matches(sel, &rp.metadata.labels.clone().unwrap_or_default())
            });
            ns_ok && pod_ok
        }
    }

    /// `status.podIPs` and `status.podIP` (usually the first of them), as
    /// a set of addresses.
    fn pod_ips(pod: &core::Pod) -> BTreeSet<IpAddr> {
        let status = pod.status.as_ref();
        let listed = status
            .and_then(|s| s.pod_ips.as_ref())
            .into_iter()
            .flatten()
            .map(|p| p.ip.as_str());
        let single = status.and_then(|s| s.pod_ip.as_deref());
        listed
            .chain(single)
            .filter_map(|ip| ip.parse().ok())
            .collect()
    }

    /// A Node's InternalIP and ExternalIP addresses.
    fn node_ips(node: &core::Node) -> BTreeSet<IpAddr> {
        node.status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
            .filter_map(|a| a.address.parse().ok())
            .collect()
    }

    /// Whether the policy's podSelector picks these labels (absent: every
    /// pod; invalid: every pod, failing closed).
    fn subject_selector_matches(spec: &net::NetworkPolicySpec, labels: &Labels) -> bool {
        spec.pod_selector
            .as_ref()
            .is_none_or(|sel| !selector_valid(sel) || selector_matches(sel, labels))
    }

    /// Whether the policy isolates `direction`: the listed types, or when
    /// none are listed Ingress, plus Egress if it has egress rules. An
    /// unknown type isolates both.
    fn isolates(spec: &net::NetworkPolicySpec, direction: Direction) -> bool {
        let listed = spec.policy_types.as_deref().unwrap_or_default();
        if listed.is_empty() {
            return match direction {
                Direction::Ingress => true,
                Direction::Egress => spec.egress.as_ref().is_some_and(|e| !e.is_empty()),
            };
        }
        let wanted = match direction {
            Direction::Ingress => "Ingress",
            Direction::Egress => "Egress",
        };
        listed
            .iter()
            .any(|t| t == wanted || (t != "Ingress" && t != "Egress"))
    }

    type RuleParts<'a> = (
        Option<&'a [net::NetworkPolicyPeer]>,
        Option<&'a [net::NetworkPolicyPort]>,
    );

    /// The (peers, ports) of each rule of `direction`.
    fn rules(
        spec: &net::NetworkPolicySpec,
        direction: Direction,
    ) -> Box<dyn Iterator<Item = RuleParts<'_>> + '_> {
        match direction {
            Direction::Ingress => Box::new(
                spec.ingress
                    .iter()
                    .flatten()
                    .map(|r| (r.from.as_deref(), r.ports.as_deref())),
            ),
            Direction::Egress => Box::new(
                spec.egress
                    .iter()
                    .flatten()
                    .map(|r| (r.to.as_deref(), r.ports.as_deref())),
            ),
        }
    }

    /// Whether every field of the policy is valid.
    fn valid(spec: &net::NetworkPolicySpec) -> bool {
        let types_ok = spec
            .policy_types
            .iter()
            .flatten()
            .all(|t| t == "Ingress" || t == "Egress");
        let rules_ok = [Direction::Ingress, Direction::Egress]
            .into_iter()
            .all(|d| {
                rules(spec, d).all(|(peers, ports)| {
                    peers.into_iter().flatten().all(peer_valid)
                        && ports.into_iter().flatten().all(port_valid)
                })
            });
        types_ok && spec.pod_selector.as_ref().is_none_or(selector_valid) && rules_ok
    }

    /// An ipBlock alone, or at least one selector.
    fn peer_valid(peer: &net::NetworkPolicyPeer) -> bool {
        match (&peer.ip_block, &peer.namespace_selector, &peer.pod_selector) {
            (Some(block), None, None) => ip_block_valid(block),
            (Some(_), _, _) | (None, None, None) => false,
            (None, ns, pods) => {
                ns.as_ref().is_none_or(selector_valid) && pods.as_ref().is_none_or(selector_valid)
            }
        }
    }

    /// A CIDR, and exceptions of its family strictly inside it.
    fn ip_block_valid(block: &net::IPBlock) -> bool {
        let Ok(cidr) = block.cidr.parse::<IpNet>() else {
            return false;
        };
        block.except.iter().flatten().all(|e| {
            e.parse::<IpNet>().is_ok_and(|e| {
                let same_family = cidr.addr().is_ipv4() == e.addr().is_ipv4();
                same_family && e.prefix_len() > cidr.prefix_len() && cidr.contains(&e.network())
            })
        })
    }

    /// The protocol's number (absent: TCP); `None` for an unknown one.
    fn protocol_number(protocol: Option<&str>) -> Option<u8> {
        match protocol.unwrap_or("TCP") {
            "TCP" => Some(6),
            "UDP" => Some(17),
            "SCTP" => Some(132),
            _ => None,
        }
    }

    fn in_port_range(n: i32) -> bool {
        (1..=65535).contains(&n)
    }

    /// A known protocol; a port number (with an `endPort` no lower), a
    /// non-empty name without `endPort`, or neither.
    fn port_valid(p: &net::NetworkPolicyPort) -> bool {
        protocol_number(p.protocol.as_deref()).is_some()
            && match (&p.port, p.end_port) {
                (None, end) => end.is_none(),
                (Some(IntOrString::Int(n)), end) => {
                    in_port_range(*n) && end.is_none_or(|e| in_port_range(e) && e >= *n)
                }
                (Some(IntOrString::String(s)), end) => match s.parse::<i32>() {
                    Ok(n) => in_port_range(n) && end.is_none_or(|e| in_port_range(e) && e >= n),
                    Err(_) => !s.is_empty() && end.is_none(),
                },
            }
    }

    /// Whether a (valid) port entry matches; a named port is looked up in the
    /// server pod's containers.
    fn port_matches(
        p: &net::NetworkPolicyPort,
        server: Option<&core::Pod>,
        protocol: u8,
        port: u16,
    ) -> bool {
        let wanted = protocol_number(p.protocol.as_deref());
        if wanted != Some(protocol) {
            return false;
        }
        let port = i32::from(port);
        let number = match &p.port {
            None => return true,
            Some(IntOrString::Int(n)) => *n,
            Some(IntOrString::String(name)) => match name.parse::<i32>() {
                Ok(n) => n,
                Err(_) => {
                    return server.is_some_and(|pod| named_port(pod, name, protocol) == Some(port));
                }
            },
        };
        (number..=p.end_port.unwrap_or(number)).contains(&port)
    }

    /// The number of the server's container port with that name and protocol.
    fn named_port(pod: &core::Pod, name: &str, protocol: u8) -> Option<i32> {
        let spec = pod.spec.as_ref()?;
        spec.containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .flat_map(|c| c.ports.iter().flatten())
            .find(|cp| {
                cp.name.as_deref() == Some(name)
                    && protocol_number(cp.protocol.as_deref()) == Some(protocol)
                    && in_port_range(cp.container_port)
            })
            .map(|cp| cp.container_port)
    }

    /// `matchExpressions` need values for In / NotIn and none for Exists /
    /// DoesNotExist; no other operator exists.
    fn selector_valid(sel: &LabelSelector) -> bool {
        sel.match_expressions.iter().flatten().all(|e| {
            let has_values = e.values.as_ref().is_some_and(|v| !v.is_empty());
            match e.operator.as_str() {
                "In" | "NotIn" => has_values,
                "Exists" | "DoesNotExist" => !has_values,
                _ => false,
            }
        })
    }

    /// Every `matchLabels` pair and every expression hold (`{}`: everything).
    fn selector_matches(sel: &LabelSelector, labels: &Labels) -> bool {
        let pairs = sel
            .match_labels
            .iter()
            .flatten()
            .all(|(k, v)| labels.get(k) == Some(v));
        let expressions = sel.match_expressions.iter().flatten().all(|e| {
            let values = e.values.as_deref().unwrap_or_default();
            let value = labels.get(&e.key);
            match e.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        });
        pairs && expressions
    }
}
