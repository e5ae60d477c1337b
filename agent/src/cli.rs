//! The command line: `palisade run | explain | status | flows | cleanup`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::builder::TypedValueParser as _;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::telemetry::LogFormat;

/// Palisade: Kubernetes NetworkPolicy enforcement on eBPF, beside your CNI.
#[derive(Parser, Debug)]
#[command(name = "palisade", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log filter (`error`, `warn`, `info`, `debug`, or `RUST_LOG` syntax).
    #[arg(long, global = true, env = "PALISADE_LOG", default_value = "info")]
    pub log_level: String,
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "PALISADE_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the agent (the DaemonSet process): follow the cluster or a manifest
    /// directory and enforce NetworkPolicies on this node's pods.
    Run(RunArgs),
    /// Explain whether a connection between two pods is allowed, and by which
    /// policies and rules: per direction, the ClusterNetworkPolicy tiers
    /// (Admin, then NetworkPolicy, then Baseline) with the deciding rule and
    /// every Pass on the way, and the NetworkPolicies isolating the pod.
    /// Exit status: 0 allowed, 1 denied, 2 error.
    Explain(ExplainArgs),
    /// Show the local agent's status (endpoints, policies, sync state, errors).
    Status(StatusArgs),
    /// Show denied (and audited) flows from the local agent's flow log.
    Flows(FlowsArgs),
    /// Detach every program this agent attached and remove its pinned state.
    Cleanup(CleanupArgs),
    /// Install the `palisade-cni` plugin and chain it into the node's CNI
    /// configuration (the DaemonSet's init container runs this).
    InstallCni(InstallCniArgs),
}

/// Where objects come from.
#[derive(Args, Debug, Clone)]
pub struct SourceArgs {
    /// Read objects from this directory of YAML/JSON manifests instead of a
    /// cluster (re-read on change).
    #[arg(long, env = "PALISADE_MANIFESTS", conflicts_with = "kubeconfig")]
    pub manifests: Option<PathBuf>,
    /// Kubeconfig file. Default, as kubectl: the files listed in `KUBECONFIG`
    /// (colon-separated, merged), else `~/.kube/config`, else the in-cluster
    /// service account (how the DaemonSet runs).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
}

/// `palisade run`.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// This node's name, as in `spec.nodeName` of its pods. Default: the
    /// `NODE_NAME` environment variable, then the hostname.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// The agent's bpffs directory (pinned maps and links). Two agents on one
    /// machine need two directories.
    #[arg(long, env = "PALISADE_BPFFS", default_value = "/sys/fs/bpf/palisade")]
    pub bpffs: PathBuf,
    /// How the programs attach to pod interfaces. `tcx`: tcx links, pinned in
    /// the bpffs directory (Linux 6.6 and later). `tc`: netlink clsact filters
    /// at priority 1, handle 0x9a15 on each hook (every kernel). `auto`: tcx
    /// where the kernel has it, else tc. Both keep enforcing while no agent
    /// runs; switching modes on a running node attaches the new one before
    /// removing the old.
    #[arg(long, env = "PALISADE_ATTACH", value_enum, default_value = "auto")]
    pub attach: AttachArg,
    /// Address of the Prometheus endpoint (`/metrics`).
    #[arg(long, env = "PALISADE_METRICS_ADDR", default_value = "0.0.0.0:9962")]
    pub metrics_addr: SocketAddr,
    /// Address of `/healthz`, `/readyz` and `/status`.
    #[arg(long, env = "PALISADE_HEALTH_ADDR", default_value = "0.0.0.0:9963")]
    pub health_addr: SocketAddr,
    /// Unix socket where the `palisade-cni` plugin asks the agent to enforce a
    /// pod before it starts. Empty (`--cni-socket ''`) disables it.
    #[arg(long, env = "PALISADE_CNI_SOCKET", default_value = crate::cni::DEFAULT_SOCKET,
          value_parser = clap::builder::OsStringValueParser::new().map(PathBuf::from))]
    pub cni_socket: PathBuf,
    /// Namespaces whose pods may widen the sources they send from with the
    /// annotation `palisade.dev/allowed-source-prefixes: "<cidr>[,<cidr>...]"`
    /// (VPN gateways, routers), comma-separated. Every other pod may send only
    /// from its own addresses: a packet from any other source is dropped
    /// (`source_spoofed`). Anyone who may create a pod in a listed namespace
    /// may then send as any address in the prefixes they write, and so take
    /// the identity (and the allows) of the pods there: list only namespaces
    /// whose pod creation you control. Default: none.
    #[arg(
        long,
        env = "PALISADE_SOURCE_PREFIX_NAMESPACES",
        value_delimiter = ',',
        value_name = "NAMESPACE"
    )]
    pub source_prefix_namespaces: Vec<String>,
    /// How long to gather a burst of changes into one recompile (milliseconds).
    #[arg(long, env = "PALISADE_COALESCE_MS", default_value_t = 20)]
    pub coalesce_ms: u64,
    #[command(flatten)]
    pub capacities: CapacityArgs,
}

/// `--attach`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachArg {
    /// tcx where the kernel has it (6.6+), tc otherwise.
    Auto,
    /// tcx links; refused on kernels without tcx.
    Tcx,
    /// Netlink clsact filters.
    Tc,
}

impl From<AttachArg> for crate::datapath::AttachRequest {
    fn from(arg: AttachArg) -> Self {
        match arg {
            AttachArg::Auto => Self::Auto,
            AttachArg::Tcx => Self::Tcx,
            AttachArg::Tc => Self::Tc,
        }
    }
}

/// Map capacities; a full map fails closed.
#[derive(Args, Debug, Clone)]
pub struct CapacityArgs {
    /// Local endpoints (pods on this node).
    #[arg(long, env = "PALISADE_MAX_ENDPOINTS", default_value_t = palisade_common::maps::DEFAULT_ENDPOINTS_MAX)]
    pub max_endpoints: u32,
    /// ipcache prefixes (pod IPs, ipBlock CIDRs, node addresses).
    #[arg(long, env = "PALISADE_MAX_IPCACHE", default_value_t = palisade_common::maps::DEFAULT_IPCACHE_MAX)]
    pub max_ipcache: u32,
    /// Policy entries (per endpoint, identity, direction, protocol, port block).
    #[arg(long, env = "PALISADE_MAX_POLICY", default_value_t = palisade_common::maps::DEFAULT_POLICY_MAX)]
    pub max_policy: u32,
    /// Tracked connections per address family (LRU): sizes the IPv4 and the
    /// IPv6 conntrack map alike. LRU maps are preallocated, so each costs its
    /// full size in kernel memory whether or not the node uses that family:
    /// about 112 bytes per IPv4 and 136 per IPv6 entry (29 and 36 MB at the
    /// default).
    #[arg(long, env = "PALISADE_MAX_CONNTRACK", default_value_t = palisade_common::maps::DEFAULT_CONNTRACK_MAX)]
    pub max_conntrack: u32,
}

/// `palisade explain`.
#[derive(Args, Debug, Clone)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// The client pod, `namespace/name`.
    #[arg(long)]
    pub from: String,
    /// The server pod, `namespace/name`.
    #[arg(long)]
    pub to: String,
    /// The server port.
    #[arg(long)]
    pub port: u16,
    /// The protocol (any case).
    #[arg(long, default_value = "TCP", ignore_case = true, value_parser = ["TCP", "UDP", "SCTP"])]
    pub protocol: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
}

/// `palisade status`.
#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    /// The local agent's health address.
    #[arg(long, env = "PALISADE_HEALTH_ADDR", default_value = "127.0.0.1:9963")]
    pub health_addr: SocketAddr,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
}

/// `palisade flows`.
#[derive(Args, Debug, Clone)]
pub struct FlowsArgs {
    /// The local agent's health address (it serves `/flows`).
    #[arg(long, env = "PALISADE_HEALTH_ADDR", default_value = "127.0.0.1:9963")]
    pub health_addr: SocketAddr,
    /// Only flows from or to this namespace.
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Only flows from or to this pod (combine with `--namespace`).
    #[arg(long)]
    pub pod: Option<String>,
    /// Keep printing new flows as they come (until interrupted).
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Output format: one JSON object per line, or text lines.
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
}

/// `palisade install-cni`.
#[derive(Args, Debug, Clone)]
pub struct InstallCniArgs {
    /// The node's CNI binary directory, as mounted in the container.
    #[arg(
        long,
        env = "PALISADE_CNI_BIN_DIR",
        default_value = "/host/opt/cni/bin"
    )]
    pub cni_bin_dir: PathBuf,
    /// The node's CNI configuration directory, as mounted in the container.
    #[arg(
        long,
        env = "PALISADE_CNI_CONF_DIR",
        default_value = "/host/etc/cni/net.d"
    )]
    pub cni_conf_dir: PathBuf,
    /// The agent's CNI socket as the plugin (running on the host) sees it.
    #[arg(long, env = "PALISADE_CNI_SOCKET", default_value = crate::cni::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// How long ADD waits for the agent before failing the pod's start.
    #[arg(long, default_value_t = crate::cni::plugin::DEFAULT_TIMEOUT.as_secs())]
    pub timeout_seconds: u64,
    /// Undo the install: take palisade-cni out of the main CNI configuration
    /// and remove its binary. Run it on every node when removing Palisade
    /// (deploy/uninstall/): while the plugin stays chained, every new pod's
    /// ADD waits for an agent that is gone and fails.
    #[arg(long)]
    pub uninstall: bool,
    /// After installing, keep running and restore the install whenever
    /// something undoes it, checking every SECONDS. A main CNI that rewrites
    /// its configuration (on its own restart or upgrade) drops the chain entry,
    /// and pods would then start before the agent enforces them. The DaemonSet
    /// runs this as its `cni-chain` container; it stops on SIGTERM and leaves
    /// the install in place.
    #[arg(long, value_name = "SECONDS", conflicts_with = "uninstall",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub watch_seconds: Option<u64>,
}

/// `palisade cleanup`.
#[derive(Args, Debug, Clone)]
pub struct CleanupArgs {
    /// The agent's bpffs directory.
    #[arg(long, env = "PALISADE_BPFFS", default_value = "/sys/fs/bpf/palisade")]
    pub bpffs: PathBuf,
}

/// Text for people, JSON for tools.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// A readable table or sentences.
    Text,
    /// JSON.
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_cni_socket_is_accepted_and_means_none() {
        let cli = Cli::try_parse_from(["palisade", "run", "--manifests", "/m", "--cni-socket", ""])
            .expect("--cni-socket '' parses");
        let Command::Run(args) = cli.command else {
            panic!("run")
        };
        assert!(args.cni_socket.as_os_str().is_empty());
    }

    #[test]
    fn manifests_and_an_explicit_kubeconfig_still_conflict() {
        let Err(err) =
            Cli::try_parse_from(["palisade", "run", "--manifests", "/m", "--kubeconfig", "/k"])
        else {
            panic!("both given is an error")
        };
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn attach_takes_auto_tcx_and_tc() {
        for (word, want) in [
            ("auto", AttachArg::Auto),
            ("tcx", AttachArg::Tcx),
            ("tc", AttachArg::Tc),
        ] {
            let cli =
                Cli::try_parse_from(["palisade", "run", "--manifests", "/m", "--attach", word])
                    .expect("parses");
            let Command::Run(args) = cli.command else {
                panic!("run")
            };
            assert_eq!(args.attach, want);
        }
        assert!(Cli::try_parse_from(["palisade", "run", "--attach", "xdp"]).is_err());
    }
}
