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
    if !try_send_frame(ifindex, frame)? {
        bail!("frame dropped on its way out of ifindex {ifindex}");
    }
    Ok(())
}

/// `send_frame`, reporting `false` when the frame was dropped on its way
/// out (a TC egress drop comes back to the sender as `ENOBUFS`).
pub fn try_send_frame(ifindex: u32, frame: &[u8]) -> Result<bool> {
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
            if err.raw_os_error() == Some(libc::ENOBUFS) {
                return Ok(false);
            }
            return Err(err).with_context(|| format!("sending a frame on ifindex {ifindex}"));
        }
    }
    Ok(true)
}

/// `ETH_P_ALL`: every protocol.
pub const ETH_P_ALL: u16 = 0x0003;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;

/// An AF_PACKET socket receiving the frames of one EtherType (or
/// `ETH_P_ALL`) that arrive on one interface, outgoing frames excluded.
///
/// Where it sees a frame matters at TC ingress: `ETH_P_ALL` sockets are taps
/// that run before the TC ingress hook, sockets of one EtherType run after
/// it, so only the latter prove that the ingress classifier let a frame
/// through.
pub struct Sniffer {
    fd: i32,
}

impl Sniffer {
    pub fn open(ifindex: u32, protocol: u16) -> Result<Self> {
        // SAFETY: plain socket syscalls; the descriptor is owned by the
        // returned value (closed on drop), `sll` and `tv` outlive the calls.
        unsafe {
            // Protocol 0 receives nothing until the bind below names the
            // interface and protocol: no frame of another interface queues up.
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            if fd < 0 {
                return Err(std::io::Error::last_os_error()).context("socket(AF_PACKET)");
            }
            let s = Sniffer { fd };
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 20_000,
            };
            if libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                std::ptr::from_ref(&tv).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            ) != 0
            {
                return Err(std::io::Error::last_os_error()).context("SO_RCVTIMEO");
            }
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = protocol.to_be();
            sll.sll_ifindex = ifindex as i32;
            if libc::bind(
                fd,
                std::ptr::from_ref(&sll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            ) != 0
            {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("binding AF_PACKET to ifindex {ifindex}"));
            }
            Ok(s)
        }
    }

    /// The next received frame, or `None` after the 20 ms receive timeout.
    pub fn recv(&self) -> Result<Option<Vec<u8>>> {
        let mut buf = vec![0u8; 2048];
        loop {
            // SAFETY: `buf`, `sll` and `len` outlive the call; sizes match.
            let (n, sll) = unsafe {
                let mut sll: libc::sockaddr_ll = std::mem::zeroed();
                let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                let n = libc::recvfrom(
                    self.fd,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    std::ptr::from_mut(&mut sll).cast(),
                    &mut len,
                );
                (n, sll)
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                return match e.kind() {
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => Ok(None),
                    std::io::ErrorKind::Interrupted => continue,
                    _ => Err(e).context("recvfrom(AF_PACKET)"),
                };
            }
            if sll.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            buf.truncate(n as usize);
            return Ok(Some(buf));
        }
    }
}

impl Drop for Sniffer {
    fn drop(&mut self) {
        // SAFETY: our own descriptor, closed once.
        unsafe { libc::close(self.fd) };
    }
}
