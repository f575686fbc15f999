//! Entering network namespaces from threads.
//!
//! The network namespace is a per-thread attribute: a thread that calls
//! `setns(CLONE_NEWNET)` moves alone, and sockets it creates stay in that
//! namespace for their whole life whichever thread uses them later. So the
//! lab runs servers and probes as threads of the calling process, and
//! writes per-namespace sysctls from a thread that entered the namespace
//! (`/proc/sys/net` resolves against the calling thread's namespace).

use anyhow::{Context, Result};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

/// Where `ip netns add` puts its bind mounts.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// An open handle on a named network namespace.
#[derive(Debug)]
pub struct NetNs {
    name: String,
    file: File,
}

impl NetNs {
    pub fn open(name: &str) -> Result<NetNs> {
        let path = PathBuf::from(NETNS_RUN_DIR).join(name);
        let file =
            File::open(&path).with_context(|| format!("opening netns {}", path.display()))?;
        Ok(NetNs {
            name: name.to_string(),
            file,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Moves the calling thread into this namespace. Only call it on a
    /// thread the lab owns (a scoped or spawned thread), never on a caller's
    /// thread, which would be left in the wrong namespace.
    pub fn enter(&self) -> Result<()> {
        // SAFETY: plain syscall on a valid fd owned by `self.file`.
        let rc = unsafe { libc::setns(self.file.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("entering netns {}", self.name));
        }
        Ok(())
    }

    /// Runs `f` on a fresh thread inside this namespace and returns its
    /// result; the caller's thread never changes namespace.
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> Result<R> {
        std::thread::scope(|s| {
            s.spawn(|| -> Result<R> {
                self.enter()?;
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("thread in netns {} panicked", self.name))?
        })
    }
}

/// Writes one sysctl of the calling thread's network namespace, e.g.
/// `sysctl("net/ipv4/ip_forward", "1")`.
pub fn sysctl(key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{key}");
    std::fs::write(&path, value).with_context(|| format!("writing {value} to {path}"))
}

/// Writes several sysctls inside `ns`, stopping at the first failure.
pub fn sysctls(ns: &NetNs, settings: &[(String, &str)]) -> Result<()> {
    ns.run(|| {
        for (k, v) in settings {
            sysctl(k, v).with_context(|| format!("in netns {}", ns.name()))?;
        }
        Ok(())
    })?
}
