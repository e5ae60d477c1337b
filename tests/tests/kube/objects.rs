//! Kubernetes objects as the fake API server serves them (JSON).

use std::net::IpAddr;

use serde_json::{Value, json};

pub fn namespace(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": { "name": name, "labels": { "kubernetes.io/metadata.name": name } }
    })
}

pub fn node(name: &str, ips: &[IpAddr]) -> Value {
    let addresses: Vec<Value> = ips
        .iter()
        .map(|ip| json!({ "type": "InternalIP", "address": ip.to_string() }))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": { "name": name },
        "status": { "addresses": addresses }
    })
}

pub fn pod(namespace: &str, name: &str, node: &str, app: &str, ips: &[IpAddr]) -> Value {
    let pod_ips: Vec<Value> = ips
        .iter()
        .map(|ip| json!({ "ip": ip.to_string() }))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "namespace": namespace, "labels": { "app": app } },
        "spec": {
            "nodeName": node,
            "containers": [{
                "name": "main",
                "image": "none",
                "ports": [{ "containerPort": 80, "protocol": "TCP" }]
            }]
        },
        "status": {
            "phase": "Running",
            "podIP": ips.first().map(ToString::to_string),
            "podIPs": pod_ips
        }
    })
}

/// Isolates the ingress of pods labelled `app` and allows nothing in.
pub fn deny_ingress(namespace: &str, name: &str, app: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": { "name": name, "namespace": namespace },
        "spec": {
            "podSelector": { "matchLabels": { "app": app } },
            "policyTypes": ["Ingress"]
        }
    })
}

pub fn service(namespace: &str, name: &str, app: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": name, "namespace": namespace },
        "spec": {
            "selector": { "app": app },
            "clusterIP": "10.96.0.10",
            "ports": [{ "port": 80, "protocol": "TCP" }]
        }
    })
}

pub fn endpoint_slice(namespace: &str, name: &str, service: &str, ip: IpAddr) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": { "kubernetes.io/service-name": service }
        },
        "addressType": if ip.is_ipv4() { "IPv4" } else { "IPv6" },
        "endpoints": [{ "addresses": [ip.to_string()] }],
        "ports": [{ "port": 80, "protocol": "TCP" }]
    })
}
