//! One loaded datapath per test, with its own bpffs directory, and a plan
//! builder for a single endpoint under test.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::IpNet;
use palisade_agent::datapath::{Capacities, Datapath, DatapathConfig};
use palisade_agent::policy::plan::{DatapathPlan, EndpointPlan, L4Match, RuleKey, RuleOrigin};
use palisade_agent::state::{PodRef, PolicyRef};
use palisade_agent::sync::{ApplyReport, Syncer, render};
use palisade_common::ids::{EndpointId, IdentityId, RuleId};
use palisade_common::stats::StatIndex;
use palisade_common::verdict::{Direction, DropReason, TC_ACT_SHOT, TC_ACT_UNSPEC};
use palisade_tests::bpffs::BpffsDir;

/// `BPF_PROG_TEST_RUN` runs programs as if on loopback, whose ifindex is 1 in
/// every network namespace: the endpoint under test lives there.
pub const TEST_IFINDEX: u32 = 1;
pub const EP: EndpointId = EndpointId(7);
pub const POD_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const POD_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
pub const PEER_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
pub const PEER_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
pub const OTHER_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
pub const OTHER_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 3);
pub const NODE_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 255, 1);
pub const PEER_ID: IdentityId = IdentityId(20);
pub const OTHER_ID: IdentityId = IdentityId(21);
/// The node's own address has an identity by membership like any address.
pub const NODE_ID: IdentityId = IdentityId(22);

pub fn pod() -> PodRef {
    PodRef {
        namespace: "t".into(),
        name: "pod".into(),
    }
}

/// A plan for the endpoint under test: peer and other addresses in the
/// ipcache, isolation and rules as the test says.
#[derive(Clone)]
pub struct PlanBuilder {
    plan: DatapathPlan,
}

impl PlanBuilder {
    pub fn new() -> Self {
        let mut plan = DatapathPlan::default();
        plan.endpoints.insert(
            pod(),
            EndpointPlan {
                id: EP,
                ipv4: Some(POD_V4),
                ipv6: Some(POD_V6),
                ingress_isolated: false,
                egress_isolated: false,
                audit: false,
                source_prefixes: Vec::new(),
                policies: vec![],
            },
        );
        for (ip, id) in [
            (IpAddr::V4(PEER_V4), PEER_ID),
            (IpAddr::V6(PEER_V6), PEER_ID),
            (IpAddr::V4(OTHER_V4), OTHER_ID),
            (IpAddr::V6(OTHER_V6), OTHER_ID),
            (IpAddr::V4(NODE_V4), NODE_ID),
        ] {
            std::sync::Arc::make_mut(&mut plan.ipcache).insert(IpNet::from(ip), id);
        }
        plan.host_addresses.insert(IpAddr::V4(NODE_V4));
        PlanBuilder { plan }
    }

    fn ep(&mut self) -> &mut EndpointPlan {
        self.plan
            .endpoints
            .get_mut(&pod())
            .expect("endpoint under test")
    }

    pub fn isolate(mut self, direction: Direction) -> Self {
        match direction {
            Direction::Ingress => self.ep().ingress_isolated = true,
            Direction::Egress => self.ep().egress_isolated = true,
        }
        self
    }

    pub fn audit(mut self) -> Self {
        self.ep().audit = true;
        self
    }

    /// The pod may also send from `net` (its allowed source prefixes).
    pub fn source_prefix(mut self, net: &str) -> Self {
        let net = net.parse().expect("test cidr");
        self.ep().source_prefixes.push(net);
        self
    }

    /// The pod has no IPv6 address.
    pub fn ipv4_only(mut self) -> Self {
        self.ep().ipv6 = None;
        self
    }

    pub fn allow(
        mut self,
        direction: Direction,
        identity: IdentityId,
        l4: L4Match,
        rule: u32,
    ) -> Self {
        self.plan.rules.insert(
            RuleKey {
                endpoint: EP,
                direction,
                identity,
                l4,
            },
            RuleId(rule),
        );
        Arc::make_mut(&mut self.plan.rule_origins).insert(
            RuleId(rule),
            RuleOrigin::network_policy(
                PolicyRef {
                    namespace: "t".into(),
                    name: format!("p{rule}"),
                },
                direction,
                0,
            ),
        );
        self
    }

    /// A deny entry credited to `rule` (0: no rule), as a
    /// ClusterNetworkPolicy's Deny rule compiles.
    pub fn deny(
        mut self,
        direction: Direction,
        identity: IdentityId,
        l4: L4Match,
        rule: u32,
    ) -> Self {
        self.plan.denies.insert(
            RuleKey {
                endpoint: EP,
                direction,
                identity,
                l4,
            },
            RuleId(rule),
        );
        self
    }

    pub fn ipcache(mut self, net: &str, identity: IdentityId) -> Self {
        std::sync::Arc::make_mut(&mut self.plan.ipcache)
            .insert(net.parse().expect("test cidr"), identity);
        self
    }

    pub fn build(self) -> DatapathPlan {
        self.plan
    }
}

pub struct Harness {
    pub dp: Datapath,
    pub syncer: Syncer,
    // Dropped last: removes the pins (`None`: another harness owns them).
    _dir: Option<BpffsDir>,
}

impl Harness {
    pub fn new() -> Self {
        Self::with_capacities(Capacities::default())
    }

    pub fn with_capacities(capacities: Capacities) -> Self {
        let dir = BpffsDir::new().expect("bpffs directory for the test");
        let dp = Datapath::load(&DatapathConfig {
            bpffs: dir.path().to_path_buf(),
            capacities,
            attach: palisade_agent::datapath::default_attach_mode(),
        })
        .expect("load the embedded eBPF object (build with `cargo xtask test`)");
        Harness {
            dp,
            syncer: Syncer::default(),
            _dir: Some(dir),
        }
    }

    /// A second load of the object on `other`'s pins, as an agent restart or
    /// upgrade does. Drop it before `other`, which owns the directory.
    pub fn reload(other: &Harness) -> Self {
        let dp = Datapath::load(&DatapathConfig {
            bpffs: other.dp.bpffs().to_path_buf(),
            capacities: other.dp.maps.capacities,
            attach: palisade_agent::datapath::default_attach_mode(),
        })
        .expect("load the embedded eBPF object on existing pins");
        Harness {
            dp,
            syncer: Syncer::default(),
            _dir: None,
        }
    }

    /// Applies a plan through the real render + sync path.
    pub fn apply(&mut self, plan: &DatapathPlan) -> ApplyReport {
        let interfaces = BTreeMap::from([(pod(), TEST_IFINDEX)]);
        let state = render(plan, &interfaces);
        self.syncer
            .apply(&mut self.dp.maps, &state)
            .expect("apply plan")
    }

    #[track_caller]
    pub fn verdict(&self, direction: Direction, frame: &[u8]) -> i32 {
        self.dp
            .test_run(direction, frame, 1)
            .expect("BPF_PROG_TEST_RUN")
            .verdict
    }

    #[track_caller]
    pub fn assert_pass(&self, direction: Direction, frame: &[u8], what: &str) {
        assert_eq!(
            self.verdict(direction, frame),
            TC_ACT_UNSPEC,
            "expected pass: {what}"
        );
    }

    #[track_caller]
    pub fn assert_drop(&self, direction: Direction, frame: &[u8], what: &str) {
        assert_eq!(
            self.verdict(direction, frame),
            TC_ACT_SHOT,
            "expected drop: {what}"
        );
    }

    pub fn dropped(&self, direction: Direction, reason: DropReason) -> u64 {
        self.dp
            .maps
            .stat(StatIndex::Dropped(reason), direction)
            .expect("stats")
            .packets
    }

    pub fn audited(&self, direction: Direction, reason: DropReason) -> u64 {
        self.dp
            .maps
            .stat(StatIndex::Audited(reason), direction)
            .expect("stats")
            .packets
    }

    pub fn forwarded(&self, direction: Direction) -> u64 {
        self.dp
            .maps
            .stat(StatIndex::Forwarded, direction)
            .expect("stats")
            .packets
    }
}
