//! The real kubectl (Debian's `/usr/bin/kubectl`) against the fake API
//! server: discovery, client-side apply (create, then a strategic merge
//! patch), get, delete, server-side apply, the server's refusals as kubectl
//! reports them; and on two lab nodes with their agents, a probe that a
//! `kubectl apply` denies and a `kubectl delete` allows again.
//!
//! Skipped (with a message) when kubectl is not installed. The lab test
//! needs root and the `palisade` binary, like `multinode`.

use palisade_fake_apiserver::{FakeApiServer, Kind};
use palisade_lab::Family;
use palisade_tests::cluster::TwoNodes;
use palisade_tests::kubectl::Kubectl;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A scratch directory of this test process, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(label: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("kube-kubectl-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server with namespace x, and kubectl pointed at it.
fn setup(label: &str) -> Option<(FakeApiServer, Kubectl, Scratch)> {
    let scratch = Scratch::new(label);
    let api = FakeApiServer::start().unwrap();
    api.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}))
        .unwrap();
    let kubeconfig = api.write_kubeconfig(&scratch.0.join("kubeconfig")).unwrap();
    let kubectl = Kubectl::find(&kubeconfig, &scratch.0)?;
    Some((api, kubectl, scratch))
}

/// A NetworkPolicy `name` in x selecting pod=a, as a user writes it.
fn policy_yaml(name: &str, types: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n  namespace: x\n\
         spec:\n  podSelector:\n    matchLabels:\n      pod: a\n  policyTypes: [{types}]\n"
    )
}

/// Collects the events of a watch on x's NetworkPolicies from revision
/// `from` until `count` arrived or 30 s passed.
fn watch_policies(
    api: &FakeApiServer,
    from: u64,
    count: usize,
) -> std::thread::JoinHandle<Vec<Value>> {
    let addr = api.url().trim_start_matches("http://").to_string();
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        c,
        "GET /apis/networking.k8s.io/v1/namespaces/x/networkpolicies?watch=true&resourceVersion={from} HTTP/1.0\r\n\r\n"
    )
    .unwrap();
    std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(30);
        let mut events = Vec::new();
        let mut lines = BufReader::new(c).lines();
        // The status line and headers, up to the blank line.
        for l in lines.by_ref() {
            if l.map_or(true, |l| l.is_empty()) {
                break;
            }
        }
        while events.len() < count && Instant::now() < end {
            let Some(Ok(line)) = lines.next() else { break };
            events.push(serde_json::from_str(&line).expect("one JSON event per line"));
        }
        events
    })
}

#[test]
fn kubectl_applies_patches_gets_and_deletes_a_policy() {
    let Some((api, kubectl, _scratch)) = setup("lifecycle") else {
        return;
    };
    let watcher = watch_policies(&api, api.revision(), 3);

    let out = kubectl.ok(&["apply", "-f", "-"], &policy_yaml("deny", "Ingress"));
    assert_eq!(out.trim(), "networkpolicy.networking.k8s.io/deny created");
    let out = kubectl.ok(
        &["apply", "-f", "-"],
        &policy_yaml("deny", "Ingress, Egress"),
    );
    assert_eq!(
        out.trim(),
        "networkpolicy.networking.k8s.io/deny configured"
    );

    // Created by POST and changed by PATCH, both validated by the server.
    let requests = api.requests();
    let path = "/apis/networking.k8s.io/v1/namespaces/x/networkpolicies";
    for sent in [format!("POST {path}?"), format!("PATCH {path}/deny?")] {
        assert!(
            requests
                .iter()
                .any(|r| r.starts_with(&sent) && r.contains("fieldValidation=Strict")),
            "no {sent}...fieldValidation=Strict in {requests:#?}"
        );
    }
    let stored = api.get(Kind::NetworkPolicy, "x", "deny").unwrap();
    assert_eq!(stored["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(
        stored["spec"]["podSelector"],
        json!({"matchLabels": {"pod": "a"}})
    );
    assert_eq!(stored["metadata"]["generation"], 2);

    let got: Value = serde_json::from_str(&kubectl.ok(
        &["get", "networkpolicy", "deny", "-n", "x", "-o", "json"],
        "",
    ))
    .unwrap();
    assert_eq!(got["spec"], stored["spec"]);
    assert_eq!(got["metadata"]["uid"], stored["metadata"]["uid"]);
    // The server's Table: kubectl prints its columns.
    let table = kubectl.ok(&["get", "networkpolicies", "-A"], "");
    let words = |line: Option<&str>| -> Vec<String> {
        line.unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let mut lines = table.lines();
    assert_eq!(
        words(lines.next()),
        ["NAMESPACE", "NAME", "POD-SELECTOR", "AGE"],
        "{table}"
    );
    assert_eq!(words(lines.next())[..3], ["x", "deny", "pod=a"], "{table}");
    let short = kubectl.ok(&["get", "netpol", "-n", "x", "-o", "name"], "");
    assert_eq!(short.trim(), "networkpolicy.networking.k8s.io/deny");

    let out = kubectl.ok(
        &["delete", "-f", "-"],
        &policy_yaml("deny", "Ingress, Egress"),
    );
    assert_eq!(
        out.trim(),
        "networkpolicy.networking.k8s.io \"deny\" deleted"
    );
    assert!(api.get(Kind::NetworkPolicy, "x", "deny").is_none());
    let err = kubectl.fails(&["get", "netpol", "deny", "-n", "x"], "");
    assert!(
        err.contains("(NotFound)") && err.contains("\"deny\" not found"),
        "{err}"
    );

    // What `get -o json` printed, applied again: a new object (the server
    // gives it its own uid), not the old one's.
    let out = kubectl.ok(&["apply", "-f", "-"], &got.to_string());
    assert_eq!(out.trim(), "networkpolicy.networking.k8s.io/deny created");
    let again = api.get(Kind::NetworkPolicy, "x", "deny").unwrap();
    assert_ne!(again["metadata"]["uid"], got["metadata"]["uid"]);
    assert_eq!(again["metadata"]["generation"], 1);

    let events = watcher.join().unwrap();
    let seen: Vec<(&str, &Value)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap(),
                &e["object"]["spec"]["policyTypes"],
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("ADDED", &json!(["Ingress"])),
            ("MODIFIED", &json!(["Ingress", "Egress"])),
            ("DELETED", &json!(["Ingress", "Egress"])),
        ]
    );
}

#[test]
fn kubectl_server_side_apply_patch_and_replace() {
    let Some((api, kubectl, _scratch)) = setup("ssa") else {
        return;
    };
    let out = kubectl.ok(
        &["apply", "--server-side", "-f", "-"],
        &policy_yaml("p", "Ingress"),
    );
    assert_eq!(
        out.trim(),
        "networkpolicy.networking.k8s.io/p serverside-applied"
    );
    kubectl.ok(
        &["apply", "--server-side", "-f", "-"],
        &policy_yaml("p", "Egress"),
    );
    let stored = api.get(Kind::NetworkPolicy, "x", "p").unwrap();
    assert_eq!(stored["spec"]["policyTypes"], json!(["Egress"]));

    kubectl.ok(
        &[
            "patch",
            "netpol",
            "p",
            "-n",
            "x",
            "--type",
            "merge",
            "-p",
            r#"{"metadata":{"labels":{"team":"blue"}}}"#,
        ],
        "",
    );
    let selected = kubectl.ok(
        &["get", "netpol", "-n", "x", "-l", "team=blue", "-o", "name"],
        "",
    );
    assert_eq!(selected.trim(), "networkpolicy.networking.k8s.io/p");
    let none = kubectl.ok(
        &["get", "netpol", "-n", "x", "-l", "team!=blue", "-o", "name"],
        "",
    );
    assert_eq!(none.trim(), "");
    kubectl.ok(
        &[
            "patch",
            "netpol",
            "p",
            "-n",
            "x",
            "--type",
            "json",
            "-p",
            r#"[{"op":"add","path":"/metadata/labels/tier","value":"db"}]"#,
        ],
        "",
    );
    let both = kubectl.ok(
        &[
            "get",
            "netpol",
            "-n",
            "x",
            "-l",
            "team=blue,tier in (db)",
            "-o",
            "name",
        ],
        "",
    );
    assert_eq!(both.trim(), "networkpolicy.networking.k8s.io/p");

    // Replace with the object as read: its resourceVersion must still be
    // the stored one.
    let read = kubectl.ok(&["get", "netpol", "p", "-n", "x", "-o", "json"], "");
    let mut changed: Value = serde_json::from_str(&read).unwrap();
    changed["spec"]["policyTypes"] = json!(["Ingress", "Egress"]);
    let out = kubectl.ok(&["replace", "-f", "-"], &changed.to_string());
    assert_eq!(out.trim(), "networkpolicy.networking.k8s.io/p replaced");
    let err = kubectl.fails(&["replace", "-f", "-"], &changed.to_string());
    assert!(
        err.contains("(Conflict)") && err.contains("the object has been modified"),
        "{err}"
    );
    let stored = api.get(Kind::NetworkPolicy, "x", "p").unwrap();
    assert_eq!(stored["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(
        stored["metadata"]["labels"],
        json!({"team": "blue", "tier": "db"})
    );
}

#[test]
fn kubectl_reports_what_the_server_refuses() {
    let Some((api, kubectl, _scratch)) = setup("refusals") else {
        return;
    };
    // A misspelt field: refused by the server (kubectl asks for Strict).
    let typo = policy_yaml("p", "Ingress").replace("policyTypes", "policyType");
    let err = kubectl.fails(&["apply", "-f", "-"], &typo);
    assert!(
        err.contains(r#"strict decoding error: unknown field "spec.policyType""#),
        "{err}"
    );
    // With --validate=warn it is dropped, and kubectl says so.
    let r = kubectl.run(&["apply", "--validate=warn", "-f", "-"], &typo);
    assert!(
        r.success && r.stderr.contains(r#"unknown field "spec.policyType""#),
        "{r:?}"
    );
    assert!(api.get(Kind::NetworkPolicy, "x", "p").unwrap()["spec"]
        .get("policyType")
        .is_none());

    let err = kubectl.fails(&["create", "-f", "-"], &policy_yaml("p", "Ingress"));
    assert!(
        err.contains("(AlreadyExists)")
            && err.contains(r#"networkpolicies.networking.k8s.io "p" already exists"#),
        "{err}"
    );

    let elsewhere = policy_yaml("q", "Ingress").replace("namespace: x", "namespace: nope");
    let err = kubectl.fails(&["apply", "-f", "-"], &elsewhere);
    assert!(err.contains(r#"namespaces "nope" not found"#), "{err}");

    let wrong_type = policy_yaml("q", "Ingress").replace("[Ingress]", "Ingress");
    let err = kubectl.fails(&["apply", "-f", "-"], &wrong_type);
    assert!(err.contains("spec.policyTypes"), "{err}");

    let bad_name = policy_yaml("Q", "Ingress");
    let err = kubectl.fails(&["apply", "-f", "-"], &bad_name);
    assert!(err.contains("metadata.name: Invalid value: \"Q\""), "{err}");
    assert!(api.get(Kind::NetworkPolicy, "x", "q").is_none());
}

/// Probes `from -> to` on 80/TCP until it reads `allowed`, at most
/// `MAX_PROBES` times; returns how many probes it took.
const MAX_PROBES: usize = 200;

fn probes_until(env: &TwoNodes, from: &str, to: &str, allowed: bool) -> usize {
    let end = Instant::now() + Duration::from_secs(60);
    for n in 1..=MAX_PROBES {
        if env.reach(from, to, Family::V4, 80) == allowed {
            return n;
        }
        assert!(
            Instant::now() < end,
            "{from} -> {to} not {allowed} within a minute"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "{from} -> {to} never read {} in {MAX_PROBES} probes; logs:\n{}\n{}",
        if allowed { "allowed" } else { "denied" },
        env.log(0),
        env.log(1)
    );
}

#[test]
fn kubectl_changes_enforcement_on_two_nodes() {
    let env = TwoNodes::up("kubectl_lab");
    let scratch = Scratch::new("lab");
    let kubeconfig = env.opts[0].kubeconfig.clone().expect("agents read the API");
    let Some(kubectl) = Kubectl::find(&kubeconfig, &scratch.0) else {
        return;
    };
    // The server listens on node-a's underlay address: reach it from there.
    let kubectl = kubectl.in_netns(&env.cluster.nodes()[0].lab.node_netns());

    // x/a is on node-a; x/b (node-b) reaches it across the underlay, x/c
    // from the same node.
    env.expect("x/b", "x/a", 80, true);
    env.expect("x/c", "x/a", 80, true);

    let deny = policy_yaml("deny-a", "Ingress");
    let out = kubectl.ok(&["apply", "-f", "-"], &deny);
    assert_eq!(out.trim(), "networkpolicy.networking.k8s.io/deny-a created");
    let to_deny = probes_until(&env, "x/b", "x/a", false);
    env.quiet();
    env.expect("x/b", "x/a", 80, false);
    env.expect("x/c", "x/a", 80, false);
    // Ingress of x/a only: its egress and other pods are untouched.
    env.expect("x/a", "x/b", 80, true);
    env.expect("x/b", "x/c", 80, true);

    let out = kubectl.ok(&["delete", "-f", "-"], &deny);
    assert_eq!(
        out.trim(),
        "networkpolicy.networking.k8s.io \"deny-a\" deleted"
    );
    let to_allow = probes_until(&env, "x/b", "x/a", true);
    env.quiet();
    env.expect("x/b", "x/a", 80, true);
    env.expect("x/c", "x/a", 80, true);
    eprintln!("probes until enforced: deny after apply {to_deny}, allow after delete {to_allow}");

    env.cluster_teardown();
}
