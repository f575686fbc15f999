//! The Kubernetes API source: kube-rs watchers on Namespaces, Pods (every
//! node's: policies select peers cluster-wide), NetworkPolicies,
//! Services (every ClusterIP: the datapath decides egress to them after
//! DNAT), ClusterNetworkPolicies and Nodes (their labels and addresses,
//! for `nodes` peers), each feeding a [`store::Store`] of objects converted into the
//! model's form as their events arrive (`convert.rs`): a round assembles
//! the model from them with the checks across objects only.
//!
//! The watchers run on a tokio runtime of their own thread; the agent loop
//! stays synchronous and reads the stores through [`ApiSource`]. A burst of
//! events becomes one round: the loop reads only once no event came for
//! [`DEBOUNCE`] (or [`MAX_DELAY`] after the first, under constant churn).
//!
//! Failure behaviour, all of it "keep enforcing what is pinned":
//! - before every kind is listed once, there is no model at all;
//! - the API unreachable: the watchers retry with kube-rs' default backoff
//!   (exponential, 0.8 s up to 30 s); the stores keep their contents;
//! - 410 Gone: the watcher lists again and the store swaps the new list in
//!   whole (see `store.rs`), then the round diffs as any other.
//! - ClusterNetworkPolicy's CRD not installed (404 on its list): logged
//!   once, its store counts as listed and empty so everything else is
//!   enforced, and the watcher keeps retrying with the same backoff;
//! - a watcher that ends or panics is recorded (`liveness.rs`) and fails
//!   the agent's liveness probe: its store would never change again.
//!
//! Objects are listed and watched leniently (`convert::Lenient`): one that
//! does not deserialize into its type fails neither the list nor the
//! watch. Policies not understood, policies read with a warning and
//! objects left out get a Kubernetes Event (see `events.rs`).

mod connect;
pub mod convert;
pub mod events;
mod live;
mod liveness;
pub mod store;

pub use connect::Connection;
pub use liveness::WatcherLiveness;

use super::Source;
use crate::datapath::watch::Wake;
use convert::{Kind, Lenient, Rejected};
use events::InputEvents;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use live::Live;
use palisade_compiler::Change;
use palisade_policy::crd::ClusterNetworkPolicy;
use palisade_policy::Model;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use store::Store;

/// Quiet time after the last event before the model is read again. A
/// round costs what changed, so little is gained by waiting longer: events
/// arriving during a round are read together by the next one.
pub const DEBOUNCE: Duration = Duration::from_millis(5);
/// Longest a change waits under a constant stream of events.
pub const MAX_DELAY: Duration = Duration::from_secs(1);

/// `resource` label of the watch counters.
pub type ResourceLabel = [(&'static str, &'static str); 1];

/// Counters the watchers keep, registered by the agent's metrics.
#[derive(Clone, Default)]
pub struct WatchMetrics {
    /// Errors after which a watcher reconnects or lists again.
    pub restarts: Family<ResourceLabel, Counter>,
    /// Full lists after the first one (410 Gone, lost resource version).
    pub relists: Family<ResourceLabel, Counter>,
}

#[derive(Default)]
struct Stores {
    namespaces: Store<Namespace>,
    pods: Store<Pod>,
    policies: Store<NetworkPolicy>,
    services: Store<Service>,
    cluster_policies: Store<ClusterNetworkPolicy>,
    /// Always watched, though only `nodes` peers read them: a Node is
    /// kept as its name, labels and addresses, and watching them only
    /// while some policy has a `nodes` peer would make the round that
    /// first needs them wait for a fresh list (or enforce the peer as
    /// matching no node meanwhile).
    nodes: Store<Node>,
    /// When the oldest change not yet read by a snapshot arrived.
    unread_since: Option<Instant>,
}

impl Stores {
    fn synced(&self) -> bool {
        self.namespaces.synced()
            && self.pods.synced()
            && self.policies.synced()
            && self.services.synced()
            && self.cluster_policies.synced()
            && self.nodes.synced()
    }

    /// Forgets every journal: the reader took the stores whole.
    fn clear_changes(&mut self) {
        self.namespaces.clear_changes();
        self.pods.clear_changes();
        self.policies.clear_changes();
        self.services.clear_changes();
        self.cluster_policies.clear_changes();
        self.nodes.clear_changes();
    }
}

#[derive(Default)]
struct Shared {
    stores: Mutex<Stores>,
    /// Bumped on every change of the live stores.
    version: AtomicU64,
    /// Signalled with every bump, so that the agent loop wakes at once.
    wake: Option<Wake>,
    liveness: Arc<WatcherLiveness>,
}

impl Shared {
    /// Records a change of the live stores.
    fn bump(&self) {
        self.version.fetch_add(1, Ordering::AcqRel);
        if let Some(w) = &self.wake {
            w.signal();
        }
    }

    fn stores(&self) -> std::sync::MutexGuard<'_, Stores> {
        // A watcher that panicked mid-update cannot leave a store half
        // written (every update is one map operation): keep going.
        self.stores.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct ApiSource {
    shared: Arc<Shared>,
    /// Version of the stores at the last snapshot.
    seen: u64,
    /// A version not yet read: (version, when it was first noticed, when
    /// the first unread change was noticed).
    pending: Option<(u64, Instant, Instant)>,
    /// When the oldest change in the last snapshot arrived.
    learned: Option<Instant>,
    /// None in unit tests that have no API server.
    events: Option<InputEvents>,
    /// Patches the model the last snapshot gave, key by key.
    live: Live,
}

impl ApiSource {
    /// Connects (kubeconfig or in-cluster) and starts the watchers. Fails
    /// only on configuration errors; an unreachable API server is retried.
    pub fn start(conn: Connection, metrics: WatchMetrics) -> anyhow::Result<Self> {
        let shared = Arc::new(Shared {
            // Without it the loop notices changes at its next step.
            wake: Wake::new().ok(),
            ..Shared::default()
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
        let inner = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("kube-watch".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(anyhow::Error::from(e).context("start tokio runtime")));
                        return;
                    }
                };
                rt.block_on(async move {
                    let client = match conn.client().await {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = tx.send(Ok(()));
                    tokio::join!(
                        run_watchers(client.clone(), inner, metrics),
                        events::publish(client, events_rx),
                    );
                });
            })
            .map_err(|e| anyhow::anyhow!("start the watcher thread: {e}"))?;
        rx.recv()
            .map_err(|_| anyhow::anyhow!("the watcher thread ended before connecting"))??;
        let mut source = ApiSource::over(shared);
        source.events = Some(InputEvents::new(events_tx));
        Ok(source)
    }

    fn over(shared: Arc<Shared>) -> Self {
        ApiSource {
            shared,
            seen: 0,
            pending: None,
            learned: None,
            events: None,
            live: Live::default(),
        }
    }

    /// Every policy in audit mode (`palisade agent --audit`), from the
    /// next snapshot on.
    pub fn set_audit(&mut self, audit: bool) {
        self.live.audit = audit;
    }

    /// Publishes the Events of the problems in `model` and of the objects
    /// left out.
    fn report(&mut self, stores: &Stores, model: &Model) {
        let Some(events) = self.events.as_mut() else {
            return;
        };
        let uids = events::uids(stores.policies.iter());
        let pods = self.live.rejected_pods(&stores.pods);
        let rejected = rejected_in(&stores.namespaces)
            .chain(rejected(&pods))
            .chain(rejected_in(&stores.services))
            .chain(rejected_in(&stores.cluster_policies))
            .chain(rejected_in(&stores.nodes));
        events.report(events::problems(model, &uids, rejected));
    }

    /// Marks the stores read: what the last snapshot or update contains.
    fn read(&mut self, stores: &mut Stores) {
        self.seen = self.shared.version.load(Ordering::Acquire);
        self.learned = stores.unread_since.take();
        self.pending = None;
    }

    /// Which watchers still run (for the liveness probe).
    pub fn liveness(&self) -> Arc<WatcherLiveness> {
        Arc::clone(&self.shared.liveness)
    }

    /// Objects in the stores: (namespaces, pods, policies, services).
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let s = self.shared.stores();
        (
            s.namespaces.len(),
            s.pods.len(),
            s.policies.len(),
            s.services.len(),
        )
    }
}

impl Source for ApiSource {
    fn changed(&mut self) -> bool {
        let version = self.shared.version.load(Ordering::Acquire);
        if version == self.seen || !self.synced() {
            return false;
        }
        let now = Instant::now();
        let (last, quiet_since, first) = match self.pending {
            Some((v, _, first)) if v != version => (version, now, first),
            Some(p) => p,
            None => (version, now, now),
        };
        self.pending = Some((last, quiet_since, first));
        now - quiet_since >= DEBOUNCE || now - first >= MAX_DELAY
    }

    fn snapshot(&mut self) -> Option<Model> {
        let shared = Arc::clone(&self.shared);
        let mut stores = shared.stores();
        if !stores.synced() {
            return None;
        }
        // Under the lock: the version, the journals and the contents agree.
        self.read(&mut stores);
        let model = self.live.load(&mut stores);
        self.report(&stores, &model);
        Some(model)
    }

    fn update(&mut self, model: &mut Model) -> Option<Vec<Change>> {
        let shared = Arc::clone(&self.shared);
        let mut stores = shared.stores();
        if !stores.synced() {
            return None;
        }
        self.read(&mut stores);
        let changes = self.live.update(&mut stores, model);
        self.report(&stores, model);
        Some(changes)
    }

    fn learned(&self) -> Option<Instant> {
        self.learned
    }

    fn synced(&self) -> bool {
        self.shared.stores().synced()
    }

    fn notify(&mut self) -> bool {
        self.changed()
    }

    fn settling(&self) -> bool {
        self.pending.is_some()
    }

    fn wake_fd(&self) -> Option<RawFd> {
        self.shared.wake.as_ref().map(Wake::raw)
    }
}

/// The objects left out among entries.
fn rejected<T>(entries: &[Arc<Result<T, Box<Rejected>>>]) -> impl Iterator<Item = &Rejected> {
    entries
        .iter()
        .filter_map(|e| e.as_ref().as_ref().err().map(|r| &**r))
}

/// The objects left out in a store.
fn rejected_in<K: Kind<Entry = Result<T, Box<Rejected>>>, T>(
    store: &Store<K>,
) -> impl Iterator<Item = &Rejected> {
    store
        .iter()
        .filter_map(|(_, e)| e.as_ref().err().map(|r| &**r))
}

async fn run_watchers(client: Client, shared: Arc<Shared>, metrics: WatchMetrics) {
    tokio::join!(
        watch::<Namespace>(
            Api::all(client.clone()),
            "namespaces",
            |s| &mut s.namespaces,
            &shared,
            &metrics
        ),
        watch::<Pod>(
            Api::all(client.clone()),
            "pods",
            |s| &mut s.pods,
            &shared,
            &metrics
        ),
        watch::<NetworkPolicy>(
            Api::all(client.clone()),
            "networkpolicies",
            |s| &mut s.policies,
            &shared,
            &metrics
        ),
        watch::<Service>(
            Api::all(client.clone()),
            "services",
            |s| &mut s.services,
            &shared,
            &metrics
        ),
        watch::<ClusterNetworkPolicy>(
            Api::all(client.clone()),
            "clusternetworkpolicies",
            |s| &mut s.cluster_policies,
            &shared,
            &metrics
        ),
        watch::<Node>(
            Api::all(client),
            "nodes",
            |s| &mut s.nodes,
            &shared,
            &metrics
        ),
    );
}

/// Runs one kind's watcher for the life of the process. Objects come
/// [`Lenient`]: one that does not deserialize is an entry like any other
/// (see `convert.rs`), never a failed list or watch.
async fn watch<K: Kind>(
    api: Api<Lenient<K>>,
    resource: &'static str,
    store: fn(&mut Stores) -> &mut Store<K>,
    shared: &Shared,
    metrics: &WatchMetrics,
) {
    let label = [("resource", resource)];
    let _running = WatcherLiveness::running(&shared.liveness, resource);
    let mut listed = false;
    let mut absent_logged = false;
    // Each object is converted by the store and dropped: nothing of the
    // API object outlives its event.
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        let event = match item {
            Ok(event) => event,
            Err(e) if not_served(&e) => {
                // A CRD kind its cluster does not have: the other kinds
                // are enforced, and the backoff keeps trying.
                metrics.restarts.get_or_create(&label).inc();
                if !absent_logged {
                    tracing::warn!(resource, error = %e, "not served by the API server (CRD not installed?): enforcing the other kinds, retrying with backoff");
                    absent_logged = true;
                }
                let mut stores = shared.stores();
                if store(&mut stores).mark_absent() {
                    stores.unread_since.get_or_insert_with(Instant::now);
                    shared.bump();
                }
                continue;
            }
            Err(e) => {
                // The backoff delays the watcher's next attempt.
                metrics.restarts.get_or_create(&label).inc();
                tracing::warn!(resource, error = %e, "watch failed; retrying with backoff, enforced state kept");
                continue;
            }
        };
        #[cfg(debug_assertions)]
        liveness::test_fault(resource, &event);
        match &event {
            watcher::Event::Init if listed => {
                metrics.relists.get_or_create(&label).inc();
                tracing::info!(resource, "listing again");
            }
            watcher::Event::InitDone => {
                tracing::info!(resource, "listed");
                listed = true;
                absent_logged = false;
            }
            _ => {}
        }
        let mut stores = shared.stores();
        if store(&mut stores).apply(event) {
            stores.unread_since.get_or_insert_with(Instant::now);
            shared.bump();
        }
    }
}

/// A 404 on the list: the resource does not exist on this server.
fn not_served(e: &watcher::Error) -> bool {
    matches!(
        e,
        watcher::Error::InitialListFailed(kube::Error::Api(r)) if r.code == 404
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use watcher::Event;

    fn pod(name: &str, ip: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ns", "labels": {"app": name}},
            "spec": {"nodeName": "n1", "containers": []},
            "status": {"phase": "Running", "podIP": ip}
        }))
        .unwrap()
    }

    /// Feeds events as a watcher would (version bumped on live changes).
    fn feed<K: Kind>(
        shared: &Shared,
        store: fn(&mut Stores) -> &mut Store<K>,
        events: Vec<Event<Lenient<K>>>,
    ) {
        for ev in events {
            let mut s = shared.stores();
            if store(&mut s).apply(ev) {
                shared.version.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    fn settle(src: &mut ApiSource) -> bool {
        // Bounded: the debounce is tens of milliseconds.
        for _ in 0..100 {
            if src.changed() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn no_model_before_every_kind_is_listed_and_none_empty_during_a_relist() {
        let shared = Arc::new(Shared::default());
        let mut src = ApiSource::over(Arc::clone(&shared));
        feed(
            &shared,
            |s| &mut s.pods,
            vec![
                Event::Init,
                Event::InitApply(pod("a", "10.0.0.1").into()),
                Event::InitDone,
            ],
        );
        feed(
            &shared,
            |s| &mut s.namespaces,
            vec![Event::Init, Event::InitDone],
        );
        feed(
            &shared,
            |s| &mut s.services,
            vec![Event::Init, Event::InitDone],
        );
        feed(
            &shared,
            |s| &mut s.nodes,
            vec![Event::Init, Event::InitDone],
        );
        // ClusterNetworkPolicy's CRD not installed: listed as empty.
        shared.stores().cluster_policies.mark_absent();
        assert!(!src.synced());
        assert!(!src.changed());
        assert!(src.snapshot().is_none(), "no policies listed yet");
        feed(
            &shared,
            |s| &mut s.policies,
            vec![Event::Init, Event::InitDone],
        );
        assert!(src.synced());
        assert!(settle(&mut src));
        let m = src.snapshot().unwrap();
        assert_eq!(m.pods.len(), 1);
        assert!(!src.changed());

        // 410 Gone: the pods are listed again; until the list is complete
        // the model keeps the old pods and nothing asks for a round.
        feed(
            &shared,
            |s| &mut s.pods,
            vec![Event::Init, Event::InitApply(pod("b", "10.0.0.2").into())],
        );
        assert!(!settle(&mut src));
        let m = src.snapshot().unwrap();
        assert_eq!(
            m.pods.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["a"]
        );
        feed(&shared, |s| &mut s.pods, vec![Event::InitDone]);
        assert!(settle(&mut src));
        let m = src.snapshot().unwrap();
        assert_eq!(
            m.pods.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["b"]
        );
    }

    #[test]
    fn a_burst_of_events_is_one_change() {
        let shared = Arc::new(Shared::default());
        let mut src = ApiSource::over(Arc::clone(&shared));
        feed(&shared, |s| &mut s.pods, vec![Event::Init, Event::InitDone]);
        feed(
            &shared,
            |s| &mut s.namespaces,
            vec![Event::Init, Event::InitDone],
        );
        feed(
            &shared,
            |s| &mut s.services,
            vec![Event::Init, Event::InitDone],
        );
        feed(
            &shared,
            |s| &mut s.policies,
            vec![Event::Init, Event::InitDone],
        );
        feed(
            &shared,
            |s| &mut s.nodes,
            vec![Event::Init, Event::InitDone],
        );
        feed(
            &shared,
            |s| &mut s.cluster_policies,
            vec![Event::Init, Event::InitDone],
        );
        assert!(settle(&mut src));
        src.snapshot().unwrap();
        for i in 0..20 {
            feed(
                &shared,
                |s| &mut s.pods,
                vec![Event::Apply(
                    pod(&format!("p{i}"), &format!("10.0.1.{i}")).into(),
                )],
            );
        }
        // Right after the burst it has not been quiet long enough.
        assert!(!src.changed());
        assert!(settle(&mut src));
        assert_eq!(src.snapshot().unwrap().pods.len(), 20);
        assert!(!src.changed());
    }
}
