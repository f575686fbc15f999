//! Probes: one connection attempt from the calling thread's namespace.
//!
//! A probe succeeds when the server answered: TCP connected and echoed a
//! byte, UDP echoed the datagram, SCTP answered the INIT with an INIT-ACK.
//! A refused connection (RST, ICMP unreachable, SCTP ABORT) fails at once;
//! a dropped packet fails at the timeout. UDP and SCTP send a second time
//! halfway through the timeout, so a single lost datagram does not read as
//! a policy drop; TCP retransmits on its own clock (1 s), far beyond a
//! probe's timeout, so it gets no second try and none is needed on veths.
//!
//! Source ports come from a per-pod sequence (`SourcePorts`), not from the
//! kernel's random choice: a probe must be a new flow. A 5-tuple reused
//! from an earlier probe that was allowed could match that probe's
//! conntrack entry, which outlives a policy change by design, and read as
//! "allowed" under a policy that denies it.

use crate::sctp;
use crate::sock;
use anyhow::{Context, Result};
use palisade_policy::Protocol;
use socket2::{Domain, SockAddr, Socket, Type};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Outcome of one probe, with the reason when it failed (for messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Reached,
    Refused,
    TimedOut,
    /// A local error that says nothing about policy (e.g. no route).
    Error(String),
}

impl Outcome {
    pub fn reached(&self) -> bool {
        *self == Outcome::Reached
    }
}

/// The source ports of one pod's probes: the ephemeral range in order,
/// skipping the ports the pod serves. A tuple comes back only after the
/// whole range (28k probes from the pod), long after any conntrack entry
/// of its last use expired.
#[derive(Debug)]
pub struct SourcePorts {
    next: AtomicU32,
    served: BTreeSet<u16>,
}

impl SourcePorts {
    const FIRST: u16 = 32768;
    const LAST: u16 = 60999;

    pub fn new(served: impl IntoIterator<Item = u16>) -> SourcePorts {
        SourcePorts {
            next: AtomicU32::new(0),
            served: served.into_iter().collect(),
        }
    }

    pub fn take(&self) -> u16 {
        let span = u32::from(Self::LAST - Self::FIRST) + 1;
        loop {
            let n = self.next.fetch_add(1, Ordering::Relaxed) % span;
            let p = Self::FIRST + n as u16;
            if !self.served.contains(&p) {
                return p;
            }
        }
    }
}

/// Tries this many source ports when some are taken by other sockets.
const BIND_TRIES: usize = 64;

pub fn probe(
    to: IpAddr,
    port: u16,
    proto: Protocol,
    timeout: Duration,
    ports: &SourcePorts,
) -> Outcome {
    let deadline = Instant::now() + timeout;
    let r = match proto {
        Protocol::Tcp => bound(to, Type::STREAM, ports).and_then(|s| tcp(s, to, port, deadline)),
        Protocol::Udp => {
            bound(to, Type::DGRAM, ports).and_then(|s| udp(s, to, port, timeout, deadline))
        }
        Protocol::Sctp => sctp_probe(to, port, timeout, deadline, ports.take()),
    };
    r.unwrap_or_else(|e| Outcome::Error(format!("{e:#}")))
}

/// A socket of the family of `to`, bound to the next free source port.
fn bound(to: IpAddr, ty: Type, ports: &SourcePorts) -> Result<Socket> {
    let unspecified = palisade_policy::Family::of(&to).unspecified();
    let mut last = None;
    for _ in 0..BIND_TRIES {
        let s = Socket::new(domain(&to), ty, None).context("probe socket")?;
        if to.is_ipv6() {
            s.set_only_v6(true)?;
        }
        match s.bind(&SocketAddr::new(unspecified, ports.take()).into()) {
            Ok(()) => return Ok(s),
            Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => last = Some(e),
            Err(e) => return Err(e).context("binding the probe socket"),
        }
    }
    Err(last.expect("at least one try")).context("no free source port for the probe")
}

fn domain(ip: &IpAddr) -> Domain {
    match ip {
        IpAddr::V4(_) => Domain::IPV4,
        IpAddr::V6(_) => Domain::IPV6,
    }
}

fn refused(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH | libc::ECONNRESET)
    )
}

fn tcp(s: Socket, to: IpAddr, port: u16, deadline: Instant) -> Result<Outcome> {
    s.set_nonblocking(true)?;
    let addr: SockAddr = SocketAddr::new(to, port).into();
    match s.connect(&addr) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
            if sock::wait(s.as_raw_fd(), libc::POLLOUT, deadline)? == 0 {
                return Ok(Outcome::TimedOut);
            }
            if let Some(e) = s.take_error()? {
                return Ok(if refused(&e) {
                    Outcome::Refused
                } else {
                    Outcome::Error(e.to_string())
                });
            }
        }
        Err(e) if refused(&e) => return Ok(Outcome::Refused),
        Err(e) => return Err(e).context("TCP probe connect"),
    }
    s.set_nonblocking(false)?;
    s.set_write_timeout(Some(sock::left(deadline)))?;
    let mut w: &Socket = &s;
    if let Err(e) = w.write_all(b"p") {
        return Ok(if refused(&e) {
            Outcome::Refused
        } else {
            Outcome::TimedOut
        });
    }
    s.set_read_timeout(Some(sock::left(deadline)))?;
    let mut byte = [0u8; 1];
    let mut r: &Socket = &s;
    Ok(match r.read(&mut byte) {
        Ok(1) if byte == *b"p" => Outcome::Reached,
        Ok(_) => Outcome::Refused,
        Err(e) if refused(&e) => Outcome::Refused,
        Err(_) => Outcome::TimedOut,
    })
}

fn udp(s: Socket, to: IpAddr, port: u16, timeout: Duration, deadline: Instant) -> Result<Outcome> {
    // Connected: only the target's answers arrive, and an ICMP port
    // unreachable comes back as ECONNREFUSED.
    s.connect(&SocketAddr::new(to, port).into())
        .context("UDP probe connect")?;
    let nonce = crate::rand::u64().to_be_bytes();
    exchange(&s, &nonce, timeout, deadline, ReadErrors::Fail, |answer| {
        (answer == nonce).then_some(Outcome::Reached)
    })
}

fn sctp_probe(
    to: IpAddr,
    port: u16,
    timeout: Duration,
    deadline: Instant,
    src_port: u16,
) -> Result<Outcome> {
    let proto = Some(socket2::Protocol::from(sctp::IPPROTO_SCTP));
    let s = Socket::new(domain(&to), Type::RAW, proto).context("raw SCTP probe socket")?;
    // A connected raw socket only receives packets from the target.
    let target: SockAddr = SocketAddr::new(to, 0).into();
    s.connect(&target).context("raw SCTP probe connect")?;
    let tag = crate::rand::u32() | 1;
    let init = sctp::init(src_port, port, tag);
    let v4 = to.is_ipv4();
    exchange(&s, &init, timeout, deadline, ReadErrors::Skip, |packet| {
        let data = if v4 {
            sctp::strip_ipv4_header(packet)
        } else {
            Some(packet)
        };
        let p = data.and_then(sctp::parse)?;
        // Someone else's exchange with the same peer: not ours.
        if p.src_port != port || p.dst_port != src_port || p.vtag != tag {
            return None;
        }
        match p.chunk {
            sctp::CHUNK_INIT_ACK => Some(Outcome::Reached),
            sctp::CHUNK_ABORT => Some(Outcome::Refused),
            _ => None,
        }
    })
}

/// What a datagram exchange does with a read error other than "refused".
#[derive(Clone, Copy)]
enum ReadErrors {
    /// Report it (a UDP socket's errors are about the probe).
    Fail,
    /// Read on (a raw socket also sees errors about others' packets).
    Skip,
}

/// Sends `request` on a connected datagram socket and waits for an answer
/// that `verdict` recognizes; sends once more halfway through the timeout,
/// since a datagram or its answer can be lost. Unrecognized packets are
/// skipped; "connection refused" (an ICMP unreachable) is `Refused`.
fn exchange(
    s: &Socket,
    request: &[u8],
    timeout: Duration,
    deadline: Instant,
    errors: ReadErrors,
    mut verdict: impl FnMut(&[u8]) -> Option<Outcome>,
) -> Result<Outcome> {
    let mut buf = [0u8; 2048];
    for attempt in 0..2 {
        let until = if attempt == 0 {
            Instant::now() + timeout / 2
        } else {
            deadline
        };
        if let Err(e) = s.send(request) {
            return Ok(if refused(&e) {
                Outcome::Refused
            } else {
                Outcome::Error(e.to_string())
            });
        }
        while sock::wait(s.as_raw_fd(), libc::POLLIN, until)? != 0 {
            let mut r: &Socket = s;
            match r.read(&mut buf) {
                Ok(n) => {
                    if let Some(outcome) = verdict(&buf[..n]) {
                        return Ok(outcome);
                    }
                }
                Err(e) if refused(&e) => return Ok(Outcome::Refused),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => match errors {
                    ReadErrors::Fail => return Ok(Outcome::Error(e.to_string())),
                    ReadErrors::Skip => {}
                },
            }
        }
    }
    Ok(Outcome::TimedOut)
}

#[cfg(test)]
mod tests {
    use super::SourcePorts;

    #[test]
    fn source_ports_skip_served_ports_and_wrap() {
        let ports = SourcePorts::new([32769]);
        assert_eq!(ports.take(), 32768);
        assert_eq!(ports.take(), 32770);
        let span = 60999 - 32768 + 1;
        for _ in 0..span - 3 {
            ports.take();
        }
        assert_eq!(ports.take(), 32768, "wraps after the range");
    }
}
