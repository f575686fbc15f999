//! The real `kubectl` against the fake API server: each run bounded in
//! time, with a discovery cache of its own (a cache left by a server that
//! once had the same address would otherwise be trusted), optionally
//! inside a lab node's network namespace (where a lab's server listens).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Where Debian's package installs it (a dispatcher that runs the
/// kubectl of the server's minor version when it has one).
pub const KUBECTL: &str = "/usr/bin/kubectl";

/// Names another kubectl binary to test with (one version exactly, say).
pub const KUBECTL_ENV: &str = "PALISADE_KUBECTL";

/// How long one kubectl command may take.
pub const KUBECTL_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    cache: PathBuf,
    netns: Option<String>,
}

/// What one run printed, and how it ended.
#[derive(Debug)]
pub struct Run {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Kubectl {
    /// `$PALISADE_KUBECTL`, else `KUBECTL`; None (with a message saying
    /// why) when it is not installed.
    pub fn find(kubeconfig: &Path, scratch: &Path) -> Option<Kubectl> {
        let bin =
            std::env::var_os(KUBECTL_ENV).map_or_else(|| PathBuf::from(KUBECTL), PathBuf::from);
        if !bin.exists() {
            eprintln!(
                "skipped: {} is absent (Debian package kubectl)",
                bin.display()
            );
            return None;
        }
        Some(Kubectl {
            bin,
            kubeconfig: kubeconfig.to_path_buf(),
            cache: scratch.join("kubectl-cache"),
            netns: None,
        })
    }

    /// Runs every command inside network namespace `netns`.
    pub fn in_netns(mut self, netns: &str) -> Kubectl {
        self.netns = Some(netns.to_string());
        self
    }

    /// Runs `kubectl <args>` with `stdin` (for `-f -`), killed after
    /// `KUBECTL_TIMEOUT`.
    pub fn run(&self, args: &[&str], stdin: &str) -> Run {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args);
        let ran = palisade_lab::run_bounded(&mut cmd, stdin.as_bytes(), KUBECTL_TIMEOUT)
            .unwrap_or_else(|e| panic!("kubectl {args:?}: {e:#}"));
        let Some(status) = ran.status else {
            panic!("kubectl {args:?} ran longer than {KUBECTL_TIMEOUT:?}");
        };
        Run {
            success: status.success(),
            stdout: String::from_utf8_lossy(&ran.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&ran.stderr).into_owned(),
        }
    }

    /// Runs and asserts success; returns stdout.
    #[track_caller]
    pub fn ok(&self, args: &[&str], stdin: &str) -> String {
        let r = self.run(args, stdin);
        assert!(
            r.success,
            "kubectl {args:?} failed:\n{}\n{}",
            r.stdout, r.stderr
        );
        r.stdout
    }

    /// Runs and asserts failure; returns stderr.
    #[track_caller]
    pub fn fails(&self, args: &[&str], stdin: &str) -> String {
        let r = self.run(args, stdin);
        assert!(!r.success, "kubectl {args:?} succeeded:\n{}", r.stdout);
        r.stderr
    }
}
