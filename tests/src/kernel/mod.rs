//! Helpers for integration tests that touch the real kernel: a network
//! namespace per test, a private bpffs per test, pod interfaces, the
//! `palisade` agent as a process, and bounded waits.
//!
//! Every resource lives in a guard that removes it on drop, so a failing
//! assertion (which unwinds through the guards) leaves no namespace, mount
//! or process behind. Names come from [`unique`], so kernel-touching tests
//! run concurrently.

mod agent;
mod bpftool;
mod iface;
mod netns;
mod records;
mod scratch;

pub use agent::{rounds, settled_rounds, wait_for, wait_round_after, Agent};
pub use bpftool::{bpftool, dump};
pub use iface::{add_pod_iface, ifindex, pod_interfaces, tcx_progs};
pub use netns::NetNs;
pub use records::{cell_records, plant_cell, records};
pub use scratch::Scratch;

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Where the agent of this build pins a node's maps and links under
/// `bpffs`: the directory of its layout version.
pub fn pins(bpffs: &std::path::Path, node: &str) -> std::path::PathBuf {
    palisade::datapath::load::PinLayout::new(bpffs, node)
        .expect("a usable node name")
        .dir
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// The next number of this process's sequence.
fn next_seq() -> u32 {
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// A name no other test uses: the tests of one binary run on concurrent
/// threads (the sequence number tells them apart) and several test binaries
/// may run at once (the process id does).
pub fn unique(tag: &str) -> String {
    format!("pal-{tag}-{}-{}", std::process::id(), next_seq())
}

/// Runs `cmd` to completion and returns its stdout; panics with its stderr
/// when it cannot start or fails.
#[track_caller]
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Polls `check` every 20 ms until it holds or `limit` has passed; whether
/// it held. Every wait of these tests is bounded by one.
pub fn poll_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits up to `limit` until `check` holds; panics naming `what` if not.
#[track_caller]
pub fn wait_until(what: &str, limit: Duration, check: impl FnMut() -> bool) {
    assert!(poll_until(limit, check), "timed out waiting for {what}");
}
