//! Who the addresses and endpoint ids of kernel events are, from the last
//! plan programmed.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use palisade_common::addr::Addr16;
use palisade_common::event::FlowEvent;
use palisade_common::verdict::{Direction, DropReason};

use super::clock::{Clock, rfc3339};
use super::record::{FlowRecord, Verdict};
use crate::policy::plan::DatapathPlan;
use crate::state::ClusterState;
use crate::state::{PodRef, PolicyRef};

/// Pods by address and endpoint id, and the policies isolating each local
/// endpoint, from the last plan programmed.
#[derive(Debug, Default)]
pub struct Directory {
    by_ip: HashMap<IpAddr, PodRef>,
    by_endpoint: HashMap<u32, PodRef>,
    isolating: HashMap<PodRef, [Vec<PolicyRef>; 2]>,
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
}
