//! Palisade's TC programs, one per direction of the pod.
//!
//! `palisade_egress` runs on the TC *ingress* hook of a pod's host-side veth (what the
//! pod sends) and `palisade_ingress` on its TC *egress* hook (what the pod receives).
//! Both run the same pipeline ([`enforce::enforce`]):
//! conntrack -> endpoint -> source ([`source`], what the pod sends) -> ipcache
//! -> policy -> verdict, a constant number of map lookups per packet whatever
//! the number of pods, policies and rules. Plain
//! TCP and UDP packets of established flows take a shorter way through the
//! same conntrack map ([`established`]).
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]

mod clock;
mod conntrack;
mod control;
mod endpoint;
mod enforce;
mod established;
mod fragment;
mod ipcache;
mod parse;
mod policy;
mod source;
mod stats;
mod verdict;

use aya_ebpf::{macros::classifier, programs::TcContext};
use palisade_common::verdict::Direction;

/// Policy for traffic leaving the pod; attach to the host-side TC ingress hook.
#[classifier]
pub fn palisade_egress(ctx: TcContext) -> i32 {
    enforce::enforce(&ctx, Direction::Egress)
}

/// Policy for traffic entering the pod; attach to the host-side TC egress hook.
#[classifier]
pub fn palisade_ingress(ctx: TcContext) -> i32 {
    enforce::enforce(&ctx, Direction::Ingress)
}

/// ARP, neighbour discovery and MLD the pod sends: `palisade_egress` hands them
/// over by a tail call ([`control`]). Never attached.
#[classifier]
pub fn pod_egress_control(ctx: TcContext) -> i32 {
    control::judge_sent(&ctx)
}

/// Anchors the programs' clock ([`clock`]); the agent runs it once per load
/// with `BPF_PROG_TEST_RUN`. Never attached.
#[classifier]
pub fn clock_anchor(ctx: TcContext) -> i32 {
    clock::anchor(&ctx)
}

/// Lets every packet continue and does nothing else: the floor that
/// benchmarks subtract (BPF_PROG_TEST_RUN harness overhead). Never attached.
#[classifier]
pub fn bench_baseline(_ctx: TcContext) -> i32 {
    palisade_common::verdict::TC_ACT_UNSPEC
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program with a reachable panic path, so this is
    // never called at run time.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
