//! The agent's liveness probe (`/healthz`) against the real kernel: it
//! fails when a child command hangs past its timeout and when the agent
//! loop stalls (an `ip` that answers later than the liveness bound), and
//! recovers when they do; it stays green through an API outage, which the
//! watchers retry, and fails for good when a watcher dies.
//!
//! The hanging `ip` is a wrapper script first in the agent's `PATH` that
//! runs the real `ip`, after a sleep while a file exists. Rounds read the
//! routes over netlink and ask ethtool the kinds of pod devices, so what
//! still runs `ip` is the kind of a device ethtool does not name: a host
//! route over a bridge, added by the test. The dead watcher
//! is the debug build's `PALISADE_TEST_WATCHER_PANIC` fault
//! (`agent/src/source/api/liveness.rs`). Each test runs in a network
//! namespace of its own with a private bpffs (guards clean up on failure).

use palisade_tests::cluster::http_get;
use palisade_tests::fixtures::{shop_api, shop_pod, shop_pods};
use palisade_tests::kernel::{add_pod_iface, rounds, run, wait_for, Agent, NetNs, Scratch};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(30);

/// Where the agent serves its probes, inside the test's namespace.
const METRICS: &str = "127.0.0.1:9090";

fn metrics() -> SocketAddr {
    METRICS.parse().unwrap()
}

fn healthz() -> Option<(u16, String)> {
    http_get(metrics(), "/healthz")
}

/// The real `ip`, from this process's `PATH`.
fn real_ip() -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("ip"))
        .find(|p| p.is_file())
        .expect("ip (iproute2) in PATH")
}

/// A directory holding an `ip` that sleeps `secs` before running the real
/// one while the returned file exists: (the `PATH` for the agent, the file).
fn slow_ip(s: &Scratch, secs: u32) -> (String, PathBuf) {
    let dir = s.dir().join("slow-bin");
    std::fs::create_dir_all(&dir).unwrap();
    let trigger = s.dir().join("hang");
    let script = format!(
        "#!/bin/sh\nif [ -e '{}' ]; then sleep {secs}; fi\nexec '{}' \"$@\"\n",
        trigger.display(),
        real_ip().display()
    );
    let ip = dir.join("ip");
    std::fs::write(&ip, script).unwrap();
    std::fs::set_permissions(&ip, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    (path, trigger)
}

/// A bridge `dev` routing to `addr`: the next round asks `ip` its kind.
fn route_over_a_bridge(dev: &str, addr: &str) {
    run("ip", &["link", "add", dev, "type", "bridge"]);
    run("ip", &["link", "set", dev, "up"]);
    another_route(dev, addr);
}

/// Another host route over `dev`: a round, which asks its kind again.
fn another_route(dev: &str, addr: &str) {
    run("ip", &["route", "add", &format!("{addr}/32"), "dev", dev]);
}

/// The agent for node1 on the scratch directory's manifests (the shop pods,
/// web's interface present), with `PATH` and `extra` arguments.
fn start_manifests_agent(s: &Scratch, path: &str, extra: &[&str]) -> Agent {
    std::fs::write(s.manifests().join("pods.yaml"), shop_pods("10.76")).unwrap();
    add_pod_iface("web0", "10.76.0.2");
    let manifests = s.manifests().display().to_string();
    let mut args = vec![
        "--manifests",
        manifests.as_str(),
        "--node",
        "node1",
        "--metrics-addr",
        METRICS,
    ];
    args.extend_from_slice(extra);
    let agent = Agent::start(s, &args, &[("PATH", path), ("RUST_LOG", "info")]);
    wait_for(&agent, "the first round", LIMIT, || rounds(s) >= 1);
    assert_healthy(&agent);
    agent
}

#[track_caller]
fn assert_healthy(agent: &Agent) {
    wait_for(agent, "/healthz 200", LIMIT, || {
        healthz().is_some_and(|(c, _)| c == 200)
    });
}

/// Waits until /healthz answers 503; its body.
#[track_caller]
fn unhealthy(agent: &Agent, limit: Duration) -> String {
    let mut body = String::new();
    wait_for(agent, "/healthz 503", limit, || match healthz() {
        Some((503, b)) => {
            body = b;
            true
        }
        _ => false,
    });
    body
}

#[test]
fn agent_health_fails_while_a_child_command_hangs() {
    let _ns = NetNs::enter("hlc");
    let s = Scratch::new("hlc");
    let (path, hang) = slow_ip(&s, 8);
    let agent = start_manifests_agent(
        &s,
        &path,
        &[
            "--command-timeout-secs",
            "1",
            "--liveness-timeout-secs",
            "60",
        ],
    );
    // Asking `ip` a device's kind now hangs; it is killed after the
    // second: the loop goes on, the probe names the command.
    std::fs::write(&hang, "").unwrap();
    route_over_a_bridge("brh", "10.76.9.1");
    let body = unhealthy(&agent, LIMIT);
    assert!(
        body.starts_with(
            "unhealthy: child command hung: `ip -j -d link show dev brh` killed after 1s"
        ),
        "{body}"
    );
    assert!(
        agent.log().contains(
            "ip -j -d link show dev brh: no answer within 1s (the command timeout); killed"
        ),
        "{}",
        agent.log()
    );
    assert_eq!(http_get(metrics(), "/readyz").map(|(c, _)| c), Some(200));
    // The next run that completes clears it (the kind is asked again: an
    // unanswered question is not remembered).
    std::fs::remove_file(&hang).unwrap();
    another_route("brh", "10.76.9.2");
    assert_healthy(&agent);
}

#[test]
fn agent_health_fails_while_the_loop_stalls() {
    let _ns = NetNs::enter("hls");
    let s = Scratch::new("hls");
    let (path, hang) = slow_ip(&s, 8);
    // The command may take 30 s, the loop may not be quiet for 2 s: an `ip`
    // answering after 8 s holds the loop past the bound.
    let agent = start_manifests_agent(
        &s,
        &path,
        &[
            "--command-timeout-secs",
            "30",
            "--liveness-timeout-secs",
            "2",
        ],
    );
    // Idle, the loop ticks: quiet for longer than the bound is still live.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(healthz().map(|(c, _)| c), Some(200));
    std::fs::write(&hang, "").unwrap();
    route_over_a_bridge("brs", "10.76.9.3");
    let body = unhealthy(&agent, Duration::from_secs(6));
    assert!(
        body.starts_with("unhealthy: agent loop stalled: no round or idle tick for "),
        "{body}"
    );
    assert!(body.ends_with(" (limit 2s)\n"), "{body}");
    std::fs::remove_file(&hang).unwrap();
    // The slow `ip` answers within 8 s; the loop ticks again.
    assert_healthy(&agent);
}

/// The value of one sample of /metrics (0 when absent).
fn metric(name: &str) -> f64 {
    let (_, body) = http_get(metrics(), "/metrics").expect("GET /metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// The agent on the API server of `kubeconfig`, with a 2 s liveness bound.
fn start_api_agent(s: &Scratch, kubeconfig: &Path) -> Agent {
    let agent = Agent::start(
        s,
        &[
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--metrics-addr",
            METRICS,
            "--liveness-timeout-secs",
            "2",
        ],
        &[
            ("NODE_NAME", "node1"),
            ("RUST_LOG", "info"),
            ("PALISADE_TEST_WATCHER_PANIC", "pods/boom"),
        ],
    );
    wait_for(&agent, "the first round", LIMIT, || rounds(s) >= 1);
    assert_healthy(&agent);
    agent
}

#[test]
fn agent_health_survives_an_api_outage_and_fails_when_a_watcher_dies() {
    let _ns = NetNs::enter("hlw");
    let s = Scratch::new("hlw");
    let (api, kubeconfig) = shop_api(s.dir(), "10.75.0.2");
    add_pod_iface("web0", "10.75.0.2");
    let agent = start_api_agent(&s, &kubeconfig);

    // The API goes away for well over the liveness bound: the watchers
    // fail and retry, the loop idles, the probe stays green throughout.
    let restarts = "palisade_watch_restarts_total{resource=\"pods\"}";
    let before = metric(restarts);
    api.set_down(true);
    wait_for(&agent, "the watchers to notice the outage", LIMIT, || {
        metric(restarts) > before
    });
    let end = Instant::now() + Duration::from_secs(5);
    let mut samples = 0;
    while Instant::now() < end {
        let got = healthz();
        assert_eq!(got.as_ref().map(|(c, _)| *c), Some(200), "{got:?}");
        samples += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(samples >= 10, "{samples} samples");
    assert_eq!(http_get(metrics(), "/readyz").map(|(c, _)| c), Some(200));
    api.set_down(false);

    // A watcher that panics takes the watcher runtime with it: the stores
    // freeze, and the probe says so (and keeps saying it).
    api.apply(shop_pod("boom", "10.75.0.9")).unwrap();
    let body = unhealthy(&agent, Duration::from_secs(60));
    assert!(body.starts_with("unhealthy: the "), "{body}");
    assert!(
        body.contains(" watcher panicked (see the log): the agent no longer follows the cluster"),
        "{body}"
    );
    assert!(
        agent
            .log()
            .contains("PALISADE_TEST_WATCHER_PANIC: pods/boom arrived"),
        "{}",
        agent.log()
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(healthz().map(|(c, _)| c), Some(503));
}
