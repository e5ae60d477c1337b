//! Embeds the eBPF object built by `cargo xtask build`.
//!
//! Why xtask rather than aya-build: the object needs nightly, rust-src and
//! bpf-linker, and we want the agent (and its unit tests, clippy, docs) to build
//! on stable alone. xtask builds the object first and passes its path in
//! `PALISADE_EBPF_OBJECT`. Without it the agent embeds nothing and refuses to
//! load with an error saying how to build it; with it, the object must be newer
//! than every source file of `ebpf/` and `common/`, so a stale object can never
//! be embedded silently.
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use std::{env, fs};

fn newest_source(dir: &Path) -> Option<(SystemTime, PathBuf)> {
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let candidate = if path.is_dir() {
            newest_source(&path)
        } else {
            entry
                .metadata()
                .ok()?
                .modified()
                .ok()
                .map(|t| (t, path.clone()))
        };
        if let Some(c) = candidate
            && newest.as_ref().is_none_or(|n| c.0 > n.0)
        {
            newest = Some(c);
        }
    }
    newest
}

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let dest = out.join("palisade-ebpf.o");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    println!("cargo:rerun-if-env-changed=PALISADE_EBPF_OBJECT");
    println!("cargo:rustc-check-cfg=cfg(palisade_ebpf_embedded)");
    match env::var_os("PALISADE_EBPF_OBJECT") {
        Some(object) => {
            let object = PathBuf::from(object);
            println!("cargo:rerun-if-changed={}", object.display());
            for dir in ["ebpf/src", "common/src"] {
                println!("cargo:rerun-if-changed={}", root.join(dir).display());
            }
            let built = fs::metadata(&object)
                .and_then(|m| m.modified())
                .unwrap_or_else(|e| panic!("PALISADE_EBPF_OBJECT={}: {e}", object.display()));
            for dir in ["ebpf/src", "common/src"] {
                if let Some((changed, path)) = newest_source(&root.join(dir))
                    && changed > built
                {
                    panic!(
                        "eBPF object {} is older than {}: rebuild it with `cargo xtask build`",
                        object.display(),
                        path.display()
                    );
                }
            }
            fs::copy(&object, &dest).unwrap_or_else(|e| panic!("copy {}: {e}", object.display()));
            println!("cargo:rustc-cfg=palisade_ebpf_embedded");
        }
        None => {
            fs::write(&dest, []).expect("write empty object placeholder");
        }
    }
}
