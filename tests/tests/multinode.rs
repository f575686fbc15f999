//! Two lab nodes, one fake API server, one `palisade agent --kubeconfig`
//! per node, real traffic within a node and across the underlay:
//!
//! - the upstream e2e update cases made through the API: a policy created
//!   then updated, namespace labels and (remote) pod labels changed, a
//!   policy deleted, an ipBlock's `except` removed, egress on the other
//!   node;
//! - the API server cut off: enforcement holds with the last known state,
//!   then catches up on what changed meanwhile (also after dropped
//!   watches);
//! - one agent killed under traffic and started again on the same pins: the
//!   established cross-node connection never notices, denied flows stay
//!   denied, and the change made while it was gone is enforced after its
//!   first sync.
//!
//! Needs root and the `palisade` binary (`$PALISADE_BIN`, else
//! `target/debug/palisade`). Every lab name is random, so these tests run
//! beside any other; the labs remove their namespaces, mounts and agents
//! even when an assertion fails.

use palisade_fake_apiserver::{FakeApiServer, Kind};
use palisade_lab::{Family, Probe, Protocol, PROBE_TIMEOUT};
use palisade_tests::cluster::{namespace, pod_object, TwoNodes, SETTLE};
use palisade_tests::lab::retrans_in;
use serde_json::{json, Value};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// An ingress policy in `ns` selecting `pod=<target>`, with `from` peers,
/// on `ports` (none: every port).
fn ingress(ns: &str, name: &str, target: &str, from: Value, ports: &[u16]) -> Value {
    let mut rule = json!({"from": from});
    if !ports.is_empty() {
        rule["ports"] = json!(ports
            .iter()
            .map(|p| json!({"protocol": "TCP", "port": p}))
            .collect::<Vec<_>>());
    }
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"podSelector": {"matchLabels": {"pod": target}},
                 "policyTypes": ["Ingress"], "ingress": [rule]},
    })
}

fn pods(labels: &[(&str, &str)]) -> Value {
    let m: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| ((*k).to_string(), json!(v)))
        .collect();
    json!([{"podSelector": {"matchLabels": m}}])
}

/// Probes until `from -> to` on port 80 reads `allowed`, for at most a
/// minute (a watcher reconnecting after an outage backs off up to 30 s).
#[track_caller]
fn eventually(env: &TwoNodes, from: &str, to: &str, allowed: bool) {
    let end = Instant::now() + Duration::from_secs(60);
    while env.reach(from, to, Family::V4, 80) != allowed {
        assert!(
            Instant::now() < end,
            "{from} -> {to} never became {}; logs:\n{}\n{}",
            if allowed { "allowed" } else { "denied" },
            env.log(0),
            env.log(1)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn multinode_policy_updates() {
    let env = TwoNodes::up("multinode_updates");

    // No policy: everything open, within a node and across.
    env.expect("x/c", "x/a", 80, true);
    env.expect("x/b", "x/a", 80, true);
    env.expect_family("y/a", "z/a", Family::V6, 80, true);

    // Created: x/a admits pod=b of its namespace on 80 only. x/b is on the
    // other node: its identity comes from the API, its packets over the
    // underlay.
    env.change(|api| {
        api.apply(ingress("x", "x-a", "a", pods(&[("pod", "b")]), &[80]))
            .unwrap();
    });
    env.expect("x/b", "x/a", 80, true);
    env.expect_family("x/b", "x/a", Family::V6, 80, true);
    env.expect("x/b", "x/a", 81, false);
    env.expect("x/c", "x/a", 80, false);
    env.expect("y/b", "x/a", 80, false);
    env.expect("x/a", "x/b", 80, true);

    // Updated: the allowed set moves from x/b (remote) to x/c (local).
    env.change(|api| {
        api.apply(ingress("x", "x-a", "a", pods(&[("pod", "c")]), &[80]))
            .unwrap();
    });
    env.expect("x/c", "x/a", 80, true);
    env.expect("x/b", "x/a", 80, false);

    // Namespace labels: peers are the pods of namespaces labelled
    // team=blue; none is, then y is, then y no longer is.
    env.change(|api| {
        api.apply(ingress(
            "x",
            "x-a",
            "a",
            json!([{"namespaceSelector": {"matchLabels": {"team": "blue"}}}]),
            &[80],
        ))
        .unwrap();
    });
    env.expect("y/a", "x/a", 80, false);
    env.change(|api| {
        api.apply(namespace("y", &[("team", "blue")])).unwrap();
    });
    env.expect("y/a", "x/a", 80, true);
    env.expect("y/b", "x/a", 80, true);
    env.expect("z/b", "x/a", 80, false);
    env.expect("x/c", "x/a", 80, false);
    env.change(|api| {
        api.apply(namespace("y", &[("team", "red")])).unwrap();
    });
    env.expect("y/a", "x/a", 80, false);
    env.expect("y/b", "x/a", 80, false);

    // Pod labels: a remote peer's relabel changes what the local pod
    // admits (node-a learns x/b's new identity from the API alone).
    env.change(|api| {
        api.apply(ingress("x", "x-a", "a", pods(&[("role", "client")]), &[80]))
            .unwrap();
    });
    env.expect("x/b", "x/a", 80, false);
    env.change(|api| {
        api.apply(pod_object(&env.cluster, "x/b", &[("role", "client")]))
            .unwrap();
    });
    env.expect("x/b", "x/a", 80, true);
    env.expect("x/c", "x/a", 80, false);
    env.change(|api| {
        api.apply(pod_object(&env.cluster, "x/b", &[])).unwrap();
    });
    env.expect("x/b", "x/a", 80, false);

    // Deleted: traffic opens.
    env.change(|api| {
        api.delete(Kind::NetworkPolicy, "x", "x-a").unwrap();
    });
    env.expect("x/b", "x/a", 80, true);
    env.expect("x/c", "x/a", 80, true);

    // Egress, enforced by node-b's agent: y/a may only reach x/a:80.
    let egress = json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "y-a-out", "namespace": "y"},
        "spec": {"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
                 "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "x"}},
                                     "podSelector": {"matchLabels": {"pod": "a"}}}],
                             "ports": [{"protocol": "TCP", "port": 80}]}]},
    });
    env.change(|api| {
        api.apply(egress).unwrap();
    });
    env.expect("y/a", "x/a", 80, true);
    env.expect("y/a", "x/a", 81, false);
    env.expect("y/a", "z/b", 80, false);
    env.expect("y/a", "z/a", 80, false);
    env.expect("y/c", "z/b", 80, true);
    env.change(|api| {
        api.delete(Kind::NetworkPolicy, "y", "y-a-out").unwrap();
    });
    env.expect("y/a", "z/b", 80, true);

    // ipBlock: the cluster's pod range except node-b's block; then the
    // except is removed by an update.
    let block = |except: Option<&str>| {
        let mut b = json!({"cidr": "10.244.0.0/16"});
        if let Some(e) = except {
            b["except"] = json!([e]);
        }
        ingress("x", "x-a-cidr", "a", json!([{"ipBlock": b}]), &[80])
    };
    env.change(|api| {
        api.apply(block(Some("10.244.2.0/24"))).unwrap();
    });
    env.expect("x/b", "x/a", 80, false);
    env.expect("y/a", "x/a", 80, false);
    env.expect("x/c", "x/a", 80, true);
    env.expect("z/c", "x/a", 80, true);
    env.change(|api| {
        api.apply(block(None)).unwrap();
    });
    env.expect("x/b", "x/a", 80, true);
    env.expect("y/a", "x/a", 80, true);
    env.expect("x/c", "x/a", 80, true);
    env.expect("x/b", "x/a", 81, false);

    env.cluster_teardown();
}

/// The state both outage tests start from: x/a (node-a) admits pod=b of
/// x on 80; z/b (node-b) admits namespace x.
fn base_policies(api: &FakeApiServer) {
    api.apply(ingress("x", "x-a", "a", pods(&[("pod", "b")]), &[80]))
        .unwrap();
    api.apply(ingress(
        "z",
        "z-b",
        "b",
        json!([{"namespaceSelector": {"matchLabels": {"ns": "x"}}}]),
        &[],
    ))
    .unwrap();
}

/// The verdicts of `base_policies`, checked all at once.
#[track_caller]
fn expect_base(env: &TwoNodes) {
    env.expect("x/b", "x/a", 80, true);
    env.expect("x/c", "x/a", 80, false);
    env.expect("y/b", "x/a", 80, false);
    env.expect("x/a", "z/b", 80, true);
    env.expect("x/b", "z/b", 81, true);
    env.expect("y/b", "z/b", 80, false);
}

#[test]
fn multinode_api_outage() {
    let env = TwoNodes::up("multinode_outage");
    env.change(base_policies);
    expect_base(&env);

    env.api.set_down(true);
    // Changes the agents cannot see: x/a now admits x/c instead of x/b,
    // z/b admits namespace y instead of x.
    env.api
        .apply(ingress("x", "x-a", "a", pods(&[("pod", "c")]), &[80]))
        .unwrap();
    env.api
        .apply(ingress(
            "z",
            "z-b",
            "b",
            json!([{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]),
            &[],
        ))
        .unwrap();
    // Enforcement holds with the last known state while the watchers fail
    // and retry: three samples, a second apart.
    for _ in 0..3 {
        expect_base(&env);
        for k in 0..2 {
            assert_eq!(
                env.get(k, "/readyz").map(|(c, _)| c),
                Some(200),
                "readiness of agent {k} changed while the API was down"
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(
        env.api.refused() > 0,
        "no agent tried the API while it was down"
    );

    // Back: both agents catch up on what changed meanwhile.
    env.api.set_down(false);
    eventually(&env, "x/c", "x/a", true);
    eventually(&env, "y/b", "z/b", true);
    env.quiet();
    env.expect("x/c", "x/a", 80, true);
    env.expect("x/b", "x/a", 80, false);
    env.expect("y/b", "z/b", 80, true);
    env.expect("x/a", "z/b", 80, false);

    // Watches cut mid-stream: resumed from their revision, then a change.
    env.api.drop_watches();
    env.api
        .delete(Kind::NetworkPolicy, "x", "x-a")
        .expect("x-a exists");
    eventually(&env, "x/b", "x/a", true);
    env.expect("x/c", "x/a", 80, true);
    env.expect("x/a", "z/b", 80, false);

    env.cluster_teardown();
}

/// A connection from `from` to `to`:80 sending a numbered message every
/// 20 ms until `stop` (at most `max` messages), checking every echo.
/// Returns the number of messages echoed.
fn chatter(
    env: &TwoNodes,
    from: &str,
    to: &str,
    stop: &AtomicBool,
    max: u32,
) -> Result<u32, String> {
    let dst = env.cluster.ip(to, Family::V4).unwrap();
    let conn = env
        .cluster
        .node_of(from)
        .unwrap()
        .lab
        .run_in_pod(from, || {
            TcpStream::connect_timeout(&(dst, 80).into(), Duration::from_secs(2))
        })
        .unwrap()
        .map_err(|e| format!("connect {from} -> {to}: {e}"))?;
    palisade_tests::lab::echo_until(conn, &format!("{from} -> {to}"), stop, max)
}

/// TCP segments retransmitted so far in a pod's namespace.
fn retransmitted(env: &TwoNodes, pod: &str) -> u64 {
    retrans_in(&env.cluster.node_of(pod).unwrap().lab, pod)
}

/// Flows that are denied before, during and after the restart, probed as
/// one batch across both nodes.
fn denied_flows(env: &TwoNodes) -> Vec<Probe> {
    ["y/b", "z/c", "z/b"]
        .iter()
        .map(|from| Probe {
            from: from.to_string(),
            to: env.cluster.ip("x/a", Family::V4).unwrap(),
            port: 80,
            protocol: Protocol::Tcp,
        })
        .collect()
}

#[track_caller]
fn expect_all_denied(env: &TwoNodes, when: &str) {
    let out = env
        .cluster
        .probe_many(&denied_flows(env), PROBE_TIMEOUT)
        .unwrap();
    assert!(
        out.iter().all(|o| !o.reached()),
        "{when}: a denied flow got through: {out:?}"
    );
}

#[test]
fn multinode_agent_restart_under_traffic() {
    let mut env = TwoNodes::up("multinode_restart");
    env.change(base_policies);
    expect_base(&env);
    expect_all_denied(&env, "before the restart");

    let retrans = (retransmitted(&env, "x/a"), retransmitted(&env, "x/b"));
    let stop = AtomicBool::new(false);
    let restarted = std::thread::scope(|s| {
        // Cross-node and allowed: x/b (node-b) -> x/a (node-a), whose
        // agent is the one killed.
        let talker = s.spawn(|| chatter(&env, "x/b", "x/a", &stop, 3000));
        std::thread::sleep(Duration::from_millis(300));
        let node_a = &env.cluster.nodes()[0];
        node_a.lab.signal(&env.agents[0].process, 9).unwrap();
        let status = node_a
            .lab
            .wait_exit(&env.agents[0].process, Duration::from_secs(5))
            .unwrap();
        assert!(status.is_some(), "agent of node-a survived kill -9");

        // No agent on node-a: its pins alone decide, as before.
        expect_all_denied(&env, "agent gone");
        env.expect("x/b", "x/a", 80, true);
        env.expect("x/c", "x/a", 80, false);
        env.expect("x/a", "z/b", 80, true);

        // A change while it is gone: x/a admits x/c too. node-b's agent
        // takes it (identities only: none of its pods is selected).
        let before_b = env.agents[1].rounds();
        env.api
            .apply(ingress(
                "x",
                "x-a",
                "a",
                json!([{"podSelector": {"matchLabels": {"pod": "b"}}},
                       {"podSelector": {"matchLabels": {"pod": "c"}}}]),
                &[80],
            ))
            .unwrap();
        env.cluster.nodes()[1]
            .lab
            .wait_agent(&env.agents[1], before_b, SETTLE)
            .unwrap();
        env.expect("x/c", "x/a", 80, false);

        // Same options, same pins; traffic goes on through its first sync.
        let agent = env.start_agent(0);
        node_a
            .lab
            .wait_agent(&agent, 0, SETTLE)
            .unwrap_or_else(|e| panic!("{e:#}"));
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        (agent, talker.join().unwrap())
    });
    let (agent, echoed) = restarted;
    env.agents[0] = agent;
    let echoed = echoed.unwrap_or_else(|e| panic!("{e}\n{}", env.log(0)));
    assert!(echoed >= 10, "only {echoed} messages");
    assert_eq!(retransmitted(&env, "x/a"), retrans.0, "x/a retransmitted");
    assert_eq!(retransmitted(&env, "x/b"), retrans.1, "x/b retransmitted");

    // After its first sync the new agent has reconciled the change made
    // while it was gone, and nothing else moved.
    env.wait_ready(0);
    env.expect("x/c", "x/a", 80, true);
    env.expect("x/b", "x/a", 80, true);
    env.expect("x/b", "x/a", 81, false);
    env.expect("x/a", "z/b", 80, true);
    env.expect("y/b", "z/b", 80, false);
    expect_all_denied(&env, "after the restart");

    env.cluster_teardown();
}

#[test]
fn multinode_lab_plumbing_and_teardown() {
    let cluster = palisade_lab::Cluster::up(&palisade_tests::cluster::spec("multinode_plumbing"))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let ids: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|n| n.lab.id().to_string())
        .collect();
    // No agent: every pod reaches every other, within a node and across
    // the underlay, on both families.
    for family in [Family::V4, Family::V6] {
        let m = cluster
            .measure_matrix(&palisade_tests::cluster::SERVED, family)
            .unwrap();
        assert_eq!(m.len(), 9 * 8 * 2);
        let closed: Vec<_> = m.iter().filter(|e| !e.allowed).collect();
        assert!(closed.is_empty(), "{family:?}: unreachable: {closed:?}");
    }
    // A closed port is refused across nodes, not silently dropped: the
    // routes carry the answer back.
    let to = cluster.ip("x/a", Family::V4).unwrap();
    let out = cluster.nodes()[1]
        .lab
        .probe_outcome("x/b", to, 9, Protocol::Tcp, PROBE_TIMEOUT)
        .unwrap();
    assert_eq!(out, palisade_lab::Outcome::Refused);
    // The underlay adds no gatewayless host route: an agent must never
    // take it for a pod interface.
    for n in cluster.nodes() {
        let routes = std::process::Command::new("ip")
            .args(["-n", &n.lab.node_netns(), "-4", "route", "show"])
            .output()
            .unwrap();
        let routes = String::from_utf8(routes.stdout).unwrap();
        for line in routes
            .lines()
            .filter(|l| l.contains(palisade_lab::UNDERLAY))
        {
            assert!(
                line.contains(" via ") || line.contains("/24 "),
                "{}: unexpected underlay route {line:?}",
                n.name
            );
        }
    }
    cluster.teardown().unwrap();
    let left: Vec<String> = palisade_lab::lab_netns_present()
        .into_iter()
        .filter(|n| ids.iter().any(|id| n.contains(id.as_str())))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}
