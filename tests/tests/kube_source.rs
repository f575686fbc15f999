//! `palisade agent --kubeconfig` against the in-process fake API server
//! (`palisade_fake_apiserver`) and the real kernel: a pod's policy is
//! programmed from the API; policy changes, deletions and re-creations and
//! pod additions and deletions are enforced; the API going down leaves enforcement and readiness alone and
//! its return is caught up; 410 Gone makes the watchers list again without
//! the pod's record ever losing its isolation; /metrics is well formed and
//! times changes and pending interfaces; a policy not understood isolates
//! its pods with nothing allowed and gets one Kubernetes Event per
//! distinct problem while valid ones are enforced; objects that do not
//! deserialize fail neither the list nor the watch;
//! Services added, changed and deleted through the API keep the pinned
//! `SERVICES` map equal to the cluster's ClusterIPs.
//!
//! Runs the `palisade` binary (`$PALISADE_BIN`, else `target/debug/palisade`:
//! `cargo build -p palisade-agent` first) inside a network namespace of its
//! own, where the fake server listens too, with a private bpffs; guards
//! remove both and kill the agent even when an assertion fails.

use aya::maps::{HashMap as BpfHashMap, Map, MapData};
use palisade_common::{Endpoint, ServiceKey, EP_ISOLATED_EGRESS, EP_ISOLATED_INGRESS, EP_PENDING};
use palisade_fake_apiserver::{FakeApiServer, Kind};
use palisade_tests::kernel::{
    add_pod_iface, pins, rounds, settled_rounds, wait_for, Agent, NetNs, Scratch,
};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The agent reading the API server of `kubeconfig` for node1, serving
/// metrics and probes on `metrics`.
fn start_agent(s: &Scratch, kubeconfig: &Path, metrics: SocketAddr) -> Agent {
    let metrics = metrics.to_string();
    Agent::start(
        s,
        &[
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--metrics-addr",
            &metrics,
        ],
        // The node name comes from the environment, as in a DaemonSet.
        &[("NODE_NAME", "node1"), ("RUST_LOG", "info")],
    )
}

/// The pinned endpoint records, read with aya (fast enough to poll).
fn endpoint(s: &Scratch, ifindex: u32) -> Option<Endpoint> {
    let data = MapData::from_pin(pins(&s.bpffs(), "node1").join("ENDPOINTS")).ok()?;
    let map: BpfHashMap<MapData, u32, Endpoint> =
        BpfHashMap::try_from(Map::HashMap(data)).expect("ENDPOINTS is a hash map");
    map.get(&ifindex, 0).ok()
}

fn flags(s: &Scratch, ifindex: u32) -> Option<u32> {
    endpoint(s, ifindex).map(|e| e.flags)
}

/// One HTTP GET to the agent's metrics server: (status code, body).
fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(c, "GET {path} HTTP/1.1\r\nHost: agent\r\n\r\n").ok()?;
    let mut out = String::new();
    c.read_to_string(&mut out).ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((code, body))
}

/// Parses the text exposition format: every sample line is `name{labels}
/// value` with a numeric value, every other line a comment; returns the
/// samples.
fn parse_metrics(text: &str) -> std::collections::BTreeMap<String, f64> {
    let mut samples = std::collections::BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("malformed metrics line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("non-numeric value in {line:?}"));
        samples.insert(name.to_string(), value);
    }
    samples
}

fn metric(addr: SocketAddr, name: &str) -> f64 {
    let (code, body) = http_get(addr, "/metrics").expect("GET /metrics");
    assert_eq!(code, 200);
    parse_metrics(&body).get(name).copied().unwrap_or(0.0)
}

fn free_port() -> SocketAddr {
    // In the test's own namespace nobody else takes it meanwhile.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn pod(name: &str, app: &str, node: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": app},
                     "annotations": {"note": "stripped by the agent"}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x",
                 "ports": [{"name": "http", "containerPort": 80}]}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    })
}

fn policy(name: &str, app: &str, egress: bool) -> Value {
    let types = if egress {
        json!(["Ingress", "Egress"])
    } else {
        json!(["Ingress"])
    };
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {
            "podSelector": {"matchLabels": {"app": app}},
            "policyTypes": types,
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                         "ports": [{"protocol": "TCP", "port": "http"}]}],
        },
    })
}

/// Polls the web pod's record in the background and remembers whether it
/// was ever seen without ingress isolation.
struct IsolationWatch {
    stop: Arc<AtomicBool>,
    lapse: Arc<AtomicBool>,
    polls: Arc<AtomicU32>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl IsolationWatch {
    fn start(map: PathBuf, ifindex: u32) -> IsolationWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let lapse = Arc::new(AtomicBool::new(false));
        let polls = Arc::new(AtomicU32::new(0));
        let (st, la, po) = (Arc::clone(&stop), Arc::clone(&lapse), Arc::clone(&polls));
        let thread = std::thread::spawn(move || {
            let data = MapData::from_pin(&map).expect("open pinned ENDPOINTS");
            let map: BpfHashMap<MapData, u32, Endpoint> =
                BpfHashMap::try_from(Map::HashMap(data)).unwrap();
            // Bounded: at most a minute of polling.
            let end = Instant::now() + Duration::from_secs(60);
            while !st.load(Ordering::Relaxed) && Instant::now() < end {
                let isolated = map
                    .get(&ifindex, 0)
                    .is_ok_and(|e| e.flags & EP_ISOLATED_INGRESS != 0);
                if !isolated {
                    la.store(true, Ordering::Relaxed);
                }
                po.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        IsolationWatch {
            stop,
            lapse,
            polls,
            thread: Some(thread),
        }
    }

    /// Stops polling; (isolation ever lost, number of polls).
    fn finish(mut self) -> (bool, u32) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        (
            self.lapse.load(Ordering::Relaxed),
            self.polls.load(Ordering::Relaxed),
        )
    }
}

impl Drop for IsolationWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const LIMIT: Duration = Duration::from_secs(20);

/// A test's own network namespace (entered by this thread), scratch
/// directory, API server and kubeconfig for it. Bound in this order, they
/// are dropped in the reverse: the server and the scratch before leaving
/// the namespace.
fn setup(name: &str) -> (NetNs, Scratch, FakeApiServer, PathBuf) {
    let ns = NetNs::enter(name);
    let s = Scratch::new(name);
    let api = FakeApiServer::start().expect("fake API server");
    let kubeconfig = api
        .write_kubeconfig(&s.dir().join("kubeconfig"))
        .expect("kubeconfig");
    (ns, s, api, kubeconfig)
}

#[test]
fn kube_source_watch_outage_and_relist() {
    let (_ns, s, api, kubeconfig) = setup("kube");
    api.apply(json!({"apiVersion": "v1", "kind": "Namespace",
                     "metadata": {"name": "shop", "labels": {"team": "a"}}}))
        .unwrap();
    api.apply(pod("web", "web", "node1", "10.78.0.2")).unwrap();
    api.apply(pod("client", "client", "node1", "10.78.0.3"))
        .unwrap();
    api.apply(pod("far", "far", "node2", "10.78.1.5")).unwrap();
    api.apply(policy("web", "web", false)).unwrap();
    let web = add_pod_iface("web0", "10.78.0.2");
    let client = add_pod_iface("cli0", "10.78.0.3");
    let metrics = free_port();
    let agent = start_agent(&s, &kubeconfig, metrics);

    // The first sync programs the pod's policy and makes the agent ready.
    wait_for(&agent, "the first round", LIMIT, || rounds(&s) >= 1);
    assert_eq!(flags(&s, web), Some(EP_ISOLATED_INGRESS));
    assert_eq!(flags(&s, client), Some(0));
    wait_for(&agent, "/readyz", LIMIT, || {
        http_get(metrics, "/readyz").is_some_and(|(c, _)| c == 200)
    });
    assert_eq!(http_get(metrics, "/healthz").map(|(c, _)| c), Some(200));
    let requests = api.requests();
    for collection in [
        "/api/v1/namespaces?",
        "/api/v1/pods?",
        "/apis/networking.k8s.io/v1/networkpolicies?",
    ] {
        assert!(
            requests
                .iter()
                .any(|r| r.contains(collection) && r.contains("watch=true")),
            "no watch of {collection}: {requests:#?}"
        );
    }

    // A policy change through the API is enforced: the generation flips,
    // and the time from its event to its round is observed.
    let enforced_before = metric(metrics, "palisade_time_to_enforce_seconds_count");
    let generation = endpoint(&s, web).unwrap().generation;
    api.apply(policy("web", "web", true)).unwrap();
    wait_for(&agent, "the egress policy", LIMIT, || {
        flags(&s, web) == Some(EP_ISOLATED_INGRESS | EP_ISOLATED_EGRESS)
    });
    assert_eq!(endpoint(&s, web).unwrap().generation, generation ^ 1);
    wait_for(&agent, "the change's time to enforce", LIMIT, || {
        metric(metrics, "palisade_time_to_enforce_seconds_count") > enforced_before
    });

    // Deleted: the pod is open again. Re-created: isolated again.
    api.delete(Kind::NetworkPolicy, "shop", "web").unwrap();
    wait_for(&agent, "the policy's deletion", LIMIT, || {
        flags(&s, web) == Some(0)
    });
    api.apply(policy("web", "web", false)).unwrap();
    wait_for(&agent, "the re-created policy", LIMIT, || {
        flags(&s, web) == Some(EP_ISOLATED_INGRESS)
    });

    // A pod's interface shows up before the API reports the pod: held
    // pending; once the pod is added it gets its policy (it is a "web").
    let late = add_pod_iface("late0", "10.78.0.9");
    wait_for(&agent, "the unknown interface held pending", LIMIT, || {
        flags(&s, late) == Some(EP_PENDING)
    });
    let windows_before = metric(metrics, "palisade_pending_window_seconds_count");
    api.apply(pod("late", "web", "node1", "10.78.0.9")).unwrap();
    wait_for(&agent, "the late pod's policy", LIMIT, || {
        flags(&s, late) == Some(EP_ISOLATED_INGRESS)
    });
    // The round that programmed the policy ended the pending window (the
    // record is written before the round's end is observed).
    wait_for(&agent, "the pending window", LIMIT, || {
        metric(metrics, "palisade_pending_window_seconds_count") >= windows_before + 1.0
    });
    assert_eq!(
        metric(metrics, "palisade_pending_window_seconds_count"),
        windows_before + 1.0,
        "one interface was held pending"
    );
    assert!(metric(metrics, "palisade_pending_window_seconds_sum") > 0.0);
    api.delete(Kind::Pod, "shop", "late").unwrap();
    wait_for(
        &agent,
        "the deleted pod's interface held pending",
        LIMIT,
        || flags(&s, late) == Some(EP_PENDING),
    );

    // API down: the watchers fail and retry; enforcement and readiness stay.
    let restarts = metric(metrics, "palisade_watch_restarts_total{resource=\"pods\"}");
    let before_outage = endpoint(&s, web).unwrap();
    let rounds_before_outage = settled_rounds(&s);
    api.set_down(true);
    wait_for(&agent, "the watchers to notice the outage", LIMIT, || {
        metric(metrics, "palisade_watch_restarts_total{resource=\"pods\"}") > restarts
    });
    assert_eq!(endpoint(&s, web), Some(before_outage));
    assert_eq!(rounds(&s), rounds_before_outage, "no round without input");
    assert_eq!(http_get(metrics, "/readyz").map(|(c, _)| c), Some(200));
    // A change made while the agent cannot see it is enforced once the API
    // is back (watch resumed from the last revision).
    api.apply(policy("client", "client", false)).unwrap();
    assert_eq!(flags(&s, client), Some(0));
    api.set_down(false);
    wait_for(
        &agent,
        "the change made during the outage",
        Duration::from_secs(60),
        || flags(&s, client) == Some(EP_ISOLATED_INGRESS),
    );
    assert_eq!(flags(&s, web), Some(EP_ISOLATED_INGRESS));

    // 410 Gone: the history is compacted while the agent is cut off, and a
    // change is made it can only learn by listing again. The web pod's
    // record never loses its isolation meanwhile (no flush between the
    // failed watch and the new list).
    let relists = metric(
        metrics,
        "palisade_watch_relists_total{resource=\"networkpolicies\"}",
    );
    let lists_before = api
        .requests()
        .iter()
        .filter(|r| r.contains("networkpolicies?") && !r.contains("watch=true"))
        .count();
    let watch = IsolationWatch::start(pins(&s.bpffs(), "node1").join("ENDPOINTS"), web);
    api.set_down(true);
    api.delete(Kind::NetworkPolicy, "shop", "client").unwrap();
    api.compact();
    api.set_down(false);
    wait_for(
        &agent,
        "the relist after 410",
        Duration::from_secs(60),
        || flags(&s, client) == Some(0),
    );
    // And the in-stream form: an ERROR event with code 410 on open watches.
    // The relist finds nothing new (no round needed); the watch resumes
    // from the new list and carries the next change.
    api.compact();
    api.expire_watches();
    wait_for(&agent, "the second relist", LIMIT, || {
        metric(
            metrics,
            "palisade_watch_relists_total{resource=\"networkpolicies\"}",
        ) >= relists + 2.0
    });
    api.apply(policy("client", "client", true)).unwrap();
    wait_for(&agent, "a change after the second relist", LIMIT, || {
        flags(&s, client) == Some(EP_ISOLATED_INGRESS | EP_ISOLATED_EGRESS)
    });
    let (lapsed, polls) = watch.finish();
    assert!(polls > 10, "the record was polled {polls} times");
    assert!(!lapsed, "the web pod lost isolation during a relist");
    assert_eq!(flags(&s, web), Some(EP_ISOLATED_INGRESS));
    let lists_after = api
        .requests()
        .iter()
        .filter(|r| r.contains("networkpolicies?") && !r.contains("watch=true"))
        .count();
    assert!(
        lists_after >= lists_before + 2,
        "the watcher did not list again"
    );

    // /metrics: well formed, with what a round enforces.
    let (code, body) = http_get(metrics, "/metrics").expect("GET /metrics");
    assert_eq!(code, 200);
    let m = parse_metrics(&body);
    assert_eq!(m.get("palisade_pods_enforced"), Some(&2.0), "{body}");
    assert_eq!(m.get("palisade_policies"), Some(&2.0), "{body}");
    assert_eq!(m.get("palisade_identities"), Some(&3.0), "{body}");
    assert!(
        m["palisade_rounds_total"] >= rounds(&s) as f64 - 0.5,
        "{body}"
    );
    for name in [
        "palisade_compile_seconds_count",
        "palisade_program_seconds_count",
    ] {
        assert!(m.get(name).is_some_and(|v| *v >= 1.0), "{name} in {body}");
    }
    for name in [
        "palisade_compile_seconds_sum",
        "palisade_program_seconds_sum",
    ] {
        assert!(m.get(name).is_some_and(|v| *v > 0.0), "{name} in {body}");
    }
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert!(
        !agent.log().contains("invalid input skipped"),
        "{}",
        agent.log()
    );
}

/// A restarted agent whose API server is unreachable leaves the pinned
/// state alone (no round, not ready) until its first full sync, and that
/// sync, with unchanged objects, rewrites nothing.
#[test]
fn kube_source_restart_waits_for_first_sync() {
    let (_ns, s, api, kubeconfig) = setup("kubr");
    api.apply(pod("web", "web", "node1", "10.78.0.2")).unwrap();
    api.apply(pod("client", "client", "node1", "10.78.0.3"))
        .unwrap();
    api.apply(policy("web", "web", true)).unwrap();
    let web = add_pod_iface("web0", "10.78.0.2");
    let metrics = free_port();
    let mut first = start_agent(&s, &kubeconfig, metrics);
    wait_for(&first, "the first round", LIMIT, || rounds(&s) >= 1);
    let programmed = endpoint(&s, web).expect("web programmed");
    assert_eq!(programmed.flags, EP_ISOLATED_INGRESS | EP_ISOLATED_EGRESS);
    first.terminate();
    let st = first
        .wait(Duration::from_secs(10))
        .expect("agent exits on SIGTERM");
    assert!(st.success(), "{}", first.log());

    api.set_down(true);
    let refused = api.refused();
    let second = start_agent(&s, &kubeconfig, metrics);
    wait_for(&second, "the agent's health endpoint", LIMIT, || {
        http_get(metrics, "/healthz").is_some_and(|(c, _)| c == 200)
    });
    // Every watcher tried (and failed) at least once, more than one round
    // of retries in all.
    wait_for(&second, "the watchers to try the API", LIMIT, || {
        api.refused() >= refused + 4
    });
    assert_eq!(http_get(metrics, "/readyz").map(|(c, _)| c), Some(503));
    assert_eq!(rounds(&s), 1, "no round before the first sync");
    assert_eq!(endpoint(&s, web), Some(programmed));

    api.set_down(false);
    wait_for(
        &second,
        "/readyz after the first sync",
        Duration::from_secs(60),
        || http_get(metrics, "/readyz").is_some_and(|(c, _)| c == 200),
    );
    assert_eq!(rounds(&s), 2);
    assert_eq!(
        endpoint(&s, web),
        Some(programmed),
        "same record, same generation"
    );
    assert!(second.log().contains("flipped=0"), "{}", second.log());
}

/// A NetworkPolicy with an ipBlock whose ipBlock cidr is not a CIDR.
fn bad_cidr_policy(name: &str, app: &str, uid: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "shop", "uid": uid},
        "spec": {
            "podSelector": {"matchLabels": {"app": app}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.300/8"}}]}],
        },
    })
}

/// The Events the agent wrote about a policy.
fn events_on(api: &FakeApiServer, name: &str) -> Vec<Value> {
    api.events()
        .into_iter()
        .filter(|e| e["regarding"]["name"] == name)
        .collect()
}

/// A policy that fails validation is not understood: its pods are
/// isolated with nothing allowed, and it gets exactly one Warning Event
/// naming the field, not one per round; a second distinct problem gets its
/// own; the valid policies are enforced meanwhile.
#[test]
fn kube_source_policy_not_understood_event() {
    let (_ns, s, api, kubeconfig) = setup("kubev");
    api.apply(pod("web", "web", "node1", "10.78.0.2")).unwrap();
    api.apply(pod("client", "client", "node1", "10.78.0.3"))
        .unwrap();
    api.apply(policy("web", "web", false)).unwrap();
    api.apply(bad_cidr_policy("bad", "client", "uid-bad"))
        .unwrap();
    let web = add_pod_iface("web0", "10.78.0.2");
    let client = add_pod_iface("cli0", "10.78.0.3");
    let metrics = free_port();
    let agent = start_agent(&s, &kubeconfig, metrics);

    wait_for(&agent, "the first round", LIMIT, || rounds(&s) >= 1);
    assert_eq!(flags(&s, web), Some(EP_ISOLATED_INGRESS), "valid policy");
    let isolated = endpoint(&s, client).expect("client programmed");
    assert_eq!(
        isolated.flags, EP_ISOLATED_INGRESS,
        "the policy not understood isolates its pod"
    );
    assert_eq!(
        (isolated.ingress.any_peer, isolated.ingress.any_port),
        (0, 0),
        "and allows nothing"
    );
    wait_for(&agent, "the policy's event", LIMIT, || {
        !events_on(&api, "bad").is_empty()
    });
    let event = &events_on(&api, "bad")[0];
    assert_eq!(event["type"], "Warning", "{event:#}");
    assert_eq!(event["reason"], "PolicyNotUnderstood", "{event:#}");
    assert_eq!(event["metadata"]["namespace"], "shop", "{event:#}");
    let regarding = &event["regarding"];
    assert_eq!(regarding["kind"], "NetworkPolicy", "{event:#}");
    assert_eq!(regarding["namespace"], "shop", "{event:#}");
    assert_eq!(regarding["uid"], "uid-bad", "{event:#}");
    let note = event["note"].as_str().unwrap_or_default();
    assert!(
        note.starts_with("spec.ingress[0].from[0].ipBlock.cidr: ")
            && note.contains("10.0.0.300/8")
            && note.ends_with("; its pods are isolated for ingress with nothing allowed"),
        "{note}"
    );
    wait_for(&agent, "the policies-not-understood gauge", LIMIT, || {
        metric(metrics, "palisade_policies_not_understood") == 1.0
    });
    assert_eq!(metric(metrics, "palisade_invalid_objects"), 0.0);

    // More rounds with the problem still there: no new event. Then a
    // second policy not understood: its event comes after any repeat of
    // the first would have (one publisher, in order), so the count is
    // final.
    let before = rounds(&s);
    api.apply(policy("web", "web", true)).unwrap();
    wait_for(&agent, "the web policy change", LIMIT, || {
        flags(&s, web) == Some(EP_ISOLATED_INGRESS | EP_ISOLATED_EGRESS)
    });
    // The record is written before the round's end is.
    wait_for(&agent, "the round's end", LIMIT, || rounds(&s) > before);
    api.apply(bad_cidr_policy("bad2", "web", "uid-bad2"))
        .unwrap();
    wait_for(&agent, "the second policy's event", LIMIT, || {
        !events_on(&api, "bad2").is_empty()
    });
    assert_eq!(events_on(&api, "bad").len(), 1, "{:#?}", api.events());
    assert_eq!(events_on(&api, "bad2").len(), 1, "{:#?}", api.events());
    assert_eq!(api.events().len(), 2, "{:#?}", api.events());
    assert!(
        !api.requests().iter().any(|r| r.starts_with("PATCH ")),
        "an event was repeated: {:#?}",
        api.requests()
    );
    assert_eq!(
        flags(&s, web),
        Some(EP_ISOLATED_INGRESS | EP_ISOLATED_EGRESS),
        "the valid policy stays enforced beside the broken one"
    );

    // Fixed: its rules are enforced (a new generation for the client),
    // and no event about it.
    let generation = endpoint(&s, client).unwrap().generation;
    api.apply(policy("bad", "client", false)).unwrap();
    wait_for(&agent, "the fixed policy", LIMIT, || {
        endpoint(&s, client).is_some_and(|e| e.generation != generation)
    });
    assert_eq!(flags(&s, client), Some(EP_ISOLATED_INGRESS));
    wait_for(&agent, "the gauge after the fix", LIMIT, || {
        metric(metrics, "palisade_policies_not_understood") == 1.0
    });
    assert_eq!(events_on(&api, "bad").len(), 1, "{:#?}", api.events());
}

/// A Pod whose JSON does not have the shape of a Pod (a number where the
/// containers belong).
fn undeserializable_pod(name: &str, ip: &str) -> Value {
    let mut p = pod(name, "web", "node1", ip);
    p["metadata"]["uid"] = json!(format!("uid-{name}"));
    p["spec"]["containers"] = json!(5);
    p
}

/// A NetworkPolicy in `namespace` of which nothing can be read but its
/// name: a number for a selector, a string for the policy types.
fn undeserializable_policy(namespace: &str, name: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{name}")},
        "spec": {"podSelector": 5, "policyTypes": "Ingress"},
    })
}

/// Objects that do not deserialize, in the first list and later in the
/// watch, fail neither: the rest syncs and is enforced; the broken Pod is
/// left out (its interface held pending), the broken policy isolates every
/// pod of its namespace in both directions, and each gets one Event.
#[test]
fn kube_source_objects_that_do_not_deserialize() {
    let (_ns, s, api, kubeconfig) = setup("kubdz");
    api.apply(pod("web", "web", "node1", "10.78.0.2")).unwrap();
    api.apply(pod("client", "client", "node1", "10.78.0.3"))
        .unwrap();
    let mut lone = pod("lone", "web", "node1", "10.78.0.4");
    lone["metadata"]["namespace"] = json!("other");
    api.apply(lone).unwrap();
    api.apply(policy("web", "web", false)).unwrap();
    api.apply(undeserializable_pod("ghost", "10.78.0.7"))
        .unwrap();
    api.apply(undeserializable_policy("other", "broken"))
        .unwrap();
    let web = add_pod_iface("web0", "10.78.0.2");
    let client = add_pod_iface("cli0", "10.78.0.3");
    let lone = add_pod_iface("lone0", "10.78.0.4");
    let ghost = add_pod_iface("ghost0", "10.78.0.7");
    let metrics = free_port();
    let agent = start_agent(&s, &kubeconfig, metrics);

    wait_for(&agent, "the first round", LIMIT, || rounds(&s) >= 1);
    assert_eq!(flags(&s, web), Some(EP_ISOLATED_INGRESS), "{}", agent.log());
    assert_eq!(flags(&s, client), Some(0));
    assert_eq!(
        flags(&s, lone),
        Some(EP_ISOLATED_INGRESS | EP_ISOLATED_EGRESS),
        "the broken policy isolates its namespace's pods both ways"
    );
    let record = endpoint(&s, lone).unwrap();
    assert_eq!(
        (record.ingress.any_peer, record.egress.any_peer),
        (0, 0),
        "with nothing allowed"
    );
    assert_eq!(flags(&s, ghost), Some(EP_PENDING), "no pod: held closed");

    wait_for(&agent, "an event on each broken object", LIMIT, || {
        !events_on(&api, "ghost").is_empty() && !events_on(&api, "broken").is_empty()
    });
    let event = &events_on(&api, "ghost")[0];
    assert_eq!(event["reason"], "InvalidObject", "{event:#}");
    assert_eq!(event["regarding"]["kind"], "Pod", "{event:#}");
    assert_eq!(event["regarding"]["uid"], "uid-ghost", "{event:#}");
    let note = event["note"].as_str().unwrap_or_default();
    assert!(note.starts_with("spec.containers: invalid type"), "{note}");
    let event = &events_on(&api, "broken")[0];
    assert_eq!(event["reason"], "PolicyNotUnderstood", "{event:#}");
    assert_eq!(event["regarding"]["uid"], "uid-broken", "{event:#}");
    let note = event["note"].as_str().unwrap_or_default();
    assert!(
        note.ends_with("its pods are isolated for ingress and egress with nothing allowed"),
        "{note}"
    );
    assert_eq!(metric(metrics, "palisade_invalid_objects"), 1.0);

    // In the watch now: the web policy replaced by one that does not
    // deserialize. The watch carries on (no restart), and the next change
    // is seen too.
    let restarts = metric(
        metrics,
        "palisade_watch_restarts_total{resource=\"networkpolicies\"}",
    );
    api.apply(undeserializable_policy("shop", "web")).unwrap();
    wait_for(&agent, "the broken web policy", LIMIT, || {
        flags(&s, web) == Some(EP_ISOLATED_INGRESS | EP_ISOLATED_EGRESS)
            && flags(&s, client) == Some(EP_ISOLATED_INGRESS | EP_ISOLATED_EGRESS)
    });
    api.delete(Kind::NetworkPolicy, "other", "broken").unwrap();
    wait_for(&agent, "the broken policy's deletion", LIMIT, || {
        flags(&s, lone) == Some(0)
    });
    // The Pod fixed: its interface gets its pod's state.
    api.apply(pod("ghost", "ghost", "node1", "10.78.0.7"))
        .unwrap();
    wait_for(&agent, "the fixed pod", LIMIT, || {
        flags(&s, ghost) == Some(EP_ISOLATED_INGRESS | EP_ISOLATED_EGRESS)
    });
    assert_eq!(
        metric(
            metrics,
            "palisade_watch_restarts_total{resource=\"networkpolicies\"}"
        ),
        restarts,
        "a broken object restarted the watch"
    );
    assert_eq!(
        metric(metrics, "palisade_watch_restarts_total{resource=\"pods\"}"),
        0.0
    );
    assert_eq!(events_on(&api, "ghost").len(), 1, "{:#?}", api.events());
    assert_eq!(events_on(&api, "web").len(), 1, "{:#?}", api.events());
}

/// The ClusterIPs in the pinned `SERVICES` map (each once, whatever its
/// ports).
fn pinned_services(s: &Scratch) -> Vec<IpAddr> {
    let Ok(data) = MapData::from_pin(pins(&s.bpffs(), "node1").join("SERVICES")) else {
        return Vec::new();
    };
    let map: BpfHashMap<MapData, ServiceKey, u32> =
        BpfHashMap::try_from(Map::HashMap(data)).expect("SERVICES is a hash map");
    let mut ips: Vec<IpAddr> = map
        .keys()
        .filter_map(Result::ok)
        .map(|k| match k.addr.family {
            palisade_common::FAMILY_V4 => {
                IpAddr::from(<[u8; 4]>::try_from(&k.addr.addr[..4]).expect("4 bytes"))
            }
            _ => IpAddr::from(k.addr.addr),
        })
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

fn service(name: &str, ips: &[&str]) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "shop",
                     "annotations": {"note": "stripped by the agent"}},
        "spec": {"clusterIP": ips[0], "clusterIPs": ips, "selector": {"app": "web"},
                 "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
        "status": {"loadBalancer": {}},
    })
}

#[test]
fn kube_source_services_follow_the_api() {
    let (_ns, s, api, kubeconfig) = setup("kubs");
    api.apply(pod("web", "web", "node1", "10.78.0.2")).unwrap();
    api.apply(service("web", &["10.96.7.1", "fd00:96::7:1"]))
        .unwrap();
    let _web = add_pod_iface("web0", "10.78.0.2");
    let metrics = free_port();
    let agent = start_agent(&s, &kubeconfig, metrics);

    // Listed with the rest before the first round: its ClusterIPs are in
    // the node's map from the start, whatever their namespace or backends.
    wait_for(&agent, "the first round", LIMIT, || rounds(&s) >= 1);
    let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
    assert_eq!(pinned_services(&s), [ip("10.96.7.1"), ip("fd00:96::7:1")]);
    assert!(
        api.requests()
            .iter()
            .any(|r| r.contains("/api/v1/services?") && r.contains("watch=true")),
        "no watch of services: {:#?}",
        api.requests()
    );

    // Added, changed and deleted through the API: the map follows.
    api.apply(service("db", &["10.96.7.2"])).unwrap();
    wait_for(&agent, "the new Service's ClusterIP", LIMIT, || {
        pinned_services(&s).contains(&ip("10.96.7.2"))
    });
    api.apply(service("web", &["10.96.7.3"])).unwrap();
    wait_for(&agent, "the changed ClusterIPs", LIMIT, || {
        pinned_services(&s) == [ip("10.96.7.2"), ip("10.96.7.3")]
    });
    api.delete(Kind::Service, "shop", "db").unwrap();
    wait_for(&agent, "the deleted Service gone", LIMIT, || {
        pinned_services(&s) == [ip("10.96.7.3")]
    });

    // An invalid Service is reported and skipped; it does not hold back
    // the rest, and its last good ClusterIPs stay.
    api.apply(service("web", &["10.96.7.300"])).unwrap();
    api.apply(service("later", &["10.96.7.4"])).unwrap();
    wait_for(&agent, "the Service after the invalid one", LIMIT, || {
        pinned_services(&s).contains(&ip("10.96.7.4"))
    });
    assert_eq!(
        pinned_services(&s),
        [ip("10.96.7.3"), ip("10.96.7.4")],
        "{}",
        agent.log()
    );
}

/// A ClusterNetworkPolicy denying egress to `peer` (one `to` entry).
fn cluster_policy(name: &str, priority: i64, peer: Value) -> Value {
    json!({
        "apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name},
        "spec": {"tier": "Admin", "priority": priority,
                 "subject": {"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "web"}}}},
                 "egress": [{"name": "no-control-plane", "action": "Deny", "to": [peer]}]},
    })
}

fn node(name: &str, role: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"role": role}},
        "status": {"addresses": [{"type": "InternalIP", "address": ip},
                                 {"type": "Hostname", "address": name}],
                   "conditions": [{"type": "Ready", "status": "True"}]},
    })
}

/// The API source's model once it satisfies `check` (polled as the agent
/// loop polls it, bounded by `LIMIT`).
fn model_until(
    src: &mut palisade::source::api::ApiSource,
    what: &str,
    check: impl Fn(&palisade_policy::Model) -> bool,
) -> palisade_policy::Model {
    use palisade::source::Source;
    let end = Instant::now() + LIMIT;
    let mut last = None;
    while Instant::now() < end {
        if src.changed() {
            if let Some(m) = src.snapshot() {
                if check(&m) {
                    return m;
                }
                last = Some(m);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{what}: not seen within {LIMIT:?}; last model: {last:#?}");
}

/// ClusterNetworkPolicies and Nodes created, updated and deleted through
/// the API reach the model the agent's API source assembles; one the
/// model cannot take is reported with its field.
#[test]
fn kube_source_cluster_policies_and_nodes_follow_the_api() {
    use palisade::source::api::{ApiSource, Connection, WatchMetrics};
    use palisade_policy::{Action, ClusterPeer, Selector};
    let (_ns, _s, api, kubeconfig) = setup("kcnp");
    api.apply(pod("web", "web", "node1", "10.79.0.2")).unwrap();
    let mut src = ApiSource::start(Connection::Kubeconfig(kubeconfig), WatchMetrics::default())
        .expect("the API source starts");
    model_until(&mut src, "the first sync", |m| m.pods.len() == 1);

    let role = |r: &str| Selector {
        match_labels: [("role".to_string(), r.to_string())].into(),
        match_expressions: vec![],
    };
    api.apply(cluster_policy(
        "cp",
        5,
        json!({"nodes": {"matchLabels": {"role": "control"}}}),
    ))
    .unwrap();
    api.apply(node("cp-1", "control", "192.168.9.1")).unwrap();
    let m = model_until(&mut src, "the policy and the node", |m| {
        m.cluster_policies.len() == 1 && m.nodes.len() == 1
    });
    let p = &m.cluster_policies[0];
    assert_eq!((p.name.as_str(), p.priority), ("cp", 5));
    assert_eq!(p.egress[0].action, Action::Deny);
    assert_eq!(p.egress[0].peers, [ClusterPeer::Nodes(role("control"))]);
    assert_eq!(m.nodes[0].name, "cp-1");
    assert_eq!(
        m.nodes[0].addresses,
        ["192.168.9.1".parse::<IpAddr>().unwrap()]
    );

    // Updates of both.
    api.apply(cluster_policy(
        "cp",
        7,
        json!({"networks": ["192.168.9.0/24"]}),
    ))
    .unwrap();
    api.apply(node("cp-1", "worker", "192.168.9.2")).unwrap();
    let m = model_until(&mut src, "the updates", |m| {
        m.cluster_policies.first().is_some_and(|p| p.priority == 7)
            && m.nodes
                .first()
                .is_some_and(|n| n.labels["role"] == "worker")
    });
    assert_eq!(
        m.cluster_policies[0].egress[0].peers,
        [ClusterPeer::Networks(vec!["192.168.9.0/24"
            .parse()
            .unwrap()])]
    );
    assert_eq!(
        m.nodes[0].addresses,
        ["192.168.9.2".parse::<IpAddr>().unwrap()]
    );

    // One the model cannot take: skipped and reported, the other kept.
    api.apply(cluster_policy("bad", 2000, json!({"nodes": {}})))
        .unwrap();
    let m = model_until(&mut src, "the invalid policy's error", |m| {
        !m.errors.is_empty()
    });
    let e = &m.errors[0];
    assert_eq!(
        (e.object.as_str(), e.field.as_str()),
        ("ClusterNetworkPolicy bad", "spec.priority")
    );
    assert_eq!(m.cluster_policies.len(), 1);

    api.delete(Kind::ClusterNetworkPolicy, "", "cp").unwrap();
    api.delete(Kind::ClusterNetworkPolicy, "", "bad").unwrap();
    api.delete(Kind::Node, "", "cp-1").unwrap();
    let m = model_until(&mut src, "the deletions", |m| {
        m.cluster_policies.is_empty() && m.nodes.is_empty() && m.errors.is_empty()
    });
    assert_eq!(m.pods.len(), 1, "the rest stays");
}

/// Without the ClusterNetworkPolicy CRD (404 on its list) the agent still
/// syncs and enforces everything else, says so once, and picks the kind
/// up when the CRD appears.
#[test]
fn kube_source_without_the_cluster_network_policy_crd() {
    let (_ns, s, api, kubeconfig) = setup("kcrd");
    api.set_crd_installed(false);
    api.apply(pod("web", "web", "node1", "10.80.0.2")).unwrap();
    api.apply(policy("web", "web", false)).unwrap();
    let web = add_pod_iface("web0", "10.80.0.2");
    let agent = start_agent(&s, &kubeconfig, free_port());
    wait_for(&agent, "the first round", LIMIT, || rounds(&s) >= 1);
    assert_eq!(flags(&s, web), Some(EP_ISOLATED_INGRESS));

    let cnp_lists = || {
        api.requests()
            .iter()
            .filter(|r| {
                r.starts_with("GET /apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies?")
            })
            .count()
    };
    wait_for(&agent, "a retried list", LIMIT, || cnp_lists() >= 3);
    let log = agent.log();
    assert_eq!(
        log.matches("not served by the API server").count(),
        1,
        "said once: {log}"
    );

    api.set_crd_installed(true);
    api.apply(cluster_policy("cp", 5, json!({"nodes": {}})))
        .unwrap();
    wait_for(&agent, "the kind listed", Duration::from_secs(60), || {
        agent
            .log()
            .lines()
            .any(|l| l.contains("listed") && l.contains("clusternetworkpolicies"))
    });
    assert_eq!(flags(&s, web), Some(EP_ISOLATED_INGRESS));
}
