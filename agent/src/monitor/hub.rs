//! The subscribers of the event stream. The reader hands every decoded
//! event to the hub, which queues it for each client that wants it without
//! ever waiting: a client whose queue is full loses the event, and the
//! loss is counted for that client and told to it with its next line.

use super::event::DecodedEvent;
use super::protocol::Request;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Events queued per client before it starts losing them.
pub const CLIENT_QUEUE: usize = 4096;

struct Client {
    id: u64,
    request: Request,
    tx: mpsc::Sender<Arc<DecodedEvent>>,
    dropped: Arc<AtomicU64>,
}

/// What a client task holds: its queue and its loss counter.
pub struct Subscription {
    pub id: u64,
    pub rx: mpsc::Receiver<Arc<DecodedEvent>>,
    pub dropped: Arc<AtomicU64>,
}

/// Called with `true` when the first client wanting allowed-flow events
/// arrives, `false` when the last one leaves.
pub type AllowedSwitch = Box<dyn FnMut(bool) + Send>;

pub struct Hub {
    inner: Mutex<Inner>,
}

struct Inner {
    clients: Vec<Client>,
    next_id: u64,
    switch: AllowedSwitch,
    allowed_on: bool,
}

impl Hub {
    pub fn new(switch: AllowedSwitch) -> Hub {
        Hub {
            inner: Mutex::new(Inner {
                clients: Vec::new(),
                next_id: 0,
                switch,
                allowed_on: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn subscribe(&self, request: Request) -> Subscription {
        let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        inner.clients.push(Client {
            id,
            request,
            tx,
            dropped: Arc::clone(&dropped),
        });
        inner.update_switch();
        Subscription { id, rx, dropped }
    }

    pub fn unsubscribe(&self, id: u64) {
        let mut inner = self.lock();
        inner.clients.retain(|c| c.id != id);
        inner.update_switch();
    }

    /// Whether any client is connected (the reader skips decoding when
    /// none is, apart from logging).
    pub fn clients(&self) -> usize {
        self.lock().clients.len()
    }

    /// Queues `e` for every client that wants it; never waits.
    pub fn publish(&self, e: &Arc<DecodedEvent>) {
        let inner = self.lock();
        for c in &inner.clients {
            if !c.request.wants(e) {
                continue;
            }
            match c.tx.try_send(Arc::clone(e)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    c.dropped.fetch_add(1, Ordering::Relaxed);
                }
                // The client task is gone; it unsubscribes itself.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
    }
}

impl Inner {
    fn update_switch(&mut self) {
        let want = self
            .clients
            .iter()
            .any(|c| c.request.verdict.needs_allowed());
        if want != self.allowed_on {
            self.allowed_on = want;
            (self.switch)(want);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::event::{DecodedEvent, Verdict};
    use crate::monitor::protocol::VerdictFilter;

    fn event(verdict: Verdict, pod: &str) -> Arc<DecodedEvent> {
        Arc::new(DecodedEvent {
            time: "t".into(),
            verdict,
            direction: "ingress".into(),
            pod: pod.into(),
            ifindex: 1,
            peer: None,
            protocol: "UDP".into(),
            src: "10.0.0.1".parse().unwrap(),
            sport: 1,
            dst: "10.0.0.2".parse().unwrap(),
            dport: 2,
            reason: None,
            allowed_by: None,
            isolated_by: vec![],
            denied_by: None,
            generation: 0,
            stale: false,
        })
    }

    #[test]
    fn the_allowed_switch_follows_the_clients_that_want_it() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = Arc::clone(&log);
        let hub = Hub::new(Box::new(move |on| l.lock().unwrap().push(on)));
        let denied = hub.subscribe(Request::default());
        assert!(log.lock().unwrap().is_empty());
        let all = hub.subscribe(Request {
            pod: None,
            verdict: VerdictFilter::All,
        });
        let allowed = hub.subscribe(Request {
            pod: None,
            verdict: VerdictFilter::Allowed,
        });
        hub.unsubscribe(all.id);
        hub.unsubscribe(allowed.id);
        hub.unsubscribe(denied.id);
        assert_eq!(*log.lock().unwrap(), [true, false]);
    }

    #[test]
    fn a_full_queue_drops_and_counts_for_that_client_only() {
        let hub = Hub::new(Box::new(|_| {}));
        let mut slow = hub.subscribe(Request::default());
        let mut web = hub.subscribe(Request {
            pod: Some("shop/web".into()),
            verdict: VerdictFilter::Denied,
        });
        for _ in 0..CLIENT_QUEUE + 5 {
            hub.publish(&event(Verdict::Denied, "shop/db"));
        }
        hub.publish(&event(Verdict::Allowed, "shop/web"));
        hub.publish(&event(Verdict::WouldDeny, "shop/web"));
        // Five denied plus the would-deny one; the allowed one was not wanted.
        assert_eq!(slow.dropped.load(Ordering::Relaxed), 6);
        assert_eq!(web.dropped.load(Ordering::Relaxed), 0);
        let got = web.rx.try_recv().unwrap();
        assert_eq!(got.verdict, Verdict::WouldDeny);
        assert!(web.rx.try_recv().is_err());
        assert_eq!(slow.rx.try_recv().unwrap().pod, "shop/db");
    }
}
