//! Watch streams: the changes of a collection after a revision, then live
//! ones, with bookmarks, drops and 410s as the API server sends them.

use crate::reply::{status, Body};
use crate::resources::Collection;
use crate::state::{Change, DropMode, Kind, State, WatchStart};
use crate::table::{self, Include};
use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::{Response, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// How often an idle watch with bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_millis(500);

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
pub struct WatchOptions {
    pub revision: Option<u64>,
    pub bookmarks: bool,
    pub timeout: Option<Duration>,
    pub form: Option<Include>,
}

pub fn watch(state: &Arc<State>, of: Collection, options: WatchOptions) -> Response<Body> {
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
    let mut injected = state.inject.subscribe();
    injected.mark_unchanged();
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
            _ = injected.changed() => {
                // Written as given, between two events: whatever a test
                // wants the client to choke on.
                let bytes = injected.borrow_and_update().1.clone();
                if !send(&tx, bytes).await {
                    return;
                }
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
