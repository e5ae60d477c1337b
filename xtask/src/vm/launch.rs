//! Boots one VM and waits for it under a watchdog.
//!
//! `vng` and the qemu it starts run in a process group of their own. The group
//! is killed whole when the [`Group`] guard drops (normal end, error, panic),
//! when the watchdog fires, and when xtask itself gets SIGINT, SIGTERM or
//! SIGHUP (a signal would end xtask without running any destructor, so a
//! handler kills the group first).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::libc;

use super::kernel::Kernel;
use super::vng;

/// One VM run.
pub struct Spec<'a> {
    pub kernel: &'a Kernel,
    /// Shared read-write with the guest, at the same path.
    pub rwdir: &'a Path,
    /// The command the guest runs.
    pub exec: String,
    /// Where vng's output (kernel console included) goes.
    pub console: &'a Path,
    /// vng's TMPDIR: the files it leaves when killed stay in there.
    pub tmp: &'a Path,
    /// A file inside `rwdir` the guest appends one line to per step; its
    /// first line means the guest is up.
    pub events: PathBuf,
    pub boot_timeout: Duration,
    pub timeout: Duration,
}

pub enum End {
    Exited(ExitStatus),
    /// No event within the boot timeout.
    BootTimedOut,
    TimedOut,
}

pub struct Run {
    pub end: End,
    pub elapsed: Duration,
    /// When the first event arrived.
    pub booted: Option<Duration>,
}

/// Boots the VM, hands each event line to `on_event` as it arrives, and
/// returns once the VM has exited or been killed.
pub fn boot(spec: &Spec, mut on_event: impl FnMut(&str, Duration)) -> Result<Run> {
    let console = File::create(spec.console)
        .with_context(|| format!("creating {}", spec.console.display()))?;
    let mut cmd = vng::command();
    cmd.arg("--run")
        .arg(&spec.kernel.vmlinuz)
        // TCG: /dev/kvm on these machines is kvm-pvm, under which a stock
        // kernel aborts or hangs (see the README's VM tier section).
        .args(["--force-9p", "--disable-kvm", "--verbose"])
        .args(["--cpus", "2", "--memory", "4G"])
        // The crypto self-tests take seconds of emulated boot, and one of
        // them (an scomp test in alg_test) has hung a boot here for minutes.
        .args(["--append", "cryptomgr.notests=1"])
        .arg("--rwdir")
        .arg(spec.rwdir)
        .arg("--exec")
        .arg(&spec.exec)
        .env("TMPDIR", spec.tmp)
        .stdin(Stdio::null())
        .stdout(console.try_clone()?)
        .stderr(console);
    let mut group = Group::spawn(&mut cmd)?;
    let started = Instant::now();
    let mut events = Events::new(spec.events.clone());
    let mut booted = None;
    let end = loop {
        let status = group.child.try_wait()?;
        for line in events.read_new() {
            booted.get_or_insert(started.elapsed());
            on_event(&line, started.elapsed());
        }
        if let Some(status) = status {
            break End::Exited(status);
        }
        if booted.is_none() && started.elapsed() > spec.boot_timeout {
            break End::BootTimedOut;
        }
        if started.elapsed() > spec.timeout {
            break End::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    drop(group);
    Ok(Run {
        end,
        elapsed: started.elapsed(),
        booted,
    })
}

/// The complete lines appended to a file since the last read.
struct Events {
    path: PathBuf,
    offset: u64,
    partial: String,
}

impl Events {
    fn new(path: PathBuf) -> Events {
        Events {
            path,
            offset: 0,
            partial: String::new(),
        }
    }

    fn read_new(&mut self) -> Vec<String> {
        let Ok(mut file) = File::open(&self.path) else {
            return Vec::new();
        };
        let mut text = String::new();
        if file.seek(SeekFrom::Start(self.offset)).is_err()
            || file.read_to_string(&mut text).is_err()
        {
            return Vec::new();
        }
        self.offset += text.len() as u64;
        self.partial.push_str(&text);
        let Some(last) = self.partial.rfind('\n') else {
            return Vec::new();
        };
        let rest = self.partial.split_off(last + 1);
        let complete = std::mem::replace(&mut self.partial, rest);
        complete.lines().map(str::to_string).collect()
    }
}

/// The process group of the running VM, for the signal handler; 0 when none.
static GROUP: AtomicI32 = AtomicI32::new(0);

/// A child leading its own process group; the whole group dies with the guard.
struct Group {
    child: Child,
}

impl Group {
    fn spawn(cmd: &mut Command) -> Result<Group> {
        install_signal_handlers();
        let child = cmd
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        GROUP.store(child.id() as i32, Ordering::SeqCst);
        Ok(Group { child })
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let pgid = self.child.id() as i32;
        kill_group(pgid);
        let _ = self.child.wait();
        // qemu, orphaned when vng died first, is reaped by init a moment
        // later: wait for that, so no one sees it after we return.
        let deadline = Instant::now() + Duration::from_secs(10);
        while group_exists(pgid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        GROUP.store(0, Ordering::SeqCst);
    }
}

fn kill_group(pgid: i32) {
    // SAFETY: kill has no memory preconditions; a negative pid names a group.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
}

fn group_exists(pgid: i32) -> bool {
    // SAFETY: as above; signal 0 only checks that the group has a member.
    unsafe { libc::kill(-pgid, 0) == 0 }
}

extern "C" fn on_signal(signal: libc::c_int) {
    let pgid = GROUP.load(Ordering::SeqCst);
    if pgid > 0 {
        kill_group(pgid);
    }
    // SAFETY: signal and raise are async-signal-safe; restoring the default
    // action and re-raising ends xtask the way the signal would have.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
}

fn install_signal_handlers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: the handler only touches an atomic and calls
            // async-signal-safe functions.
            unsafe { libc::signal(signal, on_signal as *const () as libc::sighandler_t) };
        }
    });
}
