//! Processes and bpffs mounts of a lab's node.

use crate::cleanup;
use crate::lab::Lab;
use anyhow::{Context, Result};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A process the lab started in the node namespace.
#[derive(Clone, Debug)]
pub struct NodeProcess {
    pub pid: u32,
    /// stdout and stderr of the process.
    pub log: PathBuf,
    pub(crate) index: usize,
}

/// Mounts a fresh bpf filesystem on the existing directory `dir`.
pub fn mount_bpf(dir: &Path) -> Result<()> {
    let target = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())?;
    // SAFETY: valid C strings; a bpf mount takes no data.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("mount -t bpf bpf {}", dir.display()));
    }
    Ok(())
}

impl Lab {
    /// Mounts a fresh, private bpffs for this lab and returns its path;
    /// unmounted on teardown (with every pin in it).
    pub fn mount_bpffs(&self) -> Result<PathBuf> {
        let k = self.counter.fetch_add(1, Ordering::Relaxed);
        let dir = self.dir.join(format!("bpffs-{k}"));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        mount_bpf(&dir)?;
        self.mounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(dir.clone());
        Ok(dir)
    }

    /// Starts `program args...` inside the node namespace (through
    /// `ip netns exec`, which also gives it the node's `/sys`), with stdout
    /// and stderr going to `NodeProcess::log`. The process is killed on
    /// teardown, and by the kernel if the thread that spawned it exits
    /// first (so a crashed test leaves no agent running).
    pub fn spawn_in_node<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> Result<NodeProcess>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.spawn_in_node_env(program, args, &[])
    }

    /// `spawn_in_node` with extra environment variables.
    pub fn spawn_in_node_env<I, S>(
        &self,
        program: impl AsRef<OsStr>,
        args: I,
        env: &[(String, String)],
    ) -> Result<NodeProcess>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        let index = children.len();
        let log = self.dir.join(format!("process-{index}.log"));
        let out =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let program = program.as_ref();
        let mut cmd = Command::new("ip");
        cmd.args([
            OsStr::new("netns"),
            OsStr::new("exec"),
            OsStr::new(&self.node_netns()),
            program,
        ])
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
        // SAFETY: prctl is async-signal-safe and touches no Rust state.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| {
            format!(
                "starting {} in {}",
                program.to_string_lossy(),
                self.node_netns()
            )
        })?;
        let pid = child.id();
        cleanup::record_child(&self.id, pid)?;
        children.push(Some(child));
        Ok(NodeProcess { pid, log, index })
    }

    /// Sends `signal` to a process the lab started.
    pub fn signal(&self, p: &NodeProcess, signal: i32) -> Result<()> {
        // SAFETY: signalling our own child (not yet reaped: the pid is ours).
        if self.exit_status(p)?.is_none()
            && unsafe { libc::kill(p.pid as libc::pid_t, signal) } != 0
        {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("kill -{signal} {}", p.pid));
        }
        Ok(())
    }

    /// The exit status once the process has ended, `None` while it runs.
    pub fn exit_status(&self, p: &NodeProcess) -> Result<Option<ExitStatus>> {
        let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        let child = children
            .get_mut(p.index)
            .and_then(|c| c.as_mut())
            .with_context(|| format!("process {} is not one of this lab's", p.pid))?;
        Ok(child.try_wait()?)
    }

    /// Waits up to `timeout` for the process to end.
    pub fn wait_exit(&self, p: &NodeProcess, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.exit_status(p)? {
                return Ok(Some(s));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the process wrote so far.
    pub fn log(&self, p: &NodeProcess) -> String {
        std::fs::read_to_string(&p.log).unwrap_or_default()
    }
}
