//! The real agent (`palisade run --kubeconfig`) on a virtual node, following
//! the fake API server that runs inside the node's namespace: the kernel's
//! verdicts follow watch events, relists and outages.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use palisade_tests::cluster::{AGENT_HEALTH, AGENT_METRICS, palisade_binary};
use palisade_tests::{BpffsDir, ChildGuard, Node, Pod, Server, try_wait_until};

use crate::TempDir;
use crate::fake::{FakeApiServer, Res};
use crate::objects::*;

const PORT: u16 = 80;
const PROBE: Duration = Duration::from_millis(500);
const SETTLE: Duration = Duration::from_secs(20);

/// The real agent process on a virtual node with a client and a server pod,
/// following the fake API server in the node's namespace.
///
/// Fields drop in order: the agent first (it holds the pins), then the fake,
/// the pins, the files, servers, pods and the node.
struct AgentBed {
    agent: Mutex<Option<ChildGuard>>,
    fake: FakeApiServer,
    _bpffs: BpffsDir,
    dir: TempDir,
    _echo: Server,
    client: Pod,
    server: Pod,
    node: Node,
}

impl AgentBed {
    fn new() -> AgentBed {
        let node = Node::new(0).expect("node");
        let client = node.add_pod("client").expect("client pod");
        let server = node.add_pod("server").expect("server pod");
        let echo = server.serve_tcp(PORT).expect("echo server");
        let fake = FakeApiServer::start_in(node.netns());
        fake.apply(namespace("default"));
        fake.apply(crate::objects::node(
            "node-0",
            &[node.ipv4().into(), node.ipv6().into()],
        ));
        for (name, p) in [("client", &client), ("server", &server)] {
            fake.apply(pod("default", name, "node-0", name, &p.ips()));
        }
        AgentBed {
            agent: Mutex::new(None),
            fake,
            _bpffs: BpffsDir::new().expect("bpffs directory"),
            dir: TempDir::new(),
            _echo: echo,
            client,
            server,
            node,
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("agent.log")
    }

    fn start_agent(&self) {
        let kubeconfig = self.fake.write_kubeconfig(self.dir.path());
        let log = std::fs::File::create(self.log_path()).expect("agent log");
        let mut cmd = self
            .node
            .netns()
            .command(palisade_binary().expect("the palisade binary"));
        cmd.arg("run")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--node-name", "node-0", "--bpffs"])
            .arg(self._bpffs.path())
            .args([
                "--health-addr",
                AGENT_HEALTH,
                "--metrics-addr",
                AGENT_METRICS,
            ])
            // Its own CNI socket: never the host's default path.
            .arg("--cni-socket")
            .arg(self.dir.path().join("cni.sock"))
            .env("PALISADE_LOG", "info,palisade_agent=debug")
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log);
        *self.lock_agent() = Some(ChildGuard::spawn(&mut cmd).expect("start the agent"));
    }

    fn lock_agent(&self) -> MutexGuard<'_, Option<ChildGuard>> {
        self.agent.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn agent_running(&self) -> bool {
        self.lock_agent()
            .as_mut()
            .is_some_and(ChildGuard::is_running)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Waits for `probe`, failing with the agent's log.
    #[track_caller]
    fn wait(&self, what: &str, mut probe: impl FnMut() -> bool) {
        let mut exited = false;
        let done = try_wait_until(SETTLE, || {
            exited = !self.agent_running();
            exited || probe()
        });
        if exited {
            panic!(
                "the agent exited while waiting for {what}; its log:\n{}",
                self.log()
            );
        }
        if !done {
            panic!(
                "timed out after {SETTLE:?} waiting for {what}; agent log:\n{}",
                self.log()
            );
        }
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        let addr: SocketAddr = AGENT_HEALTH.parse().expect("address");
        let path = path.to_string();
        self.node.netns().run(move || {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
            write!(s, "GET {path} HTTP/1.0\r\nHost: agent\r\n\r\n").ok()?;
            let mut text = String::new();
            s.read_to_string(&mut text).ok()?;
            let code = text.get(9..12)?.parse().ok()?;
            let body = text.split_once("\r\n\r\n")?.1.to_string();
            Some((code, body))
        })
    }

    fn status(&self) -> serde_json::Value {
        self.get("/status")
            .and_then(|(_, body)| serde_json::from_str(&body).ok())
            .unwrap_or_default()
    }

    fn reach(&self) -> [bool; 2] {
        self.server
            .ips()
            .map(|ip: IpAddr| self.client.probe_tcp(ip, PORT, PROBE).is_reachable())
    }
}

#[test]
fn the_kernel_follows_watch_events_relists_and_keeps_the_last_state_through_an_outage() {
    let bed = AgentBed::new();
    bed.start_agent();
    bed.wait(
        "the agent ready, following the API, both pods enforced",
        || {
            let s = bed.status();
            s["ready"] == true
                && s["source_up"] == true
                && s["endpoints"]
                    .as_array()
                    .is_some_and(|e| e.len() == 2 && e.iter().all(|e| e["enforced"] == true))
        },
    );
    assert_eq!(bed.reach(), [true; 2], "no policy: client -> server");

    // A default deny arriving as a watch event blocks.
    bed.fake
        .apply(deny_ingress("default", "deny-server", "server"));
    bed.wait("the watched default deny to block", || {
        bed.reach() == [false; 2]
    });
    // Its deletion as a watch event restores traffic.
    bed.fake
        .delete(Res::NetworkPolicy, "default", "deny-server");
    bed.wait("the watched deletion to restore traffic", || {
        bed.reach() == [true; 2]
    });

    // A 410 relist that no longer holds the policy removes its effect.
    bed.fake
        .apply(deny_ingress("default", "deny-server", "server"));
    bed.wait("the default deny to block again", || {
        bed.reach() == [false; 2]
    });
    bed.fake
        .delete_unannounced(Res::NetworkPolicy, "default", "deny-server");
    bed.fake.expire(Res::NetworkPolicy);
    bed.wait("the relist without the policy to restore traffic", || {
        bed.reach() == [true; 2]
    });
    assert_eq!(bed.fake.lists(Res::NetworkPolicy), 2, "one relist");

    // While the API server is unreachable the last state stays enforced and
    // the status says the source is down.
    bed.fake
        .apply(deny_ingress("default", "deny-server", "server"));
    bed.wait("the default deny to block before the outage", || {
        bed.reach() == [false; 2]
    });
    bed.fake.go_down();
    bed.wait("the status to report the source down", || {
        bed.status()["source_up"] == false
    });
    let status = bed.status();
    assert!(
        status["source_detail"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "the status says why: {status}"
    );
    for _ in 0..3 {
        assert_eq!(bed.reach(), [false; 2], "still denied during the outage");
    }
    let (code, _) = bed.get("/healthz").expect("healthz answers");
    assert_eq!(code, 200, "the agent itself stays healthy");

    bed.fake.come_up();
    bed.wait("the status to report the source up again", || {
        bed.status()["source_up"] == true
    });
    assert_eq!(bed.reach(), [false; 2], "still denied after the outage");
    // The watch resumed (no relist): a deletion arrives as an event.
    bed.fake
        .delete(Res::NetworkPolicy, "default", "deny-server");
    bed.wait("the deletion after the outage to restore traffic", || {
        bed.reach() == [true; 2]
    });
    assert_eq!(
        bed.fake.lists(Res::NetworkPolicy),
        2,
        "no relist after the outage"
    );
    assert!(
        bed.fake.unknown_requests().is_empty(),
        "requests the fake does not serve: {:?}",
        bed.fake.unknown_requests()
    );
    assert!(
        bed.agent_running(),
        "the agent kept running; log:\n{}",
        bed.log()
    );
}
