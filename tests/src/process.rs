//! Child processes that cannot outlive the test that started them.

use std::{
    ffi::OsStr,
    process::{Child, Command, ExitStatus},
};

use anyhow::{Context, Result};

use crate::netns::NetNs;

/// Owns a child process: SIGKILLs and reaps it on drop (also while
/// unwinding), so a failing test leaves no process behind.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    what: String,
}

impl ChildGuard {
    /// Takes ownership of an already spawned child.
    pub fn new(child: Child) -> Self {
        let what = format!("pid {}", child.id());
        Self { child, what }
    }

    /// Spawns `cmd` and guards the child.
    pub fn spawn(cmd: &mut Command) -> Result<Self> {
        let child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
        Ok(Self {
            what: format!("{cmd:?} (pid {})", child.id()),
            child,
        })
    }

    /// The child's pid.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The child, e.g. to take its stdio handles.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Its exit status if it has exited, without waiting.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        self.child
            .try_wait()
            .with_context(|| format!("checking {}", self.what))
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills it now (SIGKILL) and reaps it.
    pub fn kill(mut self) -> Result<ExitStatus> {
        self.kill_and_reap()
    }

    fn kill_and_reap(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        // Fails only if it exited meanwhile; wait() tells either way.
        let _ = self.child.kill();
        self.child
            .wait()
            .with_context(|| format!("reaping {}", self.what))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Err(e) = self.kill_and_reap() {
            // Never panic in drop: this may run while unwinding.
            eprintln!("palisade-tests: stopping {}: {e:#}", self.what);
        }
    }
}

impl NetNs {
    /// Spawns `program ARGS...` inside this namespace (through
    /// [`NetNs::command`]) and guards it.
    pub fn spawn<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> Result<ChildGuard>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        ChildGuard::spawn(self.command(program).args(args))
    }
}
