//! The servers of one pod: one thread in the pod's namespace polling every
//! socket the pod serves.
//!
//! - TCP: dual-stack listeners; every connection echoes what it receives
//!   until the peer closes (a probe sends one byte, a long-lived test
//!   connection sends a message every few milliseconds).
//! - UDP: dual-stack sockets echoing each datagram to its sender.
//! - SCTP: raw IPv4 and IPv6 sockets of protocol 132 answering INIT chunks
//!   (see `sctp`).
//!
//! One thread per pod, whatever the number of ports, keeps big labs cheap.

use crate::netns::NetNs;
use crate::sctp;
use crate::sock;
use crate::spec::ServedPort;
use anyhow::{Context, Result};
use palisade_policy::ProbePort;
use palisade_policy::Protocol;
use socket2::{Domain, SockAddr, Socket, Type};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// More simultaneous connections than any test needs; beyond it new ones
/// are closed rather than letting a runaway client exhaust descriptors.
const MAX_CONNS: usize = 4096;

enum Kind {
    TcpListener,
    TcpConn,
    Udp,
    Raw4,
    Raw6,
}

/// A running pod server; stopped (and its sockets closed) on drop.
pub struct PodServer {
    stop: Arc<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

impl PodServer {
    /// Binds every port inside `ns` before returning, so a probe right
    /// after `start` finds the servers listening.
    pub fn start(ns: Arc<NetNs>, pod: &str, ports: &[ServedPort]) -> Result<PodServer> {
        PodServer::start_on(ns, pod, ports, &[])
    }

    /// As `start`, with every socket bound to each of `addrs` (none: the
    /// wildcard). A host with several addresses must answer from the one
    /// a client asked, or the client (and the reverse NAT of a Service)
    /// never matches the answer: replies from a wildcard datagram or raw
    /// socket take the source address of the route back.
    pub fn start_on(
        ns: Arc<NetNs>,
        pod: &str,
        ports: &[ServedPort],
        addrs: &[IpAddr],
    ) -> Result<PodServer> {
        let stop = Arc::new(sock::eventfd().context("creating the server stop eventfd")?);
        let ports: Vec<ServedPort> = ports.to_vec();
        let addrs: Vec<IpAddr> = addrs.to_vec();
        let (tx, rx) = std::sync::mpsc::channel::<Result<()>>();
        let stop2 = stop.clone();
        let pod_owned = pod.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("srv {pod}"))
            .spawn(move || {
                let sockets = ns.enter().and_then(|()| bind_all(&ports, &addrs));
                match sockets {
                    Ok(sockets) => {
                        let _ = tx.send(Ok(()));
                        serve(sockets, &stop2);
                    }
                    Err(e) => {
                        let _ =
                            tx.send(Err(e.context(format!("pod {pod_owned}: starting servers"))));
                    }
                }
            })
            .context("spawning a server thread")?;
        let started = rx
            .recv()
            .map_err(|_| anyhow::anyhow!("pod {pod}: server thread died while starting"));
        let mut server = PodServer {
            stop,
            thread: Some(thread),
        };
        match started {
            Ok(Ok(())) => Ok(server),
            Ok(Err(e)) | Err(e) => {
                server.stop();
                Err(e)
            }
        }
    }

    pub fn stop(&mut self) {
        sock::eventfd_signal(&self.stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for PodServer {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Sockets {
    entries: Vec<(Kind, Socket)>,
    sctp_ports: BTreeSet<u16>,
}

/// A TCP listener or UDP socket on `port` of `addr`, or of every address
/// of both families when `addr` is `None` (IPv4 peers then appear as
/// ::ffff:a.b.c.d).
fn stream_or_dgram(ty: Type, addr: Option<IpAddr>, port: u16) -> Result<Socket> {
    let proto = if ty == Type::STREAM {
        Protocol::Tcp
    } else {
        Protocol::Udp
    };
    let bind = SocketAddr::new(addr.unwrap_or(Ipv6Addr::UNSPECIFIED.into()), port);
    let what = || format!("{bind}/{}", proto.name());
    let s = Socket::new(Domain::for_address(bind), ty, None)
        .with_context(|| format!("socket for {}", what()))?;
    if addr.is_none() {
        s.set_only_v6(false)?;
    }
    s.set_reuse_address(true)?;
    s.bind(&bind.into())
        .with_context(|| format!("binding {}", what()))?;
    if ty == Type::STREAM {
        s.listen(1024)
            .with_context(|| format!("listening on {}", what()))?;
    }
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Raw SCTP sockets of both families, or one per address of `addrs`.
fn raw_sctp(addrs: &[IpAddr]) -> Result<Vec<(Kind, Socket)>> {
    let proto = Some(socket2::Protocol::from(sctp::IPPROTO_SCTP));
    let raw = |domain: Domain, kind: Kind, addr: Option<IpAddr>| -> Result<(Kind, Socket)> {
        let s = Socket::new(domain, Type::RAW, proto).context("raw SCTP socket")?;
        if let Some(a) = addr {
            s.bind(&SocketAddr::new(a, 0).into())
                .with_context(|| format!("binding a raw SCTP socket to {a}"))?;
        }
        s.set_nonblocking(true)?;
        Ok((kind, s))
    };
    if addrs.is_empty() {
        return Ok(vec![
            raw(Domain::IPV4, Kind::Raw4, None)?,
            raw(Domain::IPV6, Kind::Raw6, None)?,
        ]);
    }
    addrs
        .iter()
        .map(|a| match a {
            IpAddr::V4(_) => raw(Domain::IPV4, Kind::Raw4, Some(*a)),
            IpAddr::V6(_) => raw(Domain::IPV6, Kind::Raw6, Some(*a)),
        })
        .collect()
}

fn bind_all(ports: &[ServedPort], addrs: &[IpAddr]) -> Result<Sockets> {
    let mut entries = Vec::new();
    let mut sctp_ports = BTreeSet::new();
    let binds: Vec<Option<IpAddr>> = match addrs {
        [] => vec![None],
        some => some.iter().copied().map(Some).collect(),
    };
    for &ProbePort { port, protocol } in ports {
        for &addr in &binds {
            match protocol {
                Protocol::Tcp => entries.push((
                    Kind::TcpListener,
                    stream_or_dgram(Type::STREAM, addr, port)?,
                )),
                Protocol::Udp => {
                    entries.push((Kind::Udp, stream_or_dgram(Type::DGRAM, addr, port)?))
                }
                Protocol::Sctp => {
                    sctp_ports.insert(port);
                }
            }
        }
    }
    if !sctp_ports.is_empty() {
        entries.extend(raw_sctp(addrs)?);
    }
    Ok(Sockets {
        entries,
        sctp_ports,
    })
}

fn serve(mut s: Sockets, stop: &OwnedFd) {
    let mut buf = vec![0u8; 65536];
    loop {
        let mut fds: Vec<libc::pollfd> = std::iter::once(stop.as_raw_fd())
            .chain(s.entries.iter().map(|(_, sock)| sock.as_raw_fd()))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a valid array of pollfd of the given length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if fds[0].revents != 0 {
            return;
        }
        let mut closed = Vec::new();
        let mut accepted = Vec::new();
        for (i, p) in fds[1..].iter().enumerate() {
            if p.revents == 0 {
                continue;
            }
            let (kind, sock) = &s.entries[i];
            let keep = match kind {
                Kind::TcpListener => {
                    while let Ok((conn, _)) = sock.accept() {
                        accepted.push(conn);
                    }
                    true
                }
                Kind::TcpConn => echo_stream(sock, &mut buf),
                Kind::Udp => {
                    while let Ok((n, from)) = sock::recv_from(sock, &mut buf) {
                        let _ = sock.send_to(&buf[..n], &from);
                    }
                    true
                }
                Kind::Raw4 | Kind::Raw6 => {
                    answer_sctp(sock, matches!(kind, Kind::Raw4), &s.sctp_ports, &mut buf);
                    true
                }
            };
            if !keep {
                closed.push(i);
            }
        }
        for i in closed.into_iter().rev() {
            s.entries.swap_remove(i);
        }
        for conn in accepted {
            let conns = s
                .entries
                .iter()
                .filter(|(k, _)| matches!(k, Kind::TcpConn))
                .count();
            if conns >= MAX_CONNS {
                continue;
            }
            // Blocking writes bounded by a timeout: an echo is small, and a
            // peer that stops reading must not stall the other sockets.
            if conn.set_nonblocking(false).is_ok()
                && conn.set_write_timeout(Some(Duration::from_secs(1))).is_ok()
            {
                let _ = conn.set_tcp_nodelay(true);
                s.entries.push((Kind::TcpConn, conn));
            }
        }
    }
}

/// Echoes what is readable now; false when the connection is done.
fn echo_stream(sock: &Socket, buf: &mut [u8]) -> bool {
    let mut r: &Socket = sock;
    match r.read(buf) {
        Ok(0) => false,
        Ok(n) => {
            let mut w: &Socket = sock;
            w.write_all(&buf[..n]).is_ok()
        }
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
        ),
    }
}

fn answer_sctp(sock: &Socket, v4: bool, served: &BTreeSet<u16>, buf: &mut [u8]) {
    while let Ok((n, from)) = sock::recv_from(sock, buf) {
        let data = if v4 {
            sctp::strip_ipv4_header(&buf[..n])
        } else {
            Some(&buf[..n])
        };
        let Some(pkt) = data.and_then(sctp::parse) else {
            continue;
        };
        if pkt.chunk != sctp::CHUNK_INIT || pkt.vtag != 0 {
            continue;
        }
        let reply = if served.contains(&pkt.dst_port) {
            sctp::init_ack(&pkt, crate::rand::u32() | 1)
        } else {
            sctp::abort(&pkt)
        };
        let _ = sock.send_to(&reply, &reply_addr(&from));
    }
}

// Raw sockets take the protocol (or 0) in the port field.
fn reply_addr(from: &SockAddr) -> SockAddr {
    match from.as_socket() {
        Some(SocketAddr::V4(a)) => SocketAddr::from((*a.ip(), 0)).into(),
        Some(SocketAddr::V6(a)) => {
            SocketAddr::V6(std::net::SocketAddrV6::new(*a.ip(), 0, 0, a.scope_id())).into()
        }
        None => from.clone(),
    }
}
