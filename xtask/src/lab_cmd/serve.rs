//! `lab serve`: the supervisor of a lab that stays up. Builds the lab,
//! starts the agents, writes the state file, then follows the manifests
//! until SIGTERM (or SIGINT, SIGHUP), and tears everything down.

use super::state::LabState;
use crate::options::{LabOptions, Plan};
use crate::running::Running;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often the manifests are looked at (and the stop flag).
const POLL: Duration = Duration::from_millis(200);

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Removes the state file however the supervisor ends: `lab down` waits
/// for it to go.
struct StateFile(PathBuf);

impl Drop for StateFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub fn run(opts: &LabOptions, state: &Path, agent_bin: &Path) -> Result<()> {
    let plan = Plan::load(opts, None, "lab")?;
    eprintln!(
        "lab: {} node(s) ({}), {} pods, {} pod wiring, serving {}",
        plan.placement.nodes.len(),
        plan.placement.nodes.join(", "),
        plan.pods.len(),
        plan.cni,
        plan.port_list()
    );
    let mut lab = Running::up(&plan, "xtask-lab")?;
    lab.start_agents(agent_bin)?;
    // The labs installed a handler that tears them down and exits at once;
    // from here the supervisor stops on its own terms: in order (the
    // plugin's DEL, the API server) and removing the state file.
    install_stop_handler();
    let guard = StateFile(state.to_path_buf());
    LabState::of(&lab, &plan.model).write(state)?;
    let kubectl = if lab.kubeconfig().is_some() {
        " (or use kubectl)"
    } else {
        ""
    };
    eprintln!(
        "lab: up; edit {} to change policy{kubectl}",
        lab.manifests().display()
    );

    while !STOP.load(Ordering::Relaxed) {
        match lab.follow() {
            Ok(0) => {}
            Ok(n) => eprintln!("lab: served {n} changed object(s)"),
            // A half-written or invalid file: the next change may fix it.
            Err(e) => eprintln!("lab: following the manifests: {e:#}"),
        }
        std::thread::sleep(POLL);
    }
    eprintln!("lab: stopping");
    let result = lab.teardown().context("tearing the lab down");
    drop(guard);
    eprintln!("lab: down");
    result
}

fn install_stop_handler() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_stop as *const () as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}
