//! Per-packet cost of the TC programs, measured in the kernel with
//! `BPF_PROG_TEST_RUN` and compared with the empty program `bench_baseline`
//! (the floor: the harness' own per-run cost) measured in the same run.
//!
//! `BPF_PROG_TEST_RUN` repeats one frame `repeat` times and reports the mean
//! time per run; every case below is built so that *every* repeat takes the
//! same path through the program:
//!
//! * `floor`: `bench_baseline` on the new-flow frame.
//! * `ct_hit`: an ACK of a flow whose SYN was run once before (entry present,
//!   current revision): conntrack lookup + refresh check, pass.
//! * `not_isolated`: a pod-originated ACK of an untracked flow from an
//!   endpoint without egress isolation: conntrack miss, endpoint lookup, pass
//!   (a segment without SYN never opens an entry, so each repeat misses).
//! * `new_flow`: an allowed ACK without entry on an isolated endpoint:
//!   conntrack miss, endpoint, ipcache LPM, policy LPM hit, pass, rule counter.
//!   This is a new flow's cost *without* the conntrack insert (the program
//!   opens entries only on SYN), which is what lets it be repeated.
//! * `new_flow_insert`: the real first packet of a connection (a SYN that
//!   opens an entry), which cannot be repeated on one frame. Estimated warm
//!   as `new_flow` + a warm LRU-hash update of a 20-byte key (the IPv4
//!   conntrack key size), measured by a hand-assembled program (building
//!   blocks); `new_flow_insert_v6` likewise with the 44-byte IPv6 key.
//! * `new_flow_insert_cold`: measured for real: single runs (`repeat = 1`,
//!   median of many) of a SYN with a fresh source port each run, against
//!   single runs of the floor. Every map access is cache-cold there (a
//!   syscall and a fresh skb between runs): the worst case. `new_flow_cold`
//!   is the same for the ACK of `new_flow`; their difference is the insert's
//!   cold cost (`insert_cold_ns`).
//! * `deny`: a SYN from a peer no rule allows: conntrack miss, endpoint,
//!   ipcache, both policy lookups (identity, then ANY) miss, drop counter and
//!   the rate-limited event path (after the 200-event burst, a token check).
//! * `*_v6`: the same over IPv6.
//! * `cnp_*` (one configuration of its own, [`cnp_plan`]): ClusterNetworkPolicy-
//!   style entries, allow and deny ranges carved out of each other:
//!   `cnp_allow` an ACK the identity's allow decides inside its deny range's
//!   neighbour, `cnp_deny` a SYN the identity's deny drops (one lookup),
//!   `cnp_any_allow` / `cnp_any_deny` the same decided by ANY (two lookups);
//!   the allow probes again on the same trie with no deny entry (control).
//!
//! Rules: the endpoint under test holds N policy entries (exact ports, one
//! identity per 8 entries), one of which allows the probe; ipcache holds M
//! prefixes (3/4 IPv4 /32, 1/4 IPv6 /128, every 64th a /24).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use anyhow::{Context, Result, ensure};
use palisade_agent::datapath::{Capacities, Datapath, DatapathConfig};
use palisade_agent::policy::plan::{DatapathPlan, EndpointPlan, L4Match, RuleKey};
use palisade_agent::state::PodRef;
use palisade_agent::sync::{Syncer, render};
use palisade_common::ids::{EndpointId, IdentityId, RuleId};
use palisade_common::verdict::{Direction, TC_ACT_SHOT, TC_ACT_UNSPEC};
use palisade_tests::{BpffsDir, Frame, TcpFlags};
use serde_json::{Value, json};

use super::{fmt_num, median};

/// `BPF_PROG_TEST_RUN` runs as if on loopback: ifindex 1.
const IFINDEX: u32 = 1;
const EP: EndpointId = EndpointId(7);
const POD_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const POD_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
const PEER_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const PEER_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
const OTHER_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
const OTHER_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 3);
const NODE_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 255, 1);
const PEER_ID: IdentityId = IdentityId(20);
const OTHER_ID: IdentityId = IdentityId(21);
const NODE_ID: IdentityId = IdentityId(22);
const PORT: u16 = 80;

pub const RULES: [usize; 4] = [10, 1_000, 10_000, 100_000];
pub const IPCACHE: [usize; 3] = [10, 10_000, 100_000];
/// The ipcache size of the rules plot and table.
pub const IPCACHE_HEADLINE: usize = 10_000;

fn pod() -> PodRef {
    PodRef {
        namespace: "bench".into(),
        name: "pod".into(),
    }
}

/// The plan: the endpoint under test (ingress isolated), `rules` policy
/// entries on it and `ipcache` prefixes.
fn plan(rules: usize, ipcache: usize) -> DatapathPlan {
    let mut plan = DatapathPlan::default();
    plan.endpoints.insert(
        pod(),
        EndpointPlan {
            id: EP,
            ipv4: Some(POD_V4),
            ipv6: Some(POD_V6),
            ingress_isolated: true,
            egress_isolated: false,
            audit: false,
            source_prefixes: Vec::new(),
            policies: vec![],
        },
    );
    let base = [
        (IpAddr::V4(PEER_V4), PEER_ID),
        (IpAddr::V6(PEER_V6), PEER_ID),
        (IpAddr::V4(OTHER_V4), OTHER_ID),
        (IpAddr::V6(OTHER_V6), OTHER_ID),
        (IpAddr::V4(NODE_V4), NODE_ID),
    ];
    for (ip, id) in base {
        std::sync::Arc::make_mut(&mut plan.ipcache).insert(ip.into(), id);
    }
    plan.host_addresses.insert(IpAddr::V4(NODE_V4));
    for j in 0..ipcache.saturating_sub(base.len()) as u32 {
        let identity = IdentityId(1000 + j % 4096);
        let net = if j % 64 == 63 {
            format!("10.200.{}.0/24", (j / 64) % 256)
        } else if j % 4 == 3 {
            format!("fd00:1::{:x}:{:x}/128", j >> 16, j & 0xffff)
        } else {
            let a = 0x0a80_0000u32 + j;
            format!("{}/32", Ipv4Addr::from(a))
        };
        std::sync::Arc::make_mut(&mut plan.ipcache)
            .insert(net.parse().expect("generated prefix parses"), identity);
    }
    plan.rules.insert(
        RuleKey {
            endpoint: EP,
            direction: Direction::Ingress,
            identity: PEER_ID,
            l4: L4Match::Ports {
                protocol: 6,
                first: PORT,
                last: PORT,
            },
        },
        RuleId(1),
    );
    for i in 0..rules.saturating_sub(1) as u32 {
        let port = 1024 + (i % 8) as u16 * 97;
        plan.rules.insert(
            RuleKey {
                endpoint: EP,
                direction: Direction::Ingress,
                identity: IdentityId(1000 + i / 8),
                l4: L4Match::Ports {
                    protocol: if i % 5 == 4 { 17 } else { 6 },
                    first: port,
                    last: port,
                },
            },
            // RULE_COUNTERS holds 65536 ids: entries share ids beyond that,
            // as the many peers of one NetworkPolicy rule do.
            RuleId(2 + i % 60_000),
        );
    }
    plan
}

/// ClusterNetworkPolicy-style entries on top of `plan(1, IPCACHE_HEADLINE)`:
/// 50 identity allow ranges of 150 ports, each with 50 ports carved out by
/// a deny; an ANY allow of 10,000 ports with 50 deny ranges in it. 100 deny
/// and 51 allow entries before the LPM split.
///
/// `denies: false` writes the deny ranges as allows instead: the same trie
/// keys (each entry is split into blocks on its own), so the allow probes
/// take the same path through the trie and differ only in the programs'
/// handling of deny entries.
fn cnp_plan(denies: bool) -> DatapathPlan {
    let mut plan = plan(1, IPCACHE_HEADLINE);
    let key = |identity, first, last| RuleKey {
        endpoint: EP,
        direction: Direction::Ingress,
        identity,
        l4: L4Match::Ports {
            protocol: 6,
            first,
            last,
        },
    };
    plan.rules.insert(
        key(IdentityId::ANY, CNP_BASE, CNP_BASE + 9_999),
        RuleId(400),
    );
    for k in 0..50u16 {
        let b = CNP_BASE + 200 * k;
        let rule = |base| RuleId(base + u32::from(k));
        plan.rules.insert(key(PEER_ID, b, b + 149), rule(100));
        let carved = if denies {
            &mut plan.denies
        } else {
            &mut plan.rules
        };
        carved.insert(key(PEER_ID, b + 50, b + 99), rule(200));
        carved.insert(key(IdentityId::ANY, b + 150, b + 199), rule(300));
    }
    plan
}

/// The first port of [`cnp_plan`]'s ranges; its probes use the 26th range.
const CNP_BASE: u16 = 2_000;
const CNP_PROBE: u16 = CNP_BASE + 200 * 25;

/// The `cnp_*` cases: (name, frame, verdict).
fn cnp_frames() -> [(&'static str, Vec<u8>, i32); 4] {
    let v4 = |src, port, flags| {
        Frame::ipv4(src, POD_V4)
            .tcp(40000, port, flags)
            .payload(0)
            .build()
    };
    [
        (
            "cnp_allow",
            v4(PEER_V4, CNP_PROBE + 10, TcpFlags::ACK),
            TC_ACT_UNSPEC,
        ),
        (
            "cnp_deny",
            v4(PEER_V4, CNP_PROBE + 60, TcpFlags::SYN),
            TC_ACT_SHOT,
        ),
        (
            "cnp_any_allow",
            v4(OTHER_V4, CNP_PROBE + 10, TcpFlags::ACK),
            TC_ACT_UNSPEC,
        ),
        (
            "cnp_any_deny",
            v4(OTHER_V4, CNP_PROBE + 160, TcpFlags::SYN),
            TC_ACT_SHOT,
        ),
    ]
}

/// Runs the `cnp_*` cases on [`cnp_plan`], with the floor measured
/// interleaved.
/// The allow probes are also run on `cnp_plan(false)` (`*_same_trie_no_deny`),
/// alternating plans every round.
fn cnp(bench: &mut Bench, repeat: u32, rounds: usize) -> Result<Value> {
    let interfaces = BTreeMap::from([(pod(), IFINDEX)]);
    let state = render(&cnp_plan(true), &interfaces);
    let control = render(&cnp_plan(false), &interfaces);
    ensure!(
        state.policy.keys().eq(control.policy.keys()),
        "the control plan must have the same trie keys"
    );
    let frames = cnp_frames();
    let mut floor = Vec::new();
    let mut samples: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for _ in 0..rounds {
        let report = bench.syncer.apply(&mut bench.dp.maps, &state)?;
        ensure!(report.complete(), "maps full: {:?}", report.map_full);
        floor.push(bench.floor(&frames[0].1, repeat)?);
        for (name, frame, want) in &frames {
            let ns = bench.run(Direction::Ingress, frame, repeat, *want)?;
            samples.entry(name).or_default().push(ns);
        }
        let report = bench.syncer.apply(&mut bench.dp.maps, &control)?;
        ensure!(report.complete(), "maps full: {:?}", report.map_full);
        for (name, frame, want) in &frames[..] {
            let control_name = match *name {
                "cnp_allow" => "cnp_allow_same_trie_no_deny",
                "cnp_any_allow" => "cnp_any_allow_same_trie_no_deny",
                _ => continue,
            };
            let ns = bench.run(Direction::Ingress, frame, repeat, *want)?;
            samples.entry(control_name).or_default().push(ns);
        }
    }
    let floor_ns = median(&floor);
    let mut cases = serde_json::Map::new();
    for (name, s) in &samples {
        let m = median(s);
        cases.insert(
            (*name).to_string(),
            json!({"median_ns": m, "delta_ns": m - floor_ns,
                   "ratio_to_floor": m / floor_ns, "samples": s}),
        );
    }
    let deny_entries = state.policy.values().filter(|v| v.denies()).count();
    println!(
        "  cnp ({} policy entries, {deny_entries} deny): floor {floor_ns:.0} ns, {}",
        state.policy.len(),
        samples
            .keys()
            .map(|name| format!(
                "{name} +{:.0}",
                cases[*name]["delta_ns"].as_f64().unwrap_or(0.0)
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(json!({
        "ipcache": IPCACHE_HEADLINE,
        "policy_entries": state.policy.len(), "deny_entries": deny_entries,
        "floor_ns": floor_ns, "floor_samples": floor, "cases": cases,
    }))
}

struct Frames {
    new_flow: Vec<u8>,
    ct_prime: Vec<u8>,
    ct_hit: Vec<u8>,
    not_isolated: Vec<u8>,
    deny: Vec<u8>,
    new_flow_v6: Vec<u8>,
    ct_prime_v6: Vec<u8>,
    ct_hit_v6: Vec<u8>,
    deny_v6: Vec<u8>,
}

fn frames() -> Frames {
    let v4 = |src, dst, sport, dport, flags| {
        Frame::ipv4(src, dst)
            .tcp(sport, dport, flags)
            .payload(0)
            .build()
    };
    let v6 = |src, dst, sport, dport, flags| {
        Frame::ipv6(src, dst)
            .tcp(sport, dport, flags)
            .payload(0)
            .build()
    };
    Frames {
        new_flow: v4(PEER_V4, POD_V4, 40000, PORT, TcpFlags::ACK),
        ct_prime: v4(PEER_V4, POD_V4, 40001, PORT, TcpFlags::SYN),
        ct_hit: v4(PEER_V4, POD_V4, 40001, PORT, TcpFlags::ACK),
        not_isolated: v4(POD_V4, PEER_V4, 40003, PORT, TcpFlags::ACK),
        deny: v4(OTHER_V4, POD_V4, 40002, PORT, TcpFlags::SYN),
        new_flow_v6: v6(PEER_V6, POD_V6, 40000, PORT, TcpFlags::ACK),
        ct_prime_v6: v6(PEER_V6, POD_V6, 40001, PORT, TcpFlags::SYN),
        ct_hit_v6: v6(PEER_V6, POD_V6, 40001, PORT, TcpFlags::ACK),
        deny_v6: v6(OTHER_V6, POD_V6, 40002, PORT, TcpFlags::SYN),
    }
}

struct Bench {
    // Dropped before the directory holding its pins.
    dp: Datapath,
    syncer: Syncer,
    floor: raw::Program,
    _dir: BpffsDir,
}

impl Bench {
    fn run(&self, direction: Direction, frame: &[u8], repeat: u32, want: i32) -> Result<f64> {
        let out = self.dp.test_run(direction, frame, repeat)?;
        ensure!(
            out.verdict == want,
            "benchmark set-up error: {direction:?} frame gave verdict {} instead of {want}",
            out.verdict
        );
        Ok(out.avg_ns as f64)
    }

    fn floor(&self, frame: &[u8], repeat: u32) -> Result<f64> {
        let (verdict, ns) = self.floor.test_run(frame, repeat)?;
        ensure!(
            verdict == TC_ACT_UNSPEC,
            "bench_baseline returned {verdict}"
        );
        Ok(f64::from(ns))
    }
}

pub fn run(quick: bool) -> Result<Value> {
    let (repeat, rounds, singles) = if quick {
        (20_000u32, 3usize, 300usize)
    } else {
        (200_000, 7, 1500)
    };
    let object_path = std::env::var_os(crate::build::OBJECT_ENV)
        .context("PALISADE_EBPF_OBJECT is not set (run through `cargo xtask bench`)")?;
    let object = std::fs::read(&object_path)
        .with_context(|| format!("reading {}", Path::new(&object_path).display()))?;
    let insns = raw::program_instructions(&object, "bench_baseline")?;
    let dir = BpffsDir::new()?;
    let dp = Datapath::load(&DatapathConfig {
        bpffs: dir.path().to_path_buf(),
        capacities: Capacities::default(),
        attach: palisade_agent::datapath::default_attach_mode(),
    })
    .context("loading the datapath")?;
    let mut bench = Bench {
        dp,
        syncer: Syncer::default(),
        floor: raw::Program::load_sched_cls(&insns, "bench_baseline")?,
        _dir: dir,
    };
    let f = frames();
    let blocks = building_blocks(&bench, &f.new_flow, repeat, rounds)?;
    let interfaces = BTreeMap::from([(pod(), IFINDEX)]);
    let mut configs = Vec::new();
    let mut sport: u16 = 1024;
    for &ipcache in &IPCACHE {
        for &rules in &RULES {
            let state = render(&plan(rules, ipcache), &interfaces);
            let report = bench.syncer.apply(&mut bench.dp.maps, &state)?;
            ensure!(report.complete(), "maps full: {:?}", report.map_full);
            let mut floor = Vec::new();
            let mut samples: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
            for _ in 0..rounds {
                let (i, e) = (Direction::Ingress, Direction::Egress);
                let (pass, drop) = (TC_ACT_UNSPEC, TC_ACT_SHOT);
                bench.run(i, &f.ct_prime, 1, pass)?;
                bench.run(i, &f.ct_prime_v6, 1, pass)?;
                floor.push(bench.floor(&f.new_flow, repeat)?);
                let runs: [(&str, Direction, &[u8], i32); 7] = [
                    ("ct_hit", i, &f.ct_hit, pass),
                    ("not_isolated", e, &f.not_isolated, pass),
                    ("new_flow", i, &f.new_flow, pass),
                    ("deny", i, &f.deny, drop),
                    ("ct_hit_v6", i, &f.ct_hit_v6, pass),
                    ("new_flow_v6", i, &f.new_flow_v6, pass),
                    ("deny_v6", i, &f.deny_v6, drop),
                ];
                for (name, direction, frame, want) in runs {
                    let ns = bench.run(direction, frame, repeat, want)?;
                    samples.entry(name).or_default().push(ns);
                }
            }
            // Single runs: a fresh SYN each, alternating with the floor.
            let mut single_floor = Vec::new();
            let mut single_insert = Vec::new();
            let mut single_lookup = Vec::new();
            for _ in 0..singles {
                let syn = Frame::ipv4(PEER_V4, POD_V4)
                    .tcp(sport, PORT, TcpFlags::SYN)
                    .payload(0)
                    .build();
                sport = if sport == u16::MAX { 1024 } else { sport + 1 };
                single_floor.push(bench.floor(&syn, 1)?);
                single_insert.push(bench.run(Direction::Ingress, &syn, 1, TC_ACT_UNSPEC)?);
                single_lookup.push(bench.run(Direction::Ingress, &f.new_flow, 1, TC_ACT_UNSPEC)?);
            }
            let floor_ns = median(&floor);
            let single_floor_ns = median(&single_floor);
            let insert_ns = median(&single_insert);
            let lookup_cold_ns = median(&single_lookup);
            let mut cases = serde_json::Map::new();
            for (name, s) in &samples {
                let m = median(s);
                cases.insert(
                    (*name).to_string(),
                    json!({"median_ns": m, "delta_ns": m - floor_ns,
                           "ratio_to_floor": m / floor_ns, "samples": s}),
                );
            }
            // Warm estimate: the measured lookups-only path plus a warm LRU
            // update of the same key size (building block). The insert's
            // cold cost: single SYN runs minus single ACK runs (same path).
            let insert_cold = insert_ns - lookup_cold_ns;
            for (case, lookups, block) in [
                ("new_flow_insert", "new_flow", "lru_hash_update_20B_key"),
                (
                    "new_flow_insert_v6",
                    "new_flow_v6",
                    "lru_hash_update_44B_key",
                ),
            ] {
                let insert_warm = blocks[block].as_f64().unwrap_or(f64::NAN);
                let warm = cases[lookups]["median_ns"].as_f64().unwrap_or(f64::NAN) + insert_warm;
                cases.insert(
                    case.into(),
                    json!({"median_ns": warm, "delta_ns": warm - floor_ns,
                           "ratio_to_floor": warm / floor_ns, "insert_warm_ns": insert_warm,
                           "insert_cold_ns": insert_cold}),
                );
            }
            cases.insert(
                "new_flow_insert_cold".into(),
                json!({"median_ns": insert_ns, "delta_ns": insert_ns - single_floor_ns,
                       "ratio_to_floor": insert_ns / single_floor_ns,
                       "floor_single_ns": single_floor_ns, "runs": singles}),
            );
            cases.insert(
                "new_flow_cold".into(),
                json!({"median_ns": lookup_cold_ns, "delta_ns": lookup_cold_ns - single_floor_ns,
                       "ratio_to_floor": lookup_cold_ns / single_floor_ns,
                       "floor_single_ns": single_floor_ns, "runs": singles}),
            );
            println!(
                "  rules {rules:>6} ipcache {ipcache:>6}: floor {floor_ns:.0} ns, ct hit +{:.0}, new flow +{:.0} (+insert warm est. +{:.0}; cold +{:.0}), deny +{:.0}, v6 new flow +{:.0}",
                cases["ct_hit"]["delta_ns"].as_f64().unwrap_or(0.0),
                cases["new_flow"]["delta_ns"].as_f64().unwrap_or(0.0),
                cases["new_flow_insert"]["delta_ns"].as_f64().unwrap_or(0.0),
                cases["new_flow_insert_cold"]["delta_ns"]
                    .as_f64()
                    .unwrap_or(0.0),
                cases["deny"]["delta_ns"].as_f64().unwrap_or(0.0),
                cases["new_flow_v6"]["delta_ns"].as_f64().unwrap_or(0.0),
            );
            configs.push(json!({
                "rules": rules, "ipcache": ipcache,
                "policy_entries": state.policy.len(), "ipcache_entries": state.ipcache.len(),
                "floor_ns": floor_ns, "floor_samples": floor, "cases": cases,
            }));
        }
    }
    let cnp = cnp(&mut bench, repeat, rounds)?;
    Ok(json!({
        "suite": "datapath",
        "repeat": repeat,
        "rounds": rounds,
        "single_runs": singles,
        "building_blocks": blocks,
        "configs": configs,
        "cnp": cnp,
    }))
}

/// Costs of the building blocks, each ns above the floor: helper calls and
/// lookups of one present key in hash maps, from hand-assembled programs.
fn building_blocks(bench: &Bench, frame: &[u8], repeat: u32, rounds: usize) -> Result<Value> {
    let lru44 = raw::Map::with_zero_key(9, 0, 44, 32)?;
    let lru44_percpu = raw::Map::with_zero_key(9, 2, 44, 32)?; // BPF_F_NO_COMMON_LRU
    let hash44 = raw::Map::with_zero_key(1, 0, 44, 32)?;
    let lru20 = raw::Map::with_zero_key(9, 0, 20, 32)?;
    let lru16 = raw::Map::with_zero_key(9, 0, 16, 32)?;
    let progs = [
        ("bpf_ktime_get_ns", raw::helper_call(5)),
        ("bpf_ktime_get_coarse_ns", raw::helper_call(160)),
        ("bpf_jiffies64", raw::helper_call(118)),
        ("lru_hash_lookup_44B_key", raw::map_access(&lru44, 44, None)),
        ("lru_hash_lookup_20B_key", raw::map_access(&lru20, 20, None)),
        ("lru_hash_lookup_16B_key", raw::map_access(&lru16, 16, None)),
        ("hash_lookup_44B_key", raw::map_access(&hash44, 44, None)),
        (
            "lru_hash_update_44B_key",
            raw::map_access(&lru44, 44, Some(32)),
        ),
        (
            "lru_hash_update_20B_key",
            raw::map_access(&lru20, 20, Some(32)),
        ),
        (
            "lru_hash_no_common_lru_update_44B_key",
            raw::map_access(&lru44_percpu, 44, Some(32)),
        ),
        (
            "hash_update_44B_key",
            raw::map_access(&hash44, 44, Some(32)),
        ),
    ];
    let mut loaded = Vec::new();
    for (name, insns) in &progs {
        loaded.push((*name, raw::Program::load_sched_cls(insns, name)?));
    }
    let mut floor = Vec::new();
    let mut samples: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for _ in 0..rounds {
        floor.push(bench.floor(frame, repeat)?);
        for (name, prog) in &loaded {
            let (_, ns) = prog.test_run(frame, repeat)?;
            samples.entry(name).or_default().push(f64::from(ns));
        }
    }
    let f = median(&floor);
    let mut out = serde_json::Map::new();
    for (name, s) in samples {
        out.insert(name.into(), json!(median(&s) - f));
    }
    println!(
        "  building blocks (ns above floor): {}",
        Value::Object(out.clone())
    );
    Ok(Value::Object(out))
}

/// The config with `rules` and `ipcache`.
pub fn config(result: &Value, rules: usize, ipcache: usize) -> Option<&Value> {
    result["configs"].as_array()?.iter().find(|c| {
        c["rules"].as_u64() == Some(rules as u64) && c["ipcache"].as_u64() == Some(ipcache as u64)
    })
}

pub fn delta(c: &Value, case: &str) -> f64 {
    c["cases"][case]["delta_ns"].as_f64().unwrap_or(f64::NAN)
}

pub fn summary(result: &Value) -> String {
    let mut md = String::from("## Datapath (BPF_PROG_TEST_RUN)\n\n");
    md += &format!(
        "Median of {} runs of {} repeats each (single-run cases: median of {} runs). \
         Figures are ns per packet **above the empty program** (`bench_baseline`, measured \
         interleaved in the same run); `x` is the ratio to the floor itself.\n\n",
        result["rounds"], result["repeat"], result["single_runs"]
    );
    md += &format!("### By rule count (ipcache {IPCACHE_HEADLINE} prefixes)\n\n");
    md += "| rules | floor ns | ct hit | not isolated | new flow (lookups) | new flow + ct insert | deny | ct hit v6 | new flow v6 | new flow + ct insert v6 | deny v6 | new flow cold | new flow + insert cold |\n";
    md += "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for &rules in &RULES {
        let Some(c) = config(result, rules, IPCACHE_HEADLINE) else {
            continue;
        };
        let floor = c["floor_ns"].as_f64().unwrap_or(f64::NAN);
        md += &format!("| {rules} | {} ", fmt_num(floor));
        for case in [
            "ct_hit",
            "not_isolated",
            "new_flow",
            "new_flow_insert",
            "deny",
            "ct_hit_v6",
            "new_flow_v6",
            "new_flow_insert_v6",
            "deny_v6",
            "new_flow_cold",
            "new_flow_insert_cold",
        ] {
            let ratio = c["cases"][case]["ratio_to_floor"]
                .as_f64()
                .unwrap_or(f64::NAN);
            md += &format!("| +{} ({:.1}x) ", fmt_num(delta(c, case)), ratio);
        }
        md += "|\n";
    }
    md += "\nCold columns: single runs against single runs of the floor (all cache-cold).\n";
    if let Some(b) = result["building_blocks"].as_object() {
        md += "\n### Building blocks (hand-assembled programs, ns above the floor)\n\n| block | ns |\n|---|---:|\n";
        for (name, v) in b {
            md += &format!("| {name} | {} |\n", fmt_num(v.as_f64().unwrap_or(f64::NAN)));
        }
    }
    md += "\n### New flow (lookups only, ns above floor) by rule count and ipcache size\n\n";
    md += "| rules \\ ipcache |";
    for m in IPCACHE {
        md += &format!(" {m} |");
    }
    md += "\n|---:|";
    for _ in IPCACHE {
        md += "---:|";
    }
    md += "\n";
    for &rules in &RULES {
        md += &format!("| {rules} |");
        for &m in &IPCACHE {
            let d = config(result, rules, m).map_or(f64::NAN, |c| delta(c, "new_flow"));
            let di = config(result, rules, m).map_or(f64::NAN, |c| delta(c, "new_flow_insert"));
            md += &format!(" +{} (+insert: +{}) |", fmt_num(d), fmt_num(di));
        }
        md += "\n";
    }
    if let Some(cases) = result["cnp"]["cases"].as_object() {
        md += &format!(
            "\n### With deny entries (ClusterNetworkPolicy-style, ipcache {IPCACHE_HEADLINE})\n\n\
             {} policy entries, {} of them deny (`cnp_plan`); floor {} ns in the same run. \
             Compare with *new flow (lookups)* and *deny* above; `*_same_trie_no_deny` run \
             the allow probes on the same trie keys with every entry an allow.\n\n| case | ns above floor | x floor |\n|---|---:|---:|\n",
            result["cnp"]["policy_entries"],
            result["cnp"]["deny_entries"],
            fmt_num(result["cnp"]["floor_ns"].as_f64().unwrap_or(f64::NAN)),
        );
        for (name, c) in cases {
            md += &format!(
                "| {name} | +{} | {:.1}x |\n",
                fmt_num(c["delta_ns"].as_f64().unwrap_or(f64::NAN)),
                c["ratio_to_floor"].as_f64().unwrap_or(f64::NAN)
            );
        }
    }
    md += "\n### Targets\n\n";
    let worst = config(result, 100_000, 100_000);
    let small = config(result, 10, IPCACHE_HEADLINE);
    let big = config(result, 100_000, IPCACHE_HEADLINE);
    let line = |what: &str, got: f64, limit: f64, unit: &str| {
        format!(
            "- {what}: {} {unit} (target <= {} {unit}): {}\n",
            fmt_num(got),
            fmt_num(limit),
            if got <= limit {
                "met".to_string()
            } else {
                format!("MISSED by {} {unit}", fmt_num(got - limit))
            }
        )
    };
    if let Some(w) = worst {
        const AT: &str = "above floor (100k rules, 100k ipcache)";
        // Issue 18's targets.
        let targets = [
            ("conntrack hit", "ct_hit", 45.0),
            (
                "new flow incl. conntrack insert (warm estimate)",
                "new_flow_insert",
                200.0,
            ),
        ];
        for (what, case, limit) in targets {
            md += &line(&format!("{what} {AT}"), delta(w, case), limit, "ns");
        }
        for case in ["ct_hit", "new_flow", "new_flow_insert", "deny"] {
            md += &line(
                &format!("{case}: IPv6 / IPv4 {AT}"),
                delta(w, &format!("{case}_v6")) / delta(w, case),
                1.2,
                "x",
            );
        }
        md += &format!(
            "- (no target) new flow incl. insert, all cache-cold, above cold floor: {} ns\n",
            fmt_num(delta(w, "new_flow_insert_cold"))
        );
    }
    if let (Some(s), Some(b)) = (small, big) {
        for case in ["new_flow", "new_flow_insert"] {
            md += &line(
                &format!("{case}: 100k-rule / 10-rule (above floor, ipcache {IPCACHE_HEADLINE})"),
                delta(b, case) / delta(s, case),
                1.15,
                "x",
            );
            let abs = |c: &Value| c["cases"][case]["median_ns"].as_f64().unwrap_or(f64::NAN);
            md += &format!("  (absolute, floor included: {:.2}x)\n", abs(b) / abs(s));
        }
    }
    md
}

/// The floor program: the object's `bench_baseline` instructions loaded as a
/// `BPF_PROG_TYPE_SCHED_CLS` program with the bare `bpf(2)` syscall. xtask has
/// no aya dependency of its own and the agent only exposes the two policy
/// programs, so this loads the baseline's bytes (taken from the same object)
/// directly; it has no maps, helpers or relocations (checked).
mod raw {
    use anyhow::{Result, bail, ensure};

    const BPF_MAP_CREATE: i64 = 0;
    const BPF_MAP_UPDATE_ELEM: i64 = 2;
    const BPF_PROG_LOAD: i64 = 5;
    const BPF_PROG_TEST_RUN: i64 = 10;
    const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
    #[cfg(target_arch = "x86_64")]
    const SYS_BPF: i64 = 321;
    #[cfg(target_arch = "aarch64")]
    const SYS_BPF: i64 = 280;

    unsafe extern "C" {
        fn syscall(number: i64, ...) -> i64;
        fn close(fd: i32) -> i32;
    }

    #[repr(C, align(8))]
    struct Attr([u8; 128]);

    impl Attr {
        fn put_u32(&mut self, at: usize, v: u32) {
            self.0[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        }
        fn put_u64(&mut self, at: usize, v: u64) {
            self.0[at..at + 8].copy_from_slice(&v.to_ne_bytes());
        }
        fn u32_at(&self, at: usize) -> u32 {
            u32::from_ne_bytes(self.0[at..at + 4].try_into().expect("4 bytes"))
        }
    }

    fn bpf(cmd: i64, attr: &mut Attr) -> std::io::Result<i64> {
        // SAFETY: `attr` is a valid, writable, zero-padded bpf_attr of the
        // size passed; the kernel reads/writes only within it.
        let rc = unsafe { syscall(SYS_BPF, cmd, attr.0.as_mut_ptr(), attr.0.len() as u32) };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(rc)
    }

    fn u16_at(b: &[u8], at: usize) -> Result<u16> {
        Ok(u16::from_le_bytes(
            b.get(at..at + 2)
                .ok_or_else(|| anyhow::anyhow!("ELF truncated"))?
                .try_into()?,
        ))
    }
    fn u32_at(b: &[u8], at: usize) -> Result<u32> {
        Ok(u32::from_le_bytes(
            b.get(at..at + 4)
                .ok_or_else(|| anyhow::anyhow!("ELF truncated"))?
                .try_into()?,
        ))
    }
    fn u64_at(b: &[u8], at: usize) -> Result<u64> {
        Ok(u64::from_le_bytes(
            b.get(at..at + 8)
                .ok_or_else(|| anyhow::anyhow!("ELF truncated"))?
                .try_into()?,
        ))
    }

    /// The instructions of function `name` in a little-endian ELF64 BPF object.
    pub fn program_instructions(elf: &[u8], name: &str) -> Result<Vec<u8>> {
        ensure!(
            elf.starts_with(b"\x7fELF\x02\x01"),
            "not a little-endian ELF64 object"
        );
        let shoff = u64_at(elf, 0x28)? as usize;
        let shentsize = usize::from(u16_at(elf, 0x3a)?);
        let shnum = usize::from(u16_at(elf, 0x3c)?);
        let section = |i: usize| -> Result<(u32, u64, u64, u32)> {
            let h = shoff + i * shentsize;
            Ok((
                u32_at(elf, h + 4)?,
                u64_at(elf, h + 24)?,
                u64_at(elf, h + 32)?,
                u32_at(elf, h + 40)?,
            ))
        };
        for i in 0..shnum {
            let (kind, offset, size, link) = section(i)?;
            if kind != 2 {
                continue; // SHT_SYMTAB
            }
            let (_, str_off, _, _) = section(link as usize)?;
            for s in (offset..offset + size).step_by(24) {
                let s = s as usize;
                let name_at = str_off as usize + u32_at(elf, s)? as usize;
                let end = elf[name_at..].iter().position(|&c| c == 0).unwrap_or(0);
                if &elf[name_at..name_at + end] != name.as_bytes() {
                    continue;
                }
                let shndx = usize::from(u16_at(elf, s + 6)?);
                let value = u64_at(elf, s + 8)? as usize;
                let len = u64_at(elf, s + 16)? as usize;
                let (_, text_off, _, _) = section(shndx)?;
                let start = text_off as usize + value;
                let insns = elf
                    .get(start..start + len)
                    .ok_or_else(|| anyhow::anyhow!("{name}: out of bounds"))?
                    .to_vec();
                ensure!(
                    !insns.is_empty() && insns.len() % 8 == 0,
                    "{name}: odd size"
                );
                for insn in insns.chunks(8) {
                    // lddw with a pseudo source (map fd/value) or a call
                    // would need relocations this loader does not do.
                    let src = insn[1] >> 4;
                    ensure!(
                        !(insn[0] == 0x18 && src != 0) && insn[0] != 0x85,
                        "{name} uses maps or helpers; this loader only takes self-contained programs"
                    );
                }
                return Ok(insns);
            }
        }
        bail!("no symbol {name} in the eBPF object")
    }

    /// A loaded program; closed on drop.
    pub struct Program {
        fd: i32,
    }

    impl Program {
        pub fn load_sched_cls(insns: &[u8], name: &str) -> Result<Program> {
            let license = c"GPL";
            let mut attr = Attr([0; 128]);
            attr.put_u32(0, BPF_PROG_TYPE_SCHED_CLS);
            attr.put_u32(4, (insns.len() / 8) as u32);
            attr.put_u64(8, insns.as_ptr() as u64);
            attr.put_u64(16, license.as_ptr() as u64);
            let short = &name.as_bytes()[..name.len().min(15)];
            attr.0[48..48 + short.len()].copy_from_slice(short);
            let fd = bpf(BPF_PROG_LOAD, &mut attr)
                .map_err(|e| anyhow::anyhow!("BPF_PROG_LOAD {name}: {e}"))?;
            Ok(Program { fd: fd as i32 })
        }

        /// (return value, average ns per run).
        pub fn test_run(&self, frame: &[u8], repeat: u32) -> Result<(i32, u32)> {
            let mut attr = Attr([0; 128]);
            attr.put_u32(0, self.fd as u32);
            attr.put_u32(8, frame.len() as u32);
            attr.put_u64(16, frame.as_ptr() as u64);
            attr.put_u32(32, repeat.max(1));
            bpf(BPF_PROG_TEST_RUN, &mut attr)
                .map_err(|e| anyhow::anyhow!("BPF_PROG_TEST_RUN: {e}"))?;
            Ok((attr.u32_at(4) as i32, attr.u32_at(36)))
        }
    }

    /// A map created with `BPF_MAP_CREATE`; closed on drop.
    pub struct Map {
        fd: i32,
    }

    impl Map {
        /// A map of `map_type` (1 hash, 9 LRU hash) with `flags` holding one
        /// all-zero key.
        pub fn with_zero_key(
            map_type: u32,
            flags: u32,
            key_size: u32,
            value_size: u32,
        ) -> Result<Map> {
            let mut attr = Attr([0; 128]);
            attr.put_u32(0, map_type);
            attr.put_u32(4, key_size);
            attr.put_u32(8, value_size);
            attr.put_u32(12, 65_536);
            attr.put_u32(16, flags);
            let fd = bpf(BPF_MAP_CREATE, &mut attr)
                .map_err(|e| anyhow::anyhow!("BPF_MAP_CREATE: {e}"))?;
            let map = Map { fd: fd as i32 };
            let key = vec![0u8; key_size as usize];
            let value = vec![0u8; value_size as usize];
            let mut attr = Attr([0; 128]);
            attr.put_u32(0, map.fd as u32);
            attr.put_u64(8, key.as_ptr() as u64);
            attr.put_u64(16, value.as_ptr() as u64);
            bpf(BPF_MAP_UPDATE_ELEM, &mut attr)
                .map_err(|e| anyhow::anyhow!("BPF_MAP_UPDATE_ELEM: {e}"))?;
            Ok(map)
        }
    }

    impl Drop for Map {
        fn drop(&mut self) {
            // SAFETY: `fd` is the map fd this value owns.
            unsafe { close(self.fd) };
        }
    }

    fn insn(op: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = op;
        b[1] = (src << 4) | dst;
        b[2..4].copy_from_slice(&off.to_le_bytes());
        b[4..8].copy_from_slice(&imm.to_le_bytes());
        b
    }

    /// `call helper; r0 = -1; exit`.
    pub fn helper_call(helper: i32) -> Vec<u8> {
        [
            insn(0x85, 0, 0, 0, helper),
            insn(0xb7, 0, 0, 0, -1),
            insn(0x95, 0, 0, 0, 0),
        ]
        .concat()
    }

    /// Looks up (or, with `value_size`, updates to zeros) the all-zero key
    /// of `key_size` bytes in `map`; `r0 = -1; exit`.
    pub fn map_access(map: &Map, key_size: u32, update_value_size: Option<u32>) -> Vec<u8> {
        let mut out = Vec::new();
        let kw = key_size.div_ceil(8) as i16;
        let vw = update_value_size.map_or(0, |v| v.div_ceil(8)) as i16;
        for k in 0..kw + vw {
            // *(u64 *)(r10 - 8 * (k + 1)) = 0: key words, then value words.
            out.extend(insn(0x7a, 10, 0, -8 * (k + 1), 0));
        }
        out.extend(insn(0x18, 1, 1, 0, map.fd)); // r1 = map (pseudo map fd)
        out.extend(insn(0, 0, 0, 0, 0));
        out.extend(insn(0xbf, 2, 10, 0, 0)); // r2 = r10
        out.extend(insn(0x07, 2, 0, 0, -8 * i32::from(kw))); // r2 = key
        if vw > 0 {
            out.extend(insn(0xbf, 3, 10, 0, 0)); // r3 = r10
            out.extend(insn(0x07, 3, 0, 0, -8 * i32::from(kw + vw))); // r3 = value
            out.extend(insn(0xb7, 4, 0, 0, 0)); // r4 = BPF_ANY
            out.extend(insn(0x85, 0, 0, 0, 2)); // call map_update_elem
        } else {
            out.extend(insn(0x85, 0, 0, 0, 1)); // call map_lookup_elem
        }
        out.extend(insn(0xb7, 0, 0, 0, -1));
        out.extend(insn(0x95, 0, 0, 0, 0));
        out
    }

    impl Drop for Program {
        fn drop(&mut self) {
            // SAFETY: `fd` is the program fd this value owns.
            unsafe { close(self.fd) };
        }
    }
}
