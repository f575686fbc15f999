//! A long-lived flow from one lab pod to another's echo server, for
//! watching a policy change reach it: a TCP connection or a connected UDP
//! socket sending a numbered 4-byte message every `period`, with the send
//! time of every message and the arrival of every echo recorded. A test then
//! says which messages a change let through and when the first was lost.
//!
//! Bounded: at most `limit / period` messages, a TCP send gives up after
//! `SEND_TIMEOUT`, and the receiver `DRAIN` after the sender stopped. Dropping a [`Flow`] stops both threads
//! and aborts the connection, also when a test fails half-way.

use anyhow::{bail, Context, Result};
use palisade_lab::{Family, Lab, Protocol};
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long the receiver keeps listening after the last message, for the
/// echoes still in flight.
const DRAIN: Duration = Duration::from_millis(100);
/// The receiver's read timeout: how often it looks at its stop flag.
const READ_TIMEOUT: Duration = Duration::from_millis(10);
/// How long a TCP send may wait for room in the send buffer. A cut
/// connection's unacknowledged messages fill it (each 4-byte message can
/// take a buffer of its own), and a sender waiting for room there would
/// wait for an acknowledgement that never comes.
const SEND_TIMEOUT: Duration = Duration::from_millis(100);

enum Sock {
    Tcp(TcpStream),
    Udp(UdpSocket),
}

impl Sock {
    fn connect(protocol: Protocol, to: SocketAddr) -> io::Result<Sock> {
        Ok(match protocol {
            Protocol::Tcp => {
                let s = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
                s.set_nodelay(true)?;
                s.set_write_timeout(Some(SEND_TIMEOUT))?;
                Sock::Tcp(s)
            }
            _ => {
                let s = UdpSocket::bind((Family::of(&to.ip()).unspecified(), 0))?;
                s.connect(to)?;
                Sock::Udp(s)
            }
        })
    }

    fn try_clone(&self) -> io::Result<Sock> {
        Ok(match self {
            Sock::Tcp(s) => Sock::Tcp(s.try_clone()?),
            Sock::Udp(s) => Sock::Udp(s.try_clone()?),
        })
    }

    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.write_all(msg),
            Sock::Udp(s) => s.send(msg).map(drop),
        }
    }

    fn set_read_timeout(&self, t: Duration) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.set_read_timeout(Some(t)),
            Sock::Udp(s) => s.set_read_timeout(Some(t)),
        }
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.read(buf),
            Sock::Udp(s) => s.recv(buf),
        }
    }

    /// Closes a TCP connection with a reset (linger 0) rather than a FIN
    /// queued behind data a cut flow will never deliver, so the socket is
    /// freed at once instead of retransmitting for minutes.
    fn abort(&self) {
        if let Sock::Tcp(s) = self {
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: a valid socket and a `linger` of the size given.
            unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&linger as *const libc::linger).cast(),
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                );
            }
        }
    }
}

/// What the two threads write down.
#[derive(Default)]
struct Shared {
    sent: Vec<Instant>,
    echoes: BTreeMap<u32, Instant>,
    stalled: Option<u32>,
    error: Option<String>,
}

impl Shared {
    fn fail(&mut self, e: String) {
        self.error.get_or_insert(e);
    }
}

/// A running flow; see the module documentation.
pub struct Flow {
    name: String,
    shared: Arc<Mutex<Shared>>,
    stop_send: Arc<AtomicBool>,
    stop_recv: Arc<AtomicBool>,
    /// The sender and the receiver, until stopped.
    threads: Option<(JoinHandle<()>, JoinHandle<()>)>,
    sock: Sock,
}

/// The messages of a finished flow.
#[derive(Debug)]
pub struct Record {
    /// `PROTO from -> to`, for messages.
    pub name: String,
    /// When message `i` was sent.
    pub sent: Vec<Instant>,
    /// When the echo of message `i` arrived, if it did.
    pub echoed: Vec<Option<Instant>>,
    /// The message the sender gave up at, its send buffer full for
    /// `SEND_TIMEOUT` (TCP): what a cut connection comes to.
    pub stalled: Option<u32>,
    /// What broke the flow on the client's side (an error, an echo out of
    /// order), if anything: a cut flow is silent, never broken.
    pub error: Option<String>,
}

fn lock(m: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Flow {
    /// Opens the flow from pod `from` to `to`:`port` (IPv4) and starts
    /// sending; at most `limit / period` messages.
    pub fn start(
        lab: &Lab,
        from: &str,
        to: &str,
        protocol: Protocol,
        port: u16,
        period: Duration,
        limit: Duration,
    ) -> Result<Flow> {
        let ends = (from, to, Family::V4);
        Flow::start_in(lab, ends, protocol, port, period, limit)
    }

    /// `start` in the family of `ends` (from, to, family).
    pub fn start_in(
        lab: &Lab,
        ends: (&str, &str, Family),
        protocol: Protocol,
        port: u16,
        period: Duration,
        limit: Duration,
    ) -> Result<Flow> {
        let (from, to, family) = ends;
        let name = format!("{} {family:?} {from} -> {to}:{port}", protocol.name());
        let dst = SocketAddr::new(lab.ip(to, family)?, port);
        let sock = lab
            .run_in_pod(from, || Sock::connect(protocol, dst))?
            .with_context(|| format!("{name}: connect"))?;
        sock.set_read_timeout(READ_TIMEOUT)?;
        let mut flow = Flow {
            name,
            shared: Arc::default(),
            stop_send: Arc::default(),
            stop_recv: Arc::default(),
            threads: None,
            sock,
        };
        let max = (limit.as_nanos() / period.as_nanos().max(1)) as u32;
        let (tx, rx) = (flow.sock.try_clone()?, flow.sock.try_clone()?);
        // The flow holds its threads only once both run: a receiver
        // without a sender is stopped here.
        let (shared, stop) = (flow.shared.clone(), flow.stop_recv.clone());
        let deadline = Instant::now() + limit + DRAIN + Duration::from_secs(1);
        let receiver = std::thread::Builder::new()
            .name("flow recv".into())
            .spawn(move || recv_loop(rx, protocol, &shared, &stop, deadline))?;
        let (shared, stop) = (flow.shared.clone(), flow.stop_send.clone());
        let sender = std::thread::Builder::new()
            .name("flow send".into())
            .spawn(move || send_loop(tx, &shared, &stop, period, max));
        let sender = match sender {
            Ok(t) => t,
            Err(e) => {
                flow.stop_recv.store(true, Ordering::Relaxed);
                let _ = receiver.join();
                return Err(e.into());
            }
        };
        flow.threads = Some((sender, receiver));
        Ok(flow)
    }

    /// Echoes received so far.
    pub fn echoes(&self) -> usize {
        lock(&self.shared).echoes.len()
    }

    /// Waits until `n` echoes arrived; fails, naming the flow, after `limit`.
    pub fn wait_echoes(&self, n: usize, limit: Duration) -> Result<()> {
        let end = Instant::now() + limit;
        while self.echoes() < n {
            if let Some(e) = &lock(&self.shared).error {
                bail!("{}: {e}", self.name);
            }
            if Instant::now() >= end {
                bail!(
                    "{}: {} echoes of {n} after {limit:?}",
                    self.name,
                    self.echoes()
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    /// Stops sending, waits for the echoes in flight, and returns what
    /// happened to every message.
    pub fn finish(mut self) -> Record {
        self.stop();
        let s = std::mem::take(&mut *lock(&self.shared));
        let echoed = (0..s.sent.len() as u32)
            .map(|i| s.echoes.get(&i).copied())
            .collect();
        let mut error = s.error;
        if let Some(&n) = s.echoes.keys().find(|&&n| n as usize >= s.sent.len()) {
            error.get_or_insert(format!("echo of message {n}, never sent"));
        }
        Record {
            name: self.name.clone(),
            sent: s.sent,
            echoed,
            stalled: s.stalled,
            error,
        }
    }

    fn stop(&mut self) {
        let Some((sender, receiver)) = self.threads.take() else {
            return;
        };
        self.stop_send.store(true, Ordering::Relaxed);
        let _ = sender.join();
        std::thread::sleep(DRAIN);
        self.stop_recv.store(true, Ordering::Relaxed);
        let _ = receiver.join();
        self.sock.abort();
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends message `i` at `start + i * period` (a fixed schedule: a late
/// wake-up does not push the later messages back).
fn send_loop(
    mut sock: Sock,
    shared: &Mutex<Shared>,
    stop: &AtomicBool,
    period: Duration,
    max: u32,
) {
    let start = Instant::now();
    for i in 0..max {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let at = start + period * i;
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let now = Instant::now();
        match sock.send(&i.to_be_bytes()) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                lock(shared).stalled = Some(i);
                return;
            }
            Err(e) => {
                lock(shared).fail(format!("message {i}: send: {e}"));
                return;
            }
        }
        lock(shared).sent.push(now);
    }
}

fn recv_loop(
    mut sock: Sock,
    protocol: Protocol,
    shared: &Mutex<Shared>,
    stop: &AtomicBool,
    deadline: Instant,
) {
    let mut stream = Vec::new();
    let mut next = 0u32;
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let n = match sock.recv(&mut buf) {
            Ok(0) if protocol == Protocol::Tcp => {
                lock(shared).fail("connection closed by the server".into());
                return;
            }
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => {
                lock(shared).fail(format!("receive: {e}"));
                return;
            }
        };
        let now = Instant::now();
        let got = match protocol {
            Protocol::Tcp => tcp_messages(&mut stream, &buf[..n], &mut next),
            _ => udp_message(&buf[..n]).map(|m| vec![m]),
        };
        let mut s = lock(shared);
        match got {
            Ok(seqs) => {
                for seq in seqs {
                    if s.echoes.insert(seq, now).is_some() {
                        s.fail(format!("message {seq} echoed twice"));
                    }
                }
            }
            Err(e) => s.fail(e),
        }
    }
}

/// The whole messages `bytes` completes in the TCP stream, which must
/// echo them in order.
fn tcp_messages(stream: &mut Vec<u8>, bytes: &[u8], next: &mut u32) -> Result<Vec<u32>, String> {
    stream.extend_from_slice(bytes);
    let whole = stream.len() / 4 * 4;
    let mut out = Vec::new();
    for chunk in stream[..whole].chunks(4) {
        let seq = u32::from_be_bytes(chunk.try_into().unwrap());
        if seq != *next {
            return Err(format!("echo {seq} where {next} was due"));
        }
        *next += 1;
        out.push(seq);
    }
    stream.drain(..whole);
    Ok(out)
}

fn udp_message(datagram: &[u8]) -> Result<u32, String> {
    let bytes: [u8; 4] = datagram
        .try_into()
        .map_err(|_| format!("echo of {} bytes, not 4", datagram.len()))?;
    Ok(u32::from_be_bytes(bytes))
}

impl Record {
    /// Messages sent at or after `t`.
    pub fn sent_from(&self, t: Instant) -> usize {
        self.sent.iter().filter(|&&s| s >= t).count()
    }

    /// Messages sent at or after `t` that were echoed.
    pub fn echoed_sent_from(&self, t: Instant) -> usize {
        self.sent
            .iter()
            .zip(&self.echoed)
            .filter(|(&s, e)| s >= t && e.is_some())
            .count()
    }

    /// Messages sent before `t` that were echoed.
    pub fn echoed_sent_before(&self, t: Instant) -> usize {
        self.echoed.iter().flatten().count() - self.echoed_sent_from(t)
    }

    /// Messages sent before `t` that were not echoed.
    pub fn lost_sent_before(&self, t: Instant) -> usize {
        self.sent
            .iter()
            .zip(&self.echoed)
            .filter(|(&s, e)| s < t && e.is_none())
            .count()
    }

    /// The first message that was not echoed.
    pub fn first_lost(&self) -> Option<usize> {
        self.echoed.iter().position(Option::is_none)
    }

    /// Messages that were not echoed.
    pub fn lost(&self) -> usize {
        self.echoed.iter().filter(|e| e.is_none()).count()
    }

    /// One line: how many messages were sent, echoed and lost.
    pub fn summary(&self) -> String {
        format!(
            "{}: {} sent, {} echoed, first lost {:?}, stalled at {:?}, error {:?}",
            self.name,
            self.sent.len(),
            self.sent.len() - self.lost(),
            self.first_lost(),
            self.stalled,
            self.error
        )
    }
}
