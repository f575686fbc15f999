//! Waking the agent as soon as links or routes change, instead of at the
//! next poll: a new pod's interface gets its classifiers (pending or
//! programmed) within milliseconds of its route appearing, which is the
//! window in which a pod could send unchecked traffic.
//!
//! The messages are not parsed: any link or route event only says "read the
//! routes again", which `iface::host_routes` does. A full socket buffer
//! (ENOBUFS: events lost) says the same.

use anyhow::{Context, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// A netlink socket subscribed to link and route changes of the network
/// namespace it was opened in.
pub struct RouteEvents {
    fd: OwnedFd,
}

impl RouteEvents {
    pub fn open() -> Result<Self> {
        // SAFETY: plain socket creation; the fd is owned right away.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error()).context("open a netlink route socket");
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: zeroed sockaddr_nl is a valid "any" address.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups =
            (libc::RTMGRP_LINK | libc::RTMGRP_IPV4_ROUTE | libc::RTMGRP_IPV6_ROUTE) as u32;
        // SAFETY: addr is a valid sockaddr_nl of the size we pass.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error())
                .context("subscribe to link and route events");
        }
        Ok(RouteEvents { fd })
    }

    /// Waits up to `timeout` for events; true when some arrived (they are
    /// drained, so the next call waits for new ones).
    pub fn wait(&self, timeout: Duration) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n <= 0 {
            return false;
        }
        self.drain();
        true
    }

    fn drain(&self) {
        let mut buf = [0u8; 16 * 1024];
        loop {
            // SAFETY: buf is writable for its length; the socket is non-blocking.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let err = std::io::Error::last_os_error();
                // ENOBUFS: events were lost; the caller rereads anyway.
                if err.kind() == std::io::ErrorKind::WouldBlock
                    || err.raw_os_error() != Some(libc::ENOBUFS)
                {
                    return;
                }
            } else if n == 0 {
                return;
            }
        }
    }
}
