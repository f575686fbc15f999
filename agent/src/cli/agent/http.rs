//! `/healthz`, `/readyz` and `/metrics` over plain HTTP/1.1: three GET
//! endpoints polled by the kubelet and Prometheus do not need a framework.
//! One short-lived thread per connection; every connection is closed after
//! its response.

use super::metrics::Metrics;
use anyhow::Context;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// Binds `addr` and serves in the background; returns the bound address
/// (useful with port 0).
pub fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> anyhow::Result<SocketAddr> {
    let listener =
        TcpListener::bind(addr).with_context(|| format!("bind metrics address {addr}"))?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let metrics = Arc::clone(&metrics);
                let _ = std::thread::Builder::new()
                    .name("metrics-conn".into())
                    .spawn(move || handle(conn, &metrics));
            }
        })
        .context("start the metrics thread")?;
    Ok(bound)
}

fn handle(mut conn: TcpStream, metrics: &Metrics) {
    // A client that stalls must not hold a thread forever.
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
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
    let (status, content_type, body) = respond(&request_line, metrics);
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(body.as_bytes());
}

/// Status line, content type and body for a request line.
fn respond(request_line: &str, metrics: &Metrics) -> (&'static str, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" && method != "HEAD" {
        return ("405 Method Not Allowed", TEXT, "only GET\n".into());
    }
    let path = target.split('?').next().unwrap_or("");
    match path {
        "/healthz" => ("200 OK", TEXT, "ok\n".into()),
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

    #[test]
    fn endpoints_answer() {
        let m = Metrics::new();
        let addr = serve("127.0.0.1:0".parse().unwrap(), Arc::clone(&m)).unwrap();
        assert!(get(addr, "/healthz").starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/readyz").starts_with("HTTP/1.1 503"));
        m.set_ready();
        assert!(get(addr, "/readyz").starts_with("HTTP/1.1 200"));
        let metrics = get(addr, "/metrics");
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(metrics.contains("palisade_rounds_total 0"), "{metrics}");
        assert!(get(addr, "/nope").starts_with("HTTP/1.1 404"));
    }
}
