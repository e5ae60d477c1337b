//! `palisade install-cni`: puts `palisade-cni` into the node's CNI binary
//! directory and chains it into the main CNI's configuration list (run by the
//! DaemonSet's init container; idempotent). `--uninstall` undoes both (run by
//! `deploy/uninstall/`).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::cli::InstallCniArgs;

/// The plugin's `type` in a conflist.
pub const PLUGIN_TYPE: &str = "palisade-cni";

/// Appends the plugin to a conflist's `plugins` unless it is there (then the
/// settings this command owns are refreshed, and any others an operator added,
/// such as `failOpen`, kept). Returns the new list and whether it changed.
pub fn chain(
    mut conflist: Value,
    socket: &Path,
    timeout_seconds: u64,
) -> Result<(Value, bool), String> {
    let ours = json!({"type": PLUGIN_TYPE, "socket": socket, "timeoutSeconds": timeout_seconds});
    let plugins = conflist
        .get_mut("plugins")
        .and_then(Value::as_array_mut)
        .ok_or("the configuration has no `plugins` list (a single-plugin .conf cannot be chained; the main CNI must use a .conflist)")?;
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
pub fn unchain(mut conflist: Value) -> Result<(Value, bool), String> {
    let plugins = conflist
        .get_mut("plugins")
        .and_then(Value::as_array_mut)
        .ok_or("the configuration has no `plugins` list")?;
    let before = plugins.len();
    plugins.retain(|p| p["type"] != PLUGIN_TYPE);
    let changed = plugins.len() != before;
    Ok((conflist, changed))
}

/// Writes `path` whole, with `mode`, so a reader never sees it half-written
/// or not yet executable.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.palisade-tmp"));
    std::fs::write(&tmp, bytes)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, path)
}

/// The main CNI's configuration: the first `*.conf`, `*.conflist` or `*.json`
/// by name, as the container runtime picks it.
fn main_conflist(dir: &Path) -> Result<PathBuf, String> {
    let mut lists: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "conf" || e == "conflist" || e == "json")
        })
        .collect();
    lists.sort();
    lists.into_iter().next().ok_or_else(|| {
        format!(
            "no CNI configuration in {} yet (is the main CNI installed?)",
            dir.display()
        )
    })
}

/// Installs the plugin binary and chains it into the main conflist, or with
/// `--uninstall` takes both out again.
pub fn run(args: &InstallCniArgs) -> Result<(), super::Error> {
    let dest = args.cni_bin_dir.join("palisade-cni");
    if !args.uninstall {
        let source = std::env::current_exe()?.with_file_name("palisade-cni");
        let bytes = std::fs::read(&source).map_err(|e| format!("{}: {e}", source.display()))?;
        write_atomically(&dest, &bytes, 0o755).map_err(|e| format!("{}: {e}", dest.display()))?;
    }
    let list = main_conflist(&args.cni_conf_dir)?;
    let changed = rewrite(&list, |value| {
        if args.uninstall {
            unchain(value)
        } else {
            chain(value, &args.socket, args.timeout_seconds)
        }
    })?;
    if args.uninstall {
        // Only once no configuration names it: a runtime that still found it
        // chained would fail ADD on the missing binary.
        match std::fs::remove_file(&dest) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", dest.display()).into()),
        }
        println!(
            "{} {} and removed {}",
            if changed {
                "unchained palisade-cni from"
            } else {
                "found palisade-cni not chained in"
            },
            list.display(),
            dest.display()
        );
        return Ok(());
    }
    println!(
        "installed {} and {} {}",
        dest.display(),
        if changed {
            "chained it into"
        } else {
            "found it already chained in"
        },
        list.display()
    );
    Ok(())
}

/// Reads the conflist at `list`, applies `edit` and writes the result back
/// atomically when it changed. Returns whether it changed.
fn rewrite(
    list: &Path,
    edit: impl FnOnce(Value) -> Result<(Value, bool), String>,
) -> Result<bool, String> {
    let text = std::fs::read_to_string(list).map_err(|e| format!("{}: {e}", list.display()))?;
    let value: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", list.display()))?;
    let (edited, changed) = edit(value).map_err(|e| format!("{}: {e}", list.display()))?;
    if changed {
        let mut out = serde_json::to_vec_pretty(&edited).map_err(|e| e.to_string())?;
        out.push(b'\n');
        write_atomically(list, &out, 0o644).map_err(|e| format!("{}: {e}", list.display()))?;
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

    #[test]
    fn uninstall_unchains_the_main_configuration_and_removes_the_binary() {
        let root =
            std::env::temp_dir().join(format!("palisade-uninstall-cni-{}", std::process::id()));
        let (bin, conf) = (root.join("bin"), root.join("net.d"));
        std::fs::create_dir_all(&bin).expect("bin dir");
        std::fs::create_dir_all(&conf).expect("conf dir");
        let (chained, _) = chain(calico(), Path::new("/s"), 10).expect("chain");
        std::fs::write(conf.join("10-calico.conflist"), chained.to_string()).expect("conflist");
        std::fs::write(bin.join("palisade-cni"), b"plugin").expect("binary");
        let args = InstallCniArgs {
            cni_bin_dir: bin.clone(),
            cni_conf_dir: conf.clone(),
            socket: "/s".into(),
            timeout_seconds: 10,
            uninstall: true,
        };
        let result = run(&args);
        let list = std::fs::read_to_string(conf.join("10-calico.conflist"));
        let binary_left = bin.join("palisade-cni").exists();
        std::fs::remove_dir_all(&root).expect("clean up");
        result.expect("uninstall");
        let list: Value = serde_json::from_str(&list.expect("conflist")).expect("json");
        assert_eq!(list, calico());
        assert!(!binary_left, "the plugin binary is removed");
    }

    #[test]
    fn chain_refuses_a_single_plugin_conf() {
        assert!(chain(json!({"type": "bridge"}), Path::new("/s"), 10).is_err());
    }
}
