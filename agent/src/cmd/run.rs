//! `palisade run`: wires source, reconcile loop, datapath and HTTP together.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::cli::RunArgs;
use crate::datapath::{Capacities, Datapath, DatapathConfig, EventReader, KernelSupport};
use crate::node::{Discovery, Unresolved};
use crate::observe::counters::Counters;
use crate::observe::flows::{self, Directory, Flows};
use crate::observe::http;
use crate::observe::metrics::Metrics;
use crate::observe::{SharedStatus, Status};
use crate::policy::plan::DatapathPlan;
use crate::reconcile::{self, Interfaces, PodInterface, Settings};
use crate::source::{self, Kind};
use crate::state::ClusterState;
use crate::state::PodRef;

/// Pod interfaces from netlink (routes, neighbours, bridge FDB).
struct NetlinkInterfaces {
    discovery: Discovery<PodRef>,
}

impl Interfaces for NetlinkInterfaces {
    async fn resolve(
        &mut self,
        pods: Vec<(PodRef, Vec<IpAddr>)>,
    ) -> BTreeMap<PodRef, Result<PodInterface, Unresolved>> {
        self.discovery
            .resolve_all(&pods)
            .await
            .into_iter()
            .map(|(pod, r)| {
                let r = r.map(|i| PodInterface {
                    ifindex: i.ifindex,
                    name: i.name,
                });
                (pod, r)
            })
            .collect()
    }

    async fn changed(&mut self) {
        if let Err(e) = self.discovery.changes().await {
            tracing::warn!(error = %crate::errors::chain(&e), "netlink notifications failed; re-resolving all pods");
        }
    }
}

fn node_name(args: &RunArgs) -> Result<String, super::Error> {
    if let Some(name) = &args.node_name {
        return Ok(name.clone());
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_err(|e| format!("no --node-name/NODE_NAME and the hostname is unreadable: {e}"))?;
    Ok(host.trim().to_string())
}

/// How long open HTTP connections may take to finish once the agent stops.
const SERVER_DRAIN: Duration = Duration::from_secs(2);

/// Runs the agent until SIGTERM or SIGINT. Pinned maps and links stay, so the
/// node keeps enforcing while the agent is away; `palisade cleanup` removes them.
pub async fn run(args: RunArgs) -> Result<(), super::Error> {
    let node_name = node_name(&args)?;
    let kernel = KernelSupport::probe();
    let attach = kernel
        .attach_mode(args.attach.into())
        .map_err(crate::datapath::Error::from)?;
    tracing::info!(kernel = %kernel.release, %attach, "kernel checked");
    let mut datapath = Datapath::load(&DatapathConfig {
        bpffs: args.bpffs.clone(),
        capacities: Capacities {
            endpoints: args.capacities.max_endpoints,
            ipcache: args.capacities.max_ipcache,
            policy: args.capacities.max_policy,
            conntrack_v4: args.capacities.max_conntrack,
            conntrack_v6: args.capacities.max_conntrack,
            ..Capacities::default()
        },
        attach,
    })?;
    let status: SharedStatus = Arc::new(RwLock::new(Status {
        node: node_name.clone(),
        attach_mode: attach.to_string(),
        // The manifest source reports only changes of health and starts
        // healthy; the API source says `up` once its initial lists arrived.
        source_up: args.source.manifests.is_some(),
        ..Status::default()
    }));
    let mut metrics = Metrics::new();
    let counters = match Counters::open(&crate::datapath::maps_dir(&args.bpffs)) {
        Ok(c) => {
            let c = Arc::new(c);
            metrics.register_counters(c.clone());
            Some(c)
        }
        Err(e) => {
            tracing::error!(error = %e, "kernel counters unavailable: /metrics lacks them");
            None
        }
    };
    let metrics = Arc::new(Mutex::new(metrics));
    let flows = Arc::new(Flows::default());
    let mut observers = Vec::new();
    if let Some(ring) = datapath.maps.events.take() {
        let events = EventReader::new(ring)?;
        let flows = flows.clone();
        let counters = counters.clone();
        observers.push(tokio::spawn(async move {
            let on_batch = move |batch: &[flows::FlowRecord]| {
                if let Some(c) = &counters {
                    c.on_flows(batch);
                }
            };
            if let Err(e) = flows::read_events(events, flows, on_batch).await {
                tracing::error!(error = %crate::errors::chain(&e), "flow event reader stopped");
            }
        }));
    }
    if let Some(c) = counters.clone() {
        // Audited-flow counts change with events: persist them shortly after.
        observers.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                let c = c.clone();
                let _ = tokio::task::spawn_blocking(move || c.persist()).await;
            }
        }));
    }

    let render_metrics: http::MetricsRender = {
        let metrics = metrics.clone();
        let status = status.clone();
        Arc::new(move || {
            let Ok(m) = metrics.lock() else {
                return String::new();
            };
            if let Ok(s) = status.read() {
                m.update(&s);
            }
            m.render()
        })
    };
    let extras = http::Extras {
        flows: Some(flows.clone()),
        pressure: counters
            .clone()
            .map(|c| -> http::PressureRead { Arc::new(move || c.pressure()) }),
    };
    let router = http::router(status.clone(), render_metrics, extras);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut servers = Vec::new();
    let mut addrs = vec![args.health_addr];
    if args.metrics_addr != args.health_addr {
        addrs.push(args.metrics_addr);
    }
    for addr in addrs {
        let listener_router = router.clone();
        let mut stop = stop_rx.clone();
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        servers.push(tokio::spawn(async move {
            let _ = axum::serve(listener, listener_router)
                .with_graceful_shutdown(async move {
                    let _ = stop.changed().await;
                })
                .await;
        }));
    }

    let (tx, rx) = mpsc::channel(1024);
    let source_task = match &args.source.manifests {
        Some(dir) => {
            let dir = dir.clone();
            tracing::info!(dir = %dir.display(), node = %node_name, "following a manifest directory");
            tokio::spawn(async move {
                if let Err(e) = source::manifests::run(dir, tx).await {
                    tracing::error!(error = %crate::errors::chain(&e), "manifest source failed");
                }
            })
        }
        None => {
            let client = source::kube::client(args.source.kubeconfig.as_deref())
                .await
                .map_err(|e| format!("cannot build a Kubernetes client: {e}"))?;
            tracing::info!(node = %node_name, "following the Kubernetes API");
            tokio::spawn(source::kube::run(client, tx))
        }
    };

    let (cni_tx, cni_rx) = mpsc::channel(64);
    let cni_task = if args.cni_socket.as_os_str().is_empty() {
        None
    } else {
        let listener = crate::cni::server::bind(&args.cni_socket).map_err(|e| {
            format!(
                "cannot listen on the CNI socket {}: {e}",
                args.cni_socket.display()
            )
        })?;
        let path = args.cni_socket.clone();
        Some(tokio::spawn(crate::cni::server::serve(
            listener, path, cni_tx,
        )))
    };
    let interfaces = NetlinkInterfaces {
        discovery: Discovery::new().await?,
    };
    let programming = metrics
        .lock()
        .map_err(|_| "metrics lock poisoned")?
        .programming_seconds
        .clone();
    let on_compiled = {
        let counters = counters.clone();
        Box::new(move |plan: &DatapathPlan| {
            if let Some(c) = &counters {
                c.before_plan(plan);
            }
        })
    };
    let on_programmed = {
        let counters = counters.clone();
        let flows = flows.clone();
        Box::new(
            move |elapsed: Duration, plan: &DatapathPlan, cluster: &ClusterState| {
                programming.observe(elapsed.as_secs_f64());
                if let Some(c) = &counters {
                    // A ClusterNetworkPolicy's ref has no namespace.
                    let cluster_policies: std::collections::BTreeSet<&str> = cluster
                        .cluster_policies()
                        .into_iter()
                        .map(|p| p.name.as_str())
                        .collect();
                    c.on_plan(plan, |p| {
                        if p.namespace.is_empty() {
                            cluster_policies.contains(p.name.as_str())
                        } else {
                            cluster.policy(p).is_some()
                        }
                    });
                }
                if let Ok(mut d) = flows.directory.write() {
                    *d = Directory::build(plan, cluster);
                }
            },
        )
    };
    let result = reconcile::run(
        Settings {
            node_name,
            coalesce: Duration::from_millis(args.coalesce_ms),
            retry: Duration::from_secs(2),
            source_prefix_namespaces: args
                .source_prefix_namespaces
                .iter()
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
                .collect(),
        },
        reconcile::Inputs {
            source: rx,
            required: Kind::ALL.to_vec(),
            cni_calls: cni_rx,
            shutdown: super::shutdown_signal(),
        },
        interfaces,
        datapath,
        status,
        reconcile::Hooks {
            on_compiled,
            on_programmed,
        },
    )
    .await;
    source_task.abort();
    for task in observers {
        task.abort();
    }
    if let Some(c) = &counters {
        c.persist();
    }
    if let Some(task) = cni_task {
        task.abort();
        let _ = std::fs::remove_file(&args.cni_socket);
    }
    let _ = stop_tx.send(true);
    // A scraper holding a request open must not hold up the exit (the
    // kubelet's grace period is the only budget), so the servers get a bound.
    for mut s in servers {
        if tokio::time::timeout(SERVER_DRAIN, &mut s).await.is_err() {
            tracing::warn!(after = ?SERVER_DRAIN, "HTTP connections still open; closing them");
            s.abort();
        }
    }
    tracing::info!(%attach, "stopped; the attached programs keep enforcing until `palisade cleanup`");
    result.map_err(Into::into)
}
