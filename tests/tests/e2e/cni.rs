//! Test the chained CNI plugin driven exactly as a container runtime drives it
//! (environment variables and stdin JSON) against a real agent: ADD returns
//! only once the pod is enforced, so its first packet is already policed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use palisade_tests::cluster::{Cluster, palisade_binary};
use serde_json::Value;

use crate::fixture::cluster_in_x;

const DENY_INGRESS: &str = "\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress]
";

fn plugin() -> PathBuf {
    palisade_binary()
        .expect("palisade binary")
        .with_file_name("palisade-cni")
}

/// Runs the plugin like a runtime: CNI_* variables, the config on stdin.
fn cni(command: &str, pod: &str, socket: &Path, prev_result: &Value) -> (bool, Value) {
    cni_with_timeout(command, pod, socket, prev_result, 10)
}

fn cni_with_timeout(
    command: &str,
    pod: &str,
    socket: &Path,
    prev_result: &Value,
    timeout_seconds: u64,
) -> (bool, Value) {
    let conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "type": "palisade-cni",
        "socket": socket,
        "timeoutSeconds": timeout_seconds,
        "prevResult": prev_result,
    });
    let mut child = Command::new(plugin())
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", "0123456789abcdef")
        .env("CNI_NETNS", "/var/run/netns/unused")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin")
        .env("CNI_ARGS", format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=x;K8S_POD_NAME={pod};K8S_POD_INFRA_CONTAINER_ID=0123"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start palisade-cni");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(conf.to_string().as_bytes())
        .expect("write config");
    let out = child.wait_with_output().expect("plugin output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = if stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&stdout).expect("plugin prints JSON")
    };
    (out.status.success(), json)
}

fn prev_result(cluster: &Cluster, pod: &str) -> Value {
    let p = &cluster.pod("x", pod).pod;
    serde_json::json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": p.host_veth()}, {"name": "eth0", "sandbox": "/var/run/netns/pod"}],
        "ips": [{"address": format!("{}/32", p.ipv4()), "interface": 1}, {"address": format!("{}/128", p.ipv6()), "interface": 1}],
    })
}

#[test]
fn add_returns_once_the_pod_is_enforced_and_its_first_packet_is_policed() {
    let mut cluster = cluster_in_x(&["client", "new"]);
    // The API server has not reported the new pod's address yet.
    cluster.set_report_ips("x", "new", false).expect("hide ips");
    cluster.apply_policy("deny", DENY_INGRESS).expect("policy");
    let _server = cluster.pod("x", "new").pod.serve_tcp(80).expect("server");
    let since = SystemTime::now();
    cluster.start_agents().expect("agent");
    cluster
        .wait_applied(since, Duration::from_secs(20))
        .expect("agent ready");

    let socket = cluster.cni_socket(0);
    let prev = prev_result(&cluster, "new");
    let (ok, out) = cni("ADD", "new", &socket, &prev);
    assert!(
        ok,
        "ADD failed: {out}\nagent log:\n{}",
        cluster.agent_log(0)
    );
    assert_eq!(
        out["ips"], prev["ips"],
        "prevResult passes through unchanged"
    );
    // Right after ADD: the first connection attempt is already denied.
    let dst = cluster.pod("x", "new").pod.ipv4().into();
    assert!(
        !cluster
            .pod("x", "client")
            .pod
            .probe_tcp(dst, 80, Duration::from_millis(500))
            .is_reachable()
    );
    let status = cluster.status(0).expect("status");
    let enforced = status["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .any(|e| e["pod"] == "x/new" && e["enforced"] == true);
    assert!(enforced, "status: {status}");

    let (ok, out) = cni("CHECK", "new", &socket, &prev);
    assert!(ok, "CHECK: {out}");
    let (ok, _) = cni("DEL", "new", &socket, &prev);
    assert!(ok, "DEL succeeds");
}

#[test]
fn add_fails_with_the_reason_when_the_agent_cannot_enforce_the_pod_in_time() {
    let mut cluster = Cluster::new(1).expect("cluster");
    cluster.set_namespace("x", &[]).expect("namespace");
    let since = SystemTime::now();
    cluster.start_agents().expect("agent");
    cluster
        .wait_applied(since, Duration::from_secs(20))
        .expect("agent ready");
    // A pod the API server never reports: the agent cannot enforce it.
    let prev = serde_json::json!({"cniVersion": "1.0.0", "interfaces": [], "ips": []});
    let started = std::time::Instant::now();
    let (ok, out) = cni_with_timeout("ADD", "unknown", &cluster.cni_socket(0), &prev, 2);
    assert!(!ok, "ADD of a pod the agent does not know: {out}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the agent waited for the pod before giving up"
    );
    let details = out["details"].as_str().expect("details");
    assert!(
        details.contains("x/unknown") && details.contains("has not seen this pod"),
        "{details}"
    );
}

#[test]
fn add_fails_with_a_clear_error_when_no_agent_is_listening() {
    let socket = std::env::temp_dir().join("palisade-test-no-agent.sock");
    let prev = serde_json::json!({"cniVersion": "1.0.0", "interfaces": [], "ips": []});
    let (ok, out) = cni("ADD", "a", &socket, &prev);
    assert!(!ok);
    assert_eq!(out["code"], 100);
    let details = out["details"].as_str().expect("details");
    assert!(
        details.contains("cannot reach the palisade agent"),
        "{details}"
    );
    // DEL is best effort and must succeed without an agent.
    let (ok, _) = cni("DEL", "a", &socket, &prev);
    assert!(ok);
}

#[test]
fn version_reports_the_supported_spec_versions() {
    let out = Command::new(plugin())
        .env_clear()
        .env("CNI_COMMAND", "VERSION")
        .output()
        .expect("run");
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["cniVersion"], "1.0.0");
    assert!(
        v["supportedVersions"]
            .as_array()
            .expect("list")
            .iter()
            .any(|s| s == "1.0.0")
    );
}
