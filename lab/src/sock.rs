//! Small socket helpers shared by the servers and the probes.

use socket2::{SockAddr, Socket};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// `recv_from` into an initialised buffer.
pub fn recv_from(s: &Socket, buf: &mut [u8]) -> io::Result<(usize, SockAddr)> {
    // SAFETY: `MaybeUninit<u8>` has the layout of `u8`, and recv only
    // writes bytes into the buffer, so it stays initialised.
    let b = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
    s.recv_from(b)
}

/// Waits until `fd` has one of `events` or `deadline` passes. Returns the
/// revents (0 on timeout).
pub fn wait(fd: RawFd, events: i16, deadline: Instant) -> io::Result<i16> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut p = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok(if n == 0 { 0 } else { p.revents });
    }
}

/// An eventfd used to wake a poll loop (stop requests).
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the fd is owned right away.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn eventfd_signal(fd: &OwnedFd) {
    let one = 1u64.to_ne_bytes();
    // SAFETY: writing 8 bytes from a local buffer to our eventfd.
    unsafe { libc::write(fd.as_raw_fd(), one.as_ptr().cast(), 8) };
}

/// Remaining time until `deadline`, at least one millisecond so that a
/// socket timeout of zero (meaning "forever") is never set by accident.
pub fn left(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}
