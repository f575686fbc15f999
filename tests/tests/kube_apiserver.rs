//! The fake API server speaks the list/watch protocol the way the agent's
//! watchers expect it: lists with revisions, watch streams of changes and
//! bookmarks, 410 Gone for compacted revisions (as a watch `ERROR` event and
//! as an HTTP status), dropped connections and outages; and it checks
//! writes as the API server does (the object of the path, patch types and
//! directives, preconditions). Plain HTTP/1.0 over a TCP socket, so each
//! body ends with its connection. kubectl itself: `kube_kubectl`.

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

/// Sends `method target` with a body; returns the status code and the
/// JSON answer.
fn send(
    api: &FakeApiServer,
    method: &str,
    target: &str,
    content_type: &str,
    payload: &str,
) -> (u16, Value) {
    let mut c = TcpStream::connect(addr(api)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        c,
        "{method} {target} HTTP/1.0\r\nHost: api\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{payload}",
        payload.len()
    )
    .unwrap();
    let mut r = BufReader::new(c);
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    let code = status.split_whitespace().nth(1).unwrap().parse().unwrap();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap() == 0 || h == "\r\n" {
            break;
        }
    }
    (code, body(r))
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

const POLICIES: &str = "/apis/networking.k8s.io/v1/namespaces/ns/networkpolicies";
const JSON: &str = "application/json";

fn policy(name: &str, ns: &str) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"name": name, "namespace": ns},
           "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}})
}

#[test]
fn kube_apiserver_writes_name_the_paths_object() {
    let api = FakeApiServer::start().unwrap();
    api.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns"}}))
        .unwrap();
    let (code, created) = send(&api, "POST", POLICIES, JSON, &policy("p", "ns").to_string());
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["metadata"]["generation"], 1);
    assert!(created["metadata"]["uid"].is_string());

    // The body must be the path's object: each mismatch is a 400 naming
    // the field.
    let mut cases = vec![
        (
            "POST",
            POLICIES.to_string(),
            policy("q", "other"),
            "metadata.namespace",
        ),
        (
            "PUT",
            format!("{POLICIES}/p"),
            policy("q", "ns"),
            "metadata.name",
        ),
    ];
    let mut pod_kind = policy("p", "ns");
    pod_kind["kind"] = json!("Pod");
    cases.push(("PUT", format!("{POLICIES}/p"), pod_kind, "kind"));
    let mut core = policy("p", "ns");
    core["apiVersion"] = json!("v1");
    cases.push(("POST", POLICIES.to_string(), core, "apiVersion"));
    for (method, target, object, field) in cases {
        let (code, status) = send(&api, method, &target, JSON, &object.to_string());
        assert_eq!(
            (code, status["reason"].as_str()),
            (400, Some("BadRequest")),
            "{method} {target}: {status}"
        );
        let message = status["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{field}: {message}");
    }

    // Absent objects: 404 with details; present: 409.
    let (code, status) = send(&api, "GET", &format!("{POLICIES}/nope"), JSON, "");
    assert_eq!(code, 404);
    assert_eq!(
        status["details"],
        json!({"name": "nope", "group": "networking.k8s.io", "kind": "networkpolicies"})
    );
    let (code, _) = send(
        &api,
        "PUT",
        &format!("{POLICIES}/nope"),
        JSON,
        &policy("nope", "ns").to_string(),
    );
    assert_eq!(code, 404);
    let (code, status) = send(&api, "POST", POLICIES, JSON, &policy("p", "ns").to_string());
    assert_eq!(
        (code, status["reason"].as_str()),
        (409, Some("AlreadyExists"))
    );
    // A stale resourceVersion: 409 Conflict, nothing written.
    let mut stale = created.clone();
    stale["metadata"]["resourceVersion"] = json!("1");
    let before = api.revision();
    let (code, status) = send(
        &api,
        "PUT",
        &format!("{POLICIES}/p"),
        JSON,
        &stale.to_string(),
    );
    assert_eq!((code, status["reason"].as_str()), (409, Some("Conflict")));
    assert_eq!(api.revision(), before);
}

#[test]
fn kube_apiserver_patches() {
    let api = FakeApiServer::start().unwrap();
    api.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns"}}))
        .unwrap();
    api.apply(policy("p", "ns")).unwrap();
    let p = format!("{POLICIES}/p");
    let merge = "application/merge-patch+json";
    let strategic = "application/strategic-merge-patch+json";

    let (code, out) = send(
        &api,
        "PATCH",
        &p,
        merge,
        r#"{"metadata": {"labels": {"a": "1"}}}"#,
    );
    assert_eq!(code, 200, "{out}");
    assert_eq!(out["metadata"]["labels"], json!({"a": "1"}));
    // Strategic: maps merge, NetworkPolicy's lists are replaced whole.
    let (code, out) = send(
        &api,
        "PATCH",
        &p,
        strategic,
        r#"{"spec": {"policyTypes": ["Egress"], "$setElementOrder/policyTypes": ["Egress"]}, "metadata": {"labels": {"b": "2"}}}"#,
    );
    assert_eq!(code, 200, "{out}");
    assert_eq!(out["spec"]["policyTypes"], json!(["Egress"]));
    assert_eq!(out["metadata"]["labels"], json!({"a": "1", "b": "2"}));
    assert_eq!(out["metadata"]["generation"], 2);

    // JSON patch: operations on pointers.
    let json_patch = "application/json-patch+json";
    let (code, out) = send(
        &api,
        "PATCH",
        &p,
        json_patch,
        r#"[{"op": "test", "path": "/metadata/labels/a", "value": "1"},
            {"op": "remove", "path": "/metadata/labels/a"}]"#,
    );
    assert_eq!(code, 200, "{out}");
    assert_eq!(out["metadata"]["labels"], json!({"b": "2"}));

    // Refused, and nothing written: an unknown directive (422), a JSON
    // patch whose test fails (422), a patch type not served (415), a patch
    // that renames the object (422), one of the wrong type (400).
    let before = api.revision();
    for (content_type, body, code) in [
        (strategic, r#"{"spec": {"$patch": "frobnicate"}}"#, 422),
        (strategic, r#"{"spec": {"$unknownDirective": 1}}"#, 422),
        (
            json_patch,
            r#"[{"op": "remove", "path": "/spec"}, {"op": "test", "path": "/metadata/name", "value": "q"}]"#,
            422,
        ),
        ("application/xml", "<patch/>", 415),
        (merge, r#"{"metadata": {"name": "other"}}"#, 422),
        (merge, r#"{"spec": {"policyTypes": "Ingress"}}"#, 400),
    ] {
        let (got, status) = send(&api, "PATCH", &p, content_type, body);
        assert_eq!(got, code, "{body}: {status}");
    }
    assert_eq!(api.revision(), before);

    // Server-side apply: create or replace with the body, whole.
    let apply = "application/apply-patch+yaml";
    let q = format!("{POLICIES}/q?fieldManager=test");
    let desired = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: q, namespace: ns}\nspec: {podSelector: {}}\n";
    assert_eq!(send(&api, "PATCH", &q, apply, desired).0, 201);
    assert_eq!(send(&api, "PATCH", &q, apply, desired).0, 200);
    let (code, status) = send(&api, "PATCH", &format!("{POLICIES}/q"), apply, desired);
    assert_eq!(code, 400, "no fieldManager: {status}");
}

#[test]
fn kube_apiserver_deleting_a_namespace_deletes_its_objects() {
    let api = FakeApiServer::start().unwrap();
    for ns in ["ns", "keep"] {
        api.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
            .unwrap();
        api.apply(policy("p", ns)).unwrap();
    }
    api.apply(pod("a", "10.0.0.1")).unwrap();
    // A precondition that does not hold: nothing goes.
    let (code, _) = send(
        &api,
        "DELETE",
        "/api/v1/namespaces/ns",
        JSON,
        r#"{"preconditions": {"uid": "not-it"}}"#,
    );
    assert_eq!(code, 409);
    assert!(api.get(Kind::Pod, "ns", "a").is_some());
    let (code, status) = send(&api, "DELETE", "/api/v1/namespaces/ns", JSON, "");
    assert_eq!(
        (code, status["status"].as_str()),
        (200, Some("Success")),
        "{status}"
    );
    assert!(api.get(Kind::Namespace, "", "ns").is_none());
    assert!(api.get(Kind::Pod, "ns", "a").is_none());
    assert!(api.get(Kind::NetworkPolicy, "ns", "p").is_none());
    assert!(api.get(Kind::NetworkPolicy, "keep", "p").is_some());
}

/// The hostile controls of the fault suite: raw bytes on open watches
/// (which go on afterwards), and every request answered late.
#[test]
fn kube_apiserver_writes_garbage_on_watches_and_answers_late() {
    let api = FakeApiServer::start().unwrap();
    api.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns"}}))
        .unwrap();
    let (_, r) = get(&api, "/api/v1/pods").unwrap();
    let rv = body(r)["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, mut w) = get(
        &api,
        &format!("/api/v1/pods?watch=true&resourceVersion={rv}"),
    )
    .unwrap();
    // The stream is open once the server sends on it: one event first.
    api.apply(pod("a", "10.0.0.1")).unwrap();
    let mut marks = 0;
    assert_eq!(next_event(&mut w, &mut marks).unwrap()["type"], "ADDED");
    api.inject_watches(b"not JSON at all\n");
    let mut line = String::new();
    w.read_line(&mut line).unwrap();
    assert_eq!(line, "not JSON at all\n");
    api.apply(pod("b", "10.0.0.2")).unwrap();
    let ev = next_event(&mut w, &mut marks).unwrap();
    assert_eq!(ev["object"]["metadata"]["name"], "b");

    let delay = Duration::from_millis(300);
    api.set_delay(delay);
    let started = std::time::Instant::now();
    let (code, _) = get(&api, "/api/v1/namespaces").unwrap();
    assert_eq!(code, 200);
    assert!(started.elapsed() >= delay, "answered before the delay");
    api.set_delay(Duration::ZERO);
    assert_eq!(get(&api, "/api/v1/namespaces").unwrap().0, 200);
}
