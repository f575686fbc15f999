//! `palisade agent` as a child process, and the ready file it reports its
//! programming rounds in.

use super::{next_seq, poll_until, Scratch};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// A running `palisade agent`, its stderr logged to a file of the scratch
/// directory; killed and reaped on drop if still running, so a failed
/// assertion leaves no agent behind to hold maps and links of the test.
pub struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    /// Starts the binary of `palisade_lab::palisade_bin` as `palisade agent`
    /// with the scratch directory's bpffs and ready file, then `args`, with
    /// `env` added to the environment. Polls every 100 ms unless `args` set
    /// `--poll-ms`.
    pub fn start(s: &Scratch, args: &[&str], env: &[(&str, &str)]) -> Agent {
        let bin = palisade_lab::palisade_bin().unwrap_or_else(|e| panic!("{e:#}"));
        let log = s.dir().join(format!("agent-{}.log", next_seq()));
        let poll: &[&str] = if args.contains(&"--poll-ms") {
            &[]
        } else {
            &["--poll-ms", "100"]
        };
        let child = Command::new(bin)
            .arg("agent")
            .arg("--bpffs-root")
            .arg(s.bpffs())
            .arg("--ready-file")
            .arg(s.ready())
            .args(poll)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start palisade agent");
        Agent { child, log }
    }

    /// What the agent logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its exit status within `limit`, or None.
    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let mut status = None;
        poll_until(limit, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status
    }

    /// Sends SIGTERM (a clean shutdown, as the kubelet asks for one).
    pub fn terminate(&self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }

    /// SIGKILL (no chance to clean up) and reaping.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The number of programming rounds the agent reported in its ready file
/// (0 before the first).
pub fn rounds(s: &Scratch) -> u64 {
    std::fs::read_to_string(s.ready())
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// The round count once the agent has reported no new round for 300 ms
/// (at most 10 s): a state seen in the maps is then also counted (the
/// count is written after the round's programming).
pub fn settled_rounds(s: &Scratch) -> u64 {
    let mut seen = rounds(s);
    for _ in 0..33 {
        std::thread::sleep(Duration::from_millis(300));
        let now = rounds(s);
        if now == seen {
            return now;
        }
        seen = now;
    }
    seen
}

/// Waits up to `limit` until `check` holds; panics naming `what`, with the
/// agent's log, if not.
#[track_caller]
pub fn wait_for(agent: &Agent, what: &str, limit: Duration, check: impl FnMut() -> bool) {
    assert!(
        poll_until(limit, check),
        "timed out waiting for {what}; agent log:\n{}",
        agent.log()
    );
}

/// Waits (up to 10 s) until the agent finished a round after round
/// `before`; the round count then.
#[track_caller]
pub fn wait_round_after(s: &Scratch, agent: &Agent, before: u64) -> u64 {
    let mut now = 0;
    wait_for(
        agent,
        &format!("the agent to program after round {before}"),
        Duration::from_secs(10),
        || {
            now = rounds(s);
            now > before
        },
    );
    now
}
