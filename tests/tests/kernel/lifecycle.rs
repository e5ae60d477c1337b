//! Test that maps are pinned: a second load (an agent restart) adopts them with
//! their entries, counters and connections, and reads back what the kernel holds.

use palisade_agent::datapath::{Capacities, Datapath, DatapathConfig};
use palisade_agent::policy::plan::L4Match;
use palisade_agent::sync::Syncer;
use palisade_common::ids::RuleId;
use palisade_common::verdict::Direction;
use palisade_tests::frames::TcpFlags;

use crate::harness::*;
use crate::protocols::{from_pod, to_pod};

#[test]
fn a_restarted_datapath_adopts_pinned_maps_and_connections() {
    let mut h = Harness::new();
    let plan = PlanBuilder::new()
        .isolate(Direction::Ingress)
        .isolate(Direction::Egress)
        .allow(
            Direction::Egress,
            PEER_ID,
            L4Match::Ports {
                protocol: 6,
                first: 80,
                last: 80,
            },
            3,
        )
        .build();
    h.apply(&plan);
    h.assert_pass(
        Direction::Egress,
        &from_pod(PEER_V4.into())
            .tcp(40000, 80, TcpFlags::SYN)
            .build(),
        "syn",
    );
    let written = h.syncer.current().clone();
    let revision = h.dp.maps.revision().expect("revision");

    let bpffs = h.dp.bpffs().to_path_buf();
    let second = Datapath::load(&DatapathConfig {
        bpffs,
        capacities: Capacities::default(),
        attach: palisade_agent::datapath::default_attach_mode(),
    })
    .expect("second load adopts the pins");
    let mut adopted = {
        let (pinned, revision) = second.maps.read_state().expect("read back");
        Syncer::adopt(pinned, revision)
    };
    assert_eq!(
        adopted.current(),
        &written,
        "the kernel holds exactly what was written"
    );
    assert_eq!(second.maps.revision().expect("revision"), revision);
    assert_eq!(
        second
            .maps
            .rule_counter(RuleId(3))
            .expect("counter")
            .packets,
        1
    );
    let reply = to_pod(PEER_V4.into())
        .tcp(80, 40000, TcpFlags::SYN | TcpFlags::ACK)
        .build();
    let verdict = second
        .test_run(Direction::Ingress, &reply, 1)
        .expect("run")
        .verdict;
    assert_eq!(
        verdict,
        palisade_common::verdict::TC_ACT_UNSPEC,
        "the connection survived the restart"
    );

    // The restarted agent's first apply of the same plan changes no entry but
    // bumps the revision: established flows are judged once more by its
    // programs, and they still pass.
    let mut second = second;
    let report = adopted
        .apply(
            &mut second.maps,
            &palisade_agent::sync::render(
                &plan,
                &std::collections::BTreeMap::from([(pod(), TEST_IFINDEX)]),
            ),
        )
        .expect("apply");
    assert_eq!(report.writes, 1, "only the revision bump");
    assert_ne!(second.maps.revision().expect("revision"), revision);
    let again = second
        .test_run(Direction::Ingress, &reply, 1)
        .expect("run")
        .verdict;
    assert_eq!(
        again,
        palisade_common::verdict::TC_ACT_UNSPEC,
        "re-checked and allowed"
    );
    // Drop control: the restarted programs still deny the reply of a
    // connection that was never opened.
    let stray = to_pod(PEER_V4.into())
        .tcp(80, 40001, TcpFlags::SYN | TcpFlags::ACK)
        .build();
    assert_eq!(
        second
            .test_run(Direction::Ingress, &stray, 1)
            .expect("run")
            .verdict,
        palisade_common::verdict::TC_ACT_SHOT,
        "reply of a connection never opened"
    );
    assert_eq!(
        adopted
            .apply(
                &mut second.maps,
                &palisade_agent::sync::render(
                    &plan,
                    &std::collections::BTreeMap::from([(pod(), TEST_IFINDEX)]),
                )
            )
            .expect("apply")
            .writes,
        0,
        "later applies of the same plan write nothing"
    );
}
