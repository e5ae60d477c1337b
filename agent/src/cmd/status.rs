//! `palisade status`: asks the local agent's `/status` and prints it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::cli::{OutputFormat, StatusArgs};
use crate::observe::{ClusterPolicyStatus, Status};
use crate::state::Rejection;

/// Fetches `path` from the agent with a plain HTTP/1.0 GET, waiting at most
/// `timeout` for the answer.
pub fn http_get_within(
    addr: std::net::SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<String, super::Error> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(|e| {
        format!("cannot reach the agent at {addr}: {e} (is `palisade run` running?)")
    })?;
    stream.set_read_timeout(Some(timeout))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or("malformed HTTP response from the agent")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(format!(
            "agent answered {} for {path}",
            head.lines().next().unwrap_or_default()
        )
        .into());
    }
    Ok(body.to_string())
}

/// Fetches `path` from the agent with a plain HTTP/1.0 GET.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> Result<String, super::Error> {
    http_get_within(addr, path, Duration::from_secs(5))
}

/// Prints the agent's status.
pub fn run(args: &StatusArgs) -> Result<(), super::Error> {
    let body = http_get(args.health_addr, "/status")?;
    if args.output == OutputFormat::Json {
        println!("{body}");
        return Ok(());
    }
    let s: Status = serde_json::from_str(&body)?;
    println!(
        "node {}  ready: {}  source up: {}  revision: {}  attach: {}",
        s.node,
        s.ready,
        s.source_up,
        s.revision,
        if s.attach_mode.is_empty() {
            "-"
        } else {
            &s.attach_mode
        }
    );
    if let Some(why) = &s.not_ready_reason {
        println!("not ready: {why}");
    }
    println!("policies: {}  identities: {}", s.policies, s.identities);
    let sync = if s.source_synced {
        "synced".to_string()
    } else {
        format!("waiting for {}", s.waiting_for.join(", "))
    };
    println!(
        "source: {sync}  lag: {:.3}s{}",
        s.source_lag_seconds,
        s.source_detail
            .as_deref()
            .map(|d| format!("  ({d})"))
            .unwrap_or_default()
    );
    if !s.maps.is_empty() {
        println!();
        println!(
            "{:<12} {:>10} {:>10} {:>6}",
            "MAP", "ENTRIES", "CAPACITY", "USED"
        );
        for m in &s.maps {
            let used = if m.capacity == 0 {
                0.0
            } else {
                100.0 * m.entries as f64 / m.capacity as f64
            };
            println!(
                "{:<12} {:>10} {:>10} {:>5.1}%",
                m.map, m.entries, m.capacity, used
            );
        }
    }
    println!();
    println!(
        "{:<40} {:<16} {:<9} {:<8} {:<7} POLICIES",
        "ENDPOINT", "INTERFACE", "ENFORCED", "ISOLATED", "AUDIT"
    );
    for e in &s.endpoints {
        let isolated = match (e.ingress_isolated, e.egress_isolated) {
            (true, true) => "in+out",
            (true, false) => "in",
            (false, true) => "out",
            (false, false) => "-",
        };
        println!(
            "{:<40} {:<16} {:<9} {:<8} {:<7} {}",
            e.pod,
            e.interface.as_deref().unwrap_or("-"),
            if e.enforced { "yes" } else { "NO" },
            isolated,
            if e.audit { "yes" } else { "-" },
            e.policies.join(",")
        );
        if let Some(reason) = &e.reason {
            println!("    not enforced: {reason}");
        }
    }
    print_cluster_policies(&s.cluster_policies);
    if !s.held_closed.is_empty() {
        println!(
            "\nheld closed (a previous agent enforced them; no pod resolves to them yet): {}",
            s.held_closed.join(", ")
        );
    }
    // A ClusterNetworkPolicy's are listed with it.
    let listed: Vec<&Rejection> = s
        .cluster_policies
        .iter()
        .flat_map(|p| {
            p.rejections
                .iter()
                .chain(p.unsupported.iter().map(|u| &u.rejection))
        })
        .collect();
    let rejections: Vec<&Rejection> = s
        .rejections
        .iter()
        .filter(|r| !listed.contains(r))
        .collect();
    if !rejections.is_empty() {
        println!("\nrejected policy fields (they isolate but allow nothing):");
        for r in rejections {
            println!("  {r}");
        }
    }
    if !s.errors.is_empty() {
        let at = s
            .last_error_at
            .map(|t| format!(" (last at {})", crate::observe::flows::rfc3339(t)))
            .unwrap_or_default();
        println!("\nrecent errors{at}:");
        for e in &s.errors {
            println!("  {e}");
        }
    }
    Ok(())
}

/// The ClusterNetworkPolicies, in precedence order, each with its problems.
fn print_cluster_policies(policies: &[ClusterPolicyStatus]) {
    if policies.is_empty() {
        return;
    }
    println!();
    println!(
        "{:<9} {:>8} {:<40} {:>8} {:>8} PROBLEMS",
        "TIER", "PRIORITY", "CLUSTER NETWORK POLICY", "INGRESS", "EGRESS"
    );
    for p in policies {
        let problems = match (p.rejections.len(), p.unsupported.len()) {
            (0, 0) => "-".to_string(),
            (r, u) => format!("{r} rejected, {u} unsupported"),
        };
        println!(
            "{:<9} {:>8} {:<40} {:>8} {:>8} {problems}",
            p.tier, p.priority, p.name, p.ingress_rules, p.egress_rules
        );
        for r in &p.rejections {
            println!("    rejected (fails closed): {}: {}", r.field, r.reason);
        }
        for u in &p.unsupported {
            println!(
                "    unsupported (matches nothing): {}: {}",
                u.rejection.field, u.rejection.reason
            );
        }
    }
}
