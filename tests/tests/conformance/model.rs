//! The truth table: which pod may reach which, for one protocol, port and
//! address family, as the NetworkPolicy API reference says; and the
//! side-by-side rendering of an expected and an observed table.

use std::fmt::{self, Write as _};
use std::net::IpAddr;

use ipnet::IpNet;
use palisade_tests::Outcome;

/// Transport protocol of a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
            Proto::Sctp => "SCTP",
        })
    }
}

/// Address family of a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// A pod of the table: `namespace/name` and its addresses.
#[derive(Clone, Debug)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub ips: [IpAddr; 2],
}

impl PodInfo {
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    pub fn ip(&self, family: Family) -> IpAddr {
        match family {
            Family::V4 => self.ips[0],
            Family::V6 => self.ips[1],
        }
    }

    /// Whether `pattern` names this pod: `ns/name`, `ns/*`, `*/name` or `*`.
    pub fn matches(&self, pattern: &str) -> bool {
        if pattern == "*" {
            return true;
        }
        let (ns, name) = pattern
            .split_once('/')
            .unwrap_or_else(|| panic!("test bug: pod pattern {pattern:?} is not ns/name"));
        (ns == "*" || ns == self.namespace) && (name == "*" || name == self.name)
    }
}

/// The expected (or observed) reachability of every ordered pair of pods
/// for one (protocol, port, family). `None` cells are not checked.
#[derive(Clone, Debug)]
pub struct Reachability {
    pods: Vec<PodInfo>,
    cells: Vec<Option<bool>>,
}

impl Reachability {
    /// Every pair set to `all`.
    pub fn new(pods: &[PodInfo], all: bool) -> Self {
        Reachability {
            pods: pods.to_vec(),
            cells: vec![Some(all); pods.len() * pods.len()],
        }
    }

    pub fn pods(&self) -> &[PodInfo] {
        &self.pods
    }

    fn index(&self, pattern: &str) -> Vec<usize> {
        let found: Vec<usize> = (0..self.pods.len())
            .filter(|&i| self.pods[i].matches(pattern))
            .collect();
        assert!(!found.is_empty(), "test bug: no pod matches {pattern:?}");
        found
    }

    /// Sets every cell.
    pub fn expect_all(&mut self, reachable: bool) -> &mut Self {
        self.cells.fill(Some(reachable));
        self
    }

    /// Sets the cells from the pods matching `from` to those matching `to`.
    pub fn expect(&mut self, from: &str, to: &str, reachable: bool) -> &mut Self {
        let n = self.pods.len();
        for f in self.index(from) {
            for t in self.index(to) {
                self.cells[f * n + t] = Some(reachable);
            }
        }
        self
    }

    /// `from` may reach `to`.
    pub fn allow(&mut self, from: &str, to: &str) -> &mut Self {
        self.expect(from, to, true)
    }

    /// `from` may not reach `to`.
    pub fn deny(&mut self, from: &str, to: &str) -> &mut Self {
        self.expect(from, to, false)
    }

    /// Nothing reaches `to` (ingress isolated, no rule allows).
    pub fn deny_ingress_to(&mut self, to: &str) -> &mut Self {
        self.expect("*", to, false)
    }

    /// `from` reaches nothing (egress isolated, no rule allows).
    pub fn deny_egress_from(&mut self, from: &str) -> &mut Self {
        self.expect(from, "*", false)
    }

    /// Sets the cells for which `f(from, to)` says something.
    pub fn expect_where(
        &mut self,
        mut f: impl FnMut(&PodInfo, &PodInfo) -> Option<bool>,
    ) -> &mut Self {
        let n = self.pods.len();
        for i in 0..n {
            for j in 0..n {
                if let Some(v) = f(&self.pods[i], &self.pods[j]) {
                    self.cells[i * n + j] = Some(v);
                }
            }
        }
        self
    }

    /// Leaves the cells from `from` to `to` unchecked.
    pub fn ignore(&mut self, from: &str, to: &str) -> &mut Self {
        let n = self.pods.len();
        for f in self.index(from) {
            for t in self.index(to) {
                self.cells[f * n + t] = None;
            }
        }
        self
    }

    /// The expectation for a pair; a pod always reaches itself (its own
    /// address is local to it and never crosses its veth).
    pub fn get(&self, from: usize, to: usize) -> Option<bool> {
        if from == to && self.cells[from * self.pods.len() + to].is_some() {
            return Some(true);
        }
        self.cells[from * self.pods.len() + to]
    }
}

impl Reachability {
    /// The expectation for `from` -> `to` by id (`ns/name`); unchecked reads as blocked.
    pub fn get_by_id(&self, from: &str, to: &str) -> bool {
        let at = |id: &str| {
            self.pods
                .iter()
                .position(|p| p.id() == id)
                .unwrap_or_else(|| panic!("test bug: no pod {id}"))
        };
        self.get(at(from), at(to)).unwrap_or(false)
    }
}

/// Whether `ip` is in the ipBlock `cidr` minus `except` (API reference:
/// `except` lists CIDRs that should not be included within the rule).
pub fn in_ip_block(ip: IpAddr, cidr: &str, except: &[String]) -> bool {
    let net: IpNet = cidr.parse().expect("test bug: cidr");
    net.contains(&ip)
        && !except
            .iter()
            .any(|e| e.parse::<IpNet>().expect("test bug: except").contains(&ip))
}

/// One thing to check: a (protocol, port, family) and its table.
#[derive(Clone, Debug)]
pub struct Case {
    pub proto: Proto,
    pub port: u16,
    pub family: Family,
    pub expected: Reachability,
}

impl Case {
    pub fn new(proto: Proto, port: u16, family: Family, expected: &Reachability) -> Case {
        Case {
            proto,
            port,
            family,
            expected: expected.clone(),
        }
    }

    pub fn title(&self) -> String {
        format!("{} port {} over {}", self.proto, self.port, self.family)
    }
}

/// Observed outcomes of one case, `None` where not probed.
pub type Observed = Vec<Option<Outcome>>;

/// Whether an observed cell disagrees with the expected one. A blocked cell
/// must time out (a policy drop is silent: a refusal means the packet got
/// through to something), and a probe that failed proves nothing.
fn differs(want: Option<bool>, got: Option<&Outcome>) -> bool {
    match (want, got) {
        (Some(true), Some(o)) => !o.is_reachable(),
        (Some(false), Some(o)) => !matches!(o, Outcome::TimedOut),
        _ => false,
    }
}

/// Number of cells where `observed` disagrees with `case.expected`.
pub fn mismatches(case: &Case, observed: &Observed) -> usize {
    let n = case.expected.pods.len();
    (0..n * n)
        .filter(|&k| differs(case.expected.get(k / n, k % n), observed[k].as_ref()))
        .count()
}

/// Expected, observed and the differences side by side (rows: from,
/// columns: to; `1` reachable, `0` blocked, `?` unchecked, `x` differs),
/// then each differing pair with what the probe saw.
pub fn render(case: &Case, observed: &Observed) -> String {
    let pods = &case.expected.pods;
    let n = pods.len();
    let w = pods.iter().map(|p| p.id().len()).max().unwrap_or(3) + 1;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {} of {} pairs differ (rows: from, columns: to; 1 reachable, 0 blocked, ? unchecked, x differs)",
        case.title(),
        mismatches(case, observed),
        n * n
    );
    let grid_width = w + n * w;
    let header = |out: &mut String| {
        let _ = write!(out, "{:w$}", "");
        for p in pods {
            let _ = write!(out, "{:>w$}", p.id());
        }
    };
    for title in ["expected", "observed", "differences"] {
        let _ = write!(out, "{title:<grid_width$}   ");
    }
    out.push('\n');
    for g in 0..3 {
        header(&mut out);
        if g < 2 {
            out.push_str("   ");
        }
    }
    out.push('\n');
    for i in 0..n {
        for g in 0..3 {
            let _ = write!(out, "{:<w$}", pods[i].id());
            for j in 0..n {
                let want = case.expected.get(i, j);
                let got = observed[i * n + j].as_ref();
                let cell = match g {
                    0 => bit(want),
                    1 => bit(got.map(Outcome::is_reachable)),
                    _ if differs(want, got) => "x",
                    _ => ".",
                };
                let _ = write!(out, "{cell:>w$}");
            }
            if g < 2 {
                out.push_str("   ");
            }
        }
        out.push('\n');
    }
    for i in 0..n {
        for j in 0..n {
            if let (Some(want), Some(got)) = (case.expected.get(i, j), &observed[i * n + j])
                && differs(Some(want), Some(got))
            {
                let _ = writeln!(
                    out,
                    "  {} -> {} ({}): expected {}, observed {got}",
                    pods[i].id(),
                    pods[j].id(),
                    pods[j].ip(case.family),
                    if want { "reachable" } else { "blocked" },
                );
            }
        }
    }
    out
}

fn bit(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "1",
        Some(false) => "0",
        None => "?",
    }
}
