//! The shell script the VM runs: set the kernel up like the host, run each
//! job with its own time limit, and report through files in the shared
//! directory (the guest's stdout is mixed into the console and may be lost).
//!
//! Events, one line each in `<out>/events`, times as the guest's uptime:
//! `ready T` | `setup-failed T` | `start JOB T` | `done JOB EXIT T` | `end T`.
//! Each job's output goes to `<out>/<job>.log`.

use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

/// Loaded before any job: what the test bed and the agent use on 6.1 and
/// 5.15, where Debian and Ubuntu build them as modules (the host kernel has
/// them built in).
const MODULES: &[&str] = &["veth", "sch_ingress", "cls_bpf", "nf_conntrack", "sctp"];

/// A command to run inside the VM.
pub struct Job {
    /// A plain word: it names the log file and the events.
    pub name: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
}

/// Seconds the guest gives a job after its time limit before SIGKILL.
pub const KILL_AFTER: Duration = Duration::from_secs(10);

pub fn script(out: &Path, cwd: &Path, jobs: &[Job]) -> String {
    let mut s = String::from(
        "#!/bin/sh\n# Written by `cargo xtask` (xtask/src/vm/guest.rs); runs inside the VM.\n",
    );
    s += "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n";
    let _ = writeln!(s, "out={}", quote(&out.display().to_string()));
    s += "now() { cut -d' ' -f1 /proc/uptime; }\n";
    s += "event() { echo \"$*\" >> \"$out/events\"; }\n";
    let _ = writeln!(
        s,
        "{{ mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf; }} > \"$out/setup.log\" 2>&1 \\\n  && modprobe -a {} >> \"$out/setup.log\" 2>&1 \\\n  && cd {} \\\n  || {{ event \"setup-failed $(now)\"; exit 1; }}",
        MODULES.join(" "),
        quote(&cwd.display().to_string())
    );
    s += "event \"ready $(now)\"\n";
    for job in jobs {
        assert!(
            job.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-'),
            "job names are plain words"
        );
        let _ = writeln!(s, "event \"start {} $(now)\"", job.name);
        s += "env TMPDIR=/tmp";
        for (k, v) in &job.env {
            let _ = write!(s, " {}", quote(&format!("{k}={v}")));
        }
        let _ = write!(
            s,
            " timeout -k {} {}",
            KILL_AFTER.as_secs(),
            job.timeout.as_secs()
        );
        for arg in &job.argv {
            let _ = write!(s, " {}", quote(arg));
        }
        let _ = writeln!(s, " > \"$out/{}.log\" 2>&1 < /dev/null", job.name);
        let _ = writeln!(s, "event \"done {} $? $(now)\"", job.name);
    }
    s += "event \"end $(now)\"\n";
    s
}

/// `s` as one single-quoted shell word.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_survives_single_quotes() {
        assert_eq!(quote("a'b c"), r"'a'\''b c'");
    }

    #[test]
    fn script_runs_each_job_under_its_limit_and_reports_its_exit() {
        let jobs = [Job {
            name: "kernel".into(),
            argv: vec!["/t/kernel-1".into(), "--test-threads=2".into()],
            env: vec![("A".into(), "x y".into())],
            timeout: Duration::from_secs(300),
        }];
        let s = script(Path::new("/o"), Path::new("/w"), &jobs);
        assert!(s.contains(
            "env TMPDIR=/tmp 'A=x y' timeout -k 10 300 '/t/kernel-1' '--test-threads=2' > \"$out/kernel.log\""
        ));
        assert!(s.contains("event \"done kernel $? $(now)\""));
    }
}
