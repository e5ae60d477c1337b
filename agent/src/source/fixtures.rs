//! Test fixtures: builders for the raw k8s-openapi objects.
//!
//! ```text
//! pod("a").ns("x").label("pod", "a").ip("10.0.0.1").port("serve-80-tcp", 80, "TCP")
//! policy("x", "deny").ingress(rule().from(pods(labels(&[("pod", "b")]))).port(tcp(80)))
//! ```

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::api::networking::v1 as net;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::K8sObject;

fn meta(ns: Option<&str>, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: ns.map(Into::into),
        ..Default::default()
    }
}

/// Pod builder.
#[derive(Clone, Debug)]
pub struct PodB(pub core::Pod);

/// A running pod in namespace `default` on `node-1`.
pub fn pod(name: &str) -> PodB {
    PodB(core::Pod {
        metadata: meta(Some("default"), name),
        spec: Some(core::PodSpec {
            node_name: Some("node-1".into()),
            containers: vec![core::Container {
                name: "c".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: Some(core::PodStatus {
            phase: Some("Running".into()),
            ..Default::default()
        }),
    })
}

impl PodB {
    fn spec(&mut self) -> &mut core::PodSpec {
        self.0.spec.get_or_insert_with(Default::default)
    }
    fn status(&mut self) -> &mut core::PodStatus {
        self.0.status.get_or_insert_with(Default::default)
    }
    /// Namespace.
    pub fn ns(mut self, ns: &str) -> Self {
        self.0.metadata.namespace = Some(ns.into());
        self
    }
    /// Adds a label.
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.0
            .metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(k.into(), v.into());
        self
    }
    /// Adds an IP (the first also becomes `podIP`).
    pub fn ip(mut self, ip: &str) -> Self {
        let st = self.status();
        if st.pod_ip.is_none() {
            st.pod_ip = Some(ip.into());
        }
        st.pod_ips
            .get_or_insert_with(Vec::new)
            .push(core::PodIP { ip: ip.into() });
        self
    }
    /// Adds a container port.
    pub fn port(mut self, name: &str, number: i32, protocol: &str) -> Self {
        let c = &mut self.spec().containers[0];
        c.ports
            .get_or_insert_with(Vec::new)
            .push(core::ContainerPort {
                name: (!name.is_empty()).then(|| name.into()),
                container_port: number,
                protocol: Some(protocol.into()),
                ..Default::default()
            });
        self
    }
    /// Node.
    pub fn node(mut self, n: &str) -> Self {
        self.spec().node_name = Some(n.into());
        self
    }
    /// Adds an annotation.
    pub fn annotation(mut self, k: &str, v: &str) -> Self {
        self.0
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(k.into(), v.into());
        self
    }
    /// hostNetwork: true.
    pub fn host_network(mut self) -> Self {
        self.spec().host_network = Some(true);
        self
    }
    /// Phase.
    pub fn phase(mut self, p: &str) -> Self {
        self.status().phase = Some(p.into());
        self
    }
    /// No phase reported.
    pub fn without_phase(mut self) -> Self {
        self.status().phase = None;
        self
    }
    /// Addresses in `podIPs` only (no `podIP`).
    pub fn without_pod_ip(mut self) -> Self {
        self.status().pod_ip = None;
        self
    }
    /// The first address in `podIP` only (no `podIPs`).
    pub fn without_pod_ips(mut self) -> Self {
        self.status().pod_ips = None;
        self
    }
}

/// Namespace builder.
#[derive(Clone, Debug)]
pub struct NsB(pub core::Namespace);

/// A namespace.
pub fn namespace(name: &str) -> NsB {
    NsB(core::Namespace {
        metadata: meta(None, name),
        ..Default::default()
    })
}

impl NsB {
    /// Adds a label.
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.0
            .metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(k.into(), v.into());
        self
    }
    /// Adds an annotation.
    pub fn annotation(mut self, k: &str, v: &str) -> Self {
        self.0
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(k.into(), v.into());
        self
    }
}

/// `matchLabels` selector.
pub fn labels(kv: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: Some(
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        match_expressions: None,
    }
}

/// A selector with one expression.
pub fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelector {
    LabelSelector {
        match_labels: None,
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }]),
    }
}

/// `{}`.
pub fn all() -> LabelSelector {
    LabelSelector::default()
}

/// Policy builder.
#[derive(Clone, Debug)]
pub struct PolicyB(pub net::NetworkPolicy);

/// A policy selecting every pod of `ns` with no rules and no policyTypes.
pub fn policy(ns: &str, name: &str) -> PolicyB {
    PolicyB(net::NetworkPolicy {
        metadata: meta(Some(ns), name),
        spec: Some(net::NetworkPolicySpec {
            pod_selector: Some(all()),
            ..Default::default()
        }),
    })
}

impl PolicyB {
    fn spec(&mut self) -> &mut net::NetworkPolicySpec {
        self.0.spec.get_or_insert_with(Default::default)
    }
    /// podSelector.
    pub fn select(mut self, s: LabelSelector) -> Self {
        self.spec().pod_selector = Some(s);
        self
    }
    /// No podSelector field at all.
    pub fn no_pod_selector(mut self) -> Self {
        self.spec().pod_selector = None;
        self
    }
    /// policyTypes.
    pub fn types(mut self, t: &[&str]) -> Self {
        self.spec().policy_types = Some(t.iter().map(|s| s.to_string()).collect());
        self
    }
    /// Appends an ingress rule.
    pub fn ingress(mut self, r: RuleB) -> Self {
        self.spec()
            .ingress
            .get_or_insert_with(Vec::new)
            .push(net::NetworkPolicyIngressRule {
                from: r.peers,
                ports: r.ports,
            });
        self
    }
    /// `ingress: []`.
    pub fn ingress_none(mut self) -> Self {
        self.spec().ingress = Some(Vec::new());
        self
    }
    /// Appends an egress rule.
    pub fn egress(mut self, r: RuleB) -> Self {
        self.spec()
            .egress
            .get_or_insert_with(Vec::new)
            .push(net::NetworkPolicyEgressRule {
                to: r.peers,
                ports: r.ports,
            });
        self
    }
    /// `egress: []`.
    pub fn egress_none(mut self) -> Self {
        self.spec().egress = Some(Vec::new());
        self
    }
}

/// Rule builder (ingress or egress).
#[derive(Clone, Debug, Default)]
pub struct RuleB {
    peers: Option<Vec<net::NetworkPolicyPeer>>,
    ports: Option<Vec<net::NetworkPolicyPort>>,
}

/// A rule with no peers and no ports (allows everything).
pub fn rule() -> RuleB {
    RuleB::default()
}

impl RuleB {
    /// Adds a peer (`from` / `to`).
    pub fn peer(mut self, p: net::NetworkPolicyPeer) -> Self {
        self.peers.get_or_insert_with(Vec::new).push(p);
        self
    }
    /// `from: []` / `to: []`.
    pub fn no_peers(mut self) -> Self {
        self.peers = Some(Vec::new());
        self
    }
    /// Adds a port.
    pub fn port(mut self, p: net::NetworkPolicyPort) -> Self {
        self.ports.get_or_insert_with(Vec::new).push(p);
        self
    }
    /// `ports: []`.
    pub fn no_ports(mut self) -> Self {
        self.ports = Some(Vec::new());
        self
    }
}

/// Peer: podSelector alone.
pub fn pods(s: LabelSelector) -> net::NetworkPolicyPeer {
    net::NetworkPolicyPeer {
        pod_selector: Some(s),
        ..Default::default()
    }
}

/// Peer: namespaceSelector alone.
pub fn namespaces(s: LabelSelector) -> net::NetworkPolicyPeer {
    net::NetworkPolicyPeer {
        namespace_selector: Some(s),
        ..Default::default()
    }
}

/// Peer: namespaceSelector AND podSelector.
pub fn pods_in(ns: LabelSelector, p: LabelSelector) -> net::NetworkPolicyPeer {
    net::NetworkPolicyPeer {
        namespace_selector: Some(ns),
        pod_selector: Some(p),
        ..Default::default()
    }
}

/// Peer: ipBlock.
pub fn ip_block(cidr: &str, except: &[&str]) -> net::NetworkPolicyPeer {
    net::NetworkPolicyPeer {
        ip_block: Some(net::IPBlock {
            cidr: cidr.into(),
            except: (!except.is_empty()).then(|| except.iter().map(|e| e.to_string()).collect()),
        }),
        ..Default::default()
    }
}

/// Port: number, TCP.
pub fn tcp(n: i32) -> net::NetworkPolicyPort {
    net::NetworkPolicyPort {
        port: Some(IntOrString::Int(n)),
        protocol: Some("TCP".into()),
        end_port: None,
    }
}

/// Port: number with protocol.
pub fn port_of(protocol: &str, n: i32) -> net::NetworkPolicyPort {
    net::NetworkPolicyPort {
        port: Some(IntOrString::Int(n)),
        protocol: Some(protocol.into()),
        end_port: None,
    }
}

/// Port: number without protocol (defaults to TCP).
pub fn port_default_protocol(n: i32) -> net::NetworkPolicyPort {
    net::NetworkPolicyPort {
        port: Some(IntOrString::Int(n)),
        protocol: None,
        end_port: None,
    }
}

/// Port: range, TCP.
pub fn range(first: i32, last: i32) -> net::NetworkPolicyPort {
    net::NetworkPolicyPort {
        port: Some(IntOrString::Int(first)),
        protocol: Some("TCP".into()),
        end_port: Some(last),
    }
}

/// Port: named.
pub fn named(name: &str, protocol: &str) -> net::NetworkPolicyPort {
    net::NetworkPolicyPort {
        port: Some(IntOrString::String(name.into())),
        protocol: Some(protocol.into()),
        end_port: None,
    }
}

/// Port: protocol only.
pub fn protocol_only(protocol: &str) -> net::NetworkPolicyPort {
    net::NetworkPolicyPort {
        port: None,
        protocol: Some(protocol.into()),
        end_port: None,
    }
}

/// Service builder.
#[derive(Clone, Debug)]
pub struct ServiceB(pub core::Service);

/// A service with no IPs or ports.
pub fn service(ns: &str, name: &str) -> ServiceB {
    ServiceB(core::Service {
        metadata: meta(Some(ns), name),
        spec: Some(Default::default()),
        status: None,
    })
}

impl ServiceB {
    /// Adds a ClusterIP.
    pub fn cluster_ip(mut self, ip: &str) -> Self {
        let spec = self.0.spec.get_or_insert_with(Default::default);
        if spec.cluster_ip.is_none() {
            spec.cluster_ip = Some(ip.into());
        }
        spec.cluster_ips
            .get_or_insert_with(Vec::new)
            .push(ip.into());
        self
    }
    /// Adds a port.
    pub fn port(mut self, name: &str, port: i32, target: IntOrString) -> Self {
        let spec = self.0.spec.get_or_insert_with(Default::default);
        spec.ports
            .get_or_insert_with(Vec::new)
            .push(core::ServicePort {
                name: Some(name.into()),
                port,
                protocol: Some("TCP".into()),
                target_port: Some(target),
                ..Default::default()
            });
        self
    }
}

/// EndpointSlice builder.
#[derive(Clone, Debug)]
pub struct SliceB(pub discovery::EndpointSlice);

/// An IPv4 slice of `service` with no endpoints or ports.
pub fn slice(ns: &str, name: &str, service: &str) -> SliceB {
    let mut m = meta(Some(ns), name);
    m.labels = Some(BTreeMap::from([(
        "kubernetes.io/service-name".to_string(),
        service.to_string(),
    )]));
    SliceB(discovery::EndpointSlice {
        address_type: "IPv4".into(),
        endpoints: None,
        metadata: m,
        ports: None,
    })
}

impl SliceB {
    /// Adds a backend, optionally backed by pod `pod` of the slice's namespace.
    pub fn endpoint(mut self, ip: &str, ready: Option<bool>, pod: Option<&str>) -> Self {
        let ns = self.0.metadata.namespace.clone();
        self.0
            .endpoints
            .get_or_insert_with(Vec::new)
            .push(discovery::Endpoint {
                addresses: vec![ip.into()],
                conditions: Some(discovery::EndpointConditions {
                    ready,
                    ..Default::default()
                }),
                target_ref: pod.map(|p| core::ObjectReference {
                    kind: Some("Pod".into()),
                    name: Some(p.into()),
                    namespace: ns,
                    ..Default::default()
                }),
                ..Default::default()
            });
        self
    }
    /// Adds a port.
    pub fn port(mut self, name: &str, port: i32) -> Self {
        self.0
            .ports
            .get_or_insert_with(Vec::new)
            .push(discovery::EndpointPort {
                name: Some(name.into()),
                port: Some(port),
                protocol: Some("TCP".into()),
                ..Default::default()
            });
        self
    }
}

/// A node with addresses of the given types.
pub fn node(name: &str, addresses: &[(&str, &str)]) -> core::Node {
    core::Node {
        metadata: meta(None, name),
        spec: None,
        status: Some(core::NodeStatus {
            addresses: Some(
                addresses
                    .iter()
                    .map(|(t, a)| core::NodeAddress {
                        type_: t.to_string(),
                        address: a.to_string(),
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
    }
}

impl From<PodB> for K8sObject {
    fn from(b: PodB) -> Self {
        K8sObject::Pod(b.0)
    }
}
impl From<NsB> for K8sObject {
    fn from(b: NsB) -> Self {
        K8sObject::Namespace(b.0)
    }
}
impl From<PolicyB> for K8sObject {
    fn from(b: PolicyB) -> Self {
        K8sObject::NetworkPolicy(b.0)
    }
}
impl From<ServiceB> for K8sObject {
    fn from(b: ServiceB) -> Self {
        K8sObject::Service(b.0)
    }
}
impl From<SliceB> for K8sObject {
    fn from(b: SliceB) -> Self {
        K8sObject::EndpointSlice(b.0)
    }
}
impl From<core::Node> for K8sObject {
    fn from(n: core::Node) -> Self {
        K8sObject::Node(n)
    }
}

/// Shorthand: `objs![pod(..), policy(..)]` -> `Vec<K8sObject>`.
macro_rules! objs {
    ($($o:expr),* $(,)?) => { vec![$(crate::source::K8sObject::from($o)),*] };
}
pub(crate) use objs;

/// A ClusterNetworkPolicy object named `name` with `spec` written as the API
/// serves it (JSON, so tests can also write what the CRD would refuse).
pub fn cluster_network_policy(name: &str, spec: serde_json::Value) -> K8sObject {
    K8sObject::ClusterNetworkPolicy(cluster_network_policy_object(name, spec))
}

/// [`cluster_network_policy`]'s API object.
pub fn cluster_network_policy_object(
    name: &str,
    spec: serde_json::Value,
) -> super::cnp::ClusterNetworkPolicy {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("a ClusterNetworkPolicy object")
}
