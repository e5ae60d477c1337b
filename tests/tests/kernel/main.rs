//! Tier 2: the real eBPF programs run by the kernel (`BPF_PROG_TEST_RUN`) on
//! crafted frames, against maps written by the real `sync` layer. One module
//! per concept; each test builds packets, sets up maps, and checks verdicts and
//! counters. Needs root and the embedded object (`cargo xtask test`).

mod audit;
mod capacity;
mod clock;
mod conntrack;
mod counters;
mod deny;
mod differential;
mod fragments;
mod harness;
mod headers;
mod lifecycle;
mod model;
mod protocols;
mod restart;
mod source;
