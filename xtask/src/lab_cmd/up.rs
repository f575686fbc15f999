//! `lab up`: starts the supervisor detached (its own session, output to
//! a log beside the state file), relays its progress, and returns once it
//! wrote the state file, that is once the agents enforce.

use super::state::{absolute, is_supervisor, log_path, LabState};
use crate::options::LabOptions;
use anyhow::{bail, Context, Result};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Building the nodes, then the agents' first programming (60 s at most).
const READY: Duration = Duration::from_secs(120);

pub fn run(opts: &LabOptions, state: &Path, agent_bin: &Path) -> Result<()> {
    let state = absolute(state)?;
    if let Ok(old) = LabState::read(&state) {
        if is_supervisor(old.supervisor_pid, &state) {
            bail!(
                "lab up: a lab is already up with {} (supervisor pid {}); run `cargo xtask lab down --state {}` first",
                state.display(),
                old.supervisor_pid,
                state.display()
            );
        }
        bail!(
            "lab up: {} describes a lab whose supervisor is gone; run `cargo xtask lab down --state {}` to clean up",
            state.display(),
            state.display()
        );
    }
    let log = log_path(&state);
    let out = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    let exe = std::env::current_exe().context("lab up: locating this program")?;
    let mut cmd = Command::new(exe);
    cmd.args(["lab", "serve", "--state"])
        .arg(&state)
        .args(opts.to_args())
        // The supervisor uses exactly the binary this command resolved.
        .env(palisade_lab::BIN_ENV, agent_bin)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: setsid is async-signal-safe and touches no Rust state. A
    // session of its own: the terminal's Ctrl-C and hangup are not its.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("lab up: starting the supervisor")?;
    eprintln!("lab: supervisor pid {} (log {})", child.id(), log.display());
    match wait_ready(&mut child, &state, &log) {
        Ok(s) => {
            summary(&s, &state);
            Ok(())
        }
        Err(e) => {
            // Nothing half-up stays behind a failed `up`.
            stop_child(&mut child);
            if let Err(c) = super::down::clean_after(child.id()) {
                eprintln!("lab up: {c:#}");
            }
            let _ = std::fs::remove_file(&state);
            Err(e)
        }
    }
}

/// SIGTERM (the supervisor tears down), then SIGKILL when it takes too
/// long.
fn stop_child(child: &mut Child) {
    // SAFETY: signalling our own child, not yet reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + super::down::STOP_TIMEOUT;
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Relays the log until the state file names the child, the child exits,
/// or the time runs out.
fn wait_ready(child: &mut Child, state: &Path, log: &Path) -> Result<LabState> {
    let deadline = Instant::now() + READY;
    let mut relayed = 0;
    loop {
        relayed = relay(log, relayed);
        if let Ok(s) = LabState::read(state) {
            if s.supervisor_pid == child.id() {
                return Ok(s);
            }
        }
        if let Some(status) = child.try_wait()? {
            relay(log, relayed);
            bail!(
                "lab up: the supervisor exited ({status}) before the lab was ready; its log: {}",
                log.display()
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "lab up: the lab was not ready within {READY:?}; the supervisor's log: {}",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Copies the log from byte `from` to stderr; returns the new offset.
fn relay(log: &Path, from: u64) -> u64 {
    let Ok(mut f) = std::fs::File::open(log) else {
        return from;
    };
    let mut text = String::new();
    if f.seek(SeekFrom::Start(from)).is_err() || f.read_to_string(&mut text).is_err() {
        return from;
    }
    // Whole lines only: the rest comes with the next call.
    let whole = text.rfind('\n').map_or(0, |i| i + 1);
    eprint!("{}", &text[..whole]);
    from + whole as u64
}

fn summary(s: &LabState, state: &Path) {
    for n in &s.nodes {
        eprintln!(
            "lab: node {} in netns {} (agent pid {})",
            n.name, n.netns, n.agent_pid
        );
    }
    for p in &s.pods {
        let ips: Vec<String> = p.ips.iter().map(|i| i.to_string()).collect();
        eprintln!(
            "lab: pod {}/{} on {}: ip netns exec {} ... ({})",
            p.namespace,
            p.name,
            p.node,
            p.netns,
            ips.join(", ")
        );
    }
    eprintln!(
        "lab: manifests the agents follow: {}",
        s.manifests.display()
    );
    if let Some(k) = &s.kubeconfig {
        // The server listens on the first node's underlay address, which
        // only the lab's namespaces reach.
        eprintln!(
            "lab: kubectl: ip netns exec {} kubectl --kubeconfig {} apply -f POLICY.yaml",
            s.nodes[0].netns,
            k.display()
        );
    }
    eprintln!(
        "lab: ready; state in {}; `cargo xtask lab down --state {}` ends it",
        state.display(),
        state.display()
    );
}
