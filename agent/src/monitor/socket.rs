//! The monitor's Unix socket: binding it (replacing a stale file, refusing
//! to steal a live one), serving each client, and removing it on exit.

use super::access::{self, MonitorGroup};
use super::hub::Hub;
use super::protocol::{Request, ServerLine};
use anyhow::{bail, Context, Result};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// How long a new client may take to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest request line accepted.
const REQUEST_MAX: usize = 4096;
/// Connections served at once (subscribed or still sending their request);
/// more are told so and closed: a local client must not be able to make
/// the agent hold unbounded tasks and queues.
pub const MAX_CLIENTS: usize = 16;

/// The bound socket file; removed on drop if it is still ours.
pub struct BoundSocket {
    pub listener: std::os::unix::net::UnixListener,
    path: PathBuf,
    /// (device, inode) of the file we bound, so that drop never removes a
    /// socket another agent put there since.
    id: (u64, u64),
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if (m.dev(), m.ino()) == self.id {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Binds `path`, for root and `group` only (`access.rs`). A socket
/// file nobody listens on is a leftover of an agent that died: replaced. A
/// live one belongs to another agent: refused.
pub fn bind(path: &Path, group: Option<&MonitorGroup>) -> Result<BoundSocket> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| {
            format!(
                "create the directory of the monitor socket {}",
                path.display()
            )
        })?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) => {
            use std::os::unix::fs::FileTypeExt;
            if !m.file_type().is_socket() {
                bail!(
                    "--monitor-socket {}: exists and is not a socket; refusing to replace it",
                    path.display()
                );
            }
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                bail!(
                    "--monitor-socket {}: another process is serving it (another agent?)",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("remove the stale monitor socket {}", path.display()))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("--monitor-socket {}", path.display()));
        }
    }
    let listener = bind_restricted(path, group)?;
    listener.set_nonblocking(true)?;
    let m = std::fs::symlink_metadata(path)?;
    Ok(BoundSocket {
        listener,
        path: path.to_path_buf(),
        id: (m.dev(), m.ino()),
    })
}

/// Binds under a temporary name beside `path` and moves the socket into
/// place once its owner and mode are set: at `path` it is never more open
/// than it should be, whatever the umask.
fn bind_restricted(
    path: &Path,
    group: Option<&MonitorGroup>,
) -> Result<std::os::unix::net::UnixListener> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = std::os::unix::net::UnixListener::bind(&tmp)
        .with_context(|| format!("bind the monitor socket {}", tmp.display()))?;
    let placed = access::restrict(&tmp, group).and_then(|()| {
        std::fs::rename(&tmp, path)
            .with_context(|| format!("rename {} to {}", tmp.display(), path.display()))
    });
    if placed.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    placed.map(|()| listener)
}

/// Accepts clients forever, at most `MAX_CLIENTS` at once.
pub async fn serve(listener: tokio::net::UnixListener, hub: Arc<Hub>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS));
    loop {
        match listener.accept().await {
            Ok((mut conn, _)) => match Arc::clone(&slots).try_acquire_owned() {
                Ok(slot) => {
                    let hub = Arc::clone(&hub);
                    tokio::spawn(async move {
                        client(conn, hub).await;
                        drop(slot);
                    });
                }
                Err(_) => {
                    let error = format!("too many monitor clients (at most {MAX_CLIENTS})");
                    let _ = write_line(&mut conn, &ServerLine::Error { error }).await;
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "monitor socket: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn write_line(
    w: &mut (impl AsyncWriteExt + Unpin),
    line: &ServerLine,
) -> std::io::Result<()> {
    let mut text = serde_json::to_string(line).map_err(std::io::Error::other)?;
    text.push('\n');
    w.write_all(text.as_bytes()).await
}

/// Reads the request line (bounded in size and time).
async fn read_request(
    r: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
) -> Result<Request, String> {
    use tokio::io::AsyncReadExt;
    let mut line = Vec::new();
    let read = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut limited = AsyncReadExt::take(&mut *r, REQUEST_MAX as u64);
        limited.read_until(b'\n', &mut line).await
    })
    .await;
    match read {
        Err(_) => Err(format!("no request line within {REQUEST_TIMEOUT:?}")),
        Ok(Err(e)) => Err(format!("reading the request: {e}")),
        Ok(Ok(0)) => Err("no request line".into()),
        Ok(Ok(_)) if !line.ends_with(b"\n") => Err(format!(
            "the request line is longer than {REQUEST_MAX} bytes or unterminated"
        )),
        Ok(Ok(_)) => {
            let text =
                String::from_utf8(line).map_err(|_| "the request is not UTF-8".to_string())?;
            Request::parse(&text)
        }
    }
}

/// One client: its request, then its events until it goes away.
async fn client(conn: UnixStream, hub: Arc<Hub>) {
    use tokio::io::AsyncReadExt;
    let (r, mut w) = conn.into_split();
    let mut r = BufReader::new(r);
    let request = match read_request(&mut r).await {
        Ok(req) => req,
        Err(error) => {
            let _ = write_line(&mut w, &ServerLine::Error { error }).await;
            return;
        }
    };
    tracing::debug!(?request, "monitor client subscribed");
    let mut sub = hub.subscribe(request);
    let mut sink = [0u8; 256];
    loop {
        tokio::select! {
            ev = sub.rx.recv() => {
                let Some(ev) = ev else { break };
                let dropped = sub.dropped.swap(0, Ordering::Relaxed);
                if dropped > 0
                    && write_line(&mut w, &ServerLine::Dropped { dropped }).await.is_err()
                {
                    break;
                }
                if write_line(&mut w, &ServerLine::Event(Box::new((*ev).clone()))).await.is_err() {
                    break;
                }
            }
            // The client sends nothing after its request: EOF or an error
            // means it is gone (and must stop holding allowed events on).
            n = r.read(&mut sink) => {
                if matches!(n, Ok(0) | Err(_)) {
                    break;
                }
            }
        }
    }
    hub.unsubscribe(sub.id);
    tracing::debug!("monitor client left");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::event::{DecodedEvent, Verdict};
    use std::io::{BufRead, BufReader as StdBufReader, Write};

    fn scratch(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("palisade-monitor-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A socket bound in a scratch directory and served on a thread of its
    /// own (for 10 s at most): the directory, the socket's path, the bound
    /// socket, its hub and the server thread.
    fn serving(
        tag: &str,
    ) -> (
        PathBuf,
        PathBuf,
        BoundSocket,
        Arc<Hub>,
        std::thread::JoinHandle<()>,
    ) {
        let dir = scratch(tag);
        let path = dir.join("m.sock");
        let bound = bind(&path, None).unwrap();
        let hub = Arc::new(Hub::new(Box::new(|_| {})));
        let listener = bound.listener.try_clone().unwrap();
        let h = Arc::clone(&hub);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let server = std::thread::spawn(move || {
            rt.block_on(async move {
                let l = tokio::net::UnixListener::from_std(listener).unwrap();
                let _ = tokio::time::timeout(Duration::from_secs(10), serve(l, h)).await;
            })
        });
        (dir, path, bound, hub, server)
    }

    fn event(pod: &str) -> Arc<DecodedEvent> {
        Arc::new(DecodedEvent {
            time: "t".into(),
            verdict: Verdict::Denied,
            direction: "ingress".into(),
            pod: pod.into(),
            ifindex: 1,
            peer: None,
            protocol: "UDP".into(),
            src: "10.0.0.1".parse().unwrap(),
            sport: 1,
            dst: "10.0.0.2".parse().unwrap(),
            dport: 2,
            reason: Some("policy".into()),
            allowed_by: None,
            isolated_by: vec![],
            denied_by: None,
            generation: 0,
            stale: false,
        })
    }

    #[test]
    fn a_stale_socket_is_replaced_a_live_one_refused_and_ours_removed() {
        let dir = scratch("bind");
        let path = dir.join("m.sock");
        // A leftover: bound, then its listener closed.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let group = MonitorGroup { gid: 4242 };
        let bound = bind(&path, Some(&group)).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o660);
        assert_eq!((meta.uid(), meta.gid()), (0, 4242));
        // Only the socket is left in the directory: no temporary name.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        let err = format!("{:#}", bind(&path, None).err().unwrap());
        assert!(err.contains("another process is serving it"), "{err}");
        drop(bound);
        assert!(!path.exists());
        std::fs::write(&path, "x").unwrap();
        let err = format!("{:#}", bind(&path, None).err().unwrap());
        assert!(err.contains("is not a socket"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn clients_get_their_events_and_bad_requests_an_error() {
        let (dir, path, bound, hub, server) = serving("serve");

        let mut bad = std::os::unix::net::UnixStream::connect(&path).unwrap();
        bad.write_all(b"{\"pod\": \"web\"}\n").unwrap();
        let mut line = String::new();
        StdBufReader::new(&bad).read_line(&mut line).unwrap();
        let parsed: ServerLine = serde_json::from_str(&line).unwrap();
        assert!(
            matches!(&parsed, ServerLine::Error { error } if error.contains("namespace/name")),
            "{line}"
        );

        let mut good = std::os::unix::net::UnixStream::connect(&path).unwrap();
        good.write_all(b"{\"pod\": \"shop/web\", \"verdict\": \"denied\"}\n")
            .unwrap();
        // Subscribed once the hub counts it (bounded wait).
        for _ in 0..200 {
            if hub.clients() == 1 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(hub.clients(), 1);
        hub.publish(&event("shop/db"));
        hub.publish(&event("shop/web"));
        let mut reader = StdBufReader::new(&good);
        line.clear();
        reader.read_line(&mut line).unwrap();
        let parsed: ServerLine = serde_json::from_str(&line).unwrap();
        assert!(
            matches!(&parsed, ServerLine::Event(e) if e.pod == "shop/web"),
            "{line}"
        );
        // Leaving unsubscribes.
        drop(reader);
        drop(good);
        for _ in 0..200 {
            if hub.clients() == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(hub.clients(), 0);
        drop(bound);
        drop(server);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn clients_beyond_the_limit_are_told_and_closed() {
        let (dir, path, bound, _hub, server) = serving("limit");
        // Connections that send nothing hold their slots.
        let held: Vec<_> = (0..MAX_CLIENTS)
            .map(|_| std::os::unix::net::UnixStream::connect(&path).unwrap())
            .collect();
        let extra = std::os::unix::net::UnixStream::connect(&path).unwrap();
        extra
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut line = String::new();
        StdBufReader::new(&extra).read_line(&mut line).unwrap();
        let parsed: ServerLine = serde_json::from_str(&line).unwrap();
        assert!(
            matches!(&parsed, ServerLine::Error { error } if error.contains("too many")),
            "{line}"
        );
        drop(held);
        drop(bound);
        drop(server);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
