//! The Kubernetes API as the source: one kube-runtime watcher per [`Kind`].
//!
//! Each watcher's initial list (and every relist, e.g. after `410 Gone`) is
//! buffered from `Init` to `InitDone` and sent as one [`SourceEvent::Replace`]
//! for its kind, so the agent never acts on half a list. Errors are retried with
//! the watcher's default backoff while the last state stays enforced; they are
//! reported as [`SourceEvent::Health`].

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use super::{Kind, ObjectRef, SourceEvent};
use crate::state::cluster::K8sObject;

/// Builds a client from a kubeconfig path, or in-cluster / `KUBECONFIG` defaults.
pub async fn client(kubeconfig: Option<&std::path::Path>) -> Result<Client, kube::Error> {
    match kubeconfig {
        Some(path) => {
            let kc =
                kube::config::Kubeconfig::read_from(path).map_err(kube::Error::InferKubeconfig)?;
            let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(kube::Error::InferKubeconfig)?;
            Client::try_from(config)
        }
        None => Client::try_default().await,
    }
}

/// Runs one watcher per kind until the receiver is gone.
pub async fn run(client: Client, tx: mpsc::Sender<SourceEvent>) {
    let tasks = Kind::ALL.map(|kind| {
        let client = client.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            match kind {
                Kind::Namespace => {
                    watch::<core::Namespace>(Api::all(client), kind, K8sObject::Namespace, tx).await
                }
                Kind::Pod => watch::<core::Pod>(Api::all(client), kind, K8sObject::Pod, tx).await,
                Kind::NetworkPolicy => {
                    watch::<NetworkPolicy>(Api::all(client), kind, K8sObject::NetworkPolicy, tx)
                        .await
                }
                Kind::Node => {
                    watch::<core::Node>(Api::all(client), kind, K8sObject::Node, tx).await
                }
                Kind::Service => {
                    watch::<core::Service>(Api::all(client), kind, K8sObject::Service, tx).await
                }
                Kind::EndpointSlice => {
                    watch::<EndpointSlice>(Api::all(client), kind, K8sObject::EndpointSlice, tx)
                        .await
                }
            }
        })
    });
    for task in tasks {
        let _ = task.await;
    }
}

async fn watch<K>(api: Api<K>, kind: Kind, wrap: fn(K) -> K8sObject, tx: mpsc::Sender<SourceEvent>)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut buffer: Vec<K8sObject> = Vec::new();
    let mut healthy = true;
    loop {
        let event = match stream.try_next().await {
            Ok(Some(event)) => event,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(%kind, error = %e, "watch failed; retrying with backoff, last state stays enforced");
                healthy = false;
                let detail = format!("{kind} watch: {e}");
                if tx
                    .send(SourceEvent::Health { up: false, detail })
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
        };
        if !healthy {
            healthy = true;
            if tx
                .send(SourceEvent::Health {
                    up: true,
                    detail: format!("{kind} watch recovered"),
                })
                .await
                .is_err()
            {
                return;
            }
        }
        let out = match event {
            watcher::Event::Init => {
                buffer.clear();
                None
            }
            watcher::Event::InitApply(o) => {
                buffer.push(wrap(o));
                None
            }
            watcher::Event::InitDone => Some(SourceEvent::Replace {
                kinds: vec![kind],
                objects: std::mem::take(&mut buffer),
            }),
            watcher::Event::Apply(o) => Some(SourceEvent::Apply(wrap(o))),
            watcher::Event::Delete(o) => {
                let meta = o.meta();
                Some(SourceEvent::Delete(ObjectRef {
                    kind,
                    namespace: meta.namespace.clone().unwrap_or_default(),
                    name: meta.name.clone().unwrap_or_default(),
                }))
            }
        };
        if let Some(out) = out
            && tx.send(out).await.is_err()
        {
            return;
        }
    }
}
