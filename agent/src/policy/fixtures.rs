//! Test fixtures for the compiler: the object builders of
//! [`crate::source::fixtures`], a cluster from them, and plan checks.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::compile::Compiler;
use super::lookup::{Flow, evaluate};
use super::plan::DatapathPlan;
use crate::source::K8sObject;
pub(crate) use crate::source::fixtures::*;
use crate::state::{ClusterState, Direction};

/// A cluster from objects.
pub fn cluster(objs: Vec<K8sObject>) -> ClusterState {
    let mut c = ClusterState::new();
    for o in &objs {
        c.apply(o).expect("fixture object is valid");
    }
    c
}

/// The plan with every pod local and no node addresses.
pub fn plan_all(c: &ClusterState) -> DatapathPlan {
    Compiler::new().compile_for(c, |_| true, &BTreeSet::new())
}

/// Whether `plan` allows `src` -> `dst` (protocol, port) at both ends (an end
/// that is not a local endpoint does not restrict).
pub fn plan_allows(plan: &DatapathPlan, src: &str, dst: &str, protocol: u8, port: u16) -> bool {
    let (src, dst): (IpAddr, IpAddr) = (src.parse().expect("src ip"), dst.parse().expect("dst ip"));
    let flow = Flow {
        src,
        dst,
        protocol,
        dst_port: port,
    };
    let at = |ip: IpAddr, d: Direction| {
        plan.endpoints
            .values()
            .find(|e| match ip {
                IpAddr::V4(a) => e.ipv4 == Some(a),
                IpAddr::V6(a) => e.ipv6 == Some(a),
            })
            .is_none_or(|e| evaluate(plan, e, d, &flow).allowed)
    };
    at(src, Direction::Egress) && at(dst, Direction::Ingress)
}
