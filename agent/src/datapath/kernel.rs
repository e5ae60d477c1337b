//! What the kernel must offer, probed at start, and the attach mode it allows.
//!
//! The agent refuses to start on a kernel that lacks something it needs, with
//! the missing pieces named, rather than failing later in a way that leaves
//! pods unpoliced.

use aya::maps::MapType;
use aya::programs::ProgramType;
use aya::sys::{BpfHelper, is_helper_supported, is_map_supported, is_program_supported};
use aya::util::KernelVersion;

use super::mode::AttachMode;

/// The oldest kernel with everything below (the coarse clock came last, in
/// 5.11); 5.15 LTS is the oldest one tested.
pub const MINIMUM_KERNEL: &str = "5.11";

/// The attach mode the operator asked for (`--attach`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AttachRequest {
    /// tcx where the kernel has it, tc otherwise.
    #[default]
    Auto,
    /// tcx links; refused where the kernel has none.
    Tcx,
    /// Netlink clsact filters.
    Tc,
}

/// What the kernel offers, as probed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelSupport {
    /// The running kernel's release (`uname -r`).
    pub release: String,
    /// BTF (the object's type information loads).
    pub btf: bool,
    /// `BPF_PROG_TYPE_SCHED_CLS`.
    pub sched_cls: bool,
    /// `BPF_MAP_TYPE_LPM_TRIE` (ipcache, policy).
    pub lpm_trie: bool,
    /// `BPF_MAP_TYPE_LRU_HASH` (conntrack).
    pub lru_hash: bool,
    /// `BPF_MAP_TYPE_RINGBUF` (flow events).
    pub ring_buffer: bool,
    /// `BPF_MAP_TYPE_PROG_ARRAY` (the control program's tail call).
    pub prog_array: bool,
    /// The `bpf_ktime_get_coarse_ns` helper (conntrack ages).
    pub coarse_clock: bool,
    /// The clsact qdisc; `None` when it could not be probed.
    pub clsact: Option<bool>,
    /// tcx links (6.6).
    pub tcx: bool,
}

/// The kernel lacks something the agent needs.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "kernel {release} lacks what Palisade needs: {}; Palisade needs Linux {MINIMUM_KERNEL} or later \
     with BPF, BTF and the clsact qdisc (tcx, for --attach tcx, needs 6.6)",
    missing.join(", ")
)]
pub struct KernelError {
    /// The running kernel's release.
    pub release: String,
    /// What is missing.
    pub missing: Vec<&'static str>,
}

impl KernelSupport {
    /// Probes the running kernel (needs the privileges the agent runs with).
    pub fn probe() -> KernelSupport {
        let map = |t| is_map_supported(t).unwrap_or(false);
        KernelSupport {
            release: release(),
            btf: aya::features().btf().is_some(),
            sched_cls: is_program_supported(ProgramType::SchedClassifier).unwrap_or(false),
            lpm_trie: map(MapType::LpmTrie),
            lru_hash: map(MapType::LruHash),
            ring_buffer: map(MapType::RingBuf),
            prog_array: map(MapType::ProgramArray),
            coarse_clock: is_helper_supported(
                ProgramType::SchedClassifier,
                BpfHelper::BPF_FUNC_ktime_get_coarse_ns,
            )
            .unwrap_or(false),
            clsact: probe_clsact(),
            tcx: KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0)),
        }
    }

    /// The attach mode for `request` on this kernel, or what is missing.
    pub fn attach_mode(&self, request: AttachRequest) -> Result<AttachMode, KernelError> {
        let mut missing = Vec::new();
        for (present, what) in [
            (self.btf, "BTF"),
            (self.sched_cls, "TC BPF programs (sched_cls)"),
            (self.lpm_trie, "LPM trie maps"),
            (self.lru_hash, "LRU hash maps"),
            (self.ring_buffer, "ring buffer maps"),
            (self.prog_array, "program array maps"),
            (self.coarse_clock, "the bpf_ktime_get_coarse_ns helper"),
        ] {
            if !present {
                missing.push(what);
            }
        }
        let mode = match request {
            AttachRequest::Tcx if !self.tcx => {
                missing.push("tcx links (--attach tcx)");
                AttachMode::Tcx
            }
            AttachRequest::Tcx => AttachMode::Tcx,
            AttachRequest::Auto if self.tcx => AttachMode::Tcx,
            AttachRequest::Auto | AttachRequest::Tc => {
                if self.clsact == Some(false) {
                    missing.push("the clsact qdisc (sch_ingress)");
                }
                AttachMode::Tc
            }
        };
        if missing.is_empty() {
            Ok(mode)
        } else {
            Err(KernelError {
                release: self.release.clone(),
                missing,
            })
        }
    }
}

/// The attach mode `auto` picks on the running kernel, without the other
/// probes (tests and benchmarks).
pub fn default_attach_mode() -> AttachMode {
    if KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0)) {
        AttachMode::Tcx
    } else {
        AttachMode::Tc
    }
}

fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_string())
        .unwrap_or_else(|_| "(unknown)".into())
}

/// Adds clsact to the loopback of a network namespace made for the probe,
/// in a thread of its own (a namespace is per thread), gone with the thread.
fn probe_clsact() -> Option<bool> {
    std::thread::spawn(|| {
        // SAFETY: unshare only changes this thread's network namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return None;
        }
        Some(aya::programs::tc::qdisc_add_clsact("lo").is_ok())
    })
    .join()
    .ok()
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> KernelSupport {
        KernelSupport {
            release: "6.1.0-test".into(),
            btf: true,
            sched_cls: true,
            lpm_trie: true,
            lru_hash: true,
            ring_buffer: true,
            prog_array: true,
            coarse_clock: true,
            clsact: Some(true),
            tcx: false,
        }
    }

    #[test]
    fn auto_takes_tcx_where_the_kernel_has_it_and_tc_elsewhere() {
        assert_eq!(full().attach_mode(AttachRequest::Auto), Ok(AttachMode::Tc));
        let tcx = KernelSupport {
            tcx: true,
            ..full()
        };
        assert_eq!(tcx.attach_mode(AttachRequest::Auto), Ok(AttachMode::Tcx));
        assert_eq!(tcx.attach_mode(AttachRequest::Tc), Ok(AttachMode::Tc));
    }

    #[test]
    fn tcx_on_a_kernel_without_it_is_refused_by_name() {
        let err = full().attach_mode(AttachRequest::Tcx).unwrap_err();
        assert_eq!(err.missing, vec!["tcx links (--attach tcx)"]);
        assert!(err.to_string().contains("6.1.0-test"), "{err}");
    }

    #[test]
    fn every_missing_piece_is_named_with_the_minimum_kernel() {
        let old = KernelSupport {
            ring_buffer: false,
            coarse_clock: false,
            clsact: Some(false),
            ..full()
        };
        let err = old.attach_mode(AttachRequest::Auto).unwrap_err();
        assert_eq!(
            err.missing,
            vec![
                "ring buffer maps",
                "the bpf_ktime_get_coarse_ns helper",
                "the clsact qdisc (sch_ingress)"
            ]
        );
        assert!(err.to_string().contains("Linux 5.11 or later"), "{err}");
    }

    #[test]
    fn a_clsact_that_could_not_be_probed_is_not_a_refusal() {
        let unknown = KernelSupport {
            clsact: None,
            ..full()
        };
        assert_eq!(unknown.attach_mode(AttachRequest::Tc), Ok(AttachMode::Tc));
    }
}
