//! What the embedded eBPF object is and the names of its programs.

/// The eBPF object embedded at build time (empty when built without it).
pub(crate) const OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/palisade-ebpf.o"));
/// Whether this binary carries its eBPF object.
pub const OBJECT_EMBEDDED: bool = cfg!(palisade_ebpf_embedded);

/// Program names, as declared in `ebpf/src/main.rs`.
pub(crate) const PROG_POD_EGRESS: &str = "palisade_egress";
pub(crate) const PROG_POD_INGRESS: &str = "palisade_ingress";
/// Reached from `palisade_egress` by a tail call through `CONTROL`; never attached.
pub(crate) const PROG_POD_EGRESS_CONTROL: &str = "pod_egress_control";
/// Anchors the programs' clock (`CLOCK`); run once per load, never attached.
pub(crate) const PROG_CLOCK_ANCHOR: &str = "clock_anchor";
