//! Every child process the agent and the CNI plugin run (`ip`, `nsenter`)
//! goes through [`output`], which bounds it in time: a child that has not
//! finished within [`timeout`] is killed, with everything it started, and
//! the caller gets an error naming the command. A hung `ip` (a netlink
//! request stuck behind the kernel's RTNL lock, a broken binary) would
//! otherwise stop the agent's loop for good while its probes stay green.
//!
//! Timed-out commands are remembered until the same program next finishes
//! ([`hung`]), so that the agent's liveness probe reports them.

use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// How long a child may run unless [`set_timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to wait, after the kill, for the child's output to close.
const REAP: Duration = Duration::from_secs(1);

static TIMEOUT_MS: AtomicU64 = AtomicU64::new(DEFAULT_TIMEOUT.as_millis() as u64);

/// Programs whose last run timed out, with what that run was.
static HUNG: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());

/// Sets the time limit of every later child (process-wide: one setting of
/// the command line, whichever module runs the command).
pub fn set_timeout(limit: Duration) {
    TIMEOUT_MS.store(limit.as_millis().max(1) as u64, Ordering::Relaxed);
}

pub fn timeout() -> Duration {
    Duration::from_millis(TIMEOUT_MS.load(Ordering::Relaxed))
}

/// A command whose last run was killed for taking too long, and has not
/// finished a run since: "`ip -j -4 route show` killed after 10s".
pub fn hung() -> Option<String> {
    let hung = HUNG.lock().unwrap_or_else(|e| e.into_inner());
    hung.values().next().cloned()
}

/// The command as a shell would show it: "ip -j route show".
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` to completion with no input and its output captured, like
/// `Command::output`, within [`timeout`]. Its exit status is the caller's
/// to judge; not finishing in time is an error naming the command.
pub fn output(cmd: &mut Command) -> Result<Output> {
    output_within(cmd, timeout())
}

fn output_within(cmd: &mut Command, limit: Duration) -> Result<Output> {
    let shown = describe(cmd);
    let program = cmd.get_program().to_string_lossy().into_owned();
    // A group of its own, so that the kill reaches whatever it started
    // (a wrapper script's children would otherwise hold the pipes open).
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("run `{shown}`: is {program} installed?"))
        }
        Err(e) => return Err(e).with_context(|| format!("run `{shown}`")),
    };
    let group = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::Builder::new()
        .name("child-wait".into())
        .spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
    if let Err(e) = waiter {
        kill_group(group);
        return Err(e).with_context(|| format!("wait for `{shown}`"));
    }
    match rx.recv_timeout(limit) {
        Ok(out) => {
            HUNG.lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&program);
            out.with_context(|| format!("wait for `{shown}`"))
        }
        Err(_) => {
            // The child is not reaped before the waiter's `wait` returns,
            // which it has not: the group id is still this child's.
            kill_group(group);
            let _ = rx.recv_timeout(REAP);
            let what = format!("`{shown}` killed after {limit:?}");
            HUNG.lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(program, what.clone());
            anyhow::bail!("{shown}: no answer within {limit:?} (the command timeout); killed")
        }
    }
}

fn kill_group(group: i32) {
    // SAFETY: kill(2) with a negative pid signals that process group only.
    unsafe { libc::kill(-group, libc::SIGKILL) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn slow_children_are_killed_with_their_group_and_remembered_until_the_next_run() {
        let out =
            output(Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"])).unwrap();
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
        assert_eq!(out.status.code(), Some(3));
        let err = format!(
            "{:#}",
            output(&mut Command::new("/nonexistent/ip")).unwrap_err()
        );
        assert!(err.contains("run `/nonexistent/ip`"), "{err}");

        let limit = Duration::from_millis(300);
        let dir = std::env::temp_dir().join(format!("palisade-cmd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let marker = dir.join("survived");
        // The shell's child holds stdout open: only a kill of the whole
        // group ends the wait, and the child never gets to write.
        let script = format!("sleep 2; touch {}", marker.display());
        let started = Instant::now();
        let err = output_within(Command::new("sh").args(["-c", &script]), limit).unwrap_err();
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{:?}",
            started.elapsed()
        );
        let err = format!("{err:#}");
        assert!(err.starts_with("sh -c sleep 2; touch"), "{err}");
        assert!(err.contains("no answer within 300ms"), "{err}");
        let record = hung().expect("the timeout is remembered");
        assert!(record.starts_with("`sh -c sleep 2"), "{record}");
        std::thread::sleep(Duration::from_millis(2500));
        assert!(!marker.exists(), "the group was killed");
        // The same program finishing clears it.
        output(Command::new("sh").args(["-c", "true"])).unwrap();
        assert_eq!(hung(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
