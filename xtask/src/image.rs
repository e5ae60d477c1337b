//! `cargo xtask image`: a static (musl) `palisade` and `palisade-cni` in an
//! image built from scratch with buildah (no base image pulled), saved as an
//! OCI archive; then checked by unpacking it and running `palisade --version`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::build::{OBJECT_ENV, build_ebpf, target_dir};
use crate::exec::{cargo, output, run as exec, succeeds};

const MUSL: &str = "x86_64-unknown-linux-musl";
const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Args)]
pub struct Options {
    /// Only check an existing archive.
    #[arg(long)]
    verify_only: bool,
}

fn archive_path() -> PathBuf {
    target_dir().join(format!("image/palisade-{VERSION}.oci.tar"))
}

fn buildah() -> Command {
    let mut cmd = Command::new("buildah");
    // vfs: works without overlayfs or fuse, as root on any filesystem.
    cmd.args(["--storage-driver", "vfs"]);
    cmd
}

fn ensure_tools() -> Result<()> {
    let missing: Vec<&str> = ["buildah", "musl-tools"]
        .into_iter()
        .filter(|p| {
            !output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .is_some_and(|s| s.ends_with("install ok installed"))
        })
        .collect();
    if !missing.is_empty() {
        exec(Command::new("apt-get").args(["update", "-qq"]))?;
        exec(
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    let targets =
        output(Command::new("rustup").args(["target", "list", "--installed"])).unwrap_or_default();
    if !targets.lines().any(|t| t == MUSL) {
        exec(Command::new("rustup").args(["target", "add", MUSL]))?;
    }
    // buildah refuses to run without a signature policy; accept local images.
    let policy = Path::new("/etc/containers/policy.json");
    if !policy.exists() {
        std::fs::create_dir_all("/etc/containers")?;
        std::fs::write(policy, r#"{"default":[{"type":"insecureAcceptAnything"}]}"#)?;
    }
    Ok(())
}

/// Builds the static binaries and the image archive; returns the archive path.
pub fn build() -> Result<PathBuf> {
    ensure_tools()?;
    let object = build_ebpf()?;
    exec(
        cargo()
            .args([
                "build",
                "--release",
                "--target",
                MUSL,
                "-p",
                "palisade-agent",
                "--bins",
            ])
            .env(OBJECT_ENV, &object)
            .env("CC_x86_64_unknown_linux_musl", "musl-gcc"),
    )?;
    let bins = target_dir().join(MUSL).join("release");
    let archive = archive_path();
    std::fs::create_dir_all(archive.parent().context("archive dir")?)?;
    let _ = std::fs::remove_file(&archive);
    let tag = format!("localhost/palisade:{VERSION}");
    let ctr = output(buildah().args(["from", "scratch"])).context("buildah from scratch failed")?;
    let result = (|| -> Result<()> {
        for bin in ["palisade", "palisade-cni"] {
            exec(
                buildah()
                    .args(["copy", "--chmod", "0755", &ctr])
                    .arg(bins.join(bin))
                    .arg(format!("/usr/local/bin/{bin}")),
            )?;
        }
        exec(buildah().args([
            "config",
            "--entrypoint",
            r#"["/usr/local/bin/palisade"]"#,
            "--cmd",
            "run",
            "--label",
            &format!("org.opencontainers.image.version={VERSION}"),
            "--label",
            "org.opencontainers.image.title=palisade",
            &ctr,
        ]))?;
        exec(buildah().args(["commit", "--rm", &ctr, &tag]))?;
        exec(
            buildah()
                .args(["push", &tag])
                .arg(format!("oci-archive:{}:{tag}", archive.display())),
        )?;
        Ok(())
    })();
    let _ = succeeds(buildah().args(["rm", &ctr]));
    let _ = succeeds(buildah().args(["rmi", &tag]));
    result?;
    Ok(archive)
}

/// Unpacks the archive's layers and runs the binary inside: `palisade --version`.
pub fn verify(archive: &Path) -> Result<String> {
    let dir = std::env::temp_dir().join(format!("palisade-image-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs)?;
    let result = (|| -> Result<String> {
        exec(
            Command::new("tar")
                .arg("-xf")
                .arg(archive)
                .arg("-C")
                .arg(&dir),
        )?;
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("index.json"))?)?;
        let blob = |digest: &str| dir.join("blobs").join(digest.replace(':', "/"));
        let manifest_digest = index["manifests"][0]["digest"]
            .as_str()
            .context("index has a manifest")?;
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(blob(manifest_digest))?)?;
        for layer in manifest["layers"]
            .as_array()
            .context("manifest has layers")?
        {
            let digest = layer["digest"].as_str().context("layer digest")?;
            exec(
                Command::new("tar")
                    .arg("-xf")
                    .arg(blob(digest))
                    .arg("-C")
                    .arg(&rootfs),
            )?;
        }
        // Run inside the unpacked image: it has no libc or loader, so a
        // binary that is not static fails here.
        let in_image = |bin: &str| {
            let mut cmd = Command::new("chroot");
            cmd.arg(&rootfs).arg(bin);
            cmd
        };
        let out = in_image("/usr/local/bin/palisade")
            .arg("--version")
            .output()
            .context("running palisade --version in the image (chroot)")?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() || !text.contains(VERSION) {
            bail!(
                "palisade --version in the image printed {text:?} ({}; {})",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let cni = in_image("/usr/local/bin/palisade-cni")
            .env("CNI_COMMAND", "VERSION")
            .output()
            .context("running palisade-cni VERSION in the image (chroot)")?;
        let cni_text = String::from_utf8_lossy(&cni.stdout);
        if !cni.status.success() || !cni_text.contains("supportedVersions") {
            bail!(
                "palisade-cni VERSION in the image printed {cni_text:?} ({}; {})",
                cni.status,
                String::from_utf8_lossy(&cni.stderr).trim()
            );
        }
        Ok(text)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

pub fn run(opts: Options) -> Result<()> {
    crate::exec::require_root("cargo xtask image")?;
    let archive = if opts.verify_only {
        archive_path()
    } else {
        build()?
    };
    let version = verify(&archive)?;
    println!("image: {} ({version})", archive.display());
    Ok(())
}
