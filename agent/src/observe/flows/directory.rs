//! Who the addresses and endpoint ids of kernel events are, and which rule
//! denied them, from the last plan programmed.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use palisade_common::addr::Addr16;
use palisade_common::event::FlowEvent;
use palisade_common::verdict::{Direction, DropReason};

use super::clock::{Clock, rfc3339};
use super::record::{DeniedBy, FlowRecord, Verdict};
use crate::policy::lookup::{self, Flow, Reason};
use crate::policy::plan::DatapathPlan;
use crate::state::ClusterState;
use crate::state::{PodRef, PolicyRef};

/// Pods by address and endpoint id, the policies isolating each local
/// endpoint, and the last plan programmed (to name the rule that denied a flow).
#[derive(Debug, Default)]
pub struct Directory {
    by_ip: HashMap<IpAddr, PodRef>,
    by_endpoint: HashMap<u32, PodRef>,
    isolating: HashMap<PodRef, [Vec<PolicyRef>; 2]>,
    plan: DatapathPlan,
}

impl Directory {
    /// Builds the directory of a plan: every pod of the cluster by address
    /// (host-network pods excluded: their address is the node's), local
    /// endpoints by id, and for those the policies per direction.
    pub fn build(plan: &DatapathPlan, cluster: &ClusterState) -> Directory {
        let mut by_ip = HashMap::new();
        for pod in cluster.pods().filter(|p| !p.host_network) {
            for ip in &pod.ips {
                by_ip.insert(*ip, pod.pod_ref());
            }
        }
        let mut by_endpoint = HashMap::new();
        let mut isolating = HashMap::new();
        for (pod, ep) in &plan.endpoints {
            by_endpoint.insert(ep.id.0, pod.clone());
            for ip in ep
                .ipv4
                .map(IpAddr::V4)
                .into_iter()
                .chain(ep.ipv6.map(IpAddr::V6))
            {
                by_ip.insert(ip, pod.clone());
            }
            let of = |d: Direction| -> Vec<PolicyRef> {
                ep.policies
                    .iter()
                    .filter(|p| cluster.policy(p).is_some_and(|np| np.policy_types.has(d)))
                    .cloned()
                    .collect()
            };
            isolating.insert(pod.clone(), [of(Direction::Ingress), of(Direction::Egress)]);
        }
        Directory {
            by_ip,
            by_endpoint,
            isolating,
            plan: plan.clone(),
        }
    }

    /// What denies the flow of `event` at `endpoint` in the plan: the rule of
    /// the deny entry that matches, or isolation when no entry does (or the
    /// deny entry credits no rule). `None` when the plan does not know the
    /// endpoint or allows the flow (the plan changed since).
    fn denied_by(
        &self,
        endpoint: &PodRef,
        direction: Direction,
        event: &FlowEvent,
    ) -> Option<DeniedBy> {
        let ep = self.plan.endpoints.get(endpoint)?;
        let flow = Flow {
            src: to_ip(&event.src),
            dst: to_ip(&event.dst),
            protocol: event.protocol,
            dst_port: event.dst_port,
        };
        let verdict = lookup::evaluate(&self.plan, ep, direction, &flow);
        if verdict.allowed {
            return None;
        }
        match verdict.reason {
            Reason::Denied if verdict.rule != palisade_common::ids::RuleId::NONE => {
                let origin = self.plan.rule_origins.get(&verdict.rule)?;
                Some(DeniedBy::Rule {
                    tier: origin.tier_label().into(),
                    namespace: origin.policy.namespace.clone(),
                    policy: origin.policy.name.clone(),
                    rule: origin.rule_label(),
                })
            }
            Reason::Denied | Reason::NoRule => Some(DeniedBy::Isolation),
            _ => None,
        }
    }

    fn name(&self, ip: IpAddr) -> String {
        self.by_ip
            .get(&ip)
            .map_or_else(|| ip.to_string(), ToString::to_string)
    }

    /// Turns a kernel event into a record (sequence number 0).
    pub fn resolve(&self, event: &FlowEvent, now: Clock) -> Option<FlowRecord> {
        let direction = Direction::from_u8(event.direction)?;
        let (src, dst) = (to_ip(&event.src), to_ip(&event.dst));
        let local_ip = match direction {
            Direction::Ingress => dst,
            Direction::Egress => src,
        };
        let endpoint = self
            .by_endpoint
            .get(&event.endpoint)
            .filter(|_| event.endpoint != 0)
            .or_else(|| self.by_ip.get(&local_ip));
        let reason = DropReason::from_u32(event.reason);
        // A forged source is not its owner: keep the address raw (the
        // endpoint names the pod that sent it), and no policy was consulted.
        let spoofed = reason == Some(DropReason::SourceSpoofed);
        let policies = endpoint
            .filter(|_| !spoofed)
            .and_then(|p| self.isolating.get(p))
            .map(|by_dir| by_dir[direction as usize].clone())
            .unwrap_or_default();
        // Only these two are the policy's decision (a revoked flow is one the
        // plan now denies); the other reasons are about the packet.
        let decided = matches!(
            reason,
            Some(DropReason::PolicyDenied | DropReason::PolicyRevoked)
        );
        let denied_by = endpoint
            .filter(|_| decided)
            .and_then(|p| self.denied_by(p, direction, event));
        Some(FlowRecord {
            seq: 0,
            time: rfc3339(now.wall_time(event.timestamp_ns)),
            direction,
            source: if spoofed {
                src.to_string()
            } else {
                self.name(src)
            },
            destination: self.name(dst),
            source_port: event.src_port,
            destination_port: event.dst_port,
            protocol: protocol_name(event.protocol),
            reason: reason.map_or_else(
                || format!("reason_{}", event.reason),
                |r| r.as_label().into(),
            ),
            endpoint: endpoint.map(ToString::to_string).unwrap_or_default(),
            policies: policies.iter().map(ToString::to_string).collect(),
            denied_by,
            verdict: if event.audited != 0 {
                Verdict::Audit
            } else {
                Verdict::Drop
            },
        })
    }

    /// The policies isolating the endpoint of a record, as refs.
    pub fn policies_of(record: &FlowRecord) -> Vec<PolicyRef> {
        record
            .policies
            .iter()
            .filter_map(|p| p.split_once('/'))
            .map(|(ns, name)| PolicyRef {
                namespace: ns.into(),
                name: name.into(),
            })
            .collect()
    }
}

fn to_ip(a: &Addr16) -> IpAddr {
    if a.is_v4_mapped() {
        IpAddr::V4(Ipv4Addr::from(a.v4_octets()))
    } else {
        IpAddr::V6(Ipv6Addr::from(a.0))
    }
}

fn protocol_name(p: u8) -> String {
    match p {
        1 => "ICMP".into(),
        6 => "TCP".into(),
        17 => "UDP".into(),
        58 => "ICMPv6".into(),
        132 => "SCTP".into(),
        n => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn event(direction: Direction, audited: bool) -> FlowEvent {
        FlowEvent {
            timestamp_ns: 5_000_000_000,
            ifindex: 9,
            endpoint: 3,
            reason: DropReason::PolicyDenied as u32,
            direction: direction as u8,
            protocol: 17,
            audited: u8::from(audited),
            _pad: 0,
            src: Addr16::from_v4([10, 0, 0, 1]),
            dst: Addr16::from_v4([10, 0, 0, 2]),
            src_port: 4000,
            dst_port: 53,
            remote_identity: 0,
        }
    }

    fn directory() -> Directory {
        let pod = PodRef {
            namespace: "ns".into(),
            name: "server".into(),
        };
        let pol = PolicyRef {
            namespace: "ns".into(),
            name: "deny".into(),
        };
        Directory {
            by_ip: HashMap::from([("10.0.0.2".parse().expect("ip"), pod.clone())]),
            by_endpoint: HashMap::from([(3, pod.clone())]),
            isolating: HashMap::from([(pod, [vec![pol], vec![]])]),
            plan: DatapathPlan::default(),
        }
    }

    #[test]
    fn events_resolve_to_pods_policies_and_wall_time() {
        let clock = Clock::at(UNIX_EPOCH + Duration::from_secs(100), 10_000_000_000);
        let r = directory()
            .resolve(&event(Direction::Ingress, false), clock)
            .expect("decodes");
        assert_eq!(r.source, "10.0.0.1", "unknown addresses stay raw");
        assert_eq!(r.destination, "ns/server");
        assert_eq!(r.endpoint, "ns/server");
        assert_eq!(r.policies, vec!["ns/deny".to_string()]);
        assert_eq!(r.protocol, "UDP");
        assert_eq!(r.reason, "policy_denied");
        assert_eq!(r.verdict, Verdict::Drop);
        assert_eq!(r.time, "1970-01-01T00:01:35.000Z");
        let r = directory()
            .resolve(&event(Direction::Egress, true), clock)
            .expect("decodes");
        assert!(r.policies.is_empty(), "no policy isolates egress");
        assert_eq!(r.verdict, Verdict::Audit);
        assert!(r.matches(Some("ns"), Some("server")));
        assert!(r.matches(Some("ns"), None));
        assert!(!r.matches(Some("other"), None));
        assert!(!r.matches(Some("ns"), Some("client")));
        let mut r = r;
        r.destination = "10.9.9.9".into();
        assert!(
            r.matches(Some("ns"), Some("server")),
            "the endpoint matches"
        );
    }

    #[test]
    fn a_spoofed_source_is_reported_as_the_address_it_forged_at_the_pod_that_sent_it() {
        let clock = Clock::at(UNIX_EPOCH, 0);
        let mut forged = event(Direction::Egress, false);
        forged.reason = DropReason::SourceSpoofed as u32;
        // The server (endpoint 3) sends as 10.0.0.1... which resolves to no
        // one; and as the address of another known pod.
        forged.src = Addr16::from_v4([10, 0, 0, 2]);
        let mut d = directory();
        d.by_endpoint.insert(
            3,
            PodRef {
                namespace: "ns".into(),
                name: "attacker".into(),
            },
        );
        let r = d.resolve(&forged, clock).expect("decodes");
        assert_eq!(r.reason, "source_spoofed");
        assert_eq!(r.source, "10.0.0.2", "not the pod that owns the address");
        assert_eq!(r.endpoint, "ns/attacker");
        assert!(r.policies.is_empty());
        assert!(r.matches(Some("ns"), Some("attacker")));
    }

    /// The server (endpoint 3, 10.0.0.2) isolated for ingress: UDP 53 from
    /// the client's identity denied by an Admin rule, TCP 80 allowed by a
    /// NetworkPolicy rule, TCP 22 denied by an entry crediting no rule.
    fn plan() -> DatapathPlan {
        use palisade_common::ids::{EndpointId, IdentityId, RuleId};

        use crate::policy::plan::{ClusterRuleOrigin, EndpointPlan, L4Match, RuleKey, RuleOrigin};
        use crate::state::cnp::{Action, Tier};

        let server = PodRef {
            namespace: "ns".into(),
            name: "server".into(),
        };
        let mut plan = DatapathPlan::default();
        plan.endpoints.insert(
            server,
            EndpointPlan {
                id: EndpointId(3),
                ipv4: Some(Ipv4Addr::new(10, 0, 0, 2)),
                ipv6: None,
                ingress_isolated: true,
                egress_isolated: false,
                audit: false,
                source_prefixes: Vec::new(),
                policies: Vec::new(),
            },
        );
        std::sync::Arc::make_mut(&mut plan.ipcache)
            .insert("10.0.0.1/32".parse().expect("net"), IdentityId(16));
        let key = |identity, l4| RuleKey {
            endpoint: EndpointId(3),
            direction: Direction::Ingress,
            identity,
            l4,
        };
        let port = |protocol, p| L4Match::Ports {
            protocol,
            first: p,
            last: p,
        };
        plan.denies
            .insert(key(IdentityId(16), port(17, 53)), RuleId(5));
        plan.rules
            .insert(key(IdentityId::ANY, port(6, 80)), RuleId(6));
        plan.denies
            .insert(key(IdentityId::ANY, port(6, 22)), RuleId::NONE);
        Arc::make_mut(&mut plan.rule_origins).insert(
            RuleId(5),
            RuleOrigin {
                policy: PolicyRef {
                    namespace: String::new(),
                    name: "block".into(),
                },
                direction: Direction::Ingress,
                index: 1,
                cluster: Some(ClusterRuleOrigin {
                    tier: Tier::Admin,
                    action: Action::Deny,
                    name: Some("no-dns".into()),
                }),
            },
        );
        Arc::make_mut(&mut plan.rule_origins).insert(
            RuleId(6),
            RuleOrigin::network_policy(
                PolicyRef {
                    namespace: "ns".into(),
                    name: "web".into(),
                },
                Direction::Ingress,
                0,
            ),
        );
        plan
    }

    #[test]
    fn a_denied_flow_names_the_rule_that_denied_it_in_the_current_plan() {
        let clock = Clock::at(UNIX_EPOCH, 0);
        let d = Directory {
            plan: plan(),
            ..directory()
        };
        let at = |protocol, port, reason: DropReason| {
            let mut e = event(Direction::Ingress, false);
            e.protocol = protocol;
            e.dst_port = port;
            e.reason = reason as u32;
            d.resolve(&e, clock).expect("decodes")
        };
        let r = at(17, 53, DropReason::PolicyDenied);
        assert_eq!(
            r.denied_by,
            Some(DeniedBy::Rule {
                tier: "admin".into(),
                namespace: String::new(),
                policy: "block".into(),
                rule: "no-dns".into(),
            })
        );
        assert!(
            r.text().contains("by admin policy block rule no-dns"),
            "{}",
            r.text()
        );
        let json = serde_json::to_value(&r).expect("json");
        assert_eq!(json["denied_by"]["by"], "rule");
        assert_eq!(json["denied_by"]["policy"], "block");
        // No entry matches: isolation did it.
        let r = at(17, 54, DropReason::PolicyDenied);
        assert_eq!(r.denied_by, Some(DeniedBy::Isolation));
        assert!(r.text().contains("by isolation, no rule allowed"));
        // A deny entry that credits no rule is isolation too.
        assert_eq!(
            at(6, 22, DropReason::PolicyRevoked).denied_by,
            Some(DeniedBy::Isolation)
        );
        // The plan allows it now (it changed since the drop): no claim.
        assert_eq!(at(6, 80, DropReason::PolicyDenied).denied_by, None);
        // Not a policy decision.
        assert_eq!(at(17, 53, DropReason::Malformed).denied_by, None);
        // An endpoint the plan does not know.
        let mut unknown = event(Direction::Egress, false);
        unknown.endpoint = 0;
        unknown.src = Addr16::from_v4([10, 0, 0, 9]);
        assert_eq!(d.resolve(&unknown, clock).expect("decodes").denied_by, None);
    }
}
