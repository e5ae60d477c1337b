//! Sources turn the outside world into typed events on one channel: the
//! Kubernetes API ([`kube`]) or a directory of manifests ([`manifests`]).
//!
//! A source never hands the agent a partial view: the first event is always a
//! [`SourceEvent::Replace`] of everything it knows (all initial lists done, or
//! the whole directory read), and enforcement changes start only after it.

pub mod cnp;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod kube;
pub mod manifests;
mod object;

pub use object::K8sObject;

use std::fmt;

/// The kinds of object the agent reads. RBAC in `deploy/` is derived from this
/// list (see the ship tests), so it is the one place that says what we watch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// core/v1 Namespace.
    Namespace,
    /// core/v1 Pod.
    Pod,
    /// networking.k8s.io/v1 NetworkPolicy.
    NetworkPolicy,
    /// core/v1 Node.
    Node,
    /// core/v1 Service.
    Service,
    /// discovery.k8s.io/v1 EndpointSlice.
    EndpointSlice,
    /// policy.networking.k8s.io/v1alpha2 ClusterNetworkPolicy (a CRD).
    ClusterNetworkPolicy,
}

impl Kind {
    /// Every kind, in the order the agent lists them.
    pub const ALL: [Kind; 6] = [
        Kind::Namespace,
        Kind::Pod,
        Kind::NetworkPolicy,
        Kind::Node,
        Kind::Service,
        Kind::EndpointSlice,
    ];

    /// Kinds read where they exist (a CRD that may not be installed): the
    /// Kubernetes source treats them as empty while the API server does not
    /// serve them, and the agent does not wait for them before enforcing.
    pub const OPTIONAL: [Kind; 1] = [Kind::ClusterNetworkPolicy];

    /// (API group, resource plural) as RBAC names them.
    pub const fn rbac(self) -> (&'static str, &'static str) {
        match self {
            Kind::Namespace => ("", "namespaces"),
            Kind::Pod => ("", "pods"),
            Kind::NetworkPolicy => ("networking.k8s.io", "networkpolicies"),
            Kind::Node => ("", "nodes"),
            Kind::Service => ("", "services"),
            Kind::EndpointSlice => ("discovery.k8s.io", "endpointslices"),
            Kind::ClusterNetworkPolicy => ("policy.networking.k8s.io", "clusternetworkpolicies"),
        }
    }

    /// The kind of an object.
    pub fn of(object: &K8sObject) -> Kind {
        match object {
            K8sObject::Namespace(_) => Kind::Namespace,
            K8sObject::Pod(_) => Kind::Pod,
            K8sObject::NetworkPolicy(_) => Kind::NetworkPolicy,
            K8sObject::Node(_) => Kind::Node,
            K8sObject::Service(_) => Kind::Service,
            K8sObject::EndpointSlice(_) => Kind::EndpointSlice,
            K8sObject::ClusterNetworkPolicy(_) => Kind::ClusterNetworkPolicy,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// An object by kind, namespace (empty for cluster-scoped) and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    /// Kind.
    pub kind: Kind,
    /// Namespace, empty for cluster-scoped kinds.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// What a source reports.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "events are moved once through a channel; boxing buys nothing"
)]
pub enum SourceEvent {
    /// The complete current set of objects of `kinds` (an initial list, a
    /// relist, or a re-read directory): objects of those kinds not in `objects`
    /// are gone.
    Replace {
        /// The kinds this replaces.
        kinds: Vec<Kind>,
        /// Every object of those kinds.
        objects: Vec<K8sObject>,
    },
    /// One object was added or changed.
    Apply(K8sObject),
    /// One object was deleted.
    Delete(ObjectRef),
    /// The source's connection state changed (unreachable API server, bad file).
    Health {
        /// Whether the source is up to date.
        up: bool,
        /// What happened, for logs and status.
        detail: String,
    },
}

/// The key of an object as the state stores it.
pub fn object_ref(object: &K8sObject) -> ObjectRef {
    let meta = match object {
        K8sObject::Namespace(o) => &o.metadata,
        K8sObject::Pod(o) => &o.metadata,
        K8sObject::NetworkPolicy(o) => &o.metadata,
        K8sObject::Node(o) => &o.metadata,
        K8sObject::Service(o) => &o.metadata,
        K8sObject::EndpointSlice(o) => &o.metadata,
        K8sObject::ClusterNetworkPolicy(o) => &o.metadata,
    };
    ObjectRef {
        kind: Kind::of(object),
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
    }
}
