//! A named network namespace entered by one thread.

use super::{run, unique};
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Command;

/// A fresh network namespace the current thread enters, left and deleted
/// on drop.
///
/// Only the calling thread moves (`setns` on this thread, not `unshare` of
/// the process): the processes it spawns and the sockets it opens live
/// inside, while the concurrent tests on other threads stay in their own
/// namespaces. Interfaces the test creates there never reach the host and
/// vanish with the namespace. The namespace is named (`ip netns add`) so
/// `ip` and `bpftool` run by the test see the same one, and so deleting the
/// name on drop really frees it even when a test panics.
///
/// Not `Send`: dropping it must happen on the thread that entered, which it
/// moves back home.
pub struct NetNs {
    name: String,
    home: OwnedFd,
    _thread_bound: PhantomData<*const ()>,
}

impl NetNs {
    /// Creates a namespace named after `tag`, enters it and sets `lo` up.
    pub fn enter(tag: &str) -> NetNs {
        let name = unique(tag);
        let home: OwnedFd = std::fs::File::open("/proc/thread-self/ns/net")
            .expect("own netns")
            .into();
        run("ip", &["netns", "add", &name]);
        let guard = NetNs {
            name,
            home,
            _thread_bound: PhantomData,
        };
        let target =
            std::fs::File::open(format!("/run/netns/{}", guard.name)).expect("open new netns");
        // SAFETY: setns on this thread with a valid namespace fd.
        let rc = unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        run("ip", &["link", "set", "lo", "up"]);
        guard
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // SAFETY: back to the namespace this thread started in.
        unsafe { libc::setns(self.home.as_raw_fd(), libc::CLONE_NEWNET) };
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
