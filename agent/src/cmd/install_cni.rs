//! `palisade install-cni`: puts `palisade-cni` into the node's CNI binary
//! directory and chains it into the main CNI's configuration list (run by the
//! DaemonSet's init container; idempotent). `--watch-seconds` keeps it so
//! (the DaemonSet's `cni-chain` container); `--uninstall` undoes both (run by
//! `deploy/uninstall/`).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::cli::InstallCniArgs;
use crate::errors;

/// The plugin's `type` in a conflist.
pub const PLUGIN_TYPE: &str = "palisade-cni";

/// Why a conflist cannot be edited.
#[derive(Debug, thiserror::Error)]
pub enum ConflistError {
    /// [`chain`] found no `plugins` list.
    #[error(
        "the configuration has no `plugins` list (a single-plugin .conf cannot be chained; \
         the main CNI must use a .conflist)"
    )]
    CannotChain,
    /// [`unchain`] found no `plugins` list.
    #[error("the configuration has no `plugins` list")]
    NoPluginList,
}

/// Why installing or uninstalling the plugin failed; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The CNI configuration directory could not be listed.
    #[error("{}", dir.display())]
    ReadConfDir {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The directory holds no configuration yet.
    #[error("no CNI configuration in {} yet (is the main CNI installed?)", dir.display())]
    NoConfiguration {
        /// The directory.
        dir: PathBuf,
    },
    /// The plugin binary could not be put in place.
    #[error("{} -> {}", from.display(), to.display())]
    CopyBinary {
        /// The binary shipped with the agent.
        from: PathBuf,
        /// Where the container runtime looks for it.
        to: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The plugin binary could not be removed.
    #[error("{}", path.display())]
    RemoveBinary {
        /// The binary.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The conflist could not be read or written.
    #[error("{}", path.display())]
    Conflist {
        /// The conflist.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The conflist is not JSON, or the edited one did not serialize.
    #[error("{}", path.display())]
    ConflistJson {
        /// The conflist.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The conflist cannot take the edit.
    #[error("{}", path.display())]
    Edit {
        /// The conflist.
        path: PathBuf,
        /// The cause.
        #[source]
        source: ConflistError,
    },
}

/// Appends the plugin to a conflist's `plugins` unless it is there (then the
/// settings this command owns are refreshed, and any others an operator added,
/// such as `failOpen`, kept). Returns the new list and whether it changed.
pub fn chain(
    mut conflist: Value,
    socket: &Path,
    timeout_seconds: u64,
) -> Result<(Value, bool), ConflistError> {
    let ours = json!({"type": PLUGIN_TYPE, "socket": socket, "timeoutSeconds": timeout_seconds});
    let plugins = conflist
        .get_mut("plugins")
        .and_then(Value::as_array_mut)
        .ok_or(ConflistError::CannotChain)?;
    if let Some(existing) = plugins.iter_mut().find(|p| p["type"] == PLUGIN_TYPE) {
        let before = existing.clone();
        if let (Some(entry), Some(ours)) = (existing.as_object_mut(), ours.as_object()) {
            entry.extend(ours.clone());
        } else {
            *existing = ours;
        }
        let changed = *existing != before;
        return Ok((conflist, changed));
    }
    plugins.push(ours);
    Ok((conflist, true))
}

/// Removes the plugin from a conflist's `plugins`. Returns the new list and
/// whether it changed.
pub fn unchain(mut conflist: Value) -> Result<(Value, bool), ConflistError> {
    let plugins = conflist
        .get_mut("plugins")
        .and_then(Value::as_array_mut)
        .ok_or(ConflistError::NoPluginList)?;
    let before = plugins.len();
    plugins.retain(|p| p["type"] != PLUGIN_TYPE);
    let changed = plugins.len() != before;
    Ok((conflist, changed))
}

/// Replaces `path` whole, with `mode`, so a reader never sees it half-written
/// or not yet executable: `fill` writes a temporary file beside it, which is
/// then renamed over it.
fn replace_atomically(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.palisade-tmp"));
    fill(&tmp)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, path)
}

/// The main CNI's configuration: the first `*.conf`, `*.conflist` or `*.json`
/// by name, as the container runtime picks it.
fn main_conflist(dir: &Path) -> Result<PathBuf, InstallError> {
    let mut lists: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| InstallError::ReadConfDir {
            dir: dir.to_path_buf(),
            source,
        })?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "conf" || e == "conflist" || e == "json")
        })
        .collect();
    lists.sort();
    lists
        .into_iter()
        .next()
        .ok_or_else(|| InstallError::NoConfiguration {
            dir: dir.to_path_buf(),
        })
}

/// Installs the plugin binary and chains it into the main conflist, or with
/// `--uninstall` takes both out again; with `--watch-seconds` keeps them
/// installed until SIGTERM.
pub async fn run(args: &InstallCniArgs) -> Result<(), super::Error> {
    if args.uninstall {
        return uninstall(args);
    }
    let plugin = std::env::current_exe()?.with_file_name("palisade-cni");
    let done = install(args, &plugin, BinaryWrite::Always)?;
    println!(
        "installed {} and {} {}",
        done.binary.display(),
        if done.chained {
            "chained it into"
        } else {
            "found it already chained in"
        },
        done.conflist.display()
    );
    if let Some(seconds) = args.watch_seconds {
        keep_installed(
            args,
            &plugin,
            Duration::from_secs(seconds),
            super::shutdown_signal(),
        )
        .await;
    }
    Ok(())
}

/// What [`install`] did.
struct Installed {
    binary: PathBuf,
    /// Whether the binary had to be (re)written.
    copied: bool,
    conflist: PathBuf,
    /// Whether the conflist had to be (re)chained.
    chained: bool,
}

/// When [`install`] writes the plugin binary.
#[derive(Clone, Copy, PartialEq, Eq)]
enum BinaryWrite {
    /// Always: an upgrade replaces the previous version's binary.
    Always,
    /// Only when it is gone: the watch, after the first install wrote it.
    IfMissing,
}

/// Puts the plugin binary in place and chains it into the main conflist.
/// Idempotent.
fn install(
    args: &InstallCniArgs,
    plugin: &Path,
    write: BinaryWrite,
) -> Result<Installed, InstallError> {
    let binary = args.cni_bin_dir.join("palisade-cni");
    let present = write == BinaryWrite::IfMissing && binary.exists();
    if !present {
        replace_atomically(&binary, 0o755, |tmp| std::fs::copy(plugin, tmp).map(drop)).map_err(
            |source| InstallError::CopyBinary {
                from: plugin.to_path_buf(),
                to: binary.clone(),
                source,
            },
        )?;
    }
    let conflist = main_conflist(&args.cni_conf_dir)?;
    let chained = rewrite(&conflist, |value| {
        chain(value, &args.socket, args.timeout_seconds)
    })?;
    Ok(Installed {
        binary,
        copied: !present,
        conflist,
        chained,
    })
}

/// Re-runs [`install`] every `every` until `stop` resolves, saying what it
/// had to restore. A failure (the main CNI mid-rewrite, say) is logged and
/// tried again at the next check.
async fn keep_installed(
    args: &InstallCniArgs,
    plugin: &Path,
    every: Duration,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    tracing::info!(every = ?every, "watching the CNI install");
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(every) => {}
        }
        match install(args, plugin, BinaryWrite::IfMissing) {
            Ok(done) if done.copied || done.chained => tracing::warn!(
                conflist = %done.conflist.display(),
                rechained = done.chained,
                binary_restored = done.copied,
                "something undid the CNI install (a main CNI rewriting its configuration?); restored it"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(
                error = %errors::chain(&e),
                "cannot check the CNI install; trying again"
            ),
        }
    }
}

/// Unchains the plugin from the main conflist, then removes its binary.
fn uninstall(args: &InstallCniArgs) -> Result<(), super::Error> {
    let binary = args.cni_bin_dir.join("palisade-cni");
    let list = main_conflist(&args.cni_conf_dir)?;
    let changed = rewrite(&list, unchain)?;
    // Only once no configuration names it: a runtime that still found it
    // chained would fail ADD on the missing binary.
    match std::fs::remove_file(&binary) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(InstallError::RemoveBinary {
                path: binary,
                source,
            }
            .into());
        }
    }
    println!(
        "{} {} and removed {}",
        if changed {
            "unchained palisade-cni from"
        } else {
            "found palisade-cni not chained in"
        },
        list.display(),
        binary.display()
    );
    Ok(())
}

/// Reads the conflist at `list`, applies `edit` and writes the result back
/// atomically when it changed. Returns whether it changed.
fn rewrite(
    list: &Path,
    edit: impl FnOnce(Value) -> Result<(Value, bool), ConflistError>,
) -> Result<bool, InstallError> {
    let path = || list.to_path_buf();
    let io = |source: std::io::Error| InstallError::Conflist {
        path: path(),
        source,
    };
    let json = |source: serde_json::Error| InstallError::ConflistJson {
        path: path(),
        source,
    };
    let text = std::fs::read_to_string(list).map_err(io)?;
    let value: Value = serde_json::from_str(&text).map_err(json)?;
    let (edited, changed) = edit(value).map_err(|source| InstallError::Edit {
        path: path(),
        source,
    })?;
    if changed {
        let mut out = serde_json::to_vec_pretty(&edited).map_err(json)?;
        out.push(b'\n');
        replace_atomically(list, 0o644, |tmp| std::fs::write(tmp, &out)).map_err(io)?;
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calico() -> Value {
        json!({"name": "k8s-pod-network", "cniVersion": "1.0.0", "plugins": [{"type": "calico"}, {"type": "portmap"}]})
    }

    #[test]
    fn chain_appends_the_plugin_last() {
        let (out, changed) =
            chain(calico(), Path::new("/run/palisade/cni.sock"), 10).expect("chain");
        assert!(changed);
        let plugins = out["plugins"].as_array().expect("plugins");
        assert_eq!(plugins.len(), 3);
        assert_eq!(plugins[2]["type"], PLUGIN_TYPE);
        assert_eq!(plugins[2]["socket"], "/run/palisade/cni.sock");
    }

    #[test]
    fn chain_is_idempotent() {
        let (once, _) = chain(calico(), Path::new("/s"), 10).expect("chain");
        let (twice, changed) = chain(once.clone(), Path::new("/s"), 10).expect("chain");
        assert!(!changed);
        assert_eq!(once, twice);
    }

    #[test]
    fn chain_refreshes_its_settings_and_keeps_an_operators() {
        let (once, _) = chain(calico(), Path::new("/old"), 10).expect("chain");
        let mut edited = once.clone();
        edited["plugins"][2]["failOpen"] = json!(true);
        let (out, changed) = chain(edited, Path::new("/new"), 5).expect("chain");
        assert!(changed);
        let ours = &out["plugins"][2];
        assert_eq!(ours["socket"], "/new");
        assert_eq!(ours["timeoutSeconds"], 5);
        assert_eq!(ours["failOpen"], true, "{ours}");
        assert_eq!(out["plugins"].as_array().expect("plugins").len(), 3);
    }

    #[test]
    fn the_main_configuration_is_the_first_by_name_of_any_cni_extension() {
        let dir = std::env::temp_dir().join(format!("palisade-install-cni-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        for name in ["20-b.conflist", "10-a.conf", "05-notes.txt", "30-c.json"] {
            std::fs::write(dir.join(name), "{}").expect("write");
        }
        let picked = main_conflist(&dir);
        std::fs::remove_dir_all(&dir).expect("clean up");
        assert_eq!(
            picked.expect("found").file_name().expect("name"),
            "10-a.conf"
        );
    }

    #[test]
    fn unchain_removes_only_the_plugin_and_undoes_chain() {
        let (chained, _) = chain(calico(), Path::new("/s"), 10).expect("chain");
        let (out, changed) = unchain(chained).expect("unchain");
        assert!(changed);
        assert_eq!(out, calico());
        let (again, changed) = unchain(out).expect("unchain");
        assert!(!changed, "unchaining twice changes nothing");
        assert_eq!(again, calico());
    }

    /// A node's CNI directories under a fresh temporary root, with `list`
    /// as the main configuration; removed on drop.
    struct NodeDirs {
        root: PathBuf,
        args: InstallCniArgs,
    }

    impl NodeDirs {
        fn new(tag: &str, list: &Value) -> NodeDirs {
            let root = std::env::temp_dir().join(format!("palisade-{tag}-{}", std::process::id()));
            let (bin, conf) = (root.join("bin"), root.join("net.d"));
            std::fs::create_dir_all(&bin).expect("bin dir");
            std::fs::create_dir_all(&conf).expect("conf dir");
            let dirs = NodeDirs {
                root,
                args: InstallCniArgs {
                    cni_bin_dir: bin,
                    cni_conf_dir: conf,
                    socket: "/s".into(),
                    timeout_seconds: 10,
                    uninstall: false,
                    watch_seconds: None,
                },
            };
            dirs.write_list(list);
            dirs
        }

        fn list_path(&self) -> PathBuf {
            self.args.cni_conf_dir.join("10-calico.conflist")
        }

        fn write_list(&self, list: &Value) {
            std::fs::write(self.list_path(), list.to_string()).expect("conflist");
        }

        fn list(&self) -> Value {
            let text = std::fs::read_to_string(self.list_path()).expect("conflist");
            serde_json::from_str(&text).expect("json")
        }

        fn binary(&self) -> PathBuf {
            self.args.cni_bin_dir.join("palisade-cni")
        }
    }

    impl Drop for NodeDirs {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    #[test]
    fn uninstall_unchains_the_main_configuration_and_removes_the_binary() {
        let (chained, _) = chain(calico(), Path::new("/s"), 10).expect("chain");
        let dirs = NodeDirs::new("uninstall-cni", &chained);
        std::fs::write(dirs.binary(), b"plugin").expect("binary");
        uninstall(&dirs.args).expect("uninstall");
        assert_eq!(dirs.list(), calico());
        assert!(!dirs.binary().exists(), "the plugin binary is removed");
    }

    /// What a main CNI does when it restarts: writes its own configuration
    /// again, without the chain entry, and the watch puts it back.
    #[tokio::test]
    async fn the_watch_restores_a_chain_the_main_cni_wrote_over() {
        let dirs = NodeDirs::new("watch-cni", &calico());
        let plugin = dirs.root.join("plugin-source");
        std::fs::write(&plugin, b"plugin").expect("plugin");
        std::fs::write(dirs.binary(), b"previous version").expect("old binary");
        let first = install(&dirs.args, &plugin, BinaryWrite::Always).expect("install");
        assert!(first.chained && first.copied);
        assert_eq!(
            std::fs::read(dirs.binary()).expect("binary"),
            b"plugin",
            "an install replaces the previous version's binary"
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let watch = {
            let (args, plugin) = (dirs.args.clone(), plugin.clone());
            tokio::spawn(async move {
                let stop = async {
                    let _ = stopped.await;
                };
                keep_installed(&args, &plugin, Duration::from_millis(50), stop).await;
            })
        };
        dirs.write_list(&calico());
        std::fs::remove_file(dirs.binary()).expect("remove the binary");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while dirs.list()["plugins"].as_array().map(Vec::len) != Some(3) || !dirs.binary().exists()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the watch never restored the chain and the binary: {}",
                dirs.list()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(dirs.list()["plugins"][2]["type"], PLUGIN_TYPE);
        stop.send(()).expect("the watch is running");
        tokio::time::timeout(Duration::from_secs(5), watch)
            .await
            .expect("the watch stops when told")
            .expect("the watch task");
        assert_eq!(std::fs::read(dirs.binary()).expect("binary"), b"plugin");
    }

    #[test]
    fn chain_refuses_a_single_plugin_conf() {
        assert!(matches!(
            chain(json!({"type": "bridge"}), Path::new("/s"), 10),
            Err(ConflistError::CannotChain)
        ));
    }

    #[test]
    fn a_conflist_error_names_the_file_then_the_cause() {
        let dirs = NodeDirs::new("single-conf-cni", &json!({"type": "bridge"}));
        let err = rewrite(&dirs.list_path(), unchain).expect_err("no plugins list");
        assert_eq!(
            errors::chain(&err),
            format!(
                "{}: the configuration has no `plugins` list",
                dirs.list_path().display()
            )
        );
    }
}
