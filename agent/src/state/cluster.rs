//! [`ClusterState`]: every object the compiler reads, by key, in stable order.
//!
//! Objects are converted once when applied; terminated pods are dropped on
//! arrival. Iteration order is the key order, so compiles are deterministic.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1::EndpointSlice as K8sEndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy as K8sNetworkPolicy;

use super::cnp::ClusterNetworkPolicy;
use super::journal::{Change, Journal, Mark};
use super::model::{
    EndpointSlice, ModelError, Namespace, Node, Pod, PodPhase, Service, ServicePort, TargetPort,
};
use super::netpol::NetworkPolicy;
use super::refs::{PodRef, PolicyRef, Rejection};
use super::selector::Labels;
use crate::source::K8sObject;

/// A namespaced object's key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// Builds a key.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// The validated view of the cluster.
#[derive(Clone, Debug, Default)]
pub struct ClusterState {
    namespaces: BTreeMap<String, Namespace>,
    pods: BTreeMap<PodRef, Pod>,
    policies: BTreeMap<PolicyRef, NetworkPolicy>,
    nodes: BTreeMap<String, Node>,
    services: BTreeMap<ObjectKey, Service>,
    slices: BTreeMap<ObjectKey, EndpointSlice>,
    cluster_policies: BTreeMap<String, ClusterNetworkPolicy>,
    /// Endpoint pods by IP (several only if the cluster is inconsistent).
    pods_by_ip: BTreeMap<IpAddr, BTreeSet<PodRef>>,
    /// Pods by `spec.nodeName`.
    pods_by_node: BTreeMap<String, BTreeSet<PodRef>>,
    /// What changed, for incremental compiles.
    journal: Journal,
    /// Bumped by every change to what the state holds.
    generation: u64,
}

impl ClusterState {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts or replaces any object.
    pub fn apply(&mut self, obj: &K8sObject) -> Result<(), ModelError> {
        match obj {
            K8sObject::Namespace(o) => self.apply_namespace(o),
            K8sObject::Pod(o) => self.apply_pod(o),
            K8sObject::NetworkPolicy(o) => self.apply_policy(o),
            K8sObject::Node(o) => self.apply_node(o),
            K8sObject::Service(o) => self.apply_service(o),
            K8sObject::EndpointSlice(o) => self.apply_endpoint_slice(o),
            K8sObject::ClusterNetworkPolicy(o) => self.apply_cluster_policy(o),
        }
    }

    /// Inserts or replaces a Namespace.
    pub fn apply_namespace(&mut self, ns: &core::Namespace) -> Result<(), ModelError> {
        let ns = Namespace::from_k8s(ns)?;
        if self.namespaces.get(&ns.name) == Some(&ns) {
            return Ok(());
        }
        self.generation += 1;
        self.journal.record(Change::Namespace(ns.name.clone()));
        self.namespaces.insert(ns.name.clone(), ns);
        Ok(())
    }

    /// Removes a Namespace.
    pub fn delete_namespace(&mut self, name: &str) {
        self.generation += 1;
        self.journal.record(Change::Namespace(name.to_string()));
        self.namespaces.remove(name);
    }

    /// Inserts or replaces a Pod; a terminated pod is removed instead.
    pub fn apply_pod(&mut self, pod: &core::Pod) -> Result<(), ModelError> {
        let pod = Pod::from_k8s(pod)?;
        let key = pod.pod_ref();
        // Status-only updates (most pod events) change nothing we keep.
        if self.pods.get(&key) == Some(&pod) {
            return Ok(());
        }
        self.delete_pod(&key.namespace, &key.name);
        if pod.phase == PodPhase::Terminated {
            return Ok(());
        }
        if pod.is_endpoint() {
            for ip in &pod.ips {
                self.pods_by_ip.entry(*ip).or_default().insert(key.clone());
            }
        }
        if let Some(node) = &pod.node_name {
            self.pods_by_node
                .entry(node.clone())
                .or_default()
                .insert(key.clone());
        }
        self.pods.insert(key, pod);
        Ok(())
    }

    /// Removes a Pod.
    pub fn delete_pod(&mut self, namespace: &str, name: &str) {
        let key = PodRef {
            namespace: namespace.into(),
            name: name.into(),
        };
        if let Some(old) = self.pods.remove(&key) {
            for ip in &old.ips {
                if let Some(set) = self.pods_by_ip.get_mut(ip) {
                    set.remove(&key);
                    if set.is_empty() {
                        self.pods_by_ip.remove(ip);
                    }
                }
            }
            if let Some(node) = &old.node_name
                && let Some(set) = self.pods_by_node.get_mut(node)
            {
                set.remove(&key);
                if set.is_empty() {
                    self.pods_by_node.remove(node);
                }
            }
        }
        self.generation += 1;
        self.journal.record(Change::Pod(key));
    }

    /// Inserts or replaces a NetworkPolicy (rejections are kept with it).
    pub fn apply_policy(&mut self, np: &K8sNetworkPolicy) -> Result<(), ModelError> {
        let np = NetworkPolicy::from_k8s(np)?;
        if self.policies.get(&np.policy_ref()) == Some(&np) {
            return Ok(());
        }
        self.generation += 1;
        self.journal.record(Change::Policy(np.policy_ref()));
        self.policies.insert(np.policy_ref(), np);
        Ok(())
    }

    /// Removes a NetworkPolicy.
    pub fn delete_policy(&mut self, namespace: &str, name: &str) {
        let key = PolicyRef {
            namespace: namespace.into(),
            name: name.into(),
        };
        self.policies.remove(&key);
        self.generation += 1;
        self.journal.record(Change::Policy(key));
    }

    /// Inserts or replaces a Node.
    pub fn apply_node(&mut self, node: &core::Node) -> Result<(), ModelError> {
        let node = Node::from_k8s(node)?;
        // Status heartbeats, the bulk of node events, change nothing we keep.
        if self.nodes.get(&node.name) != Some(&node) {
            self.generation += 1;
            self.nodes.insert(node.name.clone(), node);
        }
        Ok(())
    }

    /// Removes a Node.
    pub fn delete_node(&mut self, name: &str) {
        self.generation += 1;
        self.nodes.remove(name);
    }

    /// Inserts or replaces a Service.
    pub fn apply_service(&mut self, svc: &core::Service) -> Result<(), ModelError> {
        let svc = Service::from_k8s(svc)?;
        let key = ObjectKey::new(&svc.namespace, &svc.name);
        if self.services.get(&key) != Some(&svc) {
            self.generation += 1;
            self.services.insert(key, svc);
        }
        Ok(())
    }

    /// Removes a Service.
    pub fn delete_service(&mut self, namespace: &str, name: &str) {
        self.generation += 1;
        self.services.remove(&ObjectKey::new(namespace, name));
    }

    /// Inserts or replaces an EndpointSlice.
    pub fn apply_endpoint_slice(&mut self, slice: &K8sEndpointSlice) -> Result<(), ModelError> {
        let slice = EndpointSlice::from_k8s(slice)?;
        let key = ObjectKey::new(&slice.namespace, &slice.name);
        if self.slices.get(&key) != Some(&slice) {
            self.generation += 1;
            self.slices.insert(key, slice);
        }
        Ok(())
    }

    /// Removes an EndpointSlice.
    pub fn delete_endpoint_slice(&mut self, namespace: &str, name: &str) {
        self.generation += 1;
        self.slices.remove(&ObjectKey::new(namespace, name));
    }

    /// Inserts or replaces a ClusterNetworkPolicy (rejections are kept with it).
    pub fn apply_cluster_policy(
        &mut self,
        cnp: &crate::source::cnp::ClusterNetworkPolicy,
    ) -> Result<(), ModelError> {
        let cnp = ClusterNetworkPolicy::from_k8s(cnp)?;
        if self.cluster_policies.get(&cnp.name) != Some(&cnp) {
            self.generation += 1;
            self.journal.record(Change::ClusterPolicy(cnp.name.clone()));
            self.cluster_policies.insert(cnp.name.clone(), cnp);
        }
        Ok(())
    }

    /// Removes a ClusterNetworkPolicy.
    pub fn delete_cluster_policy(&mut self, name: &str) {
        if self.cluster_policies.remove(name).is_some() {
            self.generation += 1;
            self.journal.record(Change::ClusterPolicy(name.to_string()));
        }
    }

    /// Every ClusterNetworkPolicy, in precedence order (tier, priority, name).
    pub fn cluster_policies(&self) -> Vec<&ClusterNetworkPolicy> {
        let mut policies: Vec<&ClusterNetworkPolicy> = self.cluster_policies.values().collect();
        policies.sort_by(|a, b| a.precedence().cmp(&b.precedence()));
        policies
    }

    /// A number that changes with every change to what the state holds (and
    /// not on identical re-applies): equal numbers, equal states.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// A namespace by name.
    pub fn namespace(&self, name: &str) -> Option<&Namespace> {
        self.namespaces.get(name)
    }

    /// A namespace's labels, for `namespaceSelector`. A namespace whose object
    /// has not been seen (a watch delivering pods first, or manifests that do
    /// not declare it) has only the name label the API server gives every
    /// namespace.
    pub fn namespace_labels(&self, name: &str) -> Cow<'_, Labels> {
        match self.namespaces.get(name) {
            Some(ns) => Cow::Borrowed(&ns.labels),
            None => Cow::Owned(Namespace::implicit_labels(name)),
        }
    }

    /// Every namespace, by name.
    pub fn namespaces(&self) -> impl Iterator<Item = &Namespace> {
        self.namespaces.values()
    }

    /// A pod by key.
    pub fn pod(&self, key: &PodRef) -> Option<&Pod> {
        self.pods.get(key)
    }

    /// The pods scheduled to `node_name`, by key.
    pub fn pods_on(&self, node_name: &str) -> impl Iterator<Item = &Pod> {
        self.pods_by_node
            .get(node_name)
            .into_iter()
            .flatten()
            .filter_map(|k| self.pods.get(k))
    }

    /// The current point in this state's history of pod, namespace and
    /// policy changes (nodes, services and slices are not journaled).
    pub fn mark(&self) -> Mark {
        self.journal.mark()
    }

    /// The pods, namespaces and policies changed after `mark`; `None` when
    /// that is no longer known (read everything again).
    pub fn changes_since(&self, mark: Mark) -> Option<impl Iterator<Item = &Change>> {
        self.journal.since(mark)
    }

    /// Every (non-terminated) pod, by key.
    pub fn pods(&self) -> impl Iterator<Item = &Pod> {
        self.pods.values()
    }

    /// The pods of one namespace, by name.
    pub fn pods_in(&self, namespace: &str) -> impl Iterator<Item = &Pod> {
        let start = PodRef {
            namespace: namespace.to_string(),
            name: String::new(),
        };
        self.pods
            .range(start..)
            .map(|(_, p)| p)
            .take_while(move |p| p.namespace == namespace)
    }

    /// The endpoint pod (see [`Pod::is_endpoint`]) holding `ip`; the first by
    /// key if the cluster is inconsistent and several claim it.
    pub fn endpoint_pod_by_ip(&self, ip: IpAddr) -> Option<&Pod> {
        self.pods_by_ip
            .get(&ip)
            .and_then(|s| s.first())
            .and_then(|k| self.pods.get(k))
    }

    /// A policy by key.
    pub fn policy(&self, key: &PolicyRef) -> Option<&NetworkPolicy> {
        self.policies.get(key)
    }

    /// Every policy, by key.
    pub fn policies(&self) -> impl Iterator<Item = &NetworkPolicy> {
        self.policies.values()
    }

    /// Every validation failure, by policy.
    pub fn rejections(&self) -> impl Iterator<Item = &Rejection> {
        self.policies
            .values()
            .flat_map(|p| p.rejections.iter())
            .chain(
                self.cluster_policies
                    .values()
                    .flat_map(|p| p.rejections.iter()),
            )
    }

    /// A node by name.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.get(name)
    }

    /// Every node, by name.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    /// Every service, by key.
    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.services.values()
    }

    /// A service by key.
    pub fn service(&self, namespace: &str, name: &str) -> Option<&Service> {
        self.services.get(&ObjectKey::new(namespace, name))
    }

    /// Every EndpointSlice, by key.
    pub fn endpoint_slices(&self) -> impl Iterator<Item = &EndpointSlice> {
        self.slices.values()
    }

    /// The EndpointSlices of a service, by key.
    pub fn slices_of<'a>(
        &'a self,
        svc: &'a Service,
    ) -> impl Iterator<Item = &'a EndpointSlice> + 'a {
        let start = ObjectKey::new(&svc.namespace, "");
        self.slices
            .range(start..)
            .map(|(_, s)| s)
            .take_while(move |s| s.namespace == svc.namespace)
            .filter(move |s| s.service_name.as_deref() == Some(svc.name.as_str()))
    }

    /// The ready backends of service port `port` reachable through `cluster_ip`:
    /// each address of the same family of every endpoint (of the service's
    /// EndpointSlices) whose `ready` is not false, with the backend's port.
    /// The port is the EndpointSlice port of the same name and protocol, else
    /// the numeric targetPort, else the named targetPort looked up on the
    /// backend pod; backends whose port cannot be resolved are left out (no
    /// traffic can reach them).
    pub fn service_backends(
        &self,
        svc: &Service,
        port: &ServicePort,
        cluster_ip: IpAddr,
    ) -> Vec<(IpAddr, u16)> {
        let mut out = Vec::new();
        for slice in self.slices_of(svc) {
            let slice_port = slice
                .ports
                .iter()
                .find(|p| p.name == port.name && p.protocol == port.protocol)
                .and_then(|p| p.port);
            for ep in slice.endpoints.iter().filter(|e| e.ready) {
                for addr in ep
                    .addresses
                    .iter()
                    .filter(|a| a.is_ipv4() == cluster_ip.is_ipv4())
                {
                    let number = slice_port.or_else(|| match &port.target_port {
                        TargetPort::Number(n) => Some(*n),
                        TargetPort::Name(name) => {
                            let pod = ep
                                .pod
                                .as_ref()
                                .and_then(|r| self.pod(r))
                                .or_else(|| self.endpoint_pod_by_ip(*addr));
                            pod.and_then(|p| p.named_port(name, port.protocol))
                        }
                    });
                    if let Some(n) = number
                        && !out.contains(&(*addr, n))
                    {
                        out.push((*addr, n));
                    }
                }
            }
        }
        out
    }

    /// Whether `ip` is `pod`'s own node (see [`ClusterState::node_addresses`]).
    pub fn is_node_of(&self, pod: &Pod, ip: IpAddr) -> bool {
        pod.node_name
            .as_deref()
            .is_some_and(|n| self.node_addresses(n).contains(&ip))
    }

    /// The addresses that are the node `node_name` itself: its InternalIP and
    /// ExternalIP addresses and the IPs of hostNetwork pods running on it.
    pub fn node_addresses(&self, node_name: &str) -> BTreeSet<IpAddr> {
        let mut out: BTreeSet<IpAddr> = self
            .nodes
            .get(node_name)
            .map(|n| n.addresses.iter().copied().collect())
            .unwrap_or_default();
        for p in self.pods_on(node_name) {
            if p.host_network {
                out.extend(p.ips.iter().copied());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::fixtures::{namespace, pod};

    fn journaled(c: &ClusterState, since: Mark) -> Vec<Change> {
        c.changes_since(since).expect("kept").cloned().collect()
    }

    fn cnp(name: &str, priority: i32) -> crate::source::cnp::ClusterNetworkPolicy {
        crate::source::fixtures::cluster_network_policy_object(
            name,
            serde_json::json!({"tier": "Admin", "priority": priority, "subject": {"namespaces": {}},
                     "egress": [{"action": "Deny", "to": [{"domainNames": ["example.com"]}]}]}),
        )
    }

    #[test]
    fn cluster_network_policies_are_kept_in_precedence_order_with_their_rejections() {
        let mut c = ClusterState::new();
        c.apply(&K8sObject::ClusterNetworkPolicy(cnp("b", 5)))
            .unwrap();
        c.apply(&K8sObject::ClusterNetworkPolicy(cnp("a", 7)))
            .unwrap();
        let g = c.generation();
        c.apply(&K8sObject::ClusterNetworkPolicy(cnp("a", 7)))
            .unwrap();
        assert_eq!(c.generation(), g, "an identical re-apply changes nothing");
        c.apply(&K8sObject::ClusterNetworkPolicy(cnp("a", 3)))
            .unwrap();
        assert!(c.generation() > g);
        let names: Vec<&str> = c
            .cluster_policies()
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(names, ["a", "b"]);
        let rejected: Vec<String> = c.rejections().map(|r| r.object.clone()).collect();
        assert_eq!(
            rejected,
            ["ClusterNetworkPolicy a", "ClusterNetworkPolicy b"]
        );
        let g = c.generation();
        c.delete_cluster_policy("a");
        assert!(c.generation() > g);
        c.delete_cluster_policy("a");
        assert_eq!(c.cluster_policies().len(), 1);
    }

    #[test]
    fn the_generation_moves_with_every_change_and_only_then() {
        use crate::source::fixtures::node;
        let mut c = ClusterState::new();
        let web = pod("web").ns("a").ip("10.0.0.1").node("n1");
        let n1 = node("n1", &[("InternalIP", "192.168.0.1")]);
        c.apply(&web.clone().into()).expect("pod");
        c.apply(&K8sObject::Node(n1.clone())).expect("node");
        let g = c.generation();
        // A node heartbeat: only conditions change.
        let mut heartbeat = n1.clone();
        heartbeat.status.as_mut().expect("status").conditions = Some(vec![]);
        c.apply(&K8sObject::Node(heartbeat)).expect("heartbeat");
        c.apply(&web.clone().into()).expect("same pod");
        assert_eq!(c.generation(), g, "identical re-applies change nothing");

        c.apply(&K8sObject::Node(node(
            "n1",
            &[("InternalIP", "192.168.0.2")],
        )))
        .expect("new address");
        assert_ne!(c.generation(), g, "a node's new address");
        let g = c.generation();
        c.apply(&web.label("tier", "1").into()).expect("relabelled");
        assert_ne!(c.generation(), g, "a pod's new label");
        let g = c.generation();
        c.delete_node("n1");
        assert_ne!(c.generation(), g, "a deleted node");
    }

    #[test]
    fn the_journal_names_what_changed_and_skips_identical_updates() {
        let mut c = ClusterState::new();
        let web = pod("web")
            .ns("a")
            .ip("10.0.0.1")
            .label("app", "web")
            .node("n1");
        c.apply(&web.clone().into()).expect("pod");
        c.apply(&namespace("a").into()).expect("namespace");
        let m = c.mark();
        c.apply(&web.clone().into()).expect("same pod");
        c.apply(&namespace("a").into()).expect("same namespace");
        assert_eq!(journaled(&c, m), vec![]);

        c.apply(&web.label("tier", "1").into())
            .expect("relabelled pod");
        c.apply(&namespace("a").label("team", "x").into())
            .expect("relabelled ns");
        c.delete_pod("a", "web");
        let key = PodRef {
            namespace: "a".into(),
            name: "web".into(),
        };
        assert_eq!(
            journaled(&c, m),
            vec![
                Change::Pod(key.clone()),
                Change::Namespace("a".into()),
                Change::Pod(key)
            ]
        );
        assert_eq!(c.pods_on("n1").count(), 0);
    }

    #[test]
    fn pods_on_a_node_follow_rescheduling() {
        let mut c = ClusterState::new();
        c.apply(&pod("p").ns("a").ip("10.0.0.1").node("n1").into())
            .expect("pod");
        c.apply(&pod("p").ns("a").ip("10.0.0.1").node("n2").into())
            .expect("moved pod");
        assert_eq!(c.pods_on("n1").count(), 0);
        assert_eq!(
            c.pods_on("n2").map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["p"]
        );
    }
}
