//! Runs of puts or deletes on one map in one syscall (`BPF_MAP_UPDATE_BATCH`,
//! `BPF_MAP_DELETE_BATCH`; LPM tries have them since Linux 5.6). The kernel
//! performs the elements in order and stops at the first that fails, so a
//! batch keeps the writes' order and says exactly which ones landed.

use std::io;
use std::os::fd::{AsFd, AsRawFd};

use aya::Pod;
use aya::maps::MapData;
use aya_obj::generated::{bpf_attr, bpf_cmd};

/// The most elements one batch hands the kernel: a longer run is several
/// batches, so one syscall stays short and its count fits the kernel's u32.
pub(crate) const MAX_BATCH: usize = 4096;

/// What a batch did.
#[derive(Debug)]
pub(crate) struct Done {
    /// How many elements, from the first, the kernel performed.
    pub landed: usize,
    /// Why it stopped before the end.
    pub error: Option<io::Error>,
}

/// Inserts or replaces `keys[i]` -> `values[i]`, in order.
pub(crate) fn update<K: Pod, V: Pod>(map: &MapData, keys: &[K], values: &[V]) -> Done {
    assert_eq!(keys.len(), values.len(), "one value per key");
    run(
        bpf_cmd::BPF_MAP_UPDATE_BATCH,
        map,
        keys.as_ptr().cast(),
        values.as_ptr().cast(),
        keys.len(),
    )
}

/// Removes `keys`, in order.
pub(crate) fn delete<K: Pod>(map: &MapData, keys: &[K]) -> Done {
    run(
        bpf_cmd::BPF_MAP_DELETE_BATCH,
        map,
        keys.as_ptr().cast(),
        std::ptr::null(),
        keys.len(),
    )
}

fn run(cmd: bpf_cmd, map: &MapData, keys: *const u8, values: *const u8, count: usize) -> Done {
    assert!(count <= MAX_BATCH, "a batch of {count} elements");
    let fd = map.fd().as_fd().as_raw_fd();
    // SAFETY: all-zero is a valid `bpf_attr` (a union of integer structs),
    // and zero is what the kernel requires of every field a command does not
    // read.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    // SAFETY: `batch` is the member the batch commands read; the pointers
    // stay valid for the call, `count` elements of the map's key (and value)
    // size each, as `Pod` types the map was opened with.
    let rc = unsafe {
        attr.batch.keys = keys as u64;
        attr.batch.values = values as u64;
        attr.batch.count = count as u32;
        attr.batch.map_fd = fd as u32;
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            &mut attr as *mut bpf_attr,
            std::mem::size_of::<bpf_attr>(),
        )
    };
    let error = (rc < 0).then(io::Error::last_os_error);
    // SAFETY: the kernel writes back how many elements it performed.
    let landed = unsafe { attr.batch.count } as usize;
    Done {
        landed: if error.is_none() {
            count
        } else {
            landed.min(count)
        },
        error,
    }
}
