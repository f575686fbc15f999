//! An in-process fake Kubernetes API server for the agent's watch tests
//! and the multi-node lab, which kubectl can drive.
//!
//! It speaks the list/watch protocol kube-rs' watcher uses, for the kinds
//! the agent reads (namespaces, pods, networkpolicies, services,
//! cluster-wide or per namespace):
//!
//! - `GET <collection>`: a JSON list whose `metadata.resourceVersion` is the
//!   current revision (`labelSelector` and `fieldSelector` narrow it, and
//!   the watch);
//! - `GET <collection>?watch=true&resourceVersion=N`: a chunked stream of
//!   `ADDED`/`MODIFIED`/`DELETED` events after revision N, then live ones,
//!   with `BOOKMARK`s when `allowWatchBookmarks=true`; a revision older
//!   than the compaction horizon gets the API server's answer, one `ERROR`
//!   event carrying a 410 `Status`;
//! - a list with `resourceVersionMatch=Exact` (or a continue token) older
//!   than the horizon gets an HTTP 410 `Status`.
//!
//! - discovery (`/api`, `/apis`, `/api/v1`, `/apis/<group>/<version>`,
//!   `/version`) and an OpenAPI v3 index of operations (`/openapi/v3`),
//!   what kubectl reads before anything else (`discovery.rs`,
//!   `openapi.rs`);
//! - one object: `GET`, `POST` (create), `PUT` (replace), `PATCH` (JSON
//!   patch, merge, strategic merge, server-side apply) and `DELETE`, checked as the API
//!   server checks them (`objects.rs`); every write bumps the revision and
//!   produces the watch event a test control's write produces;
//! - `POST /apis/events.k8s.io/v1/namespaces/{ns}/events` and `PATCH
//!   .../events/{name}` (merge patch): what kube-rs' event recorder sends
//!   for a new Event and for a repeat; kept for [`FakeApiServer::events`].
//!
//! Test controls: add, modify and delete objects; compact the history;
//! drop every watch connection (abruptly, or with a 410 `ERROR` event
//! first); go down (every connection refused) and come back; write raw
//! bytes (garbage) on every open watch; answer every request late.
//!
//! Revisions are one counter over all kinds, like etcd's.

mod checks;
mod collections;
mod discovery;
mod http;
mod json_patch;
mod meta;
mod objects;
mod openapi;
mod patch;
mod reply;
mod resources;
mod selector;
mod state;
mod table;
mod validate;
mod watch;

pub use state::Kind;

use anyhow::{Context, Result};
use serde_json::Value;
use state::{DropMode, State};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct FakeApiServer {
    addr: SocketAddr,
    state: Arc<State>,
    // Owned so the server lives exactly as long as this value.
    runtime: Option<tokio::runtime::Runtime>,
}

impl FakeApiServer {
    /// Starts serving on 127.0.0.1 of the calling thread's network
    /// namespace (the listening socket is created on this thread).
    pub fn start() -> Result<Self> {
        Self::start_at(SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Starts serving on `addr` (port 0: any free port) of the calling
    /// thread's network namespace. A socket keeps the namespace it was made
    /// in, so a server started on a thread inside one network namespace
    /// serves there, whichever threads run it afterwards: this is how
    /// agents in several lab nodes share one server.
    pub fn start_at(addr: SocketAddr) -> Result<Self> {
        let listener = std::net::TcpListener::bind(addr)
            .with_context(|| format!("bind the fake API server to {addr}"))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("fake-apiserver")
            .build()
            .context("start the fake API server's runtime")?;
        let state = Arc::new(State::new());
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        runtime.spawn(http::serve(listener, Arc::clone(&state)));
        Ok(FakeApiServer {
            addr,
            state,
            runtime: Some(runtime),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes a kubeconfig whose current context points at this server.
    pub fn write_kubeconfig(&self, path: &Path) -> Result<PathBuf> {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             users:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
             current-context: fake\n",
            self.url()
        );
        std::fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
        Ok(path.to_path_buf())
    }

    /// Creates or replaces an object (its `kind` picks the collection);
    /// returns the revision it got.
    pub fn apply(&self, object: Value) -> Result<u64> {
        self.state.apply(object)
    }

    /// An object as stored (as a client's GET returns it); None when absent.
    /// `namespace` is "" for Namespaces.
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        self.state.get(kind, namespace, name)
    }

    /// Deletes an object; returns the revision of the deletion, or None when
    /// it did not exist.
    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) -> Option<u64> {
        self.state.delete(kind, namespace, name)
    }

    /// The current revision.
    pub fn revision(&self) -> u64 {
        self.state.revision()
    }

    /// Forgets the event history: a watch or exact list from any revision
    /// before now gets 410 Gone.
    pub fn compact(&self) -> u64 {
        self.state.compact()
    }

    /// Cuts every open watch stream mid-body, as a lost connection would.
    pub fn drop_watches(&self) {
        self.state.drop_watches(DropMode::Reset);
    }

    /// Ends every open watch stream with an `ERROR` event of code 410, as
    /// the API server does when a watcher falls behind its cache window.
    pub fn expire_watches(&self) {
        self.state.drop_watches(DropMode::Gone);
    }

    /// Down: every connection, new or kept alive, is closed without an
    /// answer. Up again: served as before, history intact.
    pub fn set_down(&self, down: bool) {
        self.state.set_down(down);
    }

    /// Writes `bytes` exactly as given on every open watch stream, between
    /// two events: what a broken proxy or a hostile API server might send
    /// (a line that is not JSON, an event of no known type, an object of
    /// the wrong shape). Streams opened later get nothing.
    pub fn inject_watches(&self, bytes: &[u8]) {
        self.state
            .inject_watches(bytes::Bytes::copy_from_slice(bytes));
    }

    /// A slow API server: every request (lists, watches, writes) is
    /// answered `delay` late, until set back to zero. Requests already
    /// waiting keep the delay they started with.
    /// Installs or removes the ClusterNetworkPolicy CRD: while removed,
    /// its list, watch and object paths answer 404 as an API server
    /// without the CRD does.
    pub fn set_crd_installed(&self, installed: bool) {
        self.state.set_crd_installed(installed);
    }

    pub fn set_delay(&self, delay: std::time::Duration) {
        self.state.set_delay(delay);
    }

    /// Connections and requests turned away while down.
    pub fn refused(&self) -> u64 {
        self.state.refused()
    }

    /// Events written by clients (created, with later patches merged in).
    pub fn events(&self) -> Vec<Value> {
        self.state.events()
    }

    /// Requests served so far, by `(method, path + query)`; for assertions
    /// on what the client did (e.g. that it listed again).
    pub fn requests(&self) -> Vec<String> {
        self.state.requests()
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
