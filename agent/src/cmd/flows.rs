//! `palisade flows`: prints the local agent's recent denied and audited flows
//! (`/flows` on its health address), optionally following new ones by long
//! polling.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use crate::cli::{FlowsArgs, OutputFormat};
use crate::observe::flows::{FlowPage, FlowRecord};

/// How long one long poll waits on the agent's side.
const POLL_WAIT_SECS: u64 = 25;

fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<String, super::Error> {
    super::status::http_get_within(addr, path, timeout)
}

/// Percent-encodes a query value (names are DNS labels, but be safe).
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The `/flows` path for a query.
pub fn path(args: &FlowsArgs, since: u64, wait: u64) -> String {
    let mut p = format!("/flows?since={since}&wait={wait}");
    if let Some(ns) = &args.namespace {
        p.push_str(&format!("&namespace={}", encode(ns)));
    }
    if let Some(pod) = &args.pod {
        p.push_str(&format!("&pod={}", encode(pod)));
    }
    p
}

fn print(out: &mut impl Write, format: OutputFormat, flows: &[FlowRecord]) -> std::io::Result<()> {
    for f in flows {
        match format {
            OutputFormat::Json => {
                writeln!(out, "{}", serde_json::to_string(f).unwrap_or_default())?;
            }
            OutputFormat::Text => writeln!(out, "{}", f.text())?,
        }
    }
    out.flush()
}

/// Prints the flows; with `--follow`, keeps polling for new ones.
pub fn run(args: &FlowsArgs) -> Result<(), super::Error> {
    let stdout = std::io::stdout();
    let mut since = 0;
    let mut first = true;
    loop {
        let wait = if args.follow && !first {
            POLL_WAIT_SECS
        } else {
            0
        };
        let body = get(
            args.health_addr,
            &path(args, since, wait),
            Duration::from_secs(wait + 10),
        )?;
        let page: FlowPage = serde_json::from_str(&body)
            .map_err(|e| format!("unexpected answer from the agent: {e}"))?;
        if first && args.output == OutputFormat::Text && page.flows.is_empty() && !args.follow {
            eprintln!("no denied or audited flows recorded");
        }
        // A closed pipe (`| head`) ends the command quietly.
        if print(&mut stdout.lock(), args.output, &page.flows).is_err() {
            return Ok(());
        }
        since = page.next;
        first = false;
        if !args.follow {
            return Ok(());
        }
    }
}
