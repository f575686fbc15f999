//! The HTTP side of the fake API server: routing, lists, watch streams.
//! Discovery (`discovery.rs`, `openapi.rs`) and single objects
//! (`objects.rs`) have modules of their own.

use super::state::{Change, DropMode, Kind, State, WatchStart};
use crate::reply::{full, status, Body};
use crate::resources::{Collection, Target};
use crate::selector::Selector;
use crate::table::{self, Include};
use crate::{discovery, objects, openapi};
use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How often an idle watch with bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_millis(500);

pub async fn serve(listener: tokio::net::TcpListener, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        if state.is_down() {
            // Closed at once: the client sees the connection end unanswered.
            state.refuse();
            drop(stream);
            continue;
        }
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = Arc::clone(&state);
                async move { handle(&state, req).await }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (unescape(k), unescape(v)))
        .collect()
}

/// Undoes a query's URL encoding (`%3D`, `+` for a space).
fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
                continue;
            }
            (b'+', _) => out.push(b' '),
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Errors close the connection without an answer (the server is down).
async fn handle(
    state: &Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Body>, std::io::Error> {
    if state.is_down() {
        state.refuse();
        return Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "fake API server is down",
        ));
    }
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    state.record(format!("{} {target}", req.method()));
    if let Some(route) = EventRoute::parse(req.method(), req.uri().path()) {
        return Ok(event_write(state, route, req).await);
    }
    let path = req.uri().path().to_string();
    if req.method() == Method::GET {
        let host = req
            .headers()
            .get(hyper::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        if let Some(answer) = discovery::route(&path, host).or_else(|| openapi::route(&path)) {
            return Ok(answer);
        }
    }
    let Some(target) = Target::parse(&path) else {
        return Ok(full(
            StatusCode::NOT_FOUND,
            status(404, "NotFound", format!("the server could not find {path}")),
        ));
    };
    let q = query(&req);
    let accept = req
        .headers()
        .get(hyper::header::ACCEPT)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let form = table::wanted(accept, q.get("includeObject").map(String::as_str));
    if req.method() == Method::GET && target.name.is_none() {
        return Ok(collection(state, target, &q, form));
    }
    let method = req.method().clone();
    let content_type = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Ok(full(
                StatusCode::BAD_REQUEST,
                status(400, "BadRequest", format!("body: {e}")),
            ))
        }
    };
    let request = objects::Request {
        method: &method,
        target: &target,
        query: &q,
        content_type: &content_type,
        body: &body,
        form,
    };
    Ok(objects::handle(state, &request))
}

/// A GET of a collection: a list, or a watch with `watch=true`.
/// `form`: a Table of what kind of rows, or None for the objects.
fn collection(
    state: &Arc<State>,
    target: Target,
    q: &HashMap<String, String>,
    form: Option<Include>,
) -> Response<Body> {
    let arg = |k: &str| q.get(k).map(String::as_str).unwrap_or_default();
    let selector = match Selector::parse(target.kind, arg("labelSelector"), arg("fieldSelector")) {
        Ok(s) => s,
        Err(message) => return full(StatusCode::BAD_REQUEST, status(400, "BadRequest", message)),
    };
    let of = Collection {
        kind: target.kind,
        namespace: target.namespace,
        selector,
    };
    let revision = match q.get("resourceVersion").map(|v| v.as_str()) {
        None | Some("") => None,
        Some(v) => match v.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                return full(
                    StatusCode::BAD_REQUEST,
                    status(400, "BadRequest", format!("invalid resourceVersion {v:?}")),
                )
            }
        },
    };
    if q.get("watch").map(|v| v == "true" || v == "1") == Some(true) {
        let bookmarks = q.get("allowWatchBookmarks").map(|v| v == "true") == Some(true);
        let timeout = q
            .get("timeoutSeconds")
            .and_then(|v| v.parse().ok())
            .map(Duration::from_secs);
        let options = WatchOptions {
            revision,
            bookmarks,
            timeout,
            form,
        };
        return watch(state, of, options);
    }
    list(state, &of, revision, q, form)
}

/// The writes kube-rs' event recorder makes (events.k8s.io/v1).
enum EventRoute {
    /// POST `/apis/events.k8s.io/v1/namespaces/{ns}/events`
    Create(String),
    /// PATCH `/apis/events.k8s.io/v1/namespaces/{ns}/events/{name}`
    Patch(String, String),
}

impl EventRoute {
    fn parse(method: &Method, path: &str) -> Option<EventRoute> {
        let rest = path.strip_prefix("/apis/events.k8s.io/v1/namespaces/")?;
        let (ns, rest) = rest.split_once('/')?;
        match (method, rest.split_once('/')) {
            (&Method::POST, None) if rest == "events" => Some(EventRoute::Create(ns.into())),
            (&Method::PATCH, Some(("events", name))) => {
                Some(EventRoute::Patch(ns.into(), name.into()))
            }
            _ => None,
        }
    }
}

async fn event_write(state: &State, route: EventRoute, req: Request<Incoming>) -> Response<Body> {
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return full(
                StatusCode::BAD_REQUEST,
                status(400, "BadRequest", format!("body: {e}")),
            )
        }
    };
    let object: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return full(
                StatusCode::BAD_REQUEST,
                status(400, "BadRequest", format!("not JSON: {e}")),
            )
        }
    };
    match route {
        EventRoute::Create(ns) => match state.create_event(&ns, object) {
            Ok(stored) => full(StatusCode::CREATED, stored),
            Err(message) => full(StatusCode::BAD_REQUEST, status(400, "BadRequest", message)),
        },
        EventRoute::Patch(ns, name) => match state.patch_event(&ns, &name, &object) {
            Some(stored) => full(StatusCode::OK, stored),
            None => full(
                StatusCode::NOT_FOUND,
                status(404, "NotFound", format!("events {name:?} not found")),
            ),
        },
    }
}

/// A list, paginated as the API server does it: `limit=N` returns at
/// most N objects and, when more remain, a `metadata.continue` token (and
/// `remainingItemCount`) for the next page, which is served at the first
/// page's revision. Pages are cut from the live objects in key order, so
/// an object changed between pages is listed as it is now; the watch that
/// follows from the list's revision replays that change, which a watcher
/// applies idempotently. A token older than the compaction horizon gets
/// 410 `Expired`, as from the API server.
fn list(
    state: &State,
    of: &Collection,
    revision: Option<u64>,
    q: &HashMap<String, String>,
    form: Option<Include>,
) -> Response<Body> {
    let token = match q.get("continue").filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => match ContinueToken::decode(c) {
            Some(t) => Some(t),
            None => {
                return full(
                    StatusCode::BAD_REQUEST,
                    status(400, "BadRequest", format!("continue: invalid token {c:?}")),
                )
            }
        },
    };
    // "0" or none: any revision will do (served from the cache). An exact
    // revision or a continue token needs the history to still be there.
    let exact = q.get("resourceVersionMatch").map(|v| v == "Exact") == Some(true);
    let needed = match &token {
        Some(t) => Some(t.revision),
        None => revision.filter(|&rv| exact && rv != 0),
    };
    if let Some(rv) = needed {
        let oldest = state.horizon();
        if rv < oldest {
            return full(
                StatusCode::GONE,
                status(
                    410,
                    "Expired",
                    format!("too old resource version: {rv} ({oldest})"),
                ),
            );
        }
    }
    let limit = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(0);
    let after = token
        .as_ref()
        .map(|t| (t.namespace.clone(), t.name.clone()));
    let (current, items, remaining) = state.list_page(of, after, limit);
    let at = token.as_ref().map_or(current, |t| t.revision);
    let mut metadata = json!({"resourceVersion": at.to_string()});
    if remaining > 0 {
        if let Some(last) = items.last() {
            let next = ContinueToken {
                revision: at,
                namespace: last["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                name: last["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            };
            metadata["continue"] = json!(next.encode());
            metadata["remainingItemCount"] = json!(remaining);
        }
    }
    if let Some(include) = form {
        return full(
            StatusCode::OK,
            table::table(of.kind, &items, metadata, include),
        );
    }
    full(
        StatusCode::OK,
        json!({
            "kind": format!("{}List", of.kind.name()),
            "apiVersion": of.kind.api_version(),
            "metadata": metadata,
            "items": items,
        }),
    )
}

/// Where the next page starts. Opaque to clients: hex of
/// `revision/namespace/name` (no character that needs URL escaping).
struct ContinueToken {
    revision: u64,
    namespace: String,
    name: String,
}

impl ContinueToken {
    fn encode(&self) -> String {
        format!("{}/{}/{}", self.revision, self.namespace, self.name)
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn decode(token: &str) -> Option<ContinueToken> {
        if !token.len().is_multiple_of(2) {
            return None;
        }
        let bytes: Option<Vec<u8>> = (0..token.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
            .collect();
        let text = String::from_utf8(bytes?).ok()?;
        let mut parts = text.splitn(3, '/');
        Some(ContinueToken {
            revision: parts.next()?.parse().ok()?,
            namespace: parts.next()?.to_string(),
            name: parts.next()?.to_string(),
        })
    }
}

fn event_line(kind_of_event: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind_of_event, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

/// An object of `kind` as a watch event carries it: whole, or as a Table
/// of one row.
fn shown(kind: Kind, object: &Value, form: Option<Include>) -> Value {
    let mut object = object.clone();
    object["kind"] = json!(kind.name());
    match form {
        None => object,
        Some(include) => {
            let rv = json!({"resourceVersion": object["metadata"]["resourceVersion"]});
            table::table(kind, &[object], rv, include)
        }
    }
}

fn change_line(c: &Change, form: Option<Include>) -> Bytes {
    event_line(c.kind_of_event, &shown(c.kind, &c.object, form))
}

type Frames = tokio::sync::mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>;

/// How a watch runs: from which revision, with bookmarks, for how long,
/// and whether objects come as Table rows.
struct WatchOptions {
    revision: Option<u64>,
    bookmarks: bool,
    timeout: Option<Duration>,
    form: Option<Include>,
}

fn watch(state: &Arc<State>, of: Collection, options: WatchOptions) -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let body = StreamBody::new(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|frame| (frame, rx))
    }));
    tokio::spawn(stream_changes(Arc::clone(state), of, options, tx));
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(BodyExt::boxed(body))
        .expect("static response parts")
}

async fn send(tx: &Frames, line: Bytes) -> bool {
    tx.send(Ok(Frame::data(line))).await.is_ok()
}

async fn stream_changes(state: Arc<State>, of: Collection, options: WatchOptions, tx: Frames) {
    let WatchOptions {
        revision,
        bookmarks,
        timeout,
        form,
    } = options;
    let mut changed = state.changed.subscribe();
    let mut drops = state.drops.subscribe();
    drops.mark_unchanged();
    let deadline = tokio::time::sleep(timeout.unwrap_or(Duration::from_secs(3600)));
    tokio::pin!(deadline);
    let mut cursor = match revision {
        Some(rv) if rv != 0 => match state.start_watch(&of, rv) {
            WatchStart::Gone { requested, oldest } => {
                let err = status(
                    410,
                    "Expired",
                    format!("too old resource version: {requested} ({oldest})"),
                );
                send(&tx, event_line("ERROR", &err)).await;
                return;
            }
            WatchStart::From(changes) => {
                for c in &changes {
                    if !send(&tx, change_line(c, form)).await {
                        return;
                    }
                }
                changes.last().map_or(rv, |c| c.revision.max(rv))
            }
        },
        // No revision: the current objects as ADDED, then live changes.
        _ => {
            let (current, items) = state.list(&of);
            for item in &items {
                if !send(&tx, event_line("ADDED", &shown(of.kind, item, form))).await {
                    return;
                }
            }
            current
        }
    };
    loop {
        tokio::select! {
            _ = changed.changed() => {
                for c in state.changes_after(&of, cursor) {
                    if !send(&tx, change_line(&c, form)).await {
                        return;
                    }
                    cursor = c.revision;
                }
            }
            _ = drops.changed() => {
                let (_, mode) = *drops.borrow_and_update();
                match mode {
                    DropMode::Reset => {
                        let _ = tx
                            .send(Err(std::io::Error::new(
                                std::io::ErrorKind::ConnectionReset,
                                "watch connection dropped",
                            )))
                            .await;
                    }
                    DropMode::Gone => {
                        let err = status(410, "Expired", format!("too old resource version: {cursor}"));
                        send(&tx, event_line("ERROR", &err)).await;
                    }
                }
                return;
            }
            _ = tokio::time::sleep(BOOKMARK_EVERY), if bookmarks => {
                let current = state.revision().max(cursor);
                let mark = json!({
                    "kind": of.kind.name(), "apiVersion": of.kind.api_version(),
                    "metadata": {"resourceVersion": current.to_string()},
                });
                // Only changes outside the collection lie between the
                // cursor and now.
                if state.changes_after(&of, cursor).is_empty() {
                    cursor = current;
                    if !send(&tx, event_line("BOOKMARK", &mark)).await {
                        return;
                    }
                }
            }
            _ = &mut deadline => return,
        }
    }
}
