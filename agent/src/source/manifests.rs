//! A directory of manifests as the source (standalone use, demos, tests).
//!
//! Every `*.yaml`, `*.yml` and `*.json` file is read: multi-document YAML,
//! single objects and `List` objects. Dotfiles and editor temp files are never
//! read, but any change in the directory (including the atomic rename of a
//! dotfile, or a ConfigMap's `..data` symlink swap) triggers a re-read. A file
//! that fails to parse is reported with its path, and the objects it held
//! before stay in force until it parses again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use notify::{RecursiveMode, Watcher};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::{Kind, SourceEvent};
use crate::source::K8sObject;

/// How long a burst of file events may last before the directory is re-read.
const SETTLE: Duration = Duration::from_millis(50);
/// Re-read this often even without events (missed or unsupported notifications).
const RESYNC: Duration = Duration::from_secs(10);

/// Why a manifest could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The directory cannot be read.
    #[error("manifest directory {path}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The directory cannot be watched.
    #[error("watching manifest directory {path}")]
    Watch {
        /// The directory.
        path: PathBuf,
        /// What failed.
        #[source]
        source: notify::Error,
    },
    /// One document of a file is not a valid object.
    #[error("{path}: document {index}")]
    Document {
        /// The file.
        path: PathBuf,
        /// Zero-based document index within the file.
        index: usize,
        /// What is wrong.
        #[source]
        source: DocumentError,
    },
}

/// What is wrong with one document.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    /// Not JSON.
    #[error("not valid JSON")]
    Json(#[source] serde_json::Error),
    /// Not YAML.
    #[error("not valid YAML")]
    Yaml(#[source] serde_yaml::Error),
    /// No `kind` field.
    #[error("missing `kind`")]
    MissingKind,
    /// A `List` whose `items` is not an array.
    #[error("List: `items` is not an array")]
    ItemsNotArray,
    /// A known kind that does not parse as that kind.
    #[error("not a valid {kind}")]
    Invalid {
        /// The kind.
        kind: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A known kind without `metadata.name`.
    #[error("{kind}: missing `metadata.name`")]
    MissingName {
        /// The kind.
        kind: String,
    },
}

/// Whether a directory entry is a manifest (not a dotfile or temp file).
pub fn is_manifest(name: &str) -> bool {
    if name.starts_with('.') || name.starts_with('#') || name.ends_with('~') {
        return false;
    }
    [".yaml", ".yml", ".json"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

/// Parses one file's text into objects. Unknown kinds are skipped (a manifest
/// directory may hold Deployments too); malformed known kinds are errors.
pub fn parse(path: &Path, text: &str) -> Result<Vec<K8sObject>, Error> {
    let mut out = Vec::new();
    let is_json = path.extension().is_some_and(|e| e == "json");
    let docs: Vec<serde_json::Value> = if is_json {
        vec![serde_json::from_str(text).map_err(|e| Error::Document {
            path: path.to_path_buf(),
            index: 0,
            source: DocumentError::Json(e),
        })?]
    } else {
        let mut docs = Vec::new();
        for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let value = serde_json::Value::deserialize(doc).map_err(|e| Error::Document {
                path: path.to_path_buf(),
                index,
                source: DocumentError::Yaml(e),
            })?;
            docs.push(value);
        }
        docs
    };
    for (index, doc) in docs.into_iter().enumerate() {
        collect(doc, &mut out).map_err(|source| Error::Document {
            path: path.to_path_buf(),
            index,
            source,
        })?;
    }
    Ok(out)
}

fn collect(doc: serde_json::Value, out: &mut Vec<K8sObject>) -> Result<(), DocumentError> {
    if doc.is_null() {
        return Ok(());
    }
    let kind = doc
        .get("kind")
        .and_then(|k| k.as_str())
        .ok_or(DocumentError::MissingKind)?
        .to_string();
    fn typed<T: serde::de::DeserializeOwned>(
        doc: serde_json::Value,
        kind: &str,
    ) -> Result<T, DocumentError> {
        serde_json::from_value(doc).map_err(|source| DocumentError::Invalid {
            kind: kind.to_string(),
            source,
        })
    }
    let object = match kind.as_str() {
        "List" => {
            let items = match doc.get("items") {
                Some(serde_json::Value::Array(items)) => items.clone(),
                Some(serde_json::Value::Null) | None => Vec::new(),
                Some(_) => return Err(DocumentError::ItemsNotArray),
            };
            for item in items {
                collect(item, out)?;
            }
            return Ok(());
        }
        "Namespace" => K8sObject::Namespace(typed::<core::Namespace>(doc, &kind)?),
        "Pod" => K8sObject::Pod(default_namespace(typed::<core::Pod>(doc, &kind)?, |p| {
            &mut p.metadata
        })),
        "NetworkPolicy" => K8sObject::NetworkPolicy(default_namespace(
            typed::<NetworkPolicy>(doc, &kind)?,
            |p| &mut p.metadata,
        )),
        "Node" => K8sObject::Node(typed::<core::Node>(doc, &kind)?),
        "Service" => K8sObject::Service(default_namespace(
            typed::<core::Service>(doc, &kind)?,
            |p| &mut p.metadata,
        )),
        "EndpointSlice" => K8sObject::EndpointSlice(default_namespace(
            typed::<EndpointSlice>(doc, &kind)?,
            |p| &mut p.metadata,
        )),
        "ClusterNetworkPolicy" => K8sObject::ClusterNetworkPolicy(typed(doc, &kind)?),
        other => {
            tracing::debug!(
                kind = other,
                "ignoring a manifest of a kind the agent does not read"
            );
            return Ok(());
        }
    };
    let name_missing = match &object {
        K8sObject::Namespace(o) => o.metadata.name.is_none(),
        K8sObject::Pod(o) => o.metadata.name.is_none(),
        K8sObject::NetworkPolicy(o) => o.metadata.name.is_none(),
        K8sObject::Node(o) => o.metadata.name.is_none(),
        K8sObject::Service(o) => o.metadata.name.is_none(),
        K8sObject::EndpointSlice(o) => o.metadata.name.is_none(),
        K8sObject::ClusterNetworkPolicy(o) => o.metadata.name.is_none(),
    };
    if name_missing {
        return Err(DocumentError::MissingName { kind });
    }
    out.push(object);
    Ok(())
}

/// Namespaced objects without a namespace land in `default`, as with kubectl.
fn default_namespace<T>(
    mut object: T,
    meta: impl Fn(&mut T) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> T {
    let m = meta(&mut object);
    if m.namespace.as_deref().is_none_or(str::is_empty) {
        m.namespace = Some("default".into());
    }
    object
}

/// The directory's files and what each last parsed to.
#[derive(Default)]
pub struct DirState {
    files: BTreeMap<PathBuf, (Vec<u8>, Vec<K8sObject>)>,
}

/// The outcome of one re-read.
pub struct Reread {
    /// Whether any file's content changed (or appeared or vanished).
    pub changed: bool,
    /// Files that failed to parse (their previous objects stay).
    pub errors: Vec<Error>,
}

impl DirState {
    /// Re-reads the directory; files that fail keep their previous objects.
    pub fn reread(&mut self, dir: &Path) -> Result<Reread, Error> {
        let entries = std::fs::read_dir(dir).map_err(|source| Error::Directory {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut seen = Vec::new();
        let mut changed = false;
        let mut errors = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !is_manifest(name) {
                continue;
            }
            let path = entry.path();
            // Follows symlinks (ConfigMap mounts link into `..data/`).
            if !path.is_file() {
                continue;
            }
            seen.push(path.clone());
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            if self.files.get(&path).is_some_and(|(old, _)| *old == bytes) {
                continue;
            }
            let text = String::from_utf8_lossy(&bytes);
            match parse(&path, &text) {
                Ok(objects) => {
                    self.files.insert(path, (bytes, objects));
                    changed = true;
                }
                Err(e) => errors.push(e),
            }
        }
        let before = self.files.len();
        self.files.retain(|p, _| seen.contains(p));
        changed |= self.files.len() != before;
        Ok(Reread { changed, errors })
    }

    /// Every object of every file, in path order.
    pub fn objects(&self) -> Vec<K8sObject> {
        self.files
            .values()
            .flat_map(|(_, o)| o.iter().cloned())
            .collect()
    }
}

/// Watches `dir` and sends a [`SourceEvent::Replace`] after the first read and
/// after every change, until the receiver is gone.
pub async fn run(dir: PathBuf, tx: mpsc::Sender<SourceEvent>) -> Result<(), Error> {
    let (notify_tx, mut notify_rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |_res: notify::Result<notify::Event>| {
        let _ = notify_tx.send(());
    })
    .map_err(|source| Error::Watch {
        path: dir.clone(),
        source,
    })?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|source| Error::Watch {
            path: dir.clone(),
            source,
        })?;
    let mut state = DirState::default();
    let mut first = true;
    let mut was_healthy = true;
    loop {
        match state.reread(&dir) {
            Ok(reread) => {
                for e in &reread.errors {
                    tracing::error!(
                        error = crate::errors::chain(e),
                        "manifest rejected; keeping what the file held before"
                    );
                }
                let healthy = reread.errors.is_empty();
                if healthy != was_healthy || !healthy {
                    let detail = reread
                        .errors
                        .iter()
                        .map(|e| crate::errors::chain(e))
                        .collect::<Vec<_>>()
                        .join("; ");
                    if tx
                        .send(SourceEvent::Health {
                            up: healthy,
                            detail,
                        })
                        .await
                        .is_err()
                    {
                        return Ok(());
                    }
                }
                was_healthy = healthy;
                if (reread.changed || first)
                    && tx
                        .send(SourceEvent::Replace {
                            kinds: Kind::ALL.into_iter().chain(Kind::OPTIONAL).collect(),
                            objects: state.objects(),
                        })
                        .await
                        .is_err()
                {
                    return Ok(());
                }
                first = false;
            }
            Err(e) => {
                tracing::error!(
                    error = crate::errors::chain(&e),
                    "manifest directory unreadable; keeping the last state"
                );
                if tx
                    .send(SourceEvent::Health {
                        up: false,
                        detail: crate::errors::chain(&e),
                    })
                    .await
                    .is_err()
                {
                    return Ok(());
                }
                was_healthy = false;
            }
        }
        // Wait for a change (or the resync tick), then let the burst settle.
        tokio::select! {
            got = notify_rx.recv() => if got.is_none() { return Ok(()) },
            _ = tokio::time::sleep(RESYNC) => {}
        }
        tokio::time::sleep(SETTLE).await;
        while notify_rx.try_recv().is_ok() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_reads_multi_document_yaml_and_defaults_the_namespace() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: deny\nspec:\n  podSelector: {}\n---\n";
        let objects = parse(Path::new("a.yaml"), text).expect("valid");
        assert_eq!(objects.len(), 2);
        let K8sObject::NetworkPolicy(np) = &objects[1] else {
            panic!("second document is a policy")
        };
        assert_eq!(np.metadata.namespace.as_deref(), Some("default"));
    }

    #[test]
    fn parse_reads_cluster_network_policies() {
        let text = "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata:\n  name: deny-payments\nspec:\n  tier: Admin\n  priority: 10\n  subject:\n    namespaces: {}\n  ingress:\n  - action: Deny\n    from:\n    - namespaces:\n        matchLabels: {team: x}\n";
        let objects = parse(Path::new("cnp.yaml"), text).expect("valid");
        let [K8sObject::ClusterNetworkPolicy(cnp)] = objects.as_slice() else {
            panic!("one ClusterNetworkPolicy: {objects:?}")
        };
        assert_eq!(cnp.metadata.name.as_deref(), Some("deny-payments"));
        assert_eq!(cnp.spec.ingress.as_ref().map(Vec::len), Some(1));
        // Without a name it is an error, as for every kind the agent reads.
        let unnamed = text.replace("  name: deny-payments\n", "  labels: {}\n");
        assert!(parse(Path::new("cnp.yaml"), &unnamed).is_err());
    }

    #[test]
    fn parse_reads_json_lists_and_skips_unknown_kinds() {
        let text = r#"{"kind":"List","items":[{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a","namespace":"x"}},{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d"}}]}"#;
        let objects = parse(Path::new("l.json"), text).expect("valid");
        assert_eq!(objects.len(), 1);
        assert!(matches!(objects[0], K8sObject::Pod(_)));
    }

    #[test]
    fn parse_error_names_the_file_and_document() {
        let text = "kind: Namespace\nmetadata:\n  name: ok\n---\nkind: NetworkPolicy\nmetadata:\n  name: bad\nspec:\n  podSelector: 7\n";
        let err = parse(Path::new("/m/bad.yaml"), text).expect_err("invalid");
        let msg = crate::errors::chain(&err);
        assert!(
            msg.starts_with("/m/bad.yaml: document 1: not a valid NetworkPolicy: "),
            "{msg}"
        );
    }

    #[test]
    fn is_manifest_skips_dotfiles_and_temp_files() {
        assert!(is_manifest("policy.yaml"));
        assert!(is_manifest("pods.json"));
        assert!(!is_manifest(".policy.yaml.swp"));
        assert!(!is_manifest(".policy.yaml"));
        assert!(!is_manifest("policy.yaml~"));
        assert!(!is_manifest("README.md"));
    }

    #[test]
    fn a_broken_file_keeps_its_previous_objects() {
        let dir = std::env::temp_dir().join(format!("palisade-manifests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("ns.yaml");
        std::fs::write(&file, "kind: Namespace\nmetadata:\n  name: a\n").expect("write");
        let mut state = DirState::default();
        assert!(state.reread(&dir).expect("read").changed);
        std::fs::write(&file, "kind: Namespace\nmetadata: [\n").expect("write");
        let reread = state.reread(&dir).expect("read");
        assert_eq!(reread.errors.len(), 1);
        assert_eq!(state.objects().len(), 1, "the old namespace stays");
        std::fs::remove_file(&file).expect("remove");
        assert!(state.reread(&dir).expect("read").changed);
        assert!(state.objects().is_empty());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
