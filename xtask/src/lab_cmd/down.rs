//! `lab down`: asks the supervisor to tear the lab down and waits for it;
//! when it does not finish in time (or is gone), kills it and removes what
//! it left.

use super::state::{absolute, is_supervisor, log_path, LabState};
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long the supervisor gets to tear down in order.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

pub fn run(state: &Path) -> Result<()> {
    let state = absolute(state)?;
    let s = LabState::read(&state).context("lab down: no lab to take down")?;
    let pid = s.supervisor_pid;
    let orderly = is_supervisor(pid, &state) && terminate(pid, &state);
    if !orderly {
        eprintln!("lab down: the supervisor (pid {pid}) did not tear down; cleaning up after it");
        if is_supervisor(pid, &state) {
            // SAFETY: the pid runs `lab serve` for this state file (checked).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while is_supervisor(pid, &state) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        clean_after(pid)?;
        let _ = std::fs::remove_file(&state);
    }
    let _ = std::fs::remove_file(log_path(&state));
    let present = palisade_lab::lab_netns_present();
    let left: Vec<&str> = s
        .nodes
        .iter()
        .map(|n| n.netns.as_str())
        .chain(s.pods.iter().map(|p| p.netns.as_str()))
        .filter(|n| present.iter().any(|p| p == n))
        .collect();
    if !left.is_empty() {
        bail!("lab down: namespaces still present: {}", left.join(", "));
    }
    eprintln!("lab down: {} is down", state.display());
    Ok(())
}

/// SIGTERM, then waits until the supervisor is gone and has removed the
/// state file; false when that did not happen in time.
fn terminate(pid: u32, state: &Path) -> bool {
    eprintln!("lab down: stopping the supervisor (pid {pid})");
    // SAFETY: the pid runs `lab serve` for this state file (checked).
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if !is_supervisor(pid, state) && !state.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Removes what a dead supervisor left: labs whose owner is gone (their
/// processes, namespaces, mounts, records) and its scratch directories.
pub fn clean_after(pid: u32) -> Result<()> {
    let gone = palisade_lab::clean_leftovers().context("removing the lab's leftovers")?;
    for id in gone {
        eprintln!("lab down: removed leftovers of lab {id}");
    }
    crate::cni_scratch::remove_leftovers_of(pid)
}
