//! Test that the kernel's verdicts equal the userspace model's over random maps
//! (applied through the real sync layer, so diffs between rounds are exercised
//! too) and random packets, some of them with forged sources, some pods with
//! allowed source prefixes or without an IPv6 address, allow and deny
//! entries mixed: 0 mismatches over 100,000 packets. Packets from the pod's
//! own address are also compared with `lookup::evaluate` on the plan. Seeded and reproducible: set `PALISADE_DIFF_SEED` to
//! replay a failure.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use palisade_agent::policy::lookup::{Flow, Reason, evaluate};
use palisade_agent::policy::plan::L4Match;
use palisade_agent::sync::render::addr16;
use palisade_common::ids::IdentityId;
use palisade_common::verdict::{Direction, TC_ACT_SHOT, TC_ACT_UNSPEC};
use palisade_tests::frames::{Frame, TcpFlags};

use crate::harness::*;
use crate::model::{ModelPacket, passes};

const ROUNDS: u32 = 200;
const PACKETS_PER_ROUND: u32 = 560;

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const PROTOCOLS: [u8; 5] = [6, 17, 132, 1, 47];

fn remote_v4(rng: &mut Rng) -> Ipv4Addr {
    Ipv4Addr::new(10, 9, rng.below(4) as u8, rng.below(8) as u8)
}

fn remote_v6(rng: &mut Rng) -> Ipv6Addr {
    Ipv6Addr::new(
        0xfd00,
        9,
        0,
        0,
        0,
        0,
        rng.below(4) as u16,
        rng.below(8) as u16,
    )
}

fn random_l4(rng: &mut Rng) -> L4Match {
    let protocol = PROTOCOLS[rng.below(3) as usize];
    match rng.below(4) {
        0 => L4Match::Any,
        1 => L4Match::Protocol(protocol),
        _ => {
            let first = 1 + rng.below(200) as u16;
            let last = first + rng.below(40) as u16;
            L4Match::Ports {
                protocol,
                first,
                last,
            }
        }
    }
}

fn random_plan(rng: &mut Rng, round: u32) -> palisade_agent::policy::plan::DatapathPlan {
    let mut b = PlanBuilder::new();
    if rng.chance(70) {
        b = b.isolate(Direction::Ingress);
    }
    if rng.chance(70) {
        b = b.isolate(Direction::Egress);
    }
    if rng.chance(10) {
        b = b.audit();
    }
    if rng.chance(20) {
        // A gateway pod: part of the remote pool is its to send from.
        b = b
            .source_prefix("10.9.1.0/24")
            .source_prefix("fd00:9::1:0/112");
    }
    let identities = [
        IdentityId(16),
        IdentityId(17),
        IdentityId(18),
        IdentityId(19),
    ];
    for _ in 0..rng.below(10) {
        let len4 = 24 + rng.below(9) as u8;
        let net4 = IpNet::new(IpAddr::V4(remote_v4(rng)), len4)
            .expect("prefix")
            .trunc();
        let len6 = 112 + rng.below(17) as u8;
        let net6 = IpNet::new(IpAddr::V6(remote_v6(rng)), len6)
            .expect("prefix")
            .trunc();
        for net in [net4, net6] {
            let id = identities[rng.below(identities.len() as u64) as usize];
            b = b.ipcache(&net.to_string(), id);
        }
    }
    let rule_ids = [
        IdentityId::ANY,
        IdentityId(16),
        IdentityId(17),
        IdentityId(18),
        IdentityId(19),
        IdentityId::WORLD,
    ];
    for rule in 0..rng.below(12) {
        let direction = if rng.chance(50) {
            Direction::Ingress
        } else {
            Direction::Egress
        };
        let identity = rule_ids[rng.below(rule_ids.len() as u64) as usize];
        let l4 = random_l4(rng);
        b = b.allow(direction, identity, l4, 1 + rule as u32 + round % 3);
    }
    // Deny entries over the same space, some credited to no rule.
    for rule in 0..rng.below(8) {
        let direction = if rng.chance(50) {
            Direction::Ingress
        } else {
            Direction::Egress
        };
        let identity = rule_ids[rng.below(rule_ids.len() as u64) as usize];
        let l4 = random_l4(rng);
        let rule = if rng.chance(25) { 0 } else { 20 + rule as u32 };
        b = b.deny(direction, identity, l4, rule);
    }
    let mut plan = b.build();
    // The node's addresses: random identities, flagged as host.
    for node in ["10.0.255.1", "fd00::ff:1"] {
        let ip: IpAddr = node.parse().expect("node address");
        std::sync::Arc::make_mut(&mut plan.ipcache).insert(
            IpNet::from(ip),
            identities[rng.below(identities.len() as u64) as usize],
        );
        plan.host_addresses.insert(ip);
    }
    plan
}

#[test]
fn kernel_verdicts_match_the_model_on_random_maps_and_packets() {
    let seed: u64 = std::env::var("PALISADE_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x005e_ed0f_0a11_5ade);
    let mut rng = Rng(seed | 1);
    let mut h = Harness::new();
    let mut mismatches = Vec::new();
    let mut total = 0u64;
    let mut passed = 0u64;
    let mut compared = 0u64;
    // Flows must be new to conntrack (the model judges first packets): the
    // pod's address changes every round, but addresses under its allowed
    // source prefixes do not, so portless flows are seen once and source
    // ports run on across rounds.
    let mut other_proto_seen = std::collections::BTreeSet::new();
    let mut denied_by_entry = 0u64;
    for round in 0..ROUNDS {
        let mut plan = random_plan(&mut rng, round);
        // A fresh pod address per round keeps every flow new to conntrack.
        let ep = plan.endpoints.get_mut(&pod()).expect("endpoint");
        ep.ipv4 = Some(Ipv4Addr::new(
            10,
            1,
            (round / 250) as u8,
            (round % 250) as u8 + 1,
        ));
        let pod6 = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, round as u16 + 1);
        // Some pods have no IPv6 address: their "own" IPv6 address is then
        // no address at all.
        ep.ipv6 = (!rng.chance(15)).then_some(pod6);
        let pod4 = ep.ipv4.expect("set");
        let ep_plan = ep.clone();
        h.apply(&plan);
        let state = h.syncer.current().clone();
        for i in 0..PACKETS_PER_ROUND {
            let direction = if rng.chance(50) {
                Direction::Ingress
            } else {
                Direction::Egress
            };
            let v6 = rng.chance(50);
            let remote: IpAddr = match rng.below(20) {
                0 if v6 => pod6.into(),
                0 => pod4.into(),
                1 if v6 => "fd00::ff:1".parse().expect("node"),
                1 => "10.0.255.1".parse().expect("node"),
                _ if v6 => remote_v6(&mut rng).into(),
                _ => remote_v4(&mut rng).into(),
            };
            let remote = match (remote, v6) {
                (IpAddr::V4(_), true) => IpAddr::V6(remote_v6(&mut rng)),
                (r, _) => r,
            };
            // Mostly the pod's own address; sometimes a forgery: another
            // address of the pool, the unspecified address, or the other
            // family's address in v4-mapped form.
            let local: IpAddr = match (remote.is_ipv6(), rng.below(10)) {
                (true, 0) => remote_v6(&mut rng).into(),
                (true, 1) => Ipv6Addr::UNSPECIFIED.into(),
                (true, 2) => pod4.to_ipv6_mapped().into(),
                (true, _) => pod6.into(),
                (false, 0) => remote_v4(&mut rng).into(),
                (false, 1) => Ipv4Addr::UNSPECIFIED.into(),
                (false, _) => pod4.into(),
            };
            let mut protocol = PROTOCOLS[rng.below(PROTOCOLS.len() as u64) as usize];
            if protocol == 1 && remote.is_ipv6() {
                protocol = 58;
            }
            if protocol == 47 && !other_proto_seen.insert((local, remote)) {
                continue;
            }
            let sport = 1024 + ((round * PACKETS_PER_ROUND + i) % 60_000) as u16;
            let dport = rng.below(260) as u16;
            let (src, dst) = match direction {
                Direction::Egress => (local, remote),
                Direction::Ingress => (remote, local),
            };
            let frame = Frame::ip(src, dst);
            let mut bytes = match protocol {
                6 => frame.tcp(sport, dport, TcpFlags::SYN).build(),
                17 => frame.udp(sport, dport).build(),
                132 => frame.sctp(sport, dport).build(),
                1 => frame.icmp_echo().build(),
                58 => frame.icmpv6_echo().build(),
                p => frame.proto(p).build(),
            };
            if matches!(protocol, 1 | 58) {
                // Echo identifier: unique per packet, so each is a new flow.
                let at = 14 + if remote.is_ipv6() { 40 } else { 20 } + 4;
                bytes[at..at + 2].copy_from_slice(&sport.to_be_bytes());
            }
            let packet = ModelPacket {
                direction,
                ipv4: remote.is_ipv4(),
                local: addr16(local),
                remote: addr16(remote),
                protocol,
                dst_port: dport,
            };
            let want = passes(&state, TEST_IFINDEX, &packet);
            let got = h.verdict(direction, &bytes);
            // Where the plan's own reading applies (the pod's own address,
            // no audit), the kernel also agrees with `lookup::evaluate`.
            let own = match local {
                IpAddr::V4(a) => ep_plan.ipv4 == Some(a),
                IpAddr::V6(a) => ep_plan.ipv6 == Some(a),
            };
            if own && !ep_plan.audit {
                let flow = Flow {
                    src,
                    dst,
                    protocol,
                    dst_port: dport,
                };
                let planned = evaluate(&plan, &ep_plan, direction, &flow);
                compared += 1;
                denied_by_entry += u64::from(planned.reason == Reason::Denied);
                if planned.allowed != (got == TC_ACT_UNSPEC) && mismatches.len() < 10 {
                    mismatches.push(format!(
                        "round {round} packet {i}: {flow:?} {direction:?} kernel={got} lookup={planned:?}"
                    ));
                }
            }
            assert!(
                got == TC_ACT_UNSPEC || got == TC_ACT_SHOT,
                "unexpected return code {got}"
            );
            total += 1;
            passed += u64::from(got == TC_ACT_UNSPEC);
            if (got == TC_ACT_UNSPEC) != want && mismatches.len() < 10 {
                mismatches.push(format!(
                    "round {round} packet {i}: {packet:?} kernel={got} model_pass={want}"
                ));
            }
        }
    }
    assert!(total >= 100_000, "only {total} packets were checked");
    assert!(
        compared > total / 2 && denied_by_entry > compared / 50,
        "{compared} packets compared with lookup::evaluate, {denied_by_entry} denied by a deny entry"
    );
    assert!(
        passed > total / 10 && passed < total * 9 / 10,
        "verdicts too uniform to mean anything: {passed}/{total} passed"
    );
    assert!(
        mismatches.is_empty(),
        "seed {seed}: {} mismatches, first: {mismatches:#?}",
        mismatches.len()
    );
}
