//! The fake API server speaks the list/watch protocol the way the agent's
//! watchers expect it: lists with revisions, watch streams of changes and
//! bookmarks, 410 Gone for compacted revisions (as a watch `ERROR` event and
//! as an HTTP status), dropped connections and outages. Plain HTTP/1.0 over
//! a TCP socket, so each body ends with its connection.

use palisade_fake_apiserver::{FakeApiServer, Kind};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

fn addr(api: &FakeApiServer) -> String {
    api.url().trim_start_matches("http://").to_string()
}

/// Sends a GET; returns the status code and a reader positioned at the body.
fn get(api: &FakeApiServer, target: &str) -> Option<(u16, BufReader<TcpStream>)> {
    let mut c = TcpStream::connect(addr(api)).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(c, "GET {target} HTTP/1.0\r\nHost: api\r\n\r\n").ok()?;
    let mut r = BufReader::new(c);
    let mut status = String::new();
    if r.read_line(&mut status).ok()? == 0 {
        return None;
    }
    let code = status.split_whitespace().nth(1)?.parse().ok()?;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 || h == "\r\n" {
            break;
        }
    }
    Some((code, r))
}

fn body(r: BufReader<TcpStream>) -> Value {
    serde_json::from_reader(r).expect("a JSON body")
}

/// The next watch event, skipping bookmarks (counted); None at the end.
fn next_event(r: &mut BufReader<TcpStream>, bookmarks: &mut u32) -> Option<Value> {
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let ev: Value = serde_json::from_str(&line).expect("one JSON event per line");
        if ev["type"] == "BOOKMARK" {
            assert!(ev["object"]["metadata"]["resourceVersion"].is_string());
            *bookmarks += 1;
            continue;
        }
        return Some(ev);
    }
}

fn pod(name: &str, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": "ns", "labels": {"app": name}},
           "status": {"phase": "Running", "podIP": ip}})
}

#[test]
fn kube_apiserver_lists_and_watches() {
    let api = FakeApiServer::start().unwrap();
    api.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns"}}))
        .unwrap();
    let added = api.apply(pod("a", "10.0.0.1")).unwrap();

    let (code, r) = get(&api, "/api/v1/pods?limit=500&resourceVersion=0").unwrap();
    assert_eq!(code, 200);
    let list = body(r);
    assert_eq!(list["kind"], "PodList");
    let rv: u64 = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(rv, api.revision());
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        list["items"][0]["metadata"]["resourceVersion"],
        added.to_string()
    );

    // From the list's revision: only later changes, of this kind, in order.
    let (code, mut w) = get(
        &api,
        &format!("/api/v1/pods?watch=true&resourceVersion={rv}&allowWatchBookmarks=true"),
    )
    .unwrap();
    assert_eq!(code, 200);
    api.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}}))
        .unwrap();
    api.apply(pod("a", "10.0.0.2")).unwrap();
    api.delete(Kind::Pod, "ns", "a").unwrap();
    let mut marks = 0;
    let ev = next_event(&mut w, &mut marks).unwrap();
    assert_eq!(ev["type"], "MODIFIED");
    assert_eq!(ev["object"]["kind"], "Pod");
    assert_eq!(ev["object"]["status"]["podIP"], "10.0.0.2");
    let ev = next_event(&mut w, &mut marks).unwrap();
    assert_eq!(ev["type"], "DELETED");
    // An idle watch with bookmarks gets one (read bounded by the timeout).
    let mut line = String::new();
    w.read_line(&mut line).unwrap();
    let mark: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(mark["type"], "BOOKMARK");
    assert_eq!(
        mark["object"]["metadata"]["resourceVersion"],
        api.revision().to_string()
    );

    // Resuming from an older revision replays what came after it.
    let (_, mut replay) = get(
        &api,
        &format!("/api/v1/pods?watch=true&resourceVersion={added}"),
    )
    .unwrap();
    let ev = next_event(&mut replay, &mut marks).unwrap();
    assert_eq!(ev["type"], "MODIFIED");

    // An open watch ended by the server with 410 (fell out of the window).
    api.expire_watches();
    let ev = next_event(&mut w, &mut marks).unwrap();
    assert_eq!(ev["type"], "ERROR");
    assert_eq!(ev["object"]["code"], 410);
    assert_eq!(ev["object"]["reason"], "Expired");
    assert!(
        next_event(&mut w, &mut marks).is_none(),
        "stream ends after the error"
    );

    // Compacted: a watch from before the horizon gets one ERROR 410 event,
    // an exact list HTTP 410; a fresh list gives a revision one can watch.
    api.compact();
    let (code, mut old) = get(
        &api,
        &format!("/api/v1/pods?watch=true&resourceVersion={rv}"),
    )
    .unwrap();
    assert_eq!(code, 200);
    let ev = next_event(&mut old, &mut marks).unwrap();
    assert_eq!(
        (ev["type"].as_str(), ev["object"]["code"].as_u64()),
        (Some("ERROR"), Some(410))
    );
    assert!(next_event(&mut old, &mut marks).is_none());
    let (code, r) = get(
        &api,
        &format!("/api/v1/pods?resourceVersion={rv}&resourceVersionMatch=Exact"),
    )
    .unwrap();
    assert_eq!(code, 410);
    assert_eq!(body(r)["code"], 410);
    let (_, r) = get(&api, "/apis/networking.k8s.io/v1/networkpolicies").unwrap();
    let fresh = body(r)["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, mut ok) = get(
        &api,
        &format!("/apis/networking.k8s.io/v1/networkpolicies?watch=true&resourceVersion={fresh}"),
    )
    .unwrap();
    api.apply(
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                     "metadata": {"name": "p", "namespace": "ns"}, "spec": {"podSelector": {}}}),
    )
    .unwrap();
    let ev = next_event(&mut ok, &mut marks).unwrap();
    assert_eq!(ev["type"], "ADDED");
    assert_eq!(ev["object"]["apiVersion"], "networking.k8s.io/v1");

    // Dropped: the stream is cut with no error event.
    api.drop_watches();
    assert!(next_event(&mut ok, &mut marks).is_none());

    // Down: nothing is answered; back up: served again.
    api.set_down(true);
    assert!(get(&api, "/api/v1/namespaces").is_none());
    assert!(api.refused() >= 1);
    api.set_down(false);
    let (code, r) = get(&api, "/api/v1/namespaces").unwrap();
    assert_eq!(code, 200);
    assert_eq!(body(r)["items"].as_array().unwrap().len(), 2);
    let (code, _) = get(&api, "/api/v1/secrets").unwrap();
    assert_eq!(code, 404);
}

#[test]
fn kube_apiserver_paginates_lists() {
    let api = FakeApiServer::start().unwrap();
    for i in 0..5 {
        api.apply(pod(&format!("p{i}"), &format!("10.0.0.{i}")))
            .unwrap();
    }
    let page = |target: &str| {
        let (code, r) = get(&api, target).unwrap();
        (code, body(r))
    };
    // limit=2: two items, a token, the count left; the next pages are
    // served at the first page's revision even after a change.
    let (code, first) = page("/api/v1/pods?limit=2");
    assert_eq!(code, 200);
    let rv = first["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let names = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&first), ["p0", "p1"]);
    assert_eq!(first["metadata"]["remainingItemCount"], 3);
    let token = first["metadata"]["continue"].as_str().unwrap().to_string();
    api.apply(pod("p9", "10.0.0.9")).unwrap();
    let (_, second) = page(&format!("/api/v1/pods?limit=2&continue={token}"));
    assert_eq!(names(&second), ["p2", "p3"]);
    assert_eq!(second["metadata"]["resourceVersion"], rv.as_str());
    let token = second["metadata"]["continue"].as_str().unwrap().to_string();
    let (_, last) = page(&format!("/api/v1/pods?limit=2&continue={token}"));
    // p9 was created after the first page; a later page sees it, and the
    // watch from `rv` replays its ADDED as well.
    assert_eq!(names(&last), ["p4", "p9"]);
    assert!(last["metadata"].get("continue").is_none());
    // No limit: everything at once.
    assert_eq!(names(&page("/api/v1/pods").1).len(), 6);
    // A token from before the compaction horizon: 410 Expired; a garbled
    // one: 400.
    api.compact();
    let (code, gone) = page(&format!("/api/v1/pods?limit=2&continue={token}"));
    assert_eq!(code, 410);
    assert_eq!(gone["reason"], "Expired");
    assert_eq!(page("/api/v1/pods?limit=2&continue=zz").0, 400);
}
