//! Test that `/readyz` means what is known is enforced: not ready while a
//! map is full (the agent fails closed and says so), ready again once it
//! fits, and not held back by a pod whose interface does not exist, so one
//! such pod cannot block a rollout.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use palisade_tests::cluster::{AGENT_HEALTH, applied_after};

use crate::fixture::cluster_in_x;

/// Three ports from one peer: three policy entries.
const THREE_PORTS: &str = "\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b, namespace: x}
spec:
  podSelector: {matchLabels: {app: b}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: a}}}]
    ports: [{port: 80}, {port: 81}, {port: 82}]
";

fn readyz(cluster: &palisade_tests::cluster::Cluster) -> u16 {
    cluster
        .agent_get(0, AGENT_HEALTH, "/readyz")
        .expect("readyz")
        .0
}

#[test]
fn ready_only_when_every_map_write_and_attach_succeeded_and_not_held_by_a_missing_interface() {
    let mut cluster = cluster_in_x(&["a", "b"]);
    cluster.set_agent_args(&["--max-policy", "2"]);
    let since = SystemTime::now();
    cluster.start_agents().expect("agent");
    cluster
        .wait_applied(since, Duration::from_secs(20))
        .expect("ready");
    assert_eq!(readyz(&cluster), 200, "ready with nothing to enforce");

    // A pod object whose interface is nowhere: not enforced, still ready.
    cluster
        .add_pod_object(
            0,
            "x",
            "ghost",
            &[("app", "ghost")],
            &[],
            [
                IpAddr::from([10, 244, 0, 200]),
                "fd00:244::c8".parse().expect("ip"),
            ],
        )
        .expect("ghost pod");
    let ghost = SystemTime::now();
    cluster
        .wait_status(0, Duration::from_secs(20), "the ghost pod seen", |s| {
            applied_after(s, ghost)
                && s["endpoints"].as_array().is_some_and(|e| {
                    e.iter()
                        .any(|e| e["pod"] == "x/ghost" && e["enforced"] == false)
                })
        })
        .expect("status");
    assert_eq!(
        readyz(&cluster),
        200,
        "a pod without interface does not hold readiness"
    );

    // Three entries into a map of two: fail closed, and say so.
    cluster.apply_policy("b", THREE_PORTS).expect("policy");
    cluster
        .wait_status(0, Duration::from_secs(20), "not ready: map full", |s| {
            s["ready"] == false
                && s["not_ready_reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("map is full"))
        })
        .unwrap_or_else(|e| panic!("{e}; agent log:\n{}", cluster.agent_log(0)));
    assert_eq!(readyz(&cluster), 503);

    // It fits again: ready again.
    cluster.delete_policy("b").expect("delete policy");
    cluster
        .wait_status(0, Duration::from_secs(20), "ready again", |s| {
            s["ready"] == true
        })
        .expect("status");
    assert_eq!(readyz(&cluster), 200);
}
