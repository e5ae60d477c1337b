//! The Kubernetes source against a fake API server: the source alone
//! (list/watch, barrier, 410 relists, resumed and failed connections) and the
//! real agent on a virtual node whose kernel verdicts follow the API.
//! Needs root (network namespaces; the agent tests also bpffs and the
//! embedded object, as `cargo xtask test`).

mod agent;
mod fake;
mod objects;
mod source;

use std::path::{Path, PathBuf};

use palisade_tests::unique_tag;

/// A private temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let path = std::env::temp_dir().join(format!("palisade-test-kube-{}", unique_tag()));
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("removing {}: {e}", self.0.display());
        }
    }
}
