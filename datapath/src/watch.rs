//! Waking the agent as soon as links or routes change, instead of at the
//! next poll: a new pod's interface gets its classifiers (pending or
//! programmed) within milliseconds of its route appearing, which is the
//! window in which a pod could send unchecked traffic.
//!
//! The messages are not parsed: any link or route event only says "read the
//! routes again", which `iface::host_routes` does. A full socket buffer
//! (ENOBUFS: events lost) says the same.

use anyhow::{Context, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// A netlink socket subscribed to link and route changes of the network
/// namespace it was opened in.
pub struct RouteEvents {
    fd: OwnedFd,
}

impl RouteEvents {
    pub fn open() -> Result<Self> {
        let fd = super::sys::netlink_route(libc::SOCK_NONBLOCK)?;
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
    /// drained, so the next call waits for new ones). `wake`: another
    /// descriptor (an eventfd) that ends the wait early when readable; it
    /// is drained too, and the call returns false unless routes changed.
    pub fn wait(&self, timeout: Duration, wake: Option<RawFd>) -> bool {
        let mut pfds = [
            libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: wake.unwrap_or(-1),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: two valid pollfds (a negative fd is ignored by poll).
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), 2, ms) };
        if n <= 0 {
            return false;
        }
        if pfds[1].revents & libc::POLLIN != 0 {
            drain_eventfd(pfds[1].fd);
        }
        if pfds[0].revents & libc::POLLIN == 0 {
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

/// A non-blocking eventfd: one thread `signal`s it, another's wait on it
/// ends (`RouteEvents::wait`).
pub struct Wake {
    fd: OwnedFd,
}

impl Wake {
    pub fn new() -> Result<Self> {
        // SAFETY: plain eventfd creation; the fd is owned right away.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error()).context("create an eventfd");
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        Ok(Wake {
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
        })
    }

    pub fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a u64; a full counter (EAGAIN) still
        // leaves it readable, which is all a signal needs.
        unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn drain_eventfd(fd: RawFd) {
    let mut v: u64 = 0;
    // SAFETY: reads 8 bytes into a u64 from a non-blocking eventfd.
    unsafe { libc::read(fd, (&mut v as *mut u64).cast(), 8) };
}
