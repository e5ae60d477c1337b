//! The denied-flow log: a task reads `EVENTS` (the kernel's ring buffer of
//! denied and audited packets), resolves addresses to pods through the current
//! plan, logs each flow (tracing target `flows`) and keeps the most recent ones
//! in a bounded buffer that `/flows` serves (with long polling for `--follow`).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use palisade_common::addr::Addr16;
use palisade_common::event::FlowEvent;
use palisade_common::verdict::{Direction, DropReason};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::datapath::{EventReader, monotonic_ns};
use crate::policy::plan::DatapathPlan;
use crate::state::ClusterState;
use crate::state::{PodRef, PolicyRef};

/// Flows kept in memory.
pub const BUFFER: usize = 4096;

/// What happened to the flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Dropped.
    Drop,
    /// Would have been dropped; passed because the namespace is in audit mode.
    Audit,
}

impl Verdict {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Drop => "drop",
            Verdict::Audit => "audit",
        }
    }
}

/// One denied (or audited) flow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowRecord {
    /// Position in the agent's flow log (increasing, for `since`).
    pub seq: u64,
    /// Wall-clock time, RFC 3339 UTC.
    pub time: String,
    /// Direction from the local endpoint's point of view.
    pub direction: Direction,
    /// `namespace/pod`, or the address when no pod has it.
    pub source: String,
    /// `namespace/pod`, or the address when no pod has it.
    pub destination: String,
    /// Source port (0 when the protocol has none).
    pub source_port: u16,
    /// Destination port (0 when the protocol has none).
    pub destination_port: u16,
    /// `TCP`, `UDP`, `SCTP`, `ICMP`, `ICMPv6` or the protocol number.
    pub protocol: String,
    /// Why it was (or would have been) dropped.
    pub reason: String,
    /// The local endpoint, `namespace/pod` (empty when unknown).
    pub endpoint: String,
    /// Policies isolating the endpoint in this direction.
    pub policies: Vec<String>,
    /// `drop` or `audit`.
    pub verdict: Verdict,
}

impl FlowRecord {
    /// Whether the flow involves `namespace` (and `pod` in it, when given) as
    /// source, destination or the endpoint it was seen at.
    pub fn matches(&self, namespace: Option<&str>, pod: Option<&str>) -> bool {
        [&self.source, &self.destination, &self.endpoint]
            .iter()
            .any(|end| {
                let (ns, name) = end.split_once('/').unwrap_or(("", end.as_str()));
                namespace.is_none_or(|n| n == ns) && pod.is_none_or(|p| p == name)
            })
    }

    /// One line for people.
    pub fn text(&self) -> String {
        let port = |p: u16| {
            if p == 0 {
                String::new()
            } else {
                format!(":{p}")
            }
        };
        format!(
            "{} {:<5} {:<7} {}{} -> {}{} {} {} [{}]",
            self.time,
            self.verdict.as_str().to_uppercase(),
            self.direction.as_label(),
            self.source,
            port(self.source_port),
            self.destination,
            port(self.destination_port),
            self.protocol,
            self.reason,
            self.policies.join(",")
        )
    }
}

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

/// Converts the kernel's `bpf_ktime_get_ns` (CLOCK_MONOTONIC) to wall time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    wall: SystemTime,
    monotonic_ns: u64,
}

impl Clock {
    /// The clocks now.
    pub fn now() -> Clock {
        Clock {
            wall: SystemTime::now(),
            monotonic_ns: monotonic_ns(),
        }
    }

    /// A fixed pair, for tests.
    pub fn at(wall: SystemTime, monotonic_ns: u64) -> Clock {
        Clock { wall, monotonic_ns }
    }

    /// The wall time of a monotonic timestamp.
    pub fn wall_time(&self, monotonic_ns: u64) -> SystemTime {
        if monotonic_ns <= self.monotonic_ns {
            self.wall - Duration::from_nanos(self.monotonic_ns - monotonic_ns)
        } else {
            self.wall + Duration::from_nanos(monotonic_ns - self.monotonic_ns)
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar, counting in 400-year eras that start on March 1st.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The bounded in-memory log with a change signal for long polls.
#[derive(Debug)]
pub struct FlowLog {
    records: Mutex<VecDeque<FlowRecord>>,
    capacity: usize,
    /// Sequence number of the newest record (0: none yet).
    newest: watch::Sender<u64>,
}

impl Default for FlowLog {
    fn default() -> Self {
        FlowLog::new(BUFFER)
    }
}

/// What `/flows` answers.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FlowPage {
    /// Pass as `since` to get only newer flows.
    pub next: u64,
    /// Matching flows, oldest first.
    pub flows: Vec<FlowRecord>,
}

impl FlowLog {
    /// A log keeping the last `capacity` flows.
    pub fn new(capacity: usize) -> FlowLog {
        FlowLog {
            records: Mutex::new(VecDeque::with_capacity(capacity.min(BUFFER))),
            capacity,
            newest: watch::channel(0).0,
        }
    }

    /// Appends a record, numbering it; returns the numbered record.
    pub fn push(&self, mut record: FlowRecord) -> FlowRecord {
        let Ok(mut records) = self.records.lock() else {
            return record;
        };
        record.seq = records.back().map_or(*self.newest.borrow(), |r| r.seq) + 1;
        if records.len() == self.capacity {
            records.pop_front();
        }
        records.push_back(record.clone());
        self.newest.send_replace(record.seq);
        record
    }

    /// Flows after `since` matching the filter.
    pub fn since(&self, since: u64, namespace: Option<&str>, pod: Option<&str>) -> FlowPage {
        let Ok(records) = self.records.lock() else {
            return FlowPage::default();
        };
        FlowPage {
            next: records.back().map_or(since, |r| r.seq.max(since)),
            flows: records
                .iter()
                .filter(|r| r.seq > since && r.matches(namespace, pod))
                .cloned()
                .collect(),
        }
    }

    /// Like [`FlowLog::since`], but waits up to `wait` for a matching flow.
    pub async fn wait_since(
        &self,
        since: u64,
        namespace: Option<&str>,
        pod: Option<&str>,
        wait: Duration,
    ) -> FlowPage {
        let deadline = tokio::time::Instant::now() + wait;
        let mut newest = self.newest.subscribe();
        let mut from = since;
        let mut page = self.since(since, namespace, pod);
        loop {
            if !page.flows.is_empty() || tokio::time::Instant::now() >= deadline {
                page.next = page.next.max(from);
                return page;
            }
            from = page.next;
            match tokio::time::timeout_at(deadline, newest.wait_for(|n| *n > from)).await {
                Ok(Ok(_)) => {}
                _ => {
                    page.next = page.next.max(from);
                    return page;
                }
            }
            let next = self.since(from, namespace, pod);
            page = FlowPage {
                next: next.next,
                flows: next.flows,
            };
        }
    }
}

/// The flow side of observation: the directory and the log.
#[derive(Debug, Default)]
pub struct Flows {
    /// Address and endpoint resolution from the last plan.
    pub directory: RwLock<Directory>,
    /// Recent flows.
    pub log: FlowLog,
}

impl Flows {
    /// Records one kernel event: resolves, logs, stores. Returns the record.
    pub fn record(&self, event: &FlowEvent, now: Clock) -> Option<FlowRecord> {
        let record = match self.directory.read() {
            Ok(d) => d.resolve(event, now)?,
            Err(_) => return None,
        };
        let record = self.log.push(record);
        tracing::info!(
            target: "flows",
            verdict = record.verdict.as_str(),
            direction = record.direction.as_label(),
            source = %record.source,
            source_port = record.source_port,
            destination = %record.destination,
            destination_port = record.destination_port,
            protocol = %record.protocol,
            reason = %record.reason,
            policies = %record.policies.join(","),
            time = %record.time,
            "{} flow",
            if record.verdict == Verdict::Audit { "audited" } else { "denied" }
        );
        Some(record)
    }
}

/// Reads `EVENTS` until the ring buffer fails, calling `on_batch` (metrics)
/// with the flows recorded from each batch.
pub async fn read_events(
    mut events: EventReader,
    flows: Arc<Flows>,
    mut on_batch: impl FnMut(&[FlowRecord]) + Send,
) -> std::io::Result<()> {
    loop {
        let batch = events.next_batch().await?;
        let now = Clock::now();
        let records: Vec<FlowRecord> = batch.iter().filter_map(|e| flows.record(e, now)).collect();
        if !records.is_empty() {
            on_batch(&records);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_and_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(951_782_400_123); // 2000-02-29
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.123Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_767_225_599); // last second of 2025
        assert_eq!(rfc3339(t), "2025-12-31T23:59:59.000Z");
    }

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

    #[tokio::test]
    async fn the_log_is_bounded_numbered_and_long_polls() {
        let log = Arc::new(FlowLog::new(3));
        let clock = Clock::at(UNIX_EPOCH, 0);
        let rec = directory()
            .resolve(&event(Direction::Ingress, false), clock)
            .expect("decodes");
        for _ in 0..5 {
            log.push(rec.clone());
        }
        let page = log.since(0, None, None);
        assert_eq!(
            page.flows.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        assert_eq!(page.next, 5);
        let empty = log
            .wait_since(5, None, None, Duration::from_millis(20))
            .await;
        assert!(empty.flows.is_empty());
        assert_eq!(empty.next, 5);
        let waiter = {
            let log = log.clone();
            tokio::spawn(async move {
                log.wait_since(5, Some("ns"), None, Duration::from_secs(5))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        log.push(rec);
        let page = waiter.await.expect("joins");
        assert_eq!(page.flows.len(), 1);
        assert_eq!(page.flows[0].seq, 6);
    }
}
