//! A throwaway network namespace for tests that need interfaces other than
//! `lo` (BPF_PROG_TEST_RUN runs a TC program on the device whose ifindex the
//! context names, looked up in the caller's namespace).
//!
//! The namespace belongs to one scoped thread that `unshare`s into it: it
//! holds no mounts and no processes outlive the `ip` commands, so it and its
//! interfaces vanish when the thread ends, panicking or not.

use std::process::Command;

use anyhow::{bail, Context, Result};

/// Runs `f` on a new thread inside a new, empty network namespace.
pub fn in_private_netns<R: Send>(f: impl FnOnce() -> Result<R> + Send) -> Result<R> {
    std::thread::scope(|s| {
        s.spawn(|| -> Result<R> {
            // SAFETY: plain syscall; it only moves this (our own) thread.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error()).context("unshare(CLONE_NEWNET)");
            }
            f()
        })
        .join()
        .map_err(|p| anyhow::anyhow!("thread in private netns panicked: {p:?}"))?
    })
}

/// Creates a veth pair in the calling thread's namespace (children of this
/// thread inherit it) and returns the two interface indexes.
pub fn veth(a: &str, b: &str) -> Result<(u32, u32)> {
    let out = Command::new("ip")
        .args(["link", "add", a, "type", "veth", "peer", "name", b])
        .output()
        .context("running ip (is iproute2 installed?)")?;
    if !out.status.success() {
        bail!(
            "ip link add {a} type veth peer {b}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((ifindex(a)?, ifindex(b)?))
}

/// The index of interface `name` in the calling thread's namespace.
pub fn ifindex(name: &str) -> Result<u32> {
    let c = std::ffi::CString::new(name)?;
    // SAFETY: valid NUL-terminated string; the lookup uses a socket of the
    // calling thread's namespace.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("ifindex of {name}"));
    }
    Ok(i)
}

/// Sets interface `name` up.
pub fn link_up(name: &str) -> Result<()> {
    let out = Command::new("ip")
        .args(["link", "set", name, "up"])
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip link set {name} up: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Transmits one raw Ethernet frame on interface `ifindex` through an
/// AF_PACKET socket: it leaves through the device's TC egress hook and, on
/// a veth, arrives at the peer's TC ingress hook.
pub fn send_frame(ifindex: u32, frame: &[u8]) -> Result<()> {
    // SAFETY: plain socket syscalls on a descriptor this function owns and
    // closes; `sll` and `frame` outlive the calls that read them.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("socket(AF_PACKET)");
        }
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = ifindex as i32;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&frame[..6]);
        let n = libc::sendto(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            0,
            std::ptr::from_ref(&sll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if n < 0 {
            return Err(err).with_context(|| format!("sending a frame on ifindex {ifindex}"));
        }
    }
    Ok(())
}
