//! Named network namespaces owned by the bed, the unique tags that name
//! them, and the leftover scan that proves a suite cleaned up after itself.
//!
//! Every namespace the bed makes is called `plsd-<tag>-<label>` and lives
//! under `/run/netns`. The tag is unique per process (pid plus a counter),
//! so parallel tests and concurrent test processes never collide.

use std::{
    ffi::OsStr,
    fs,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};
use nix::{
    mount::{MntFlags, umount2},
    sched::{CloneFlags, setns},
};

use crate::wait::Poll;

/// Prefix of every network namespace name the bed creates.
pub const NETNS_PREFIX: &str = "plsd-";
/// Directory where `ip netns` keeps its namespace handles.
pub const NETNS_DIR: &str = "/run/netns";

/// Longest label accepted by [`NetNs::new`].
const MAX_LABEL: usize = 40;

static TAG_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Encodes `value` in lowercase base 36, left-padded with `0` to `width`.
fn base36(mut value: u64, width: usize) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(value % 36) as usize]);
        value /= 36;
        if value == 0 {
            break;
        }
    }
    while out.len() < width {
        out.push(b'0');
    }
    out.reverse();
    String::from_utf8(out).expect("invariant: base36 digits are ASCII")
}

/// Returns a tag unique within this machine for as long as this process lives.
///
/// The tag is the pid in base 36 padded to 5 characters (pid_max is at most
/// 2^22 < 36^5, so the width is fixed and pid/counter can never run into each
/// other) followed by a per-process counter in base 36: 6 characters for the
/// first 36 tags, 7 for the next 1260. Host interface names `<tag><n>` built
/// from it stay well below the kernel's 15-character limit.
pub fn unique_tag() -> String {
    let n = TAG_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{}{}",
        base36(u64::from(std::process::id()), 5),
        base36(n, 1)
    )
}

/// Serialises the first `ip netns add` of the process: that call may set up
/// the shared `/run/netns` mount, and two racing set-ups stack mounts.
static NETNS_SETUP: Mutex<()> = Mutex::new(());
/// Set once an `ip netns add` succeeded: `/run/netns` is set up from then on.
static NETNS_READY: AtomicBool = AtomicBool::new(false);

/// A named network namespace (`/run/netns/plsd-<tag>-<label>`), deleted when
/// the guard is dropped (also while unwinding from a panic).
///
/// Deleting the handle removes the namespace once nothing else holds it
/// (sockets opened inside keep it alive until they close); veth pairs with an
/// end inside it disappear together with it.
#[derive(Debug)]
pub struct NetNs {
    tag: String,
    name: String,
    path: PathBuf,
    deleted: AtomicBool,
}

impl NetNs {
    /// Creates a fresh namespace named `plsd-<unique tag>-<label>`.
    ///
    /// `label` is for humans reading `ip netns list`: 1 to 40 characters of
    /// `[A-Za-z0-9_-]`.
    pub fn new(label: &str) -> Result<Self> {
        if label.is_empty()
            || label.len() > MAX_LABEL
            || !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            bail!("invalid namespace label {label:?}: use 1-{MAX_LABEL} of [A-Za-z0-9_-]");
        }
        // A pid can be reused by a later run that finds a crashed run's
        // leftovers; a collision just moves on to the next tag.
        for _ in 0..16 {
            let tag = unique_tag();
            let name = format!("{NETNS_PREFIX}{tag}-{label}");
            let path = Path::new(NETNS_DIR).join(&name);
            if path.exists() {
                continue;
            }
            let add = || {
                Command::new("ip")
                    .args(["netns", "add", &name])
                    .output()
                    .context("running `ip netns add`")
            };
            let output = if NETNS_READY.load(Ordering::Acquire) {
                add()?
            } else {
                let _first = NETNS_SETUP
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let output = add()?;
                if output.status.success() {
                    NETNS_READY.store(true, Ordering::Release);
                }
                output
            };
            if output.status.success() {
                return Ok(Self {
                    tag,
                    name,
                    path,
                    deleted: AtomicBool::new(false),
                });
            }
            if path.exists() {
                continue;
            }
            bail!(
                "`ip netns add {name}` failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        bail!("could not find a free namespace name for label {label:?}")
    }

    /// The unique tag inside the name (also used for interface names).
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The namespace name, as shown by `ip netns list`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace handle, `/run/netns/<name>`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a fresh thread that has entered this namespace and returns
    /// its result. Sockets created by `f` belong to this namespace for their
    /// whole life, so they can be handed back and used from any thread.
    ///
    /// A panic in `f` is resumed on the caller's thread. Panics if the thread
    /// cannot enter the namespace (the bed runs as root, so that means the
    /// namespace is gone: a bug in the test).
    pub fn run<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        match self.try_run(f) {
            Ok(r) => r,
            Err(e) => panic!("invariant: entering namespace {} works: {e:#}", self.name),
        }
    }

    /// Like [`NetNs::run`], but reports a failure to enter the namespace as
    /// an error instead of panicking.
    pub fn try_run<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let handle = fs::File::open(&self.path)
            .with_context(|| format!("opening {}", self.path.display()))?;
        std::thread::scope(|scope| {
            let thread = std::thread::Builder::new()
                .name(format!("in-{}", self.name))
                .spawn_scoped(scope, move || -> Result<R> {
                    setns(&handle, CloneFlags::CLONE_NEWNET)
                        .with_context(|| format!("setns into {}", self.name))?;
                    drop(handle);
                    Ok(f())
                })
                .context("spawning a namespace thread")?;
            match thread.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// A command that runs `program` inside this namespace, through
    /// `nsenter --net=/run/netns/<name>`. Unlike `ip netns exec` it leaves
    /// the mounts alone, so `/sys/fs/bpf` stays visible to the program.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut net = std::ffi::OsString::from("--net=");
        net.push(self.path.as_os_str());
        let mut cmd = Command::new("nsenter");
        cmd.arg(net).arg("--").arg(program);
        cmd
    }

    /// Runs `ip ARGS...` inside the namespace and returns its stdout; a
    /// failure is an error naming the command and its stderr.
    pub fn ip<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command("ip");
        cmd.args(args);
        let output = cmd.output().with_context(|| format!("running {cmd:?}"))?;
        if !output.status.success() {
            bail!(
                "{cmd:?} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Runs several `ip` commands (one per line, without the leading `ip`)
    /// in a single `ip -batch -` process inside the namespace. Stops at the
    /// first failing line, which the error names.
    pub fn ip_batch<S: AsRef<str>>(&self, lines: &[S]) -> Result<()> {
        let script: String = lines.iter().map(|l| format!("{}\n", l.as_ref())).collect();
        let mut cmd = self.command("ip");
        cmd.args(["-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
        {
            let mut stdin = child
                .stdin
                .take()
                .expect("invariant: stdin was requested as a pipe");
            stdin
                .write_all(script.as_bytes())
                .context("writing the ip batch")?;
        }
        let output = child.wait_with_output().context("waiting for ip -batch")?;
        if !output.status.success() {
            bail!(
                "ip -batch in {} failed ({}): {}\nbatch was:\n{script}",
                self.name,
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    /// Sets sysctls inside the namespace. Keys are dotted
    /// (`net.ipv4.ip_forward`) and are written under `/proc/sys`, which
    /// shows the namespace of the writing thread.
    pub fn sysctls(&self, settings: &[(&str, &str)]) -> Result<()> {
        self.try_run(|| -> Result<()> {
            for (key, value) in settings {
                let path = Path::new("/proc/sys").join(key.replace('.', "/"));
                fs::write(&path, value)
                    .with_context(|| format!("sysctl {key}={value} in {}", self.name))?;
            }
            Ok(())
        })?
    }

    /// Waits until interface `ifname` is operationally up (`lo`: just up)
    /// and none of its addresses is still tentative.
    ///
    /// A veth end that was set up before its peer gets its carrier through
    /// the kernel's asynchronous link watcher; until that has run the device
    /// still has its no-op qdisc and silently drops what is sent to it (and
    /// IPv6 keeps its addresses tentative, even `nodad` ones, until a worker
    /// has run). Waiting here keeps a test's first packet from vanishing and
    /// lets later commands use the addresses as route sources.
    pub fn wait_link_ready(&self, ifname: &str, timeout: Duration) -> Result<()> {
        let ready = |shown: &Result<String>| {
            shown.as_ref().is_ok_and(|shown| {
                // Loopback has no carrier and reports its state as UNKNOWN.
                let up = shown.contains(" state UP ") || shown.contains("link/loopback");
                up && !shown.contains("tentative")
            })
        };
        // A failing `ip` ends the wait at once, as a ready link does.
        let shown = Poll::new(format!("{ifname} in {} not ready", self.name), timeout)
            .every(Duration::from_millis(5))
            .until(
                || self.ip(["addr", "show", "dev", ifname]),
                |shown| shown.is_err() || ready(shown),
            )
            .map_err(|timed_out| {
                let shown = timed_out.last.unwrap_or_default();
                anyhow!(
                    "{}, waited {:?}; it shows:\n{shown}",
                    timed_out.what,
                    timed_out.waited
                )
            })?;
        shown.map(drop)
    }

    /// Deletes the namespace handle now (what drop does). Idempotent.
    pub fn delete(&self) -> Result<()> {
        if self.deleted.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        remove_netns_handle(&self.path)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(e) = self.delete() {
            // Never panic in drop: this may run while unwinding.
            eprintln!("palisade-tests: deleting namespace {}: {e:#}", self.name);
        }
    }
}

/// Unmounts and removes a `/run/netns` handle, as `ip netns delete` does.
fn remove_netns_handle(path: &Path) -> Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => bail!("unmounting {}: {e}", path.display()),
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// Something a bed run can leave behind.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Leftover {
    Netns(String),
    Bpffs(PathBuf),
    Process { pid: i32, cmdline: String },
}

impl Leftover {
    /// The pid of the process that made it: the tag after the prefix starts
    /// with the owner's pid in base 36 (see [`unique_tag`]). `None` when the
    /// name carries no such tag.
    fn owner(&self) -> Option<u32> {
        let text = match self {
            Leftover::Netns(name) => name.clone(),
            Leftover::Bpffs(path) => path.file_name()?.to_string_lossy().into_owned(),
            Leftover::Process { cmdline, .. } => cmdline.clone(),
        };
        [NETNS_PREFIX, crate::bpffs::BPFFS_PREFIX]
            .iter()
            .filter_map(|prefix| text.find(prefix).map(|at| &text[at + prefix.len()..]))
            .find_map(|tag| {
                tag.get(..5)
                    .and_then(|pid| u32::from_str_radix(pid, 36).ok())
            })
    }

    /// Whether the process that made it still runs (another test run, live).
    fn owner_alive(&self) -> bool {
        self.owner().is_some_and(|pid| {
            pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists()
        })
    }
}

impl std::fmt::Display for Leftover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Leftover::Netns(name) => write!(f, "{name}"),
            Leftover::Bpffs(path) => write!(f, "{}", path.display()),
            Leftover::Process { pid, cmdline } => write!(f, "pid {pid}: {cmdline}"),
        }
    }
}

fn find_leftovers() -> Vec<Leftover> {
    let mut found = Vec::new();
    if let Ok(entries) = fs::read_dir(NETNS_DIR) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(NETNS_PREFIX) {
                found.push(Leftover::Netns(name));
            }
        }
    }
    if let Ok(entries) = fs::read_dir(crate::bpffs::BPFFS_ROOT) {
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(crate::bpffs::BPFFS_PREFIX)
            {
                found.push(Leftover::Bpffs(entry.path()));
            }
        }
    }
    let me = std::process::id();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if pid == me {
                continue;
            }
            let Ok(raw) = fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&raw)
                .replace('\0', " ")
                .trim()
                .to_owned();
            if cmdline.contains(NETNS_PREFIX) || cmdline.contains(crate::bpffs::BPFFS_PREFIX) {
                found.push(Leftover::Process {
                    pid: i32::try_from(pid).expect("invariant: pids fit in i32"),
                    cmdline,
                });
            }
        }
    }
    found
}

/// Everything a bed run may leave behind that exists right now: names of
/// namespaces under `/run/netns` starting with `plsd-`, paths of entries
/// under `/sys/fs/bpf` starting with `palisade-test-`, and `pid N: cmdline`
/// for processes (other than this one) whose command line mentions either.
///
/// Tests running in parallel see each other's live resources here, so a
/// test asserts on the entries containing its own names.
pub fn leftovers() -> Vec<String> {
    find_leftovers().iter().map(ToString::to_string).collect()
}

/// The [`leftovers`] whose owner has ended (or is this process): what a
/// finished suite left behind. Another test run's live resources (other
/// sessions on this machine) are not this suite's to report.
pub fn orphaned_leftovers() -> Vec<String> {
    find_leftovers()
        .iter()
        .filter(|item| !item.owner_alive())
        .map(ToString::to_string)
        .collect()
}

/// Removes what [`leftovers`] reports of processes that have ended: SIGKILLs
/// the processes, deletes the namespace handles and removes the bpffs
/// directories. Resources whose tag names a live process (another test run
/// on this machine, still running) are left alone; so are the caller's own
/// only when they are not tagged. Meant for a runner before and after a
/// suite. Returns what it removed, in the words of [`leftovers`].
pub fn sweep_leftovers() -> Result<Vec<String>> {
    sweep(
        find_leftovers()
            .into_iter()
            .filter(|item| !item.owner_alive()),
    )
}

/// Removes the entries of [`leftovers`] for which `select` is true (e.g.
/// those containing one test's tag), whoever made them.
pub fn sweep_leftovers_matching(select: impl Fn(&str) -> bool) -> Result<Vec<String>> {
    sweep(
        find_leftovers()
            .into_iter()
            .filter(|item| select(&item.to_string())),
    )
}

fn sweep(found: impl Iterator<Item = Leftover>) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    let mut errors = Vec::new();
    let found: Vec<Leftover> = found.collect();
    // Processes first: they may hold namespaces or pins.
    for item in &found {
        if let Leftover::Process { pid, .. } = item {
            match nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            ) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => removed.push(item.to_string()),
                Err(e) => errors.push(format!("killing {item}: {e}")),
            }
        }
    }
    for item in &found {
        let result = match item {
            Leftover::Process { .. } => continue,
            Leftover::Netns(name) => remove_netns_handle(&Path::new(NETNS_DIR).join(name)),
            Leftover::Bpffs(path) => match fs::remove_dir_all(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
                    fs::remove_file(path).context("removing pin")
                }
                Err(e) => Err(e).context("removing bpffs directory"),
            },
        };
        match result {
            Ok(()) => removed.push(item.to_string()),
            Err(e) => errors.push(format!("{item}: {e:#}")),
        }
    }
    if !errors.is_empty() {
        bail!("could not sweep: {}", errors.join("; "));
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_name_their_owner() {
        let tag = unique_tag();
        let me = std::process::id();
        let netns = Leftover::Netns(format!("{NETNS_PREFIX}{tag}-server"));
        let pin = Leftover::Bpffs(
            Path::new(crate::bpffs::BPFFS_ROOT)
                .join(format!("{}{tag}", crate::bpffs::BPFFS_PREFIX)),
        );
        let process = Leftover::Process {
            pid: 1,
            cmdline: format!("ip netns exec {NETNS_PREFIX}{tag}-node palisade run"),
        };
        for item in [&netns, &pin, &process] {
            assert_eq!(item.owner(), Some(me), "{item}");
            // The caller's own leftovers are swept.
            assert!(!item.owner_alive(), "{item}");
        }
        // A live process's resources are not.
        let parent = std::os::unix::process::parent_id();
        let theirs = Leftover::Netns(format!("{NETNS_PREFIX}{}0-x", base36(u64::from(parent), 5)));
        assert!(theirs.owner_alive());
        // An ended one's are (36^5 - 1 is above any pid_max).
        let ended = Leftover::Netns(format!("{NETNS_PREFIX}zzzzz0-x"));
        assert_eq!(ended.owner(), Some(60_466_175));
        assert!(!ended.owner_alive());
        assert_eq!(Leftover::Netns(NETNS_PREFIX.into()).owner(), None);
    }

    #[test]
    fn base36_is_fixed_width_and_correct() {
        assert_eq!(base36(0, 5), "00000");
        assert_eq!(base36(35, 1), "z");
        assert_eq!(base36(36, 1), "10");
        assert_eq!(base36(4_194_304, 5), "2hwcg");
        assert_eq!(base36(4_194_304, 5).len(), 5);
    }

    #[test]
    fn tags_are_unique_and_short() {
        let a = unique_tag();
        let b = unique_tag();
        assert_ne!(a, b);
        assert!(a.len() <= 8, "{a}");
    }
}
