//! `palisade-cni`: a chained CNI plugin (spec 1.0: ADD, DEL, CHECK, VERSION).
//!
//! It passes the previous plugin's result through unchanged; its only effect
//! is to make ADD wait until the agent enforces the pod. A missing agent or a
//! timeout fails the ADD (configurable with `"failOpen": true`, which we do not
//! recommend: the pod would start unpoliced).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use super::DEFAULT_SOCKET;
use super::protocol::{Request, Response};
use crate::errors;

/// CNI versions this plugin speaks.
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// Default time ADD waits for the agent.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// CNI error codes (spec: well-known codes; 100+ are plugin-specific).
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Invalid necessary environment variables.
    pub const INVALID_ENV: u32 = 4;
    /// Invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// The agent did not enforce the pod in time, or refused.
    pub const NOT_ENFORCED: u32 = 100;
}

/// A CNI error, printed as the spec's error JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    /// Error code.
    pub code: u32,
    /// Short message.
    pub msg: String,
    /// Longer details.
    pub details: String,
}

impl CniError {
    fn new(code: u32, msg: &str, details: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// The spec's error object.
    pub fn to_json(&self, version: &str) -> Value {
        json!({"cniVersion": version, "code": self.code, "msg": self.msg, "details": self.details})
    }
}

/// What the plugin reads from its environment.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// `CNI_COMMAND`.
    pub command: String,
    /// `CNI_ARGS`, e.g. `K8S_POD_NAMESPACE=x;K8S_POD_NAME=y`.
    pub args: String,
}

impl Env {
    /// Reads the process environment.
    pub fn from_process() -> Env {
        let var = |k| std::env::var(k).unwrap_or_default();
        Env {
            command: var("CNI_COMMAND"),
            args: var("CNI_ARGS"),
        }
    }

    fn pod(&self) -> Result<(String, String), CniError> {
        let args: BTreeMap<&str, &str> = self
            .args
            .split(';')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        match (args.get("K8S_POD_NAMESPACE"), args.get("K8S_POD_NAME")) {
            (Some(ns), Some(name)) if !ns.is_empty() && !name.is_empty() => {
                Ok((ns.to_string(), name.to_string()))
            }
            _ => Err(CniError::new(
                code::INVALID_ENV,
                "CNI_ARGS lacks K8S_POD_NAMESPACE/K8S_POD_NAME",
                format!("CNI_ARGS={:?}", self.args),
            )),
        }
    }
}

/// The plugin's own settings in the network configuration.
struct Settings {
    socket: PathBuf,
    timeout: Duration,
    fail_open: bool,
}

fn settings(conf: &Value) -> Settings {
    Settings {
        socket: conf["socket"]
            .as_str()
            .map_or_else(|| PathBuf::from(DEFAULT_SOCKET), PathBuf::from),
        timeout: conf["timeoutSeconds"]
            .as_u64()
            .map_or(DEFAULT_TIMEOUT, Duration::from_secs),
        fail_open: conf["failOpen"].as_bool().unwrap_or(false),
    }
}

/// Why a request got no answer from the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Nothing accepted the connection.
    #[error(
        "cannot reach the palisade agent at {} (is the agent running on this node?)",
        socket.display()
    )]
    Connect {
        /// The agent's socket.
        socket: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The socket refused the read timeout.
    #[error("setting the timeout for the agent's answer")]
    SetTimeout(#[source] std::io::Error),
    /// The request did not serialize.
    #[error("encoding the request for the agent")]
    Encode(#[source] serde_json::Error),
    /// The request could not be written.
    #[error("sending to the agent")]
    Send(#[source] std::io::Error),
    /// No answer came (the timeout passed, or the agent closed the socket).
    #[error("waiting for the agent")]
    Receive(#[source] std::io::Error),
    /// The answer was not a response.
    #[error("malformed answer from the agent")]
    Decode(#[source] serde_json::Error),
}

/// Sends one request to the agent and waits for its answer.
pub fn call_agent(
    socket: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<Response, AgentError> {
    let mut stream = UnixStream::connect(socket).map_err(|source| AgentError::Connect {
        socket: socket.to_path_buf(),
        source,
    })?;
    stream
        .set_read_timeout(Some(timeout + Duration::from_secs(1)))
        .map_err(AgentError::SetTimeout)?;
    let mut line = serde_json::to_string(request).map_err(AgentError::Encode)?;
    line.push('\n');
    stream
        .write_all(line.as_bytes())
        .map_err(AgentError::Send)?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .map_err(AgentError::Receive)?;
    serde_json::from_str(&answer).map_err(AgentError::Decode)
}

/// The pod's addresses and host-side interface from a CNI result.
fn from_prev_result(prev: &Value) -> (Vec<IpAddr>, Option<String>) {
    let ips = prev["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| ip["address"].as_str())
        .filter_map(|cidr| cidr.split('/').next()?.parse().ok())
        .collect();
    // The host side is the interface without a `sandbox`.
    let host = prev["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["sandbox"].as_str().is_none_or(str::is_empty))
        .and_then(|i| i["name"].as_str())
        .map(str::to_string);
    (ips, host)
}

/// Runs one invocation: returns what to print on stdout and whether it succeeded.
pub fn run(
    env: &Env,
    stdin: &str,
    agent: impl Fn(&Path, &Request, Duration) -> Result<Response, AgentError>,
) -> (Value, bool) {
    if env.command == "VERSION" {
        return (
            json!({"cniVersion": "1.0.0", "supportedVersions": SUPPORTED_VERSIONS}),
            true,
        );
    }
    let conf: Value = match serde_json::from_str(stdin) {
        Ok(v) => v,
        Err(e) => {
            return (
                CniError::new(
                    code::INVALID_CONFIG,
                    "invalid network configuration",
                    e.to_string(),
                )
                .to_json("1.0.0"),
                false,
            );
        }
    };
    let version = conf["cniVersion"].as_str().unwrap_or("1.0.0").to_string();
    if !SUPPORTED_VERSIONS.contains(&version.as_str()) {
        let err = CniError::new(
            code::INCOMPATIBLE_VERSION,
            "unsupported CNI version",
            format!("{version} not in {SUPPORTED_VERSIONS:?}"),
        );
        return (err.to_json(&version), false);
    }
    let s = settings(&conf);
    let fail = |e: CniError| (e.to_json(&version), false);
    match env.command.as_str() {
        "ADD" => {
            let prev = conf.get("prevResult").cloned().unwrap_or(Value::Null);
            if prev.is_null() {
                return fail(CniError::new(
                    code::INVALID_CONFIG,
                    "palisade-cni is a chained plugin",
                    "no prevResult: list it after the main CNI plugin",
                ));
            }
            let (namespace, name) = match env.pod() {
                Ok(p) => p,
                Err(e) => return fail(e),
            };
            let (ips, interface) = from_prev_result(&prev);
            let request = Request::Add {
                namespace: namespace.clone(),
                name: name.clone(),
                interface,
                ips,
                timeout_ms: s.timeout.as_millis() as u64,
            };
            let outcome = agent(&s.socket, &request, s.timeout);
            let error = match outcome {
                Ok(r) if r.ok => None,
                Ok(r) => Some(r.error.unwrap_or_else(|| "not enforced".into())),
                Err(e) => Some(errors::chain(&e)),
            };
            if let Some(e) = error
                && !s.fail_open
            {
                return fail(CniError::new(
                    code::NOT_ENFORCED,
                    "the palisade agent did not enforce the pod",
                    format!("{namespace}/{name}: {e}"),
                ));
            }
            let mut result = prev;
            result["cniVersion"] = Value::String(version);
            (result, true)
        }
        "DEL" => {
            // DEL must succeed even when the agent is gone (spec: idempotent,
            // best effort); the veth disappears anyway.
            if let Ok((namespace, name)) = env.pod() {
                let _ = agent(
                    &s.socket,
                    &Request::Del { namespace, name },
                    Duration::from_secs(2),
                );
            }
            (Value::Null, true)
        }
        "CHECK" => {
            let (namespace, name) = match env.pod() {
                Ok(p) => p,
                Err(e) => return fail(e),
            };
            match agent(
                &s.socket,
                &Request::Check {
                    namespace: namespace.clone(),
                    name: name.clone(),
                },
                s.timeout,
            ) {
                Ok(r) if r.ok => (Value::Null, true),
                Ok(r) => fail(CniError::new(
                    code::NOT_ENFORCED,
                    "pod not enforced",
                    r.error.unwrap_or_default(),
                )),
                Err(e) => fail(CniError::new(
                    code::TRY_AGAIN_LATER,
                    "agent unreachable",
                    errors::chain(&e),
                )),
            }
        }
        other => fail(CniError::new(
            code::INVALID_ENV,
            "unknown CNI_COMMAND",
            format!("{other:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(command: &str) -> Env {
        Env {
            command: command.into(),
            args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=x;K8S_POD_NAME=a".into(),
        }
    }

    const CONF: &str = r#"{"cniVersion":"1.0.0","name":"k8s","type":"palisade-cni","socket":"/tmp/none.sock",
        "prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"cali1"},{"name":"eth0","sandbox":"/var/run/netns/p"}],
        "ips":[{"address":"10.0.0.5/32","interface":1},{"address":"fd00::5/128","interface":1}]}}"#;

    #[test]
    fn add_sends_the_pod_and_passes_prev_result_through() {
        let (out, ok) = run(&env("ADD"), CONF, |_, req, _| {
            assert_eq!(
                req,
                &Request::Add {
                    namespace: "x".into(),
                    name: "a".into(),
                    interface: Some("cali1".into()),
                    ips: vec![
                        "10.0.0.5".parse().expect("ip"),
                        "fd00::5".parse().expect("ip")
                    ],
                    timeout_ms: 10_000,
                }
            );
            Ok(Response::ok())
        });
        assert!(ok);
        let conf: Value = serde_json::from_str(CONF).expect("json");
        assert_eq!(out, conf["prevResult"]);
    }

    fn unreachable(socket: &Path) -> AgentError {
        AgentError::Connect {
            socket: socket.to_path_buf(),
            source: std::io::ErrorKind::NotFound.into(),
        }
    }

    #[test]
    fn add_fails_when_the_agent_is_missing_or_refuses() {
        let (out, ok) = run(&env("ADD"), CONF, |socket, _, _| Err(unreachable(socket)));
        assert!(!ok);
        assert_eq!(out["code"], code::NOT_ENFORCED);
        let details = out["details"].as_str().expect("details");
        assert!(details.contains("x/a"), "{details}");
        assert!(
            details.contains("cannot reach the palisade agent at /tmp/none.sock"),
            "{details}"
        );
        assert!(
            details.ends_with(": entity not found"),
            "the cause: {details}"
        );
        let (_, ok) = run(&env("ADD"), CONF, |_, _, _| {
            Ok(Response::error("timed out"))
        });
        assert!(!ok);
    }

    #[test]
    fn add_without_prev_result_is_a_config_error() {
        let (out, ok) = run(
            &env("ADD"),
            r#"{"cniVersion":"1.0.0","name":"k8s","type":"palisade-cni"}"#,
            |_, _, _| Ok(Response::ok()),
        );
        assert!(!ok);
        assert_eq!(out["code"], code::INVALID_CONFIG);
    }

    #[test]
    fn del_succeeds_even_without_an_agent() {
        let (_, ok) = run(&env("DEL"), CONF, |socket, _, _| Err(unreachable(socket)));
        assert!(ok);
    }

    #[test]
    fn version_lists_supported_versions() {
        let (out, ok) = run(&env("VERSION"), "", |_, _, _| {
            unreachable!("VERSION does not call the agent")
        });
        assert!(ok);
        assert!(
            out["supportedVersions"]
                .as_array()
                .expect("list")
                .iter()
                .any(|v| v == "1.0.0")
        );
    }

    #[test]
    fn missing_pod_args_is_an_env_error() {
        let mut e = env("ADD");
        e.args = "IgnoreUnknown=1".into();
        let (out, ok) = run(&e, CONF, |_, _, _| Ok(Response::ok()));
        assert!(!ok);
        assert_eq!(out["code"], code::INVALID_ENV);
    }

    #[test]
    fn unsupported_version_is_refused() {
        let (out, ok) = run(
            &env("ADD"),
            r#"{"cniVersion":"9.9.9","name":"k","type":"palisade-cni","prevResult":{}}"#,
            |_, _, _| Ok(Response::ok()),
        );
        assert!(!ok);
        assert_eq!(out["code"], code::INCOMPATIBLE_VERSION);
    }
}
