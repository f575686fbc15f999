//! The verdict stream: the classifiers' events read from the ring buffer,
//! decoded into pod and policy names, and served on a local Unix socket
//! (`palisade monitor` is its client).
//!
//! One thread runs a small tokio runtime: a reader woken by the ring
//! buffer's file descriptor (never polling), and the socket server. The
//! agent's programming loop only publishes a new [`view::NodeView`] after
//! each round.

pub mod access;
pub mod event;
pub mod hub;
pub mod protocol;
pub mod socket;
pub mod view;

use crate::datapath::load::PinLayout;
use crate::datapath::telemetry::{self, Telemetry};
use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use hub::Hub;
use palisade_common::{Event, CONFIG_EVENTS_ALLOWED};
use std::path::Path;
use std::sync::Arc;
use tokio::io::unix::AsyncFd;
use view::SharedView;

/// The running monitor. Dropping it removes the socket and turns
/// allowed-flow events off (the runtime thread ends with the process).
pub struct Monitor {
    _socket: socket::BoundSocket,
    layout: PinLayout,
}

impl Drop for Monitor {
    fn drop(&mut self) {
        // No client is left to want allowed events once we are gone.
        if let Ok(mut t) = Telemetry::open(&self.layout) {
            let _ = t.set_events(CONFIG_EVENTS_ALLOWED, false);
        }
    }
}

impl Monitor {
    /// Binds `socket_path` (for root and `group`) and starts reading the
    /// node's events.
    pub fn start(
        socket_path: &Path,
        group: Option<&access::MonitorGroup>,
        layout: &PinLayout,
        view: SharedView,
    ) -> Result<Monitor> {
        let mut config = Telemetry::open(layout)?;
        // Allowed-flow events only while a client asks (a previous agent
        // may have died with them on).
        config.set_events(CONFIG_EVENTS_ALLOWED, false)?;
        let ring = telemetry::open_events(layout)?;
        let bound = socket::bind(socket_path, group)?;
        let listener = bound.listener.try_clone()?;
        let hub = Arc::new(Hub::new(Box::new(move |on| {
            match config.set_events(CONFIG_EVENTS_ALLOWED, on) {
                Ok(()) => tracing::info!(on, "allowed-flow events switched"),
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "cannot switch allowed-flow events")
                }
            }
        })));
        std::thread::Builder::new()
            .name("monitor".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "monitor: cannot start its runtime; no events");
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match tokio::net::UnixListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!(error = %e, "monitor: cannot use its socket");
                            return;
                        }
                    };
                    tokio::spawn(socket::serve(listener, Arc::clone(&hub)));
                    if let Err(e) = read_events(ring, &hub, &view).await {
                        tracing::error!(error = %format!("{e:#}"), "monitor: event reader stopped");
                    }
                });
            })
            .context("start the monitor thread")?;
        tracing::info!(socket = %socket_path.display(), "serving the verdict stream");
        Ok(Monitor {
            _socket: bound,
            layout: layout.clone(),
        })
    }
}

/// The record at the start of a ring buffer item (`None` when too short:
/// a classifier of another version).
fn parse_event(bytes: &[u8]) -> Option<Event> {
    if bytes.len() < std::mem::size_of::<Event>() {
        return None;
    }
    // SAFETY: `Event` is plain old data (repr(C), every bit pattern valid)
    // and the slice holds at least its size; unaligned read.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Event>()) })
}

/// Reads the ring buffer whenever the kernel says it has data, decodes each
/// event against the current view and hands it to the hub.
async fn read_events(ring: RingBuf<MapData>, hub: &Hub, view: &SharedView) -> Result<()> {
    // SAFETY: the ring buffer owns its map descriptor, which stays open and
    // the same for as long as the `AsyncFd` owns the ring buffer.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
        .context("register the event ring buffer with the runtime")?;
    loop {
        let mut guard = fd.readable_mut().await.context("wait for events")?;
        let ring = guard.get_inner_mut();
        let current = view.get();
        let log = tracing::enabled!(tracing::Level::DEBUG);
        while let Some(item) = ring.next() {
            let Some(e) = parse_event(&item) else {
                continue;
            };
            drop(item);
            if hub.clients() == 0 && !log {
                continue;
            }
            let Some(decoded) = event::decode(&e, &current, event::now_rfc3339()) else {
                continue;
            };
            if log {
                tracing::debug!(
                    verdict = decoded.verdict.name(),
                    pod = %decoded.pod,
                    direction = %decoded.direction,
                    protocol = %decoded.protocol,
                    src = %decoded.src,
                    sport = decoded.sport,
                    dst = %decoded.dst,
                    dport = decoded.dport,
                    "verdict event"
                );
            }
            hub.publish(&Arc::new(decoded));
        }
        guard.clear_ready();
    }
}
