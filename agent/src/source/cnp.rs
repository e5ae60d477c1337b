//! ClusterNetworkPolicy (`policy.networking.k8s.io/v1alpha2`, network-policy-api
//! v0.2.0) as the API serves it, before any validation.
//!
//! The API's enums (`tier`, `action`) stay strings and its one-of structs stay
//! structs of options, so an object the CRD's validation would refuse (or one
//! from a newer CRD with fields this build does not know) still arrives here
//! and is rejected by the state with the object and field named, never lost
//! in deserialization.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use serde::{Deserialize, Serialize};

/// `spec` of a ClusterNetworkPolicy.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "policy.networking.k8s.io",
    version = "v1alpha2",
    kind = "ClusterNetworkPolicy",
    plural = "clusternetworkpolicies",
    status = "ClusterNetworkPolicyStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetworkPolicySpec {
    /// `Admin` or `Baseline`.
    pub tier: String,
    /// 0-1000 within the tier, lower first.
    pub priority: i32,
    /// The pods the policy applies to.
    pub subject: Subject,
    /// Rules for traffic to the subject, in precedence order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Vec<IngressRule>>,
    /// Rules for traffic from the subject, in precedence order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<EgressRule>>,
}

/// `status` of a ClusterNetworkPolicy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterNetworkPolicyStatus {
    /// Conditions implementations report.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// Exactly one of the fields (the CRD enforces it; the state checks again).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subject {
    /// Every pod of the selected namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    /// Pods by namespace and pod labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPods>,
}

/// Pods selected by their namespace's labels and their own.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespacedPods {
    /// Absent or empty: every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Empty: every pod.
    pub pod_selector: LabelSelector,
}

/// An ingress rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressRule {
    /// For metrics, the flow log and explain (at most 100 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `Accept`, `Deny` or `Pass`.
    pub action: String,
    /// Sources, 1-25.
    #[serde(default)]
    pub from: Vec<IngressPeer>,
    /// Absent: all traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocols: Option<Vec<Protocol>>,
}

/// An egress rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EgressRule {
    /// For metrics, the flow log and explain (at most 100 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `Accept`, `Deny` or `Pass`.
    pub action: String,
    /// Destinations, 1-25.
    #[serde(default)]
    pub to: Vec<EgressPeer>,
    /// Absent: all traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocols: Option<Vec<Protocol>>,
}

/// A source of ingress traffic: exactly one field.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressPeer {
    /// Every pod of the selected namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    /// Pods by namespace and pod labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPods>,
}

/// A destination of egress traffic: exactly one field.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EgressPeer {
    /// Every pod of the selected namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    /// Pods by namespace and pod labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPods>,
    /// CIDRs (1-25); they match cluster-internal addresses too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<Vec<String>>,
    /// Nodes by label, matching their addresses (experimental channel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<LabelSelector>,
    /// DNS names (experimental channel; not supported by Palisade).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_names: Option<Vec<String>>,
}

/// A protocol match: exactly one field.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Protocol {
    /// TCP, by destination port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<ProtocolPort>,
    /// UDP, by destination port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<ProtocolPort>,
    /// SCTP, by destination port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sctp: Option<ProtocolPort>,
    /// The destination pod's container port of this name (any protocol it
    /// is declared with).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_named_port: Option<String>,
}

/// The port part of a TCP, UDP or SCTP match.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProtocolPort {
    /// Exactly one of a number or a range (the CRD requires it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_port: Option<Port>,
}

/// A port number or a range: exactly one field.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Port {
    /// One port, 1-65535.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<i32>,
    /// `start < end`, both 1-65535.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<PortRange>,
}

/// A contiguous range of ports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRange {
    /// First port.
    pub start: i32,
    /// Last port (inclusive).
    pub end: i32,
}

#[cfg(test)]
mod tests {
    //! The upstream CRDs (kept outside the repository, as test data) against
    //! these types: an object with every field the schema has survives a
    //! round trip through them unchanged, so no field is missing or
    //! misnamed, in either channel.

    use std::path::PathBuf;

    use serde_json::{Map, Value, json};

    use super::*;

    /// `PALISADE_CNP_CRDS`, else the team's `shared/crds` beside the
    /// checkout or beside any folder above it (the CRDs are test data kept
    /// outside the repository).
    fn crd_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("PALISADE_CNP_CRDS") {
            return PathBuf::from(dir);
        }
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        manifest
            .ancestors()
            .map(|dir| dir.join("shared/crds"))
            .find(|dir| dir.join("clusternetworkpolicies-standard.yaml").is_file())
            .unwrap_or_else(|| manifest.join("../../shared/crds"))
    }

    fn schema(channel: &str) -> Value {
        let path = crd_dir().join(format!("clusternetworkpolicies-{channel}.yaml"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "the upstream CRD {} (set PALISADE_CNP_CRDS to its directory): {e}",
                path.display()
            )
        });
        let crd: Value = serde_yaml::from_str(&text).expect("CRD YAML");
        let version = &crd["spec"]["versions"][0];
        assert_eq!(version["name"], "v1alpha2");
        version["schema"]["openAPIV3Schema"].clone()
    }

    /// An instance with every property of `schema` set (the label
    /// selectors' own schema included), with values in range.
    fn everything(schema: &Value) -> Value {
        if let Some(values) = schema.get("enum") {
            return values[0].clone();
        }
        match schema["type"].as_str() {
            Some("object") => {
                let properties = schema["properties"].as_object();
                match properties {
                    Some(properties) if !properties.is_empty() => Value::Object(
                        properties
                            .iter()
                            .filter(|(name, _)| !matches!(name.as_str(), "apiVersion" | "kind"))
                            .map(|(name, property)| (name.clone(), everything(property)))
                            .collect::<Map<_, _>>(),
                    ),
                    // Free-form (`metadata`, `matchLabels`).
                    _ => match schema.get("additionalProperties") {
                        Some(_) => json!({"k": "v"}),
                        None => json!({"name": "everything"}),
                    },
                }
            }
            Some("array") => Value::Array(vec![everything(&schema["items"])]),
            Some("integer") => json!(schema["minimum"].as_i64().unwrap_or(1)),
            Some("string") => match schema["format"].as_str() {
                Some("date-time") => json!("2026-01-01T00:00:00Z"),
                _ => json!("x"),
            },
            Some("boolean") => json!(true),
            other => panic!("schema type {other:?} in {schema}"),
        }
    }

    /// `range.end` above `range.start`, so the instance is also valid there.
    fn fix_ranges(value: &mut Value) {
        match value {
            Value::Object(map) => {
                if let Some(range) = map.get_mut("range") {
                    range["end"] = json!(2);
                }
                map.values_mut().for_each(fix_ranges);
            }
            Value::Array(items) => items.iter_mut().for_each(fix_ranges),
            _ => {}
        }
    }

    fn round_trip(channel: &str) {
        let mut object = everything(&schema(channel));
        fix_ranges(&mut object);
        object["apiVersion"] = json!("policy.networking.k8s.io/v1alpha2");
        object["kind"] = json!("ClusterNetworkPolicy");
        let typed: ClusterNetworkPolicy =
            serde_json::from_value(object.clone()).expect("the schema's object parses");
        let back = serde_json::to_value(&typed).expect("serializes");
        assert_eq!(
            back, object,
            "{channel}: a field of the CRD is lost or renamed by the types"
        );
    }

    #[test]
    fn the_standard_crd_round_trips_the_types() {
        round_trip("standard");
    }

    #[test]
    fn the_experimental_crd_round_trips_the_types() {
        round_trip("experimental");
    }

    #[test]
    fn the_types_say_what_the_crd_says_the_resource_is() {
        use kube::Resource;
        let crd: Value = serde_yaml::from_str(
            &std::fs::read_to_string(crd_dir().join("clusternetworkpolicies-standard.yaml"))
                .expect("CRD"),
        )
        .expect("YAML");
        assert_eq!(
            crd["spec"]["group"],
            ClusterNetworkPolicy::group(&()).as_ref()
        );
        assert_eq!(
            crd["spec"]["names"]["plural"],
            ClusterNetworkPolicy::plural(&()).as_ref()
        );
        assert_eq!(
            crd["spec"]["names"]["kind"],
            ClusterNetworkPolicy::kind(&()).as_ref()
        );
        assert_eq!(crd["spec"]["scope"], "Cluster");
        fn cluster_scoped<R: Resource<Scope = kube::core::ClusterResourceScope>>() {}
        cluster_scoped::<ClusterNetworkPolicy>();
    }
}
