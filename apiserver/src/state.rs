//! The fake server's objects, revisions and event history, and the signals
//! its watch streams listen to.

use crate::meta;
use crate::resources::Collection;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Namespace,
    Pod,
    NetworkPolicy,
    Service,
    Node,
    ClusterNetworkPolicy,
}

impl Kind {
    pub fn from_name(kind: &str) -> Option<Kind> {
        match kind {
            "Namespace" => Some(Kind::Namespace),
            "Pod" => Some(Kind::Pod),
            "NetworkPolicy" => Some(Kind::NetworkPolicy),
            "Service" => Some(Kind::Service),
            "Node" => Some(Kind::Node),
            "ClusterNetworkPolicy" => Some(Kind::ClusterNetworkPolicy),
            _ => None,
        }
    }

    /// The cluster-wide collection path.
    pub fn from_path(path: &str) -> Option<Kind> {
        match path {
            "/api/v1/namespaces" => Some(Kind::Namespace),
            "/api/v1/pods" => Some(Kind::Pod),
            "/apis/networking.k8s.io/v1/networkpolicies" => Some(Kind::NetworkPolicy),
            "/api/v1/services" => Some(Kind::Service),
            "/api/v1/nodes" => Some(Kind::Node),
            "/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies" => {
                Some(Kind::ClusterNetworkPolicy)
            }
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Pod => "Pod",
            Kind::NetworkPolicy => "NetworkPolicy",
            Kind::Service => "Service",
            Kind::Node => "Node",
            Kind::ClusterNetworkPolicy => "ClusterNetworkPolicy",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Namespace | Kind::Pod | Kind::Service | Kind::Node => "v1",
            Kind::NetworkPolicy => "networking.k8s.io/v1",
            Kind::ClusterNetworkPolicy => "policy.networking.k8s.io/v1alpha2",
        }
    }

    pub fn namespaced(self) -> bool {
        !matches!(
            self,
            Kind::Namespace | Kind::Node | Kind::ClusterNetworkPolicy
        )
    }
}

/// How open watch streams are ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropMode {
    /// The body is cut (no terminating chunk): a lost connection.
    Reset,
    /// One `ERROR` event with a 410 `Status`, then a clean end.
    Gone,
}

/// One change, as a watch stream sends it.
#[derive(Clone, Debug)]
pub struct Change {
    pub revision: u64,
    pub kind: Kind,
    pub kind_of_event: &'static str,
    pub object: Value,
}

type Key = (Kind, String, String);

#[derive(Default)]
struct Inner {
    revision: u64,
    objects: BTreeMap<Key, Value>,
    history: Vec<Change>,
    /// Oldest revision a watch may resume from.
    horizon: u64,
    requests: Vec<String>,
    /// Events created through events.k8s.io/v1, patches merged in.
    events: Vec<Value>,
    /// Makes this server's uids differ from another's.
    seed: u64,
}

impl Inner {
    /// Stores `object` at the next revision and records the change;
    /// returns the revision and the object as stored.
    fn store(&mut self, key: Key, mut object: Value) -> (u64, Value) {
        self.revision += 1;
        let revision = self.revision;
        let uid = meta::uid(self.seed, revision);
        meta::server_fields(&mut object, self.objects.get(&key), uid);
        object["metadata"]["resourceVersion"] = json!(revision.to_string());
        let event = if self.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        let kind = key.0;
        self.objects.insert(key, object.clone());
        self.history.push(Change {
            revision,
            kind,
            kind_of_event: event,
            object: object.clone(),
        });
        (revision, object)
    }

    /// Removes an object at the next revision (a `DELETED` event).
    fn remove(&mut self, key: &Key) -> Option<(u64, Value)> {
        let mut object = self.objects.remove(key)?;
        self.revision += 1;
        let revision = self.revision;
        object["metadata"]["resourceVersion"] = json!(revision.to_string());
        self.history.push(Change {
            revision,
            kind: key.0,
            kind_of_event: "DELETED",
            object: object.clone(),
        });
        Some((revision, object))
    }
}

pub struct State {
    inner: Mutex<Inner>,
    down: AtomicBool,
    /// Connections and requests turned away while down.
    refused: AtomicU64,
    /// Bumped (with the revision) on every change: wakes watch streams.
    pub changed: tokio::sync::watch::Sender<u64>,
    /// Bumped to end every open watch stream the given way.
    pub drops: tokio::sync::watch::Sender<(u64, DropMode)>,
    /// Bumped with raw bytes to write on every open watch stream.
    pub inject: tokio::sync::watch::Sender<(u64, bytes::Bytes)>,
    /// Every request waits this many milliseconds before it is served.
    delay_ms: AtomicU64,
    /// ClusterNetworkPolicy's CRD is not installed: its paths are 404.
    no_crd: AtomicBool,
}

/// What a watch from some revision gets.
pub enum WatchStart {
    /// The revision was compacted away: 410.
    Gone { requested: u64, oldest: u64 },
    /// The changes after the revision (of every kind; filter by kind).
    From(Vec<Change>),
}

impl State {
    pub fn new() -> Self {
        State {
            inner: Mutex::new(Inner {
                revision: 1,
                horizon: 1,
                seed: meta::seed(),
                ..Inner::default()
            }),
            down: AtomicBool::new(false),
            refused: AtomicU64::new(0),
            changed: tokio::sync::watch::channel(1).0,
            drops: tokio::sync::watch::channel((0, DropMode::Reset)).0,
            inject: tokio::sync::watch::channel((0, bytes::Bytes::new())).0,
            delay_ms: AtomicU64::new(0),
            no_crd: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn revision(&self) -> u64 {
        self.lock().revision
    }

    pub fn apply(&self, mut object: Value) -> Result<u64> {
        let kind_name = object["kind"].as_str().unwrap_or_default().to_string();
        let Some(kind) = Kind::from_name(&kind_name) else {
            bail!("unsupported kind {kind_name:?}");
        };
        let name = object["metadata"]["name"]
            .as_str()
            .context("metadata.name missing")?
            .to_string();
        let namespace = if kind.namespaced() {
            object["metadata"]["namespace"]
                .as_str()
                .context("metadata.namespace missing")?
                .to_string()
        } else {
            String::new()
        };
        object["apiVersion"] = json!(kind.api_version());
        let mut inner = self.lock();
        let (revision, _) = inner.store((kind, namespace, name), object);
        drop(inner);
        self.changed.send_replace(revision);
        Ok(revision)
    }

    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) -> Option<u64> {
        let mut inner = self.lock();
        let key = (kind, namespace.to_string(), name.to_string());
        let (revision, _) = inner.remove(&key)?;
        drop(inner);
        self.changed.send_replace(revision);
        Some(revision)
    }

    /// One object as stored.
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        let key = (kind, namespace.to_string(), name.to_string());
        self.lock().objects.get(&key).cloned()
    }

    /// A client's write of one object, decided and stored under one lock
    /// (so a resourceVersion precondition cannot race another write):
    /// `decide` gets the stored object, if any, and returns the object to
    /// store. Unless `dry_run`, it is stored with the next revision (an
    /// `ADDED` or `MODIFIED` event). Returns what was (or would be) stored
    /// and whether it was created.
    pub fn write<E>(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        dry_run: bool,
        decide: impl FnOnce(Option<&Value>) -> Result<Value, E>,
    ) -> Result<(Value, bool), E> {
        let key = (kind, namespace.to_string(), name.to_string());
        let mut inner = self.lock();
        let current = inner.objects.get(&key);
        let created = current.is_none();
        let mut object = decide(current)?;
        if dry_run {
            return Ok((object, created));
        }
        let (revision, stored) = inner.store(key, object);
        object = stored;
        drop(inner);
        self.changed.send_replace(revision);
        Ok((object, created))
    }

    /// A client's delete: `check` (preconditions) sees the stored object
    /// first. Returns the deleted object, None when there was none.
    pub fn delete_checked<E>(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        dry_run: bool,
        check: impl FnOnce(&Value) -> Result<(), E>,
    ) -> Result<Option<Value>, E> {
        let key = (kind, namespace.to_string(), name.to_string());
        let mut inner = self.lock();
        let Some(current) = inner.objects.get(&key) else {
            return Ok(None);
        };
        check(current)?;
        if dry_run {
            return Ok(Some(current.clone()));
        }
        let (revision, object) = inner.remove(&key).expect("present above");
        drop(inner);
        self.changed.send_replace(revision);
        Ok(Some(object))
    }

    /// The names of the objects of `kind` in `namespace`.
    pub fn names_in(&self, kind: Kind, namespace: &str) -> Vec<String> {
        self.lock()
            .objects
            .keys()
            .filter(|(k, ns, _)| *k == kind && ns == namespace)
            .map(|(_, _, name)| name.clone())
            .collect()
    }

    /// Moves the horizon past every revision handed out so far. The revision
    /// advances too (as unrelated writes would), so a fresh list gives a
    /// revision a watch can start from.
    pub fn compact(&self) -> u64 {
        let mut inner = self.lock();
        inner.revision += 1;
        // The history itself stays: open watch streams keep serving from
        // it, as the API server keeps established watches going.
        inner.horizon = inner.revision;
        let revision = inner.revision;
        drop(inner);
        self.changed.send_replace(revision);
        revision
    }

    pub fn drop_watches(&self, mode: DropMode) {
        self.drops.send_modify(|(n, m)| {
            *n += 1;
            *m = mode;
        });
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        if down {
            self.drop_watches(DropMode::Reset);
        }
    }

    pub fn inject_watches(&self, bytes: bytes::Bytes) {
        self.inject.send_modify(|(n, b)| {
            *n += 1;
            *b = bytes;
        });
    }

    pub fn set_delay(&self, delay: std::time::Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.delay_ms.store(ms, Ordering::SeqCst);
    }

    pub fn delay(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.delay_ms.load(Ordering::SeqCst))
    }

    /// Installs or removes ClusterNetworkPolicy's CRD (its objects stay).
    pub fn set_crd_installed(&self, installed: bool) {
        self.no_crd.store(!installed, Ordering::SeqCst);
    }

    /// Whether `kind` is served (a CRD kind only while installed).
    pub fn serves(&self, kind: Kind) -> bool {
        kind != Kind::ClusterNetworkPolicy || !self.no_crd.load(Ordering::SeqCst)
    }

    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }

    pub fn refuse(&self) {
        self.refused.fetch_add(1, Ordering::SeqCst);
    }

    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    pub fn record(&self, request: String) {
        self.lock().requests.push(request);
    }

    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    /// Stores a created Event, as the API server would: the namespace of
    /// the path, a resource version. Errors are the 400's message.
    pub fn create_event(&self, namespace: &str, mut event: Value) -> Result<Value, String> {
        let name = event["metadata"]["name"]
            .as_str()
            .ok_or("metadata.name missing")?
            .to_string();
        match event["metadata"]["namespace"].as_str() {
            Some(ns) if ns != namespace => {
                return Err(format!(
                    "namespace {ns:?} does not match the path's {namespace:?}"
                ))
            }
            _ => {}
        }
        let mut inner = self.lock();
        if inner.events.iter().any(|e| {
            e["metadata"]["namespace"] == namespace && e["metadata"]["name"] == name.as_str()
        }) {
            return Err(format!("events {name:?} already exists"));
        }
        inner.revision += 1;
        event["metadata"]["namespace"] = json!(namespace);
        event["metadata"]["resourceVersion"] = json!(inner.revision.to_string());
        event["apiVersion"] = json!("events.k8s.io/v1");
        event["kind"] = json!("Event");
        inner.events.push(event.clone());
        Ok(event)
    }

    /// Merges a JSON merge patch into a stored Event; None when absent.
    pub fn patch_event(&self, namespace: &str, name: &str, patch: &Value) -> Option<Value> {
        let mut inner = self.lock();
        inner.revision += 1;
        let revision = inner.revision;
        let event = inner
            .events
            .iter_mut()
            .find(|e| e["metadata"]["namespace"] == namespace && e["metadata"]["name"] == name)?;
        crate::patch::merge(event, patch);
        event["metadata"]["resourceVersion"] = json!(revision.to_string());
        Some(event.clone())
    }

    pub fn events(&self) -> Vec<Value> {
        self.lock().events.clone()
    }

    /// The objects of a collection and the revision they are current at.
    pub fn list(&self, of: &Collection) -> (u64, Vec<Value>) {
        let (revision, items, _) = self.list_page(of, None, 0);
        (revision, items)
    }

    /// One page of a list: the objects of the collection after the key
    /// `after` (namespace, name), at most `limit` of them (0: all), the
    /// current revision, and whether objects remain after the page (`None`:
    /// none), with their number when there is no selector (`Some(0)`
    /// under one: the API server omits `remainingItemCount` then). Matching every remaining object against a selector for
    /// each page made listing 150,000 pods quadratic.
    pub fn list_page(
        &self,
        of: &Collection,
        after: Option<(String, String)>,
        limit: usize,
    ) -> (u64, Vec<Value>, Option<usize>) {
        use std::ops::Bound;
        let inner = self.lock();
        let kind = of.kind;
        let first_ns = of.namespace.clone().unwrap_or_default();
        let start = match after {
            Some((ns, name)) => Bound::Excluded((kind, ns, name)),
            None => Bound::Included((kind, first_ns, String::new())),
        };
        let mut rest =
            inner
                .objects
                .range((start, Bound::Unbounded))
                .take_while(|((k, ns, _), _)| {
                    *k == kind && of.namespace.as_ref().is_none_or(|n| n == ns)
                });
        let take = if limit == 0 { usize::MAX } else { limit };
        let items: Vec<Value> = rest
            .by_ref()
            .filter(|(_, v)| of.selector.selects(v))
            .take(take)
            .map(|(_, v)| v.clone())
            .collect();
        let remaining = if of.selector.is_empty() {
            Some(rest.count()).filter(|n| *n > 0)
        } else {
            rest.any(|(_, v)| of.selector.selects(v)).then_some(0)
        };
        (inner.revision, items, remaining)
    }

    /// The oldest revision still served (for exact lists and watches).
    pub fn horizon(&self) -> u64 {
        self.lock().horizon
    }

    /// Where a new watch from revision `from` starts: Gone when `from` is
    /// before the horizon.
    pub fn start_watch(&self, of: &Collection, from: u64) -> WatchStart {
        let horizon = self.lock().horizon;
        if from < horizon {
            return WatchStart::Gone {
                requested: from,
                oldest: horizon,
            };
        }
        WatchStart::From(self.changes_after(of, from))
    }

    /// The changes of a collection after revision `from` (for an open
    /// stream).
    pub fn changes_after(&self, of: &Collection, from: u64) -> Vec<Change> {
        self.lock()
            .history
            .iter()
            .filter(|c| c.kind == of.kind && c.revision > from && of.selects(&c.object))
            .cloned()
            .collect()
    }
}
