//! The load tool: servers in the server pod and the client's measurements,
//! from threads that entered the pods' namespaces (through the lab).
//!
//! - RR: one TCP connection, 1-byte request and 1-byte response in a loop
//!   for a fixed time; transactions/s and the round-trip percentiles.
//! - CRR: connect, 1-byte request/response, close, in a loop; connections/s.
//!   The client closes with a reset (SO_LINGER 0), as load generators do, so
//!   that TIME_WAIT sockets never exhaust the client's ports.
//! - STREAM: one connection writing 64 KiB buffers for the duration; Gbit/s.
//!
//! Everything is bounded: the loops by their duration, every socket call by
//! a timeout.

use anyhow::{bail, Context, Result};
use palisade_lab::Lab;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::workload::{PORT_CRR, PORT_RR, PORT_STREAM};

/// Bounds every blocking socket call of client and servers.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
const STREAM_BUF: usize = 64 * 1024;

/// One engine's figures for one round.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Sample {
    pub rr_tps: f64,
    pub crr_cps: f64,
    pub stream_gbps: f64,
    pub rtt_p50_us: f64,
    pub rtt_p99_us: f64,
}

/// The three servers of the server pod, each on its own thread.
pub struct Servers {
    listeners: Vec<Arc<TcpListener>>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    pub fn start(lab: &Lab, pod: &str) -> Result<Servers> {
        let listeners = lab.run_in_pod(pod, || -> Result<Vec<TcpListener>> {
            [PORT_RR, PORT_CRR, PORT_STREAM]
                .iter()
                .map(|p| {
                    TcpListener::bind((Ipv4Addr::UNSPECIFIED, *p))
                        .with_context(|| format!("binding port {p}"))
                })
                .collect()
        })??;
        let listeners: Vec<Arc<TcpListener>> = listeners.into_iter().map(Arc::new).collect();
        let mut threads = Vec::new();
        for (l, serve) in
            listeners
                .iter()
                .zip([serve_echo as fn(TcpStream), serve_echo, serve_sink])
        {
            let l = l.clone();
            threads.push(std::thread::spawn(move || {
                pin(Side::Server);
                accept_loop(&l, serve)
            }));
        }
        Ok(Servers { listeners, threads })
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        // shutdown() on a listening socket wakes a blocked accept().
        for l in &self.listeners {
            // SAFETY: a valid socket fd owned by the listener.
            unsafe { libc::shutdown(l.as_raw_fd(), libc::SHUT_RDWR) };
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Serves connections one at a time on the accepting thread: the client is
/// sequential, and a thread per connection would add its creation to every
/// CRR transaction.
fn accept_loop(l: &TcpListener, serve: fn(TcpStream)) {
    while let Ok((s, _)) = l.accept() {
        let _ = s.set_nodelay(true);
        let _ = s.set_read_timeout(Some(IO_TIMEOUT));
        let _ = s.set_write_timeout(Some(IO_TIMEOUT));
        serve(s);
    }
}

/// Echoes bytes until the peer closes (or resets, or goes silent).
fn serve_echo(mut s: TcpStream) {
    let mut b = [0u8; 64];
    while let Ok(n) = s.read(&mut b) {
        if n == 0 || s.write_all(&b[..n]).is_err() {
            break;
        }
    }
}

/// Reads and discards until the peer closes.
fn serve_sink(mut s: TcpStream) {
    let mut b = vec![0u8; STREAM_BUF];
    while let Ok(n) = s.read(&mut b) {
        if n == 0 {
            break;
        }
    }
}

/// Runs the three measurements from the client pod, `duration` each.
pub fn measure(lab: &Lab, client: &str, server: Ipv4Addr, duration: Duration) -> Result<Sample> {
    lab.run_in_pod(client, || -> Result<Sample> {
        pin(Side::Client);
        let (rr_tps, rtt_p50_us, rtt_p99_us) = rr(server, duration).context("RR")?;
        let crr_cps = crr(server, duration).context("CRR")?;
        let stream_gbps = stream(server, duration).context("STREAM")?;
        Ok(Sample {
            rr_tps,
            crr_cps,
            stream_gbps,
            rtt_p50_us,
            rtt_p99_us,
        })
    })?
}

/// Whether a TCP connection from `pod` to `server` on the RR port opens and
/// echoes within `timeout`: how an engine is checked to be enforcing.
pub fn reaches(lab: &Lab, pod: &str, server: Ipv4Addr, timeout: Duration) -> Result<bool> {
    lab.run_in_pod(pod, || {
        let addr = SocketAddr::from((server, PORT_RR));
        let Ok(mut s) = TcpStream::connect_timeout(&addr, timeout) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(timeout));
        let mut b = [0u8; 1];
        s.write_all(b"?").is_ok() && s.read_exact(&mut b).is_ok()
    })
}

fn connect(server: Ipv4Addr, port: u16) -> Result<TcpStream> {
    let s = TcpStream::connect_timeout(&SocketAddr::from((server, port)), IO_TIMEOUT)
        .with_context(|| format!("connecting to {server}:{port}"))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

fn rr(server: Ipv4Addr, duration: Duration) -> Result<(f64, f64, f64)> {
    let mut s = connect(server, PORT_RR)?;
    let mut b = [0u8; 1];
    // Nanoseconds per transaction; a few hundred thousand at most.
    let mut rtts: Vec<u32> = Vec::with_capacity(1 << 18);
    let start = Instant::now();
    while start.elapsed() < duration {
        let t = Instant::now();
        s.write_all(b"r")?;
        s.read_exact(&mut b)?;
        rtts.push(t.elapsed().as_nanos().min(u128::from(u32::MAX)) as u32);
    }
    let secs = start.elapsed().as_secs_f64();
    if rtts.is_empty() {
        bail!("no transaction completed in {duration:?}");
    }
    rtts.sort_unstable();
    let pct = |q: f64| f64::from(rtts[((rtts.len() - 1) as f64 * q) as usize]) / 1000.0;
    Ok((rtts.len() as f64 / secs, pct(0.50), pct(0.99)))
}

fn crr(server: Ipv4Addr, duration: Duration) -> Result<f64> {
    let mut b = [0u8; 1];
    let mut n = 0u64;
    let start = Instant::now();
    while start.elapsed() < duration {
        let mut s = connect(server, PORT_CRR)?;
        s.write_all(b"c")?;
        s.read_exact(&mut b)?;
        reset_on_close(&s)?;
        drop(s);
        n += 1;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

fn stream(server: Ipv4Addr, duration: Duration) -> Result<f64> {
    let mut s = connect(server, PORT_STREAM)?;
    let buf = vec![0x5au8; STREAM_BUF];
    let mut bytes = 0u64;
    let start = Instant::now();
    while start.elapsed() < duration {
        s.write_all(&buf)?;
        bytes += STREAM_BUF as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    let _ = s.shutdown(Shutdown::Write);
    Ok(bytes as f64 * 8.0 / secs / 1e9)
}

/// SO_LINGER with a zero timeout: `close` sends a reset and leaves no
/// TIME_WAIT socket behind.
fn reset_on_close(s: &TcpStream) -> Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket fd and a correctly sized option value.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("setting SO_LINGER");
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Side {
    Client,
    Server,
}

/// Pins the calling thread: the client on the first CPU it may use, the
/// servers on the second. Left to the scheduler, a request/response pair
/// sometimes shares a CPU (no cross-CPU wakeup: round trips three times
/// shorter) and sometimes not, which made rounds bimodal; pinned, every
/// engine is measured with the same placement. No-op with a single CPU.
fn pin(side: Side) {
    // SAFETY: cpu_set_t is plain data; the calls only read/write it.
    unsafe {
        let mut allowed: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut allowed) != 0 {
            return;
        }
        let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
            .filter(|c| libc::CPU_ISSET(*c, &allowed))
            .collect();
        if cpus.len() < 2 {
            return;
        }
        let cpu = match side {
            Side::Client => cpus[0],
            Side::Server => cpus[1],
        };
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        // Best effort: unpinned figures are still figures.
        let _ = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}
