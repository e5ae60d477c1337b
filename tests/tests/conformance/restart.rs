//! The agent killed and restarted: pinned programs keep enforcing while it
//! is gone, established connections survive, and the restarted agent
//! catches up with what changed meanwhile.

use std::time::SystemTime;

use crate::fixture::*;

#[test]
fn a_killed_agent_leaves_enforcement_and_connections_alone_and_converges_after_restart() {
    let mut fx = Fixture::new();
    let allow_from = |pods: &str| {
        policy(
            "y",
            "a-from-x",
            &format!(
                "podSelector: {{matchLabels: {{pod: a}}}}\ningress:\n- from:\n  - namespaceSelector: {{matchLabels: {{ns: x}}}}\n    podSelector:\n      matchExpressions: [{{key: pod, operator: In, values: [{pods}]}}]\n  ports:\n  - port: 80"
            ),
        )
    };
    fx.apply("a-from-x", &allow_from("a"));
    let mut before = fx.reach(true);
    before.deny_ingress_to("y/a").allow("x/a", "y/a");
    fx.expect_for(&before, &[(Tcp, 80, V4)]);

    let mut conn = fx
        .pod("x/a")
        .connect_tcp(fx.ip("y/a", V4), 80, PROBE)
        .expect("x/a connects to y/a");
    assert!(conn.exchange(PROBE), "the connection works before the kill");

    fx.cluster.kill_agent(0).expect("kill the agent");
    assert!(!fx.cluster.agent_running(0), "the agent is gone");
    assert!(
        fx.cluster.status(0).is_err(),
        "nobody answers for the agent"
    );
    assert!(
        conn.exchange(PROBE),
        "the established connection keeps working while the agent is down"
    );
    // Enforcement stays exactly as it was: the denied flows stay denied.
    fx.expect_for(&before, &[(Tcp, 80, V4), (Tcp, 80, V6)]);

    // A change made while the agent is down does nothing until it is back.
    fx.cluster
        .apply_policy("a-from-x", &allow_from("a, b"))
        .expect("write policy");
    assert!(
        fx.pod("x/b")
            .probe_tcp(fx.ip("y/a", V4), 80, PROBE)
            .is_blocked(),
        "no agent, no change"
    );

    let since = SystemTime::now();
    fx.cluster.start_agent(0).expect("restart the agent");
    fx.wait_applied(since);
    let mut after = fx.reach(true);
    after
        .deny_ingress_to("y/a")
        .allow("x/a", "y/a")
        .allow("x/b", "y/a");
    fx.expect_for(&after, &[(Tcp, 80, V4), (Tcp, 80, V6)]);
    assert!(
        conn.exchange(PROBE),
        "the established connection survives the restart"
    );
    let status = fx.status(0);
    assert_eq!(
        status["endpoints"]
            .as_array()
            .expect("endpoints")
            .iter()
            .filter(|e| e["enforced"] == true)
            .count(),
        9,
        "the restarted agent enforces every pod: {status}"
    );
}
