//! Validated views of the Kubernetes objects Palisade needs, built once from
//! k8s-openapi objects at the boundary. Downstream code never re-checks them.
//!
//! NetworkPolicy, whose validation produces rejections, lives in
//! [`super::netpol`].

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1::EndpointSlice as K8sEndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::refs::PodRef;
use super::selector::Labels;

/// Namespace annotation that puts every endpoint of the namespace in audit mode
/// when set to `"true"`.
pub const AUDIT_MODE_ANNOTATION: &str = "palisade.dev/audit-mode";

/// Pod annotation widening the sources the pod may send from to these
/// prefixes (`"<cidr>[,<cidr>...]"`), for gateways and VPN endpoints. Honoured
/// only in namespaces the operator lists (`--source-prefix-namespaces`).
pub const ALLOWED_SOURCE_PREFIXES_ANNOTATION: &str = "palisade.dev/allowed-source-prefixes";
/// At most this many prefixes in one annotation.
pub const MAX_ALLOWED_SOURCE_PREFIXES: usize = 64;

/// EndpointSlice label naming the Service the slice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label the API server sets on every namespace to its name (immutable,
/// GA since 1.22), so that `namespaceSelector` can pick namespaces by name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Why an object cannot be used at all.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ModelError {
    /// `metadata.name` is missing.
    #[error("{kind} without metadata.name")]
    MissingName {
        /// Object kind.
        kind: &'static str,
    },
    /// `metadata.namespace` is missing on a namespaced object.
    #[error("{kind} {name} without metadata.namespace")]
    MissingNamespace {
        /// Object kind.
        kind: &'static str,
        /// Object name.
        name: String,
    },
}

/// An IP protocol NetworkPolicy can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Protocol {
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// SCTP (132).
    Sctp,
}

impl Protocol {
    /// Every protocol, in number order.
    pub const ALL: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

    /// Parses the API spelling (`TCP`, `UDP`, `SCTP`); `None` defaults to TCP.
    pub fn parse(s: Option<&str>) -> Option<Protocol> {
        match s {
            None | Some("TCP") => Some(Protocol::Tcp),
            Some("UDP") => Some(Protocol::Udp),
            Some("SCTP") => Some(Protocol::Sctp),
            Some(_) => None,
        }
    }

    /// The IP protocol number.
    pub const fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    /// The protocol with this IP protocol number, if NetworkPolicy can name it.
    pub const fn from_number(n: u8) -> Option<Protocol> {
        match n {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            132 => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

/// Converts an API port number, rejecting values outside 1..=65535.
pub fn port_number(n: i32) -> Option<u16> {
    u16::try_from(n).ok().filter(|p| *p != 0)
}

/// A namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: Labels,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
}

impl Namespace {
    /// Converts a k8s Namespace.
    pub fn from_k8s(ns: &core::Namespace) -> Result<Self, ModelError> {
        let name = ns
            .metadata
            .name
            .clone()
            .ok_or(ModelError::MissingName { kind: "Namespace" })?;
        let mut labels = ns.metadata.labels.clone().unwrap_or_default();
        // As the API server does; manifests written by hand usually omit it.
        labels.insert(NAMESPACE_NAME_LABEL.into(), name.clone());
        Ok(Namespace {
            name,
            labels,
            annotations: ns.metadata.annotations.clone().unwrap_or_default(),
        })
    }

    /// The labels of a namespace known only by name (no Namespace object
    /// seen yet): the one label every namespace has.
    pub fn implicit_labels(name: &str) -> Labels {
        Labels::from([(NAMESPACE_NAME_LABEL.to_string(), name.to_string())])
    }

    /// Whether endpoints in this namespace run in audit mode.
    pub fn audit(&self) -> bool {
        self.annotations
            .get(AUDIT_MODE_ANNOTATION)
            .is_some_and(|v| v == "true")
    }
}

/// Lifecycle phase of a pod, as far as policy cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PodPhase {
    /// Pending, Running or Unknown (or not reported yet): the pod may hold its IP.
    Active,
    /// Succeeded or Failed: the pod is gone for policy purposes.
    Terminated,
}

/// A named or numbered container port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ContainerPort {
    /// The port's name, if any.
    pub name: Option<String>,
    /// The port number.
    pub port: u16,
    /// Its protocol.
    pub protocol: Protocol,
}

/// A pod's `palisade.dev/allowed-source-prefixes` annotation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SourcePrefixes {
    /// Well-formed: these prefixes, in order, without duplicates.
    Valid(Vec<IpNet>),
    /// Malformed: the value as written and why it cannot be used.
    Invalid {
        /// The annotation's value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl SourcePrefixes {
    /// Parses the annotation's value: comma-separated CIDRs, each with its
    /// host bits zero.
    pub fn parse(value: &str) -> SourcePrefixes {
        let invalid = |reason: String| SourcePrefixes::Invalid {
            value: value.to_string(),
            reason,
        };
        let mut prefixes: Vec<IpNet> = Vec::new();
        for item in value.split(',').map(str::trim) {
            if item.is_empty() {
                return invalid("an empty entry (expected <cidr>[,<cidr>...])".into());
            }
            let net: IpNet = match item.parse() {
                Ok(net) => net,
                Err(_) => return invalid(format!("{item:?} is not a CIDR such as 10.8.0.0/16")),
            };
            if net.trunc() != net {
                return invalid(format!(
                    "{item} has host bits set (the network is {})",
                    net.trunc()
                ));
            }
            if !prefixes.contains(&net) {
                prefixes.push(net);
            }
        }
        if prefixes.len() > MAX_ALLOWED_SOURCE_PREFIXES {
            return invalid(format!(
                "{} prefixes (at most {MAX_ALLOWED_SOURCE_PREFIXES})",
                prefixes.len()
            ));
        }
        SourcePrefixes::Valid(prefixes)
    }
}

/// A pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: Labels,
    /// `spec.nodeName` (empty until scheduled).
    pub node_name: Option<String>,
    /// `spec.hostNetwork`: the pod uses the node's addresses.
    pub host_network: bool,
    /// Lifecycle phase.
    pub phase: PodPhase,
    /// `status.podIPs` (or `status.podIP`), deduplicated, in order.
    pub ips: Vec<IpAddr>,
    /// Ports of its containers (invalid entries are dropped).
    pub ports: Vec<ContainerPort>,
    /// Its `palisade.dev/allowed-source-prefixes` annotation, if set.
    pub allowed_source_prefixes: Option<SourcePrefixes>,
}

impl Pod {
    /// Converts a k8s Pod.
    pub fn from_k8s(pod: &core::Pod) -> Result<Self, ModelError> {
        let name = pod
            .metadata
            .name
            .clone()
            .ok_or(ModelError::MissingName { kind: "Pod" })?;
        let namespace =
            pod.metadata
                .namespace
                .clone()
                .ok_or_else(|| ModelError::MissingNamespace {
                    kind: "Pod",
                    name: name.clone(),
                })?;
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        let phase = match status.and_then(|s| s.phase.as_deref()) {
            Some("Succeeded") | Some("Failed") => PodPhase::Terminated,
            _ => PodPhase::Active,
        };
        let mut ips: Vec<IpAddr> = Vec::new();
        let listed = status
            .and_then(|s| s.pod_ips.as_ref())
            .map(|v| v.iter().map(|p| p.ip.as_str()));
        let single = status.and_then(|s| s.pod_ip.as_deref());
        for ip in listed.into_iter().flatten().chain(single) {
            if let Ok(ip) = ip.parse::<IpAddr>()
                && !ips.contains(&ip)
            {
                ips.push(ip);
            }
        }
        let mut ports = Vec::new();
        if let Some(spec) = spec {
            let containers = spec
                .containers
                .iter()
                .chain(spec.init_containers.iter().flatten());
            for cp in containers.flat_map(|c| c.ports.iter().flatten()) {
                if let (Some(port), Some(protocol)) = (
                    port_number(cp.container_port),
                    Protocol::parse(cp.protocol.as_deref()),
                ) {
                    let name = cp.name.clone().filter(|n| !n.is_empty());
                    ports.push(ContainerPort {
                        name,
                        port,
                        protocol,
                    });
                }
            }
        }
        Ok(Pod {
            namespace,
            name,
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            node_name: spec
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty()),
            host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
            phase,
            ips,
            ports,
            allowed_source_prefixes: pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ALLOWED_SOURCE_PREFIXES_ANNOTATION))
                .map(|v| SourcePrefixes::parse(v)),
        })
    }

    /// Its key.
    pub fn pod_ref(&self) -> PodRef {
        PodRef {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    /// Whether the pod is a policy subject and peer: running, not on the host
    /// network, and holding an IP.
    pub fn is_endpoint(&self) -> bool {
        self.phase == PodPhase::Active && !self.host_network && !self.ips.is_empty()
    }

    /// The number of the container port called `name` with `protocol`.
    pub fn named_port(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name) && p.protocol == protocol)
            .map(|p| p.port)
    }
}

/// A node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Name.
    pub name: String,
    /// Its InternalIP and ExternalIP addresses.
    pub addresses: Vec<IpAddr>,
    /// Its labels (ClusterNetworkPolicy `nodes` peers select by them).
    pub labels: Labels,
}

impl Node {
    /// Converts a k8s Node.
    pub fn from_k8s(node: &core::Node) -> Result<Self, ModelError> {
        let name = node
            .metadata
            .name
            .clone()
            .ok_or(ModelError::MissingName { kind: "Node" })?;
        let mut addresses = Vec::new();
        let listed = node.status.as_ref().and_then(|s| s.addresses.as_ref());
        for a in listed.into_iter().flatten() {
            if (a.type_ == "InternalIP" || a.type_ == "ExternalIP")
                && let Ok(ip) = a.address.parse::<IpAddr>()
                && !addresses.contains(&ip)
            {
                addresses.push(ip);
            }
        }
        let labels = node.metadata.labels.clone().unwrap_or_default();
        Ok(Node {
            name,
            addresses,
            labels,
        })
    }
}

/// Where a service port sends traffic on its backends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TargetPort {
    /// A port number.
    Number(u16),
    /// A container port name, resolved per backend pod.
    Name(String),
}

/// One port of a Service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePort {
    /// Its name (needed to find the matching EndpointSlice port).
    pub name: Option<String>,
    /// The port clients connect to on the ClusterIP.
    pub port: u16,
    /// Protocol.
    pub protocol: Protocol,
    /// The backends' port (defaults to `port`).
    pub target_port: TargetPort,
}

/// A Service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `spec.clusterIPs` (or `spec.clusterIP`), without `None` (headless).
    pub cluster_ips: Vec<IpAddr>,
    /// Ports (invalid entries dropped).
    pub ports: Vec<ServicePort>,
}

impl Service {
    /// Converts a k8s Service.
    pub fn from_k8s(svc: &core::Service) -> Result<Self, ModelError> {
        let name = svc
            .metadata
            .name
            .clone()
            .ok_or(ModelError::MissingName { kind: "Service" })?;
        let namespace =
            svc.metadata
                .namespace
                .clone()
                .ok_or_else(|| ModelError::MissingNamespace {
                    kind: "Service",
                    name: name.clone(),
                })?;
        let spec = svc.spec.as_ref();
        let mut cluster_ips = Vec::new();
        let listed = spec
            .and_then(|s| s.cluster_ips.as_ref())
            .into_iter()
            .flatten();
        let single = spec.and_then(|s| s.cluster_ip.as_ref());
        for ip in listed.chain(single) {
            if let Ok(ip) = ip.parse::<IpAddr>()
                && !cluster_ips.contains(&ip)
            {
                cluster_ips.push(ip);
            }
        }
        let mut ports = Vec::new();
        for sp in spec.and_then(|s| s.ports.as_ref()).into_iter().flatten() {
            let (Some(port), Some(protocol)) = (
                port_number(sp.port),
                Protocol::parse(sp.protocol.as_deref()),
            ) else {
                continue;
            };
            let target_port = match &sp.target_port {
                None => TargetPort::Number(port),
                Some(IntOrString::Int(n)) => match port_number(*n) {
                    Some(n) => TargetPort::Number(n),
                    None => continue,
                },
                Some(IntOrString::String(s)) => match s.parse::<i32>() {
                    Ok(n) => match port_number(n) {
                        Some(n) => TargetPort::Number(n),
                        None => continue,
                    },
                    Err(_) => TargetPort::Name(s.clone()),
                },
            };
            ports.push(ServicePort {
                name: sp.name.clone().filter(|n| !n.is_empty()),
                port,
                protocol,
                target_port,
            });
        }
        Ok(Service {
            namespace,
            name,
            cluster_ips,
            ports,
        })
    }
}

/// One backend of an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceEndpoint {
    /// Its addresses.
    pub addresses: Vec<IpAddr>,
    /// `conditions.ready` is not `false`.
    pub ready: bool,
    /// The pod behind it (`targetRef` of kind Pod).
    pub pod: Option<PodRef>,
}

/// One port of an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlicePort {
    /// Name (matches the Service port's name).
    pub name: Option<String>,
    /// Number on the backends (None when unresolved).
    pub port: Option<u16>,
    /// Protocol.
    pub protocol: Protocol,
}

/// An EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSlice {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The Service it belongs to (label `kubernetes.io/service-name`).
    pub service_name: Option<String>,
    /// Backends.
    pub endpoints: Vec<SliceEndpoint>,
    /// Ports.
    pub ports: Vec<SlicePort>,
}

impl EndpointSlice {
    /// Converts a k8s EndpointSlice.
    pub fn from_k8s(slice: &K8sEndpointSlice) -> Result<Self, ModelError> {
        let name = slice.metadata.name.clone().ok_or(ModelError::MissingName {
            kind: "EndpointSlice",
        })?;
        let namespace =
            slice
                .metadata
                .namespace
                .clone()
                .ok_or_else(|| ModelError::MissingNamespace {
                    kind: "EndpointSlice",
                    name: name.clone(),
                })?;
        let service_name = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .cloned();
        let endpoints = slice
            .endpoints
            .iter()
            .flatten()
            .map(|e| SliceEndpoint {
                addresses: e.addresses.iter().filter_map(|a| a.parse().ok()).collect(),
                ready: e.conditions.as_ref().and_then(|c| c.ready) != Some(false),
                pod: e.target_ref.as_ref().and_then(|r| {
                    if r.kind.as_deref() != Some("Pod") {
                        return None;
                    }
                    Some(PodRef {
                        namespace: r.namespace.clone().unwrap_or_else(|| namespace.clone()),
                        name: r.name.clone()?,
                    })
                }),
            })
            .collect();
        let ports = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(SlicePort {
                    name: p.name.clone().filter(|n| !n.is_empty()),
                    port: p.port.and_then(port_number),
                    protocol: Protocol::parse(p.protocol.as_deref())?,
                })
            })
            .collect();
        Ok(EndpointSlice {
            namespace,
            name,
            service_name,
            endpoints,
            ports,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_prefixes_parse_comma_separated_canonical_cidrs() {
        assert_eq!(
            SourcePrefixes::parse(" 10.8.0.0/16 ,fd00:8::/64,10.8.0.0/16"),
            SourcePrefixes::Valid(vec![
                "10.8.0.0/16".parse().expect("net"),
                "fd00:8::/64".parse().expect("net"),
            ])
        );
        for (value, why) in [
            ("10.8.0.1/16", "host bits"),
            ("10.8.0.0", "not a CIDR"),
            ("10.8.0.0/33", "not a CIDR"),
            ("10.8.0.0/16,,10.9.0.0/16", "empty entry"),
            ("", "empty entry"),
        ] {
            match SourcePrefixes::parse(value) {
                SourcePrefixes::Invalid { value: v, reason } => {
                    assert_eq!(v, value);
                    assert!(
                        reason.contains(why.split(' ').next_back().expect("word")),
                        "{value:?}: {reason}"
                    );
                }
                valid => panic!("{value:?} parsed as {valid:?}"),
            }
        }
        let many: Vec<String> = (0..=MAX_ALLOWED_SOURCE_PREFIXES)
            .map(|i| format!("10.{i}.0.0/16"))
            .collect();
        assert!(matches!(
            SourcePrefixes::parse(&many.join(",")),
            SourcePrefixes::Invalid { .. }
        ));
    }
}
