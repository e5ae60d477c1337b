//! Test `palisade explain` as a user runs it: a manifest directory in, a
//! verdict with the deciding policies out, and the documented exit status
//! (0 allowed, 1 denied, 2 error).

use std::path::PathBuf;
use std::process::Command;

const OBJECTS: &str = "\
apiVersion: v1
kind: Namespace
metadata: {name: x, labels: {ns: x}}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {app: a}}
spec: {nodeName: n1, containers: [{name: c, image: none}]}
status: {phase: Running, podIP: 10.0.0.1, podIPs: [{ip: 10.0.0.1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, labels: {app: b}}
spec: {nodeName: n1, containers: [{name: c, image: none, ports: [{name: http, containerPort: 8080}]}]}
status: {phase: Running, podIP: 10.0.0.2, podIPs: [{ip: 10.0.0.2}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-from-a, namespace: x}
spec:
  podSelector: {matchLabels: {app: b}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: a}}}]
    ports: [{port: http}]
";

fn manifests() -> PathBuf {
    // One directory per call: the tests run in parallel in one process.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("palisade-explain-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("objects.yaml"), OBJECTS).expect("write manifests");
    dir
}

fn explain(dir: &PathBuf, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .arg("explain")
        .arg("--manifests")
        .arg(dir)
        .args(args)
        .output()
        .expect("run palisade explain");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn explain_exit_status_and_output_name_the_deciding_policy() {
    let dir = manifests();
    let (code, text) = explain(&dir, &["--from", "x/a", "--to", "x/b", "--port", "8080"]);
    assert_eq!(code, 0, "a -> b:8080 is allowed: {text}");
    assert!(
        text.contains("b-from-a"),
        "names the allowing policy: {text}"
    );

    let (code, text) = explain(
        &dir,
        &[
            "--from", "x/b", "--to", "x/b", "--port", "9090", "--output", "json",
        ],
    );
    assert_eq!(code, 0, "a pod reaches itself: {text}");

    let (code, text) = explain(
        &dir,
        &[
            "--from", "x/a", "--to", "x/b", "--port", "9090", "--output", "json",
        ],
    );
    assert_eq!(code, 1, "a -> b:9090 is denied: {text}");
    let json: serde_json::Value =
        serde_json::from_str(text.trim()).expect("--output json prints JSON");
    assert!(
        json.to_string().contains("b-from-a"),
        "names the isolating policy: {json}"
    );

    let (code, text) = explain(&dir, &["--from", "x/nope", "--to", "x/b", "--port", "80"]);
    assert_eq!(code, 2, "an unknown pod is an error: {text}");
    assert!(text.contains("x/nope"), "the error names the pod: {text}");

    let (code, _) = explain(&dir, &["--from", "no-slash", "--to", "x/b", "--port", "80"]);
    assert_eq!(code, 2);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

/// `KUBECONFIG` is the default for `--kubeconfig`, not a value given: with
/// `--manifests` it is not a conflict. Lower-case protocols are protocols.
#[test]
fn manifests_work_beside_an_exported_kubeconfig_and_protocols_ignore_case() {
    let dir = manifests();
    let out = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .env("KUBECONFIG", "/nonexistent/a:/nonexistent/b")
        .arg("explain")
        .arg("--manifests")
        .arg(&dir)
        .args([
            "--from",
            "x/a",
            "--to",
            "x/b",
            "--port",
            "8080",
            "--protocol",
            "tcp",
        ])
        .output()
        .expect("run palisade explain");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("b-from-a"), "{text}");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

/// Output into a pipe whose reader is gone (`palisade explain ... | head -0`)
/// ends the command quietly: no panic, no backtrace.
#[test]
fn a_closed_pipe_ends_the_command_quietly() {
    let dir = manifests();
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .arg("explain")
        .arg("--manifests")
        .arg(&dir)
        .args(["--from", "x/a", "--to", "x/b", "--port", "8080"])
        .stdout(writer)
        .output()
        .expect("run palisade explain");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
