//! `palisade explain`: the verdict for one connection, from the same compiled
//! plan the datapath gets, with the tiered reading (Admin ClusterNetworkPolicy,
//! NetworkPolicy, Baseline) that names the deciding rule.

use std::process::ExitCode;

use crate::cli::{ExplainArgs, OutputFormat};
use crate::source::SourceEvent;
use crate::state::ClusterState;
use crate::state::PodRef;

fn pod_ref(s: &str, flag: &str) -> Result<PodRef, super::Error> {
    let (namespace, name) = s
        .split_once('/')
        .filter(|(ns, n)| !ns.is_empty() && !n.is_empty() && !n.contains('/'))
        .ok_or_else(|| format!("{flag} {s:?}: expected namespace/name"))?;
    Ok(PodRef {
        namespace: namespace.into(),
        name: name.into(),
    })
}

/// Loads the cluster state from a manifest directory.
pub fn load_manifests(dir: &std::path::Path) -> Result<ClusterState, super::Error> {
    let mut state = crate::source::manifests::DirState::default();
    let reread = state.reread(dir)?;
    if let Some(e) = reread.errors.first() {
        return Err(crate::errors::chain(e).into());
    }
    let mut cluster = ClusterState::new();
    for object in state.objects() {
        cluster.apply(&object)?;
    }
    Ok(cluster)
}

/// Loads the cluster state from the API server (one list of each kind,
/// ClusterNetworkPolicies included: where their CRD is not installed, or not
/// readable, the source lists none).
async fn load_cluster(kubeconfig: Option<&std::path::Path>) -> Result<ClusterState, super::Error> {
    let client = crate::source::kube::client(kubeconfig).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let task = tokio::spawn(crate::source::kube::run(client, tx));
    let mut cluster = ClusterState::new();
    let mut pending: std::collections::BTreeSet<_> = crate::source::Kind::ALL
        .into_iter()
        .chain(crate::source::Kind::OPTIONAL)
        .collect();
    while !pending.is_empty() {
        match rx.recv().await {
            Some(SourceEvent::Replace { kinds, objects }) => {
                for o in &objects {
                    cluster.apply(o)?;
                }
                for k in kinds {
                    pending.remove(&k);
                }
            }
            Some(SourceEvent::Health { up: false, detail }) => {
                task.abort();
                return Err(format!("cannot list from the cluster: {detail}").into());
            }
            Some(_) => {}
            None => break,
        }
    }
    task.abort();
    Ok(cluster)
}

/// Prints the explanation; the exit code says allowed (0) or denied (1).
pub async fn run(args: &ExplainArgs) -> Result<ExitCode, super::Error> {
    let from = pod_ref(&args.from, "--from")?;
    let to = pod_ref(&args.to, "--to")?;
    let cluster = match &args.source.manifests {
        Some(dir) => load_manifests(dir)?,
        None => load_cluster(args.source.kubeconfig.as_deref()).await?,
    };
    let protocol = crate::state::Protocol::parse(Some(&args.protocol.to_ascii_uppercase()))
        .ok_or("unknown protocol")?;
    let explanation = crate::policy::explain::explain(&cluster, &from, &to, protocol, args.port)?;
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&explanation)?),
        OutputFormat::Text => print!("{explanation}"),
    }
    Ok(if explanation.allowed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
