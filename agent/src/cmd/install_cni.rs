//! `palisade install-cni`: puts `palisade-cni` into the node's CNI binary
//! directory and chains it into the main CNI's configuration list (run by the
//! DaemonSet's init container; idempotent).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::cli::InstallCniArgs;

/// The plugin's `type` in a conflist.
pub const PLUGIN_TYPE: &str = "palisade-cni";

/// Appends the plugin to a conflist's `plugins` unless it is there (then its
/// settings are refreshed). Returns the new list and whether it changed.
pub fn chain(
    mut conflist: Value,
    socket: &Path,
    timeout_seconds: u64,
) -> Result<(Value, bool), String> {
    let entry = json!({"type": PLUGIN_TYPE, "socket": socket, "timeoutSeconds": timeout_seconds});
    let plugins = conflist
        .get_mut("plugins")
        .and_then(Value::as_array_mut)
        .ok_or("the configuration has no `plugins` list (not a .conflist)")?;
    if let Some(existing) = plugins.iter_mut().find(|p| p["type"] == PLUGIN_TYPE) {
        let changed = *existing != entry;
        *existing = entry;
        return Ok((conflist, changed));
    }
    plugins.push(entry);
    Ok((conflist, true))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.palisade-tmp"));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// The main CNI's configuration list: the first `*.conflist` by name, as the
/// container runtime picks it.
fn main_conflist(dir: &Path) -> Result<PathBuf, String> {
    let mut lists: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "conflist"))
        .collect();
    lists.sort();
    lists.into_iter().next().ok_or_else(|| {
        format!(
            "no *.conflist in {} yet (is the main CNI installed?)",
            dir.display()
        )
    })
}

/// Installs the plugin binary and chains it into the main conflist.
pub fn run(args: &InstallCniArgs) -> Result<(), super::Error> {
    let source = std::env::current_exe()?.with_file_name("palisade-cni");
    let bytes = std::fs::read(&source).map_err(|e| format!("{}: {e}", source.display()))?;
    let dest = args.cni_bin_dir.join("palisade-cni");
    write_atomically(&dest, &bytes).map_err(|e| format!("{}: {e}", dest.display()))?;
    std::fs::set_permissions(&dest, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let list = main_conflist(&args.cni_conf_dir)?;
    let text = std::fs::read_to_string(&list).map_err(|e| format!("{}: {e}", list.display()))?;
    let value: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", list.display()))?;
    let (chained, changed) = chain(value, &args.socket, args.timeout_seconds)
        .map_err(|e| format!("{}: {e}", list.display()))?;
    if changed {
        let mut out = serde_json::to_vec_pretty(&chained)?;
        out.push(b'\n');
        write_atomically(&list, &out).map_err(|e| format!("{}: {e}", list.display()))?;
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
    fn chain_refuses_a_single_plugin_conf() {
        assert!(chain(json!({"type": "bridge"}), Path::new("/s"), 10).is_err());
    }
}
