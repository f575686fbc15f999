//! Both ends of an attack: frames written straight onto a pod's interface
//! (an AF_PACKET socket: every header is the attacker's, nothing is
//! checked or filled in by the pod's kernel), and captures that count the
//! frames or packets carrying a marker where the victim would see them.
//!
//! Sockets belong to the network namespace of the thread that opens them,
//! so open them on a thread inside the namespace (`Lab::run_in_pod`,
//! `Lab::run_in_node`); they keep working from any thread afterwards.

use crate::classifier::packet::Packet;
use std::ffi::CString;
use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use palisade_lab::Family;

const ETH_P_ALL: u16 = 0x0003;
/// `sll_pkttype` of a frame the interface sent rather than received.
const PACKET_OUTGOING: u8 = 4;
/// Room for every frame a capture may queue while the attack is sent.
const CAPTURE_BUFFER: libc::c_int = 4 << 20;
/// Pause between two frames: the attack is bounded in rate too.
const FRAME_GAP: Duration = Duration::from_millis(2);

/// A syscall's result, with `what` in its error.
fn check(rc: isize, what: &str) -> io::Result<isize> {
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(rc)
}

/// A socket from `libc::socket`'s return value.
fn owned(fd: libc::c_int, what: &str) -> io::Result<OwnedFd> {
    check(fd as isize, what)?;
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ifindex(dev: &str) -> io::Result<i32> {
    let name = CString::new(dev)?;
    // SAFETY: `name` is a valid C string.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface {dev} in this namespace"),
        )),
        i => Ok(i as i32),
    }
}

/// An AF_PACKET socket bound to `dev`, receiving `protocol` (0: nothing).
fn packet_socket(dev: &str, protocol: u16) -> io::Result<OwnedFd> {
    let ifindex = ifindex(dev)?;
    // Protocol 0 at creation: nothing is queued before the bind names
    // the interface.
    // SAFETY: plain syscall.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    let fd = owned(fd, "socket(AF_PACKET)")?;
    // SAFETY: sockaddr_ll is plain data; all zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = protocol.to_be();
    sll.sll_ifindex = ifindex;
    // SAFETY: `sll` outlives the call and its size is passed.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    check(rc as isize, &format!("bind AF_PACKET to {dev}"))?;
    Ok(fd)
}

/// The attacker's end: whole Ethernet frames written onto a pod's
/// interface, addressed to the node's side of the pod's link.
pub struct Wire {
    fd: OwnedFd,
    dst: [u8; 6],
    src: [u8; 6],
}

impl Wire {
    /// A sender on `dev` of the calling thread's namespace; frames go from
    /// MAC `src` to MAC `dst`.
    pub fn open(dev: &str, dst: [u8; 6], src: [u8; 6]) -> io::Result<Wire> {
        Ok(Wire {
            fd: packet_socket(dev, 0)?,
            dst,
            src,
        })
    }

    /// Sends every packet once, `FRAME_GAP` apart; the number sent.
    pub fn send(&self, packets: &[Packet]) -> io::Result<usize> {
        for p in packets {
            self.send_frame(&p.frame(self.dst, self.src))?;
            std::thread::sleep(FRAME_GAP);
        }
        Ok(packets.len())
    }

    /// Sends one Ethernet frame as it is.
    pub fn send_frame(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: the buffer outlives the call and its length is passed.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if check(n, "send on AF_PACKET")? as usize != frame.len() {
            return Err(io::Error::other("short send on AF_PACKET"));
        }
        Ok(())
    }
}

/// Where a capture listens.
enum Tap {
    /// Frames an interface receives (AF_PACKET; its own sends are skipped:
    /// a victim's answers quoting the marker are not arrivals).
    Link(OwnedFd),
    /// IP packets of one protocol delivered to the namespace's own stack
    /// (a raw socket): what a decapsulating device there would be handed.
    Delivered(OwnedFd),
}

/// The victim's end: counts what carries a marker. Open it before the
/// attack is sent; it queues everything until `count` drains it.
pub struct Capture {
    taps: Vec<Tap>,
}

fn enlarge_buffer(fd: &OwnedFd) -> io::Result<()> {
    let size = CAPTURE_BUFFER;
    // SAFETY: an int option from a local that outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as u32,
        )
    };
    check(rc as isize, "SO_RCVBUFFORCE").map(|_| ())
}

impl Capture {
    /// Frames received on `dev` of the calling thread's namespace.
    pub fn link(dev: &str) -> io::Result<Capture> {
        let fd = packet_socket(dev, ETH_P_ALL)?;
        enlarge_buffer(&fd)?;
        Ok(Capture {
            taps: vec![Tap::Link(fd)],
        })
    }

    /// Packets of IP protocol `proto` delivered to the calling thread's
    /// namespace.
    pub fn delivered(family: Family, proto: u8) -> io::Result<Capture> {
        let domain = match family {
            Family::V4 => libc::AF_INET,
            Family::V6 => libc::AF_INET6,
        };
        // SAFETY: plain syscall.
        let fd = unsafe {
            libc::socket(
                domain,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::c_int::from(proto),
            )
        };
        let fd = owned(fd, &format!("raw socket for protocol {proto}"))?;
        enlarge_buffer(&fd)?;
        Ok(Capture {
            taps: vec![Tap::Delivered(fd)],
        })
    }

    /// One capture counting what both count.
    pub fn and(mut self, other: Capture) -> Capture {
        self.taps.extend(other.taps);
        self
    }

    /// The frames (packets) carrying `marker` received so far and until
    /// `settle` from now.
    pub fn count(&self, marker: &[u8], settle: Duration) -> io::Result<usize> {
        let deadline = Instant::now() + settle;
        let mut n = 0;
        let mut buf = vec![0u8; 65536];
        loop {
            for tap in &self.taps {
                n += drain(tap, &mut buf, marker)?;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(n);
            }
            self.wait(left)?;
        }
    }

    /// Waits until some tap is readable or `limit` passes.
    fn wait(&self, limit: Duration) -> io::Result<()> {
        let mut fds: Vec<libc::pollfd> = self
            .taps
            .iter()
            .map(|t| libc::pollfd {
                fd: t.fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ms = limit.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: `fds` is a valid array of its length.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        match check(rc as isize, "poll") {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            r => r.map(|_| ()),
        }
    }
}

impl Tap {
    fn fd(&self) -> &OwnedFd {
        match self {
            Tap::Link(fd) | Tap::Delivered(fd) => fd,
        }
    }
}

/// Reads everything queued on `tap`; how many carried `marker`.
fn drain(tap: &Tap, buf: &mut [u8], marker: &[u8]) -> io::Result<usize> {
    let mut n = 0;
    loop {
        // SAFETY: plain data; all zero is a valid value. Large enough for
        // the address of any family (AF_PACKET's and raw sockets' alike).
        let mut from: libc::sockaddr_storage = unsafe { zeroed() };
        let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: `buf` and `from` outlive the call, their sizes passed.
        let got = unsafe {
            libc::recvfrom(
                tap.fd().as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
                (&mut from as *mut libc::sockaddr_storage).cast(),
                &mut len,
            )
        };
        if got < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                return Ok(n);
            }
            return Err(io::Error::new(e.kind(), format!("capture: {e}")));
        }
        // SAFETY: on an AF_PACKET socket the address is a sockaddr_ll,
        // which fits in (and is less aligned than) sockaddr_storage.
        let pkttype = unsafe {
            (*(&from as *const libc::sockaddr_storage).cast::<libc::sockaddr_ll>()).sll_pkttype
        };
        let outgoing = matches!(tap, Tap::Link(_)) && pkttype == PACKET_OUTGOING;
        if !outgoing && contains(&buf[..got as usize], marker) {
            n += 1;
        }
    }
}

fn contains(data: &[u8], marker: &[u8]) -> bool {
    !marker.is_empty() && data.windows(marker.len()).any(|w| w == marker)
}

#[cfg(test)]
mod tests {
    use super::contains;

    #[test]
    fn markers_are_found_anywhere_and_only_whole() {
        assert!(contains(b"..abc..", b"abc"));
        assert!(contains(b"abc", b"abc"));
        assert!(!contains(b"ab", b"abc"));
        assert!(!contains(b"abx abd", b"abc"));
        assert!(!contains(b"anything", b""));
    }
}
