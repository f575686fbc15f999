//! Collections: a GET of one is a list (paginated, at a revision) or,
//! with `watch=true`, a watch (`watch.rs`).

use crate::reply::{full, status, Body};
use crate::resources::{Collection, Target};
use crate::selector::Selector;
use crate::state::State;
use crate::table::{self, Include};
use crate::watch::{watch, WatchOptions};
use hyper::{Response, StatusCode};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// A GET of a collection: a list, or a watch with `watch=true`.
/// `form`: a Table of what kind of rows, or None for the objects.
pub fn collection(
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
    if let Some(remaining) = remaining {
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
            if of.selector.is_empty() {
                metadata["remainingItemCount"] = json!(remaining);
            }
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
