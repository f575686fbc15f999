//! The agent's observability on a lab node, against the real kernel: the
//! verdict stream (`palisade monitor` over the agent's socket), the
//! per-pod and per-policy counters on /metrics, and audit mode (by
//! annotation and by `--audit`).
//!
//! Needs the `palisade` binary built with its eBPF object
//! (`$PALISADE_BIN`, else target/debug/palisade: `cargo xtask build`).
//! Each test builds its own lab (unique namespaces, private bpffs, its own
//! monitor socket and metrics address inside its node namespace); the lab
//! removes everything on drop, the monitor clients are killed by a guard.

use palisade_lab::ProbePort;
use palisade_lab::{palisade_bin, write_manifest, Family, Lab, LabSpec, NodeProcess, Protocol};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NODE: &str = "node1";
const AGENT_START: Duration = Duration::from_secs(60);
const AGENT_CHANGE: Duration = Duration::from_secs(20);
/// Where the agent serves /metrics, inside the lab's node namespace.
const METRICS: &str = "127.0.0.1:9464";
const UDP: ProbePort = ProbePort {
    port: 80,
    protocol: Protocol::Udp,
};

const PODS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: obs}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: obs, labels: {app: web}}
spec: {nodeName: node1, containers: [{name: c, image: x}]}
status: {phase: Running, podIP: 10.79.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: obs, labels: {app: client}}
spec: {nodeName: node1, containers: [{name: c, image: x}]}
status: {phase: Running, podIP: 10.79.0.3}
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: obs, labels: {app: other}}
spec: {nodeName: node1, containers: [{name: c, image: x}]}
status: {phase: Running, podIP: 10.79.0.4}
"#;

/// web admits UDP 80 from client only; `annotations` goes in its metadata.
fn web_policy(annotations: &str) -> String {
    format!(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: web-ingress, namespace: obs{annotations}}}
spec:
  podSelector: {{matchLabels: {{app: web}}}}
  policyTypes: [Ingress]
  ingress:
  - from: [{{podSelector: {{matchLabels: {{app: client}}}}}}]
    ports: [{{protocol: UDP, port: 80}}]
"#
    )
}

/// Selects web too and sorts before web-ingress, with another port set:
/// its rule takes group (bit) 0.
const FIRST_POLICY: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-first, namespace: obs}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
    ports: [{protocol: TCP, port: 81}]
"#;

/// A lab node with the three pods and an agent serving its monitor socket
/// and /metrics.
struct Node {
    lab: Lab,
    bin: PathBuf,
    manifests: PathBuf,
    bpffs: PathBuf,
    socket: PathBuf,
    agent: Option<(NodeProcess, PathBuf)>,
}

impl Node {
    fn up(label: &str) -> Node {
        let bin = palisade_bin().expect("the palisade binary");
        let model = palisade_policy::load_str(PODS, "pods.yaml");
        assert!(model.errors.is_empty(), "{:?}", model.errors);
        let lab = Lab::up(&LabSpec::from_pods(label, &model.pods, &[UDP])).expect("lab up");
        let manifests = lab.dir().join("manifests");
        std::fs::create_dir(&manifests).unwrap();
        std::fs::write(manifests.join("pods.yaml"), PODS).unwrap();
        let bpffs = lab.mount_bpffs().unwrap();
        let socket = lab.dir().join("monitor.sock");
        Node {
            lab,
            bin,
            manifests,
            bpffs,
            socket,
            agent: None,
        }
    }

    fn set_policy(&self, text: &str) {
        write_manifest(&self.manifests.join("policy.yaml"), text).unwrap();
    }

    fn rounds(ready: &Path) -> u64 {
        std::fs::read_to_string(ready)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Starts the agent with `extra` arguments and waits for its first
    /// round to settle.
    fn start_agent(&mut self, extra: &[&str]) {
        let ready = self.lab.dir().join(format!("ready-{}", extra.len()));
        let _ = std::fs::remove_file(&ready);
        let mut args: Vec<String> = [
            "agent",
            "--node",
            NODE,
            "--manifests",
            &self.manifests.display().to_string(),
            "--bpffs-root",
            &self.bpffs.display().to_string(),
            "--ready-file",
            &ready.display().to_string(),
            "--poll-ms",
            "50",
            "--metrics-addr",
            METRICS,
            "--monitor-socket",
            &self.socket.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let env = [("RUST_LOG".to_string(), "info".to_string())];
        let p = self
            .lab
            .spawn_in_node_env(&self.bin, &args, &env)
            .expect("start the agent");
        self.agent = Some((p, ready));
        self.wait_agent(0, AGENT_START);
    }

    fn stop_agent(&mut self) {
        if let Some((p, _)) = self.agent.take() {
            self.lab.signal(&p, libc::SIGTERM).unwrap();
            let st = self.lab.wait_exit(&p, Duration::from_secs(20)).unwrap();
            assert!(st.is_some(), "agent did not stop:\n{}", self.lab.log(&p));
            assert!(
                !self.socket.exists(),
                "the monitor socket outlived the agent"
            );
        }
    }

    fn log(&self) -> String {
        self.agent
            .as_ref()
            .map(|(p, _)| self.lab.log(p))
            .unwrap_or_default()
    }

    fn current_round(&self) -> u64 {
        Self::rounds(&self.agent.as_ref().unwrap().1)
    }

    /// Waits for a round after `after`, then a quiet spell (no new round
    /// for a few polling periods): what the agent saw last is enforced.
    fn wait_agent(&self, after: u64, limit: Duration) {
        let (p, ready) = self.agent.as_ref().unwrap();
        let deadline = Instant::now() + limit;
        let mut seen = Self::rounds(ready);
        let mut since = Instant::now();
        loop {
            if let Some(st) = self.lab.exit_status(p).unwrap() {
                panic!("agent exited ({st}):\n{}", self.lab.log(p));
            }
            let now = Self::rounds(ready);
            if now != seen {
                seen = now;
                since = Instant::now();
            }
            if seen > after && since.elapsed() >= Duration::from_millis(300) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "agent did not settle after round {after} within {limit:?}:\n{}",
                self.lab.log(p)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn change_policy(&self, text: &str) {
        let before = self.current_round();
        self.set_policy(text);
        self.wait_agent(before, AGENT_CHANGE);
    }

    fn ip(&self, pod: &str) -> IpAddr {
        self.lab.ip(pod, Family::V4).unwrap()
    }

    /// The agent's /metrics, as `name{labels}` -> value.
    fn metrics(&self) -> BTreeMap<String, f64> {
        let text = self
            .lab
            .run_in_node(|| {
                let addr: SocketAddr = METRICS.parse().unwrap();
                let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
                c.set_read_timeout(Some(Duration::from_secs(10)))?;
                write!(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
                let mut out = String::new();
                c.read_to_string(&mut out)?;
                Ok::<_, std::io::Error>(out)
            })
            .unwrap()
            .expect("GET /metrics");
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
        body.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_string(), v.parse().ok()?))
            })
            .collect()
    }

    /// Metrics, once three reads 750 ms apart agree on every datapath
    /// counter (link-local IPv6 chatter of new interfaces dies down within
    /// seconds of their creation); at most 30 reads.
    fn quiet_metrics(&self) -> BTreeMap<String, f64> {
        let counters = |m: &BTreeMap<String, f64>| -> Vec<(String, f64)> {
            m.iter()
                .filter(|(k, _)| {
                    k.starts_with("palisade_pod_") || k.starts_with("palisade_policy_")
                })
                .map(|(k, v)| (k.clone(), *v))
                .collect()
        };
        let mut last = self.metrics();
        let mut same = 0;
        for _ in 0..30 {
            std::thread::sleep(Duration::from_millis(750));
            let now = self.metrics();
            if counters(&now) == counters(&last) {
                same += 1;
                if same == 2 {
                    return now;
                }
            } else {
                same = 0;
            }
            last = now;
        }
        panic!("datapath counters never settled:\n{last:#?}");
    }

    /// Sends `n` UDP datagrams of `payload` bytes from `from` to `to`:80,
    /// from one socket; with `echo`, each must come back (within 2 s).
    fn udp(&self, from: &str, to: &str, n: usize, payload: usize, echo: bool) {
        let dst = SocketAddr::new(self.ip(to), 80);
        self.lab
            .run_in_pod(from, move || {
                let s = UdpSocket::bind("0.0.0.0:0").unwrap();
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let data = vec![7u8; payload];
                let mut buf = vec![0u8; payload + 16];
                for i in 0..n {
                    s.send_to(&data, dst).unwrap();
                    if echo {
                        let (len, src) = s
                            .recv_from(&mut buf)
                            .unwrap_or_else(|e| panic!("echo {i} of {n} from {dst}: {e}"));
                        assert_eq!((len, src), (payload, dst));
                    }
                }
            })
            .unwrap();
    }

    /// Runs `palisade monitor --output json --count N` with `args` while
    /// `traffic` runs once per step (at most 100 steps of 50 ms): the client
    /// may subscribe after the first packets. Returns its events, less the
    /// link-local IPv6 chatter of the lab's interfaces (multicast listener
    /// reports sent when an interface comes up, refused or not).
    fn monitor_events(&self, args: &[&str], count: usize, mut traffic: impl FnMut()) -> Vec<Value> {
        let child = Command::new(&self.bin)
            .args(["monitor", "--output", "json", "--socket"])
            .arg(&self.socket)
            .args(["--count", &count.to_string()])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start palisade monitor");
        let mut guard = Killed(Some(child));
        for _ in 0..100 {
            if guard.0.as_mut().unwrap().try_wait().unwrap().is_some() {
                break;
            }
            traffic();
            std::thread::sleep(Duration::from_millis(50));
        }
        let child = guard.0.take().unwrap();
        let id = child.id();
        let out = std::thread::scope(|sc| {
            let h = sc.spawn(|| child.wait_with_output());
            // Bounded: a client that never got its events is killed.
            for _ in 0..100 {
                if h.is_finished() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if !h.is_finished() {
                // SAFETY: our own child, not yet reaped (wait_with_output
                // is still waiting on it).
                unsafe { libc::kill(id as i32, libc::SIGKILL) };
            }
            h.join().unwrap().unwrap()
        });
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "palisade monitor {args:?} failed ({}): {}\n{stdout}\nagent log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        let events: Vec<Value> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(events.len(), count, "{stdout}");
        let events: Vec<Value> = events
            .into_iter()
            .filter(|e| !link_local_chatter(e))
            .collect();
        assert!(!events.is_empty(), "only link-local chatter:\n{stdout}");
        events
    }

    /// `CONFIG.events` of the node, as pinned.
    fn config_events(&self) -> u64 {
        let pin = palisade_tests::kernel::pins(&self.bpffs, NODE).join("CONFIG");
        let dump = palisade_tests::kernel::dump(&pin);
        dump[0]["value"]["events"].as_u64().unwrap()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some((p, _)) = self.agent.take() {
            let _ = self.lab.signal(&p, libc::SIGKILL);
        }
    }
}

/// Kills a child process on drop (a failed assertion leaves none behind).
struct Killed(Option<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An ICMPv6 event from or to a link-local or multicast address: what
/// interfaces say when they come up, not the traffic under test.
fn link_local_chatter(e: &Value) -> bool {
    let ip = |k: &str| {
        e[k].as_str()
            .and_then(|s| s.parse::<std::net::Ipv6Addr>().ok())
    };
    e["protocol"] == "ICMPv6"
        && [ip("src"), ip("dst")]
            .into_iter()
            .flatten()
            .any(|a| a.is_multicast() || a.segments()[0] & 0xffc0 == 0xfe80)
}

fn get(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

fn pod_key(metric: &str, pod: &str, dir: &str, verdict: &str) -> String {
    format!(
        "palisade_pod_{metric}_total{{namespace=\"obs\",pod=\"{pod}\",direction=\"{dir}\",verdict=\"{verdict}\"}}"
    )
}

fn policy_key(metric: &str, pod: &str, dir: &str) -> String {
    format!(
        "palisade_policy_{metric}_total{{namespace=\"obs\",policy=\"web-ingress\",pod_namespace=\"obs\",pod=\"{pod}\",direction=\"{dir}\"}}"
    )
}

/// Checks that between `a` and `b` exactly the listed pod counters moved,
/// by the listed amounts (every other pod counter of the namespace stayed).
fn assert_deltas(
    a: &BTreeMap<String, f64>,
    b: &BTreeMap<String, f64>,
    want: &[(String, f64)],
    log: &str,
) {
    let want: BTreeMap<&str, f64> = want.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let keys: std::collections::BTreeSet<&String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| k.starts_with("palisade_pod_") || k.starts_with("palisade_policy_"))
        .collect();
    let mut wrong = Vec::new();
    for k in keys {
        let d = get(b, k) - get(a, k);
        let expected = want.get(k.as_str()).copied().unwrap_or(0.0);
        if d != expected {
            wrong.push(format!("{k}: moved by {d}, expected {expected}"));
        }
    }
    for k in want.keys() {
        if !b.contains_key(*k) {
            wrong.push(format!("{k}: missing"));
        }
    }
    assert!(wrong.is_empty(), "{}\nagent log:\n{log}", wrong.join("\n"));
}

/// Bytes a hook counts for one UDP/IPv4 datagram of `payload` bytes: the
/// frame as the veth carries it (Ethernet, IPv4 and UDP headers).
fn udp_frame(payload: usize) -> f64 {
    (14 + 20 + 8 + payload) as f64
}

#[test]
fn observability_verdict_stream_and_counters() {
    let mut node = Node::up("observability_stream");
    node.set_policy(&web_policy(""));
    node.start_agent(&[]);

    // Denied: other -> web, reported at web's ingress with the pods, the
    // port and the isolating policy.
    let events = node.monitor_events(&["--pod", "obs/web"], 3, || {
        node.udp("obs/other", "obs/web", 1, 8, false)
    });
    for e in &events {
        assert_eq!(e["verdict"], "denied", "{e}");
        assert_eq!(e["pod"], "obs/web", "{e}");
        assert_eq!(e["direction"], "ingress", "{e}");
        assert_eq!(e["peer"], "obs/other", "{e}");
        assert_eq!(e["protocol"], "UDP", "{e}");
        assert_eq!(e["src"], "10.79.0.4", "{e}");
        assert_eq!(e["dst"], "10.79.0.2", "{e}");
        assert_eq!(e["dport"], 80, "{e}");
        assert_eq!(e["reason"], "policy", "{e}");
        assert_eq!(
            e["isolated_by"],
            serde_json::json!(["obs/web-ingress"]),
            "{e}"
        );
        assert_eq!(e["stale"], false, "{e}");
    }
    assert_eq!(
        node.config_events() & u64::from(palisade_common::CONFIG_EVENTS_ALLOWED),
        0,
        "allowed-flow events stay off while nobody asks for them"
    );

    // Allowed: every datagram from a new socket is a new flow, reported at
    // web's ingress with the policy's rule 0, and possibly at client's
    // (not isolated) hook; --pod matches web as either end.
    let events = node.monitor_events(&["--pod", "obs/web", "--verdict", "allowed"], 3, || {
        node.udp("obs/client", "obs/web", 1, 8, true)
    });
    let mut by_rule = 0;
    for e in &events {
        assert_eq!(e["verdict"], "allowed", "{e}");
        assert_eq!(e["dport"], 80, "{e}");
        match e["pod"].as_str().unwrap() {
            "obs/web" => {
                assert_eq!(e["direction"], "ingress", "{e}");
                assert_eq!(e["peer"], "obs/client", "{e}");
                assert_eq!(
                    e["allowed_by"],
                    serde_json::json!({"kind": "rules", "group": 0,
                        "rules": [{"policy": "obs/web-ingress", "rule": 0}]}),
                    "{e}"
                );
                by_rule += 1;
            }
            // Its request going out, or (without a conntrack entry of
            // its own) web's echo coming in: either way not isolated.
            "obs/client" => {
                assert_eq!(e["peer"], "obs/web", "{e}");
                assert_eq!(
                    e["allowed_by"],
                    serde_json::json!({"kind": "not_isolated"}),
                    "{e}"
                );
            }
            other => panic!("event of {other}: {e}"),
        }
    }
    assert!(by_rule >= 1, "no event of web's ingress among {events:#?}");
    // The client left: allowed-flow events are switched off again.
    let off = palisade_tests::kernel::poll_until(Duration::from_secs(10), || {
        node.config_events() & u64::from(palisade_common::CONFIG_EVENTS_ALLOWED) == 0
    });
    assert!(
        off,
        "allowed-flow events still on after the client left:\n{}",
        node.log()
    );

    // Counters: exact deltas for N echoed datagrams client -> web and N
    // dropped ones other -> web.
    const N: usize = 25;
    const PAYLOAD: usize = 100;
    let before = node.quiet_metrics();
    node.udp("obs/client", "obs/web", N, PAYLOAD, true);
    node.udp("obs/other", "obs/web", N, PAYLOAD, false);
    let after = node.metrics();
    let (n, bytes) = (N as f64, N as f64 * udp_frame(PAYLOAD));
    let mut want = Vec::new();
    for (pod, dir, verdict, count) in [
        ("client", "egress", "allowed", n),
        ("client", "ingress", "allowed", n),
        ("web", "ingress", "allowed", n),
        ("web", "egress", "allowed", n),
        ("web", "ingress", "denied", n),
        ("other", "egress", "allowed", n),
    ] {
        want.push((pod_key("packets", pod, dir, verdict), count));
        want.push((pod_key("bytes", pod, dir, verdict), count / n * bytes));
    }
    want.push((policy_key("packets", "web", "ingress"), n));
    want.push((policy_key("bytes", "web", "ingress"), bytes));
    assert_deltas(&before, &after, &want, &node.log());
    for m in ["ENDPOINTS", "IDENTITIES", "CONNTRACK"] {
        let cap = format!("palisade_map_capacity{{map=\"{m}\"}}");
        assert!(get(&after, &cap) > 0.0, "{cap} missing");
    }
    assert_eq!(get(&after, "palisade_map_entries{map=\"ENDPOINTS\"}"), 3.0);
    // Each of the three pods has its own conntrack table, counted together
    // (entries are refreshed every 10 s, so only their presence is sure).
    let tables = f64::from(3 * palisade_common::CONNTRACK_POD_DEFAULT);
    assert_eq!(
        get(&after, "palisade_map_capacity{map=\"CONNTRACK_POD\"}"),
        tables
    );
    assert!(after.contains_key("palisade_map_entries{map=\"CONNTRACK_POD\"}"));
    assert!(after.contains_key("palisade_events_lost_total{reason=\"sampled\"}"));
    assert!(after.contains_key("palisade_events_lost_total{reason=\"ring_full\"}"));

    // A policy sorting first takes rule bit 0: the kernel's column 0 now
    // means it, and web-ingress moves to bit 1. Counts already folded stay
    // with web-ingress; new ones go where the new bits say.
    node.change_policy(&format!("{}\n---\n{FIRST_POLICY}", web_policy("")));
    let before = node.quiet_metrics();
    node.udp("obs/client", "obs/web", N, PAYLOAD, true);
    let after = node.metrics();
    let first = |metric: &str| {
        format!(
            "palisade_policy_{metric}_total{{namespace=\"obs\",policy=\"a-first\",pod_namespace=\"obs\",pod=\"web\",direction=\"ingress\"}}"
        )
    };
    let mut want = Vec::new();
    for (pod, dir) in [
        ("client", "egress"),
        ("client", "ingress"),
        ("web", "ingress"),
        ("web", "egress"),
    ] {
        want.push((pod_key("packets", pod, dir, "allowed"), n));
        want.push((pod_key("bytes", pod, dir, "allowed"), bytes));
    }
    want.push((policy_key("packets", "web", "ingress"), n));
    want.push((policy_key("bytes", "web", "ingress"), bytes));
    assert_deltas(&before, &after, &want, &node.log());
    assert_eq!(get(&after, &first("packets")), 0.0, "{after:#?}");
    assert!(after.contains_key(&first("packets")), "{after:#?}");

    node.stop_agent();
}

/// Audit mode passes what the policy would deny, reports it as would-deny
/// with the deciding policy, and counts it: first by annotation, then for
/// an enforced policy with the agent's `--audit`.
#[test]
fn observability_audit_mode() {
    let mut node = Node::up("observability_audit");
    node.set_policy(&web_policy(
        ", annotations: {palisade.dev/enforcement: audit}",
    ));
    node.start_agent(&[]);
    check_would_deny(&node);

    // The same policy enforced drops; with --audit it passes again.
    node.change_policy(&web_policy(""));
    let before = node.quiet_metrics();
    node.udp("obs/other", "obs/web", 3, 10, false);
    let after = node.metrics();
    assert_eq!(
        get(&after, &pod_key("packets", "web", "ingress", "denied"))
            - get(&before, &pod_key("packets", "web", "ingress", "denied")),
        3.0,
        "{}",
        node.log()
    );
    node.stop_agent();
    node.start_agent(&["--audit"]);
    check_would_deny(&node);
    node.stop_agent();
}

/// other -> web passes (echoed), is reported as would-deny by
/// obs/web-ingress and counted as would-deny, exactly.
fn check_would_deny(node: &Node) {
    let events = node.monitor_events(&["--pod", "obs/web"], 3, || {
        node.udp("obs/other", "obs/web", 1, 8, true)
    });
    for e in &events {
        assert_eq!(e["verdict"], "would_deny", "{e}");
        assert_eq!(e["pod"], "obs/web", "{e}");
        assert_eq!(e["direction"], "ingress", "{e}");
        assert_eq!(e["peer"], "obs/other", "{e}");
        assert_eq!(e["protocol"], "UDP", "{e}");
        assert_eq!(e["reason"], "policy", "{e}");
        assert_eq!(
            e["isolated_by"],
            serde_json::json!(["obs/web-ingress"]),
            "{e}"
        );
    }

    const N: usize = 10;
    const PAYLOAD: usize = 50;
    let before = node.quiet_metrics();
    node.udp("obs/other", "obs/web", N, PAYLOAD, true);
    let after = node.metrics();
    let (n, bytes) = (N as f64, N as f64 * udp_frame(PAYLOAD));
    let mut want = Vec::new();
    for (pod, dir, verdict) in [
        ("other", "egress", "allowed"),
        ("other", "ingress", "allowed"),
        ("web", "ingress", "would_deny"),
        ("web", "egress", "would_deny"),
    ] {
        want.push((pod_key("packets", pod, dir, verdict), n));
        want.push((pod_key("bytes", pod, dir, verdict), bytes));
    }
    assert_deltas(&before, &after, &want, &node.log());
}
