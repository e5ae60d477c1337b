//! A virtual node with pods a, b and c, the datapath loaded in the node's
//! namespace and attached to every pod's host veth, and plans built by hand.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use palisade_agent::datapath::{
    AttachMode, Capacities, Datapath, DatapathConfig, default_attach_mode,
};
use palisade_agent::policy::plan::{DatapathPlan, EndpointPlan, L4Match, RuleKey};
use palisade_agent::state::PodRef;
use palisade_agent::sync::{Syncer, render};
use palisade_common::ids::{EndpointId, IdentityId, RuleId};
use palisade_common::verdict::Direction;
use palisade_tests::{BpffsDir, Node, Pod};

pub const PROBE: Duration = Duration::from_millis(700);
pub const PORT: u16 = 80;

pub fn pod_ref(pod: &Pod) -> PodRef {
    PodRef {
        namespace: "default".into(),
        name: pod.name().into(),
    }
}

/// Identity of pod number `i` (each pod its own identity).
pub fn identity(i: usize) -> IdentityId {
    IdentityId(16 + i as u32)
}

/// The attach mode of this test run (`PALISADE_TEST_ATTACH`), else the
/// agent's `auto`.
pub fn attach_mode() -> AttachMode {
    match palisade_tests::cluster::attach_arg().as_deref() {
        Some("tc") => AttachMode::Tc,
        Some("tcx") => AttachMode::Tcx,
        _ => default_attach_mode(),
    }
}

/// One node and its pods with the datapath loaded in this process and
/// programmed through a `Syncer` (no agent process).
pub struct DatapathBed {
    pub node: Node,
    pub pods: Vec<Pod>,
    pub dp: Option<Datapath>,
    pub syncer: Syncer,
    pub bpffs: BpffsDir,
    rules: BTreeMap<RuleKey, RuleId>,
    isolated: BTreeMap<(usize, Direction), bool>,
}

impl DatapathBed {
    pub fn new(index: u8, pods: &[&str]) -> DatapathBed {
        let node = Node::new(index).expect("node namespace");
        let pods: Vec<Pod> = pods.iter().map(|p| node.add_pod(p).expect("pod")).collect();
        let bpffs = BpffsDir::new().expect("bpffs dir");
        let mut bed = DatapathBed {
            node,
            pods,
            dp: None,
            syncer: Syncer::default(),
            bpffs,
            rules: BTreeMap::new(),
            isolated: BTreeMap::new(),
        };
        bed.load();
        bed
    }

    /// Loads (or re-loads, like a restarted agent) the datapath and attaches it.
    pub fn load(&mut self) {
        self.load_in(attach_mode());
    }

    /// [`DatapathBed::load`] in attach mode `mode`.
    pub fn load_in(&mut self, mode: AttachMode) {
        let bpffs = self.bpffs.path().to_path_buf();
        let veths: Vec<String> = self
            .pods
            .iter()
            .map(|p| p.host_veth().to_string())
            .collect();
        let dp = self.node.netns().run(move || {
            let mut dp = Datapath::load(&DatapathConfig {
                bpffs,
                capacities: Capacities::default(),
                attach: mode,
            })
            .expect("load datapath");
            for veth in &veths {
                dp.attach(veth).expect("attach to a pod veth");
            }
            dp
        });
        let (pinned, revision) = dp.maps.read_state().expect("read pinned state");
        self.syncer = Syncer::adopt(pinned, revision);
        self.dp = Some(dp);
    }

    /// Drops the datapath without detaching (an agent that died), inside the
    /// node's namespace as a real exit would: pinned links, filters and maps
    /// keep enforcing.
    pub fn crash(&mut self) {
        if let Some(dp) = self.dp.take() {
            self.node.netns().run(move || drop(dp));
        }
    }

    /// Palisade's tc filters on `hook` (`ingress` or `egress`) of pod `pod`'s
    /// host veth, as `tc` lists them.
    pub fn palisade_filters(&self, pod: usize, hook: &str) -> usize {
        let out = self
            .node
            .netns()
            .command("tc")
            .args(["filter", "show", "dev", self.pods[pod].host_veth(), hook])
            .output()
            .expect("tc filter show");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(" bpf ") && l.contains("palisade_"))
            .count()
    }

    /// Pinned tcx links of this bed.
    pub fn link_pins(&self) -> usize {
        std::fs::read_dir(self.bpffs.path().join("links"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    pub fn isolate(&mut self, pod: usize, direction: Direction) -> &mut Self {
        self.isolated.insert((pod, direction), true);
        self
    }

    pub fn allow(
        &mut self,
        pod: usize,
        direction: Direction,
        peer: usize,
        l4: L4Match,
        rule: u32,
    ) -> &mut Self {
        self.rules.insert(
            RuleKey {
                endpoint: EndpointId(pod as u32 + 1),
                direction,
                identity: identity(peer),
                l4,
            },
            RuleId(rule),
        );
        self
    }

    pub fn revoke_all(&mut self) -> &mut Self {
        self.rules.clear();
        self
    }

    pub fn plan(&self) -> DatapathPlan {
        let mut plan = DatapathPlan::default();
        for (i, pod) in self.pods.iter().enumerate() {
            plan.endpoints.insert(
                pod_ref(pod),
                EndpointPlan {
                    id: EndpointId(i as u32 + 1),
                    ipv4: Some(pod.ipv4()),
                    ipv6: Some(pod.ipv6()),
                    ingress_isolated: self.isolated.contains_key(&(i, Direction::Ingress)),
                    egress_isolated: self.isolated.contains_key(&(i, Direction::Egress)),
                    audit: false,
                    source_prefixes: Vec::new(),
                    policies: vec![],
                },
            );
            for ip in pod.ips() {
                std::sync::Arc::make_mut(&mut plan.ipcache).insert(IpNet::from(ip), identity(i));
            }
        }
        for ip in [IpAddr::V4(self.node.ipv4()), IpAddr::V6(self.node.ipv6())] {
            std::sync::Arc::make_mut(&mut plan.ipcache).insert(IpNet::from(ip), IdentityId(15));
            plan.host_addresses.insert(ip);
        }
        plan.rules = self.rules.clone().into();
        plan
    }

    /// Writes the current plan through the real render + sync path.
    pub fn apply(&mut self) {
        let plan = self.plan();
        let ifaces: BTreeMap<PodRef, u32> = self
            .pods
            .iter()
            .map(|p| (pod_ref(p), p.host_ifindex()))
            .collect();
        let state = render(&plan, &ifaces);
        let dp = self.dp.as_mut().expect("datapath loaded");
        let report = self.syncer.apply(&mut dp.maps, &state).expect("apply");
        assert!(report.complete(), "{:?}", report.map_full);
    }
}

/// A one-node cluster with namespace `x` holding one pod per name, each
/// labelled `app=<name>`.
pub fn cluster_in_x(pods: &[&str]) -> palisade_tests::cluster::Cluster {
    let mut cluster = palisade_tests::cluster::Cluster::new(1).expect("cluster");
    cluster.set_namespace("x", &[]).expect("namespace");
    for name in pods {
        cluster
            .add_pod(0, "x", name, &[("app", name)], &[])
            .expect("pod");
    }
    cluster
}
