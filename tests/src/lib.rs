//! Palisade's test bed: virtual nodes and pods in network namespaces, echo
//! servers and reachability probes, crafted frames for kernel tests, and
//! guards that clean everything up, even when a test panics.
//!
//! Everything the bed creates lives in namespaces it creates itself: the
//! root network namespace is never configured, and probes only ever target
//! addresses that exist inside the bed. Most of it needs root.
//!
//! ```no_run
//! use std::time::Duration;
//! use palisade_tests::Node;
//!
//! let node = Node::new(0)?;
//! let client = node.add_pod("client")?;
//! let server = node.add_pod("server")?;
//! let _echo = server.serve_tcp(8080)?;
//! assert!(client.probe_tcp(server.ipv4().into(), 8080, Duration::from_secs(2)).is_reachable());
//! # anyhow::Ok(())
//! ```
//!
//! # Layout
//!
//! | module | job |
//! | --- | --- |
//! | [`netns`] | [`NetNs`]: a named namespace (`plsd-<tag>-<label>`) deleted on drop; run closures or commands inside it; [`unique_tag`]; [`leftovers`] / [`orphaned_leftovers`] / [`sweep_leftovers`] / [`sweep_leftovers_matching`] |
//! | [`bpffs`] | [`BpffsDir`]: `/sys/fs/bpf/palisade-test-<tag>`, mounted if needed, removed on drop |
//! | [`node`] | [`Node`] and [`Pod`], Calico-style routing (veth per pod, proxy ARP, /32 and /128 routes) or a bridge ([`Layout`]); [`link_nodes`] |
//! | [`servers`] | TCP/UDP/raw-SCTP echo [`Server`]s in a pod or node, stopped on drop |
//! | [`probes`] | TCP/UDP/ICMP/SCTP probes returning an [`Outcome`]; [`EchoConn`] for established connections |
//! | [`wait`] | [`Poll`]: poll (sync or async) until a condition holds or a scaled deadline passes, returning what was found or [`TimedOut`] with the last observation; [`wait_until`] / [`try_wait_until`] for a bool |
//! | [`process`] | [`ChildGuard`]: a child process killed and reaped on drop |
//! | [`frames`] | [`Frame`]: crafted Ethernet/IPv4/IPv6/ARP frames for `BPF_PROG_TEST_RUN` |
//! | [`spoof`] | what `CAP_NET_RAW` allows a pod: raw IP packets and frames; a [`spoof::Sniffer`] of what arrives |
//! | [`checksum`] | Internet checksum and CRC32c |
//! | [`sctp`] | the bits of SCTP the probes and frames need |
//!
//! # Addresses
//!
//! Node `I` holds `10.244.I.1/32` and `fd00:244:I::1/128` on `lo`; its pods
//! get `10.244.I.N` and `fd00:244:I::N` for `N` = 2, 3, ... in order of
//! [`Node::add_pod`]. Pods route through `169.254.1.1` / `fe80::1`, which
//! the host veth answers for.
//!
//! # Cleanup
//!
//! Every resource is an RAII guard whose drop never panics, so unwinding out
//! of a failing test removes its namespaces, bpffs directory, servers and
//! processes. [`leftovers`] lists anything of the bed's that still exists;
//! a runner calls [`sweep_leftovers`] before a suite to clear what a killed
//! run left.

pub mod bpffs;
pub mod checksum;
pub mod cluster;
pub mod frames;
pub mod netns;
pub mod node;
pub mod probes;
pub mod process;
mod random;
pub mod sctp;
pub mod servers;
mod sock;
pub mod spoof;
pub mod wait;

pub use bpffs::BpffsDir;
pub use frames::{Frame, Ipv6Ext, TcpFlags};
pub use netns::{
    NetNs, leftovers, orphaned_leftovers, sweep_leftovers, sweep_leftovers_matching, unique_tag,
};
pub use node::{Layout, Node, Pod, link_nodes};
pub use probes::{EchoConn, Outcome};
pub use process::ChildGuard;
pub use servers::Server;
pub use wait::{Poll, TimedOut, try_wait_until, wait_until};
