//! The HTTP side of the fake API server: connections, routing, and the
//! Event writes. Discovery (`discovery.rs`, `openapi.rs`), lists
//! (`collections.rs`), watches (`watch.rs`) and single objects
//! (`objects.rs`) have modules of their own.

use super::state::State;
use crate::collections::collection;
use crate::reply::{full, status, Body};
use crate::resources::Target;
use crate::table;
use crate::{discovery, objects, openapi};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

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
    let delay = state.delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
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
    let served = Target::parse(&path).filter(|t| state.serves(t.kind));
    let Some(target) = served else {
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
