//! Batched updates and deletes of the outer (map-of-maps) maps, and the
//! batched read of an array of maps.
//!
//! Every update or delete of a map-of-maps element makes the kernel wait
//! for an RCU grace period before the syscall returns (so that, once it
//! does, no program still uses the replaced inner map): about 12 ms each on
//! a small VM, and a generation flip touches eight elements. One
//! `BPF_MAP_UPDATE_BATCH` / `BPF_MAP_DELETE_BATCH` waits once for all its
//! elements, so a round costs a few grace periods however many pods it
//! rewrites. aya 0.14 has no batch calls: they are made here.

use anyhow::{bail, Result};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Runs one batch command; returns how many elements the kernel processed
/// and the error, if it stopped early.
fn batch(
    cmd: libc::c_long,
    map: BorrowedFd<'_>,
    keys: &[u8],
    values: Option<&[u8]>,
    count: usize,
) -> (usize, Option<std::io::Error>) {
    let mut attr = BatchAttr {
        in_batch: 0,
        out_batch: 0,
        keys: keys.as_ptr() as u64,
        values: values.map_or(0, |v| v.as_ptr() as u64),
        count: count as u32,
        map_fd: map.as_raw_fd() as u32,
        elem_flags: 0,
        flags: 0,
    };
    let err = call(cmd, &mut attr);
    (attr.count as usize, err)
}

/// Issues `cmd` with `attr`; the error, if any.
fn call(cmd: libc::c_long, attr: &mut BatchAttr) -> Option<std::io::Error> {
    // SAFETY: `attr` is the batch member of `union bpf_attr`; the buffers
    // it points at hold `attr.count` elements of the map's key and value
    // sizes and outlive the call; the kernel writes back only `attr.count`,
    // the buffers and the `out_batch` token.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>(),
        )
    };
    (r < 0).then(std::io::Error::last_os_error)
}

/// Every (index, inner map id) an array of maps with `max_entries` holds,
/// in one `BPF_MAP_LOOKUP_BATCH` (the kernel skips the empty indexes):
/// one system call where a lookup per index costs `max_entries`.
pub fn inner_ids(outer: &impl AsFd, max_entries: u32) -> Result<Vec<(u32, u32)>> {
    let n = max_entries as usize;
    let (mut keys, mut ids) = (vec![0u32; n], vec![0u32; n]);
    let mut token = 0u32;
    let mut attr = BatchAttr {
        in_batch: 0,
        out_batch: &mut token as *mut u32 as u64,
        keys: keys.as_mut_ptr() as u64,
        values: ids.as_mut_ptr() as u64,
        count: max_entries,
        map_fd: outer.as_fd().as_raw_fd() as u32,
        elem_flags: 0,
        flags: 0,
    };
    match call(BPF_MAP_LOOKUP_BATCH, &mut attr) {
        // ENOENT: the walk reached the end, `count` holds what it found.
        None => {}
        Some(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Some(e) => bail!("batch lookup of an array of maps failed: {e}"),
    }
    let found = attr.count as usize;
    Ok(keys[..found]
        .iter()
        .copied()
        .zip(ids[..found].iter().copied())
        .collect())
}

/// Plain-data bytes of a slice of keys.
fn bytes<K: Copy>(keys: &[K]) -> &[u8] {
    // SAFETY: `K` is a `#[repr(C)]` map key without padding holes read
    // as uninitialized (the callers' key types are fully initialized).
    unsafe { std::slice::from_raw_parts(keys.as_ptr().cast::<u8>(), std::mem::size_of_val(keys)) }
}

/// Sets `keys[i]` to the inner map `inner[i]` in the map-of-maps `outer`.
pub fn update_inner<K: Copy>(
    outer: &impl AsFd,
    keys: &[K],
    inner: &[BorrowedFd<'_>],
) -> Result<()> {
    assert_eq!(keys.len(), inner.len());
    if keys.is_empty() {
        return Ok(());
    }
    let fds: Vec<u32> = inner.iter().map(|f| f.as_raw_fd() as u32).collect();
    let values = bytes(&fds);
    let (done, err) = batch(
        BPF_MAP_UPDATE_BATCH,
        outer.as_fd(),
        bytes(keys),
        Some(values),
        keys.len(),
    );
    match err {
        None if done == keys.len() => Ok(()),
        None => bail!(
            "batch update stopped after {done} of {} elements",
            keys.len()
        ),
        Some(e) => bail!(
            "batch update of {} elements failed after {done}: {e}",
            keys.len()
        ),
    }
}

/// Deletes `keys` from `outer`; keys that are not there are skipped.
pub fn delete<K: Copy>(outer: &impl AsFd, keys: &[K]) -> Result<()> {
    let mut rest = keys;
    while !rest.is_empty() {
        let (done, err) = batch(
            BPF_MAP_DELETE_BATCH,
            outer.as_fd(),
            bytes(rest),
            None,
            rest.len(),
        );
        match err {
            None => return Ok(()),
            // The element at `done` is absent: skip it, go on after it.
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) && done < rest.len() => {
                rest = &rest[done + 1..];
            }
            Some(e) => bail!(
                "batch delete of {} elements failed after {done}: {e}",
                rest.len()
            ),
        }
    }
    Ok(())
}
