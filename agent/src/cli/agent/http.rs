//! `/healthz`, `/readyz` and `/metrics` over plain HTTP/1.1: three GET
//! endpoints polled by the kubelet and Prometheus do not need a framework.
//! One short-lived thread per connection, at most `MAX_CONNECTIONS` at
//! once; a request head is read up to `MAX_HEAD` bytes; every connection
//! is closed after its response. The address is on the node's network
//! (hostNetwork), so anyone who reaches the address reaches it: `--metrics-addr`
//! picks which (every address, the node's IP, or loopback only).

use super::health::Health;
use super::metrics::Metrics;
use anyhow::Context;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Connections served at once; more are closed unanswered.
pub const MAX_CONNECTIONS: usize = 32;
/// Longest request head (request line and headers) read.
pub const MAX_HEAD: u64 = 16 * 1024;
/// The port of a `--metrics-addr` given as an address alone.
pub const DEFAULT_PORT: u16 = 9090;

/// `--metrics-addr`: `IP:PORT`, `[IPv6]:PORT`, or an IP alone (port
/// [`DEFAULT_PORT`]), so that a DaemonSet can pass the node's IP from the
/// downward API (`$(HOST_IP)`) whatever its family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricsAddr(pub SocketAddr);

impl std::str::FromStr for MetricsAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(MetricsAddr(addr));
        }
        match s.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(MetricsAddr(SocketAddr::new(ip, DEFAULT_PORT))),
            Err(_) => Err(format!(
                "{s:?} is not IP:PORT, [IPv6]:PORT or an IP address"
            )),
        }
    }
}

/// Binds `addr` and serves in the background; returns the bound address
/// (useful with port 0).
pub fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> anyhow::Result<SocketAddr> {
    let listener =
        TcpListener::bind(addr).with_context(|| format!("bind metrics address {addr}"))?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || {
            let open = Arc::new(AtomicUsize::new(0));
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                if open.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                    open.fetch_sub(1, Ordering::SeqCst);
                    continue; // dropped: closed unanswered
                }
                let metrics = Arc::clone(&metrics);
                let health = Arc::clone(&health);
                let spawned = std::thread::Builder::new()
                    .name("metrics-conn".into())
                    .spawn({
                        let open = Arc::clone(&open);
                        move || {
                            handle(conn, &metrics, &health);
                            open.fetch_sub(1, Ordering::SeqCst);
                        }
                    });
                if spawned.is_err() {
                    open.fetch_sub(1, Ordering::SeqCst);
                }
            }
        })
        .context("start the metrics thread")?;
    Ok(bound)
}

fn handle(mut conn: TcpStream, metrics: &Metrics, health: &Health) {
    // A client that stalls must not hold a thread forever.
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(match conn.try_clone() {
        Ok(c) => c.take(MAX_HEAD),
        Err(_) => return,
    });
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    // Skip the headers: no endpoint reads them or a body.
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {}
        }
    }
    let (status, content_type, body) = respond(&request_line, metrics, health);
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(body.as_bytes());
}

/// Status line, content type and body for a request line.
fn respond(
    request_line: &str,
    metrics: &Metrics,
    health: &Health,
) -> (&'static str, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" && method != "HEAD" {
        return ("405 Method Not Allowed", TEXT, "only GET\n".into());
    }
    let path = target.split('?').next().unwrap_or("");
    match path {
        "/healthz" => match health.check() {
            Ok(()) => ("200 OK", TEXT, "ok\n".into()),
            Err(why) => (
                "503 Service Unavailable",
                TEXT,
                format!("unhealthy: {why}\n"),
            ),
        },
        "/readyz" if metrics.ready() => ("200 OK", TEXT, "ready\n".into()),
        "/readyz" => (
            "503 Service Unavailable",
            TEXT,
            "not ready: waiting for the first full sync and programming round\n".into(),
        ),
        "/metrics" => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        _ => ("404 Not Found", TEXT, "not found\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut c = TcpStream::connect(addr).unwrap();
        write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    }

    fn health() -> Arc<Health> {
        Health::new(Duration::from_secs(60))
    }

    #[test]
    fn endpoints_answer() {
        let m = Metrics::new();
        let h = Health::new(Duration::from_millis(200));
        let addr = serve(
            "127.0.0.1:0".parse().unwrap(),
            Arc::clone(&m),
            Arc::clone(&h),
        )
        .unwrap();
        assert!(get(addr, "/healthz").starts_with("HTTP/1.1 200"));
        std::thread::sleep(Duration::from_millis(300));
        let stalled = get(addr, "/healthz");
        assert!(stalled.starts_with("HTTP/1.1 503"), "{stalled}");
        let body = stalled.split_once("\r\n\r\n").unwrap().1;
        assert!(
            body.starts_with("unhealthy: agent loop stalled: no round or idle tick for "),
            "{body}"
        );
        assert!(body.ends_with(" (limit 200ms)\n"), "{body}");
        h.tick();
        assert!(get(addr, "/healthz").starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/readyz").starts_with("HTTP/1.1 503"));
        m.set_ready();
        assert!(get(addr, "/readyz").starts_with("HTTP/1.1 200"));
        let metrics = get(addr, "/metrics");
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(metrics.contains("palisade_rounds_total 0"), "{metrics}");
        assert!(get(addr, "/nope").starts_with("HTTP/1.1 404"));
    }

    #[test]
    fn connections_and_request_heads_are_bounded() {
        let m = Metrics::new();
        let addr = serve("127.0.0.1:0".parse().unwrap(), Arc::clone(&m), health()).unwrap();
        // An overlong request line is cut at MAX_HEAD and answered.
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(100_000));
        let _ = c.write_all(long.as_bytes());
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        assert!(out.starts_with("HTTP/1.1 404"), "{out:.80}");
        // Idle connections hold every slot: the next one is closed
        // unanswered, and served again once they are gone.
        let idle: Vec<TcpStream> = (0..MAX_CONNECTIONS)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = c.write_all(b"GET /healthz HTTP/1.1\r\n\r\n");
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        assert!(out.is_empty(), "{out}");
        drop(idle);
        let mut served = false;
        for _ in 0..100 {
            if get(addr, "/healthz").starts_with("HTTP/1.1 200") {
                served = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(served);
    }

    #[test]
    fn metrics_addresses_take_a_port_or_default_it() {
        let p = |s: &str| s.parse::<MetricsAddr>().map(|a| a.0.to_string());
        assert_eq!(p("0.0.0.0:9090").unwrap(), "0.0.0.0:9090");
        assert_eq!(p("127.0.0.1:9464").unwrap(), "127.0.0.1:9464");
        assert_eq!(p("10.0.0.7").unwrap(), "10.0.0.7:9090");
        assert_eq!(p("fd00::7").unwrap(), "[fd00::7]:9090");
        assert_eq!(p("[fd00::7]:81").unwrap(), "[fd00::7]:81");
        let err = p("node-1:9090").unwrap_err();
        assert!(err.contains("\"node-1:9090\" is not IP:PORT"), "{err}");
        assert!(p("10.0.0.7:").is_err());
    }
}
