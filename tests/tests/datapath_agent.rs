//! `palisade agent` as a process against the real kernel: `--once`, the
//! watch loop (manifest edits, new interfaces, invalid input), SIGTERM
//! leaving enforcement in place, and a restart that rewrites nothing.
//!
//! Runs the `palisade` binary (`$PALISADE_BIN`, else `target/debug/palisade`:
//! `cargo build -p palisade-agent` first) inside a network namespace of its
//! own with a private bpffs; guards remove both and kill the agent even when
//! an assertion fails.

use aya::programs::{SchedClassifier, TcAttachType};
use palisade_common::{EP_ISOLATED_EGRESS, EP_ISOLATED_INGRESS, EP_PENDING};
use serde_json::Value;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static SEQ: AtomicU32 = AtomicU32::new(0);

fn unique(tag: &str) -> String {
    format!(
        "pal-{tag}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn palisade_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PALISADE_BIN") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/palisade");
    assert!(
        p.is_file(),
        "no palisade binary at {}: run `cargo build -p palisade-agent` (or set PALISADE_BIN)",
        p.display()
    );
    p
}

/// A network namespace the current thread enters (processes it spawns
/// start inside it), left and deleted on drop.
struct NetNs {
    name: String,
    home: OwnedFd,
}

impl NetNs {
    fn enter(tag: &str) -> NetNs {
        let name = unique(tag);
        let home: OwnedFd = std::fs::File::open("/proc/thread-self/ns/net")
            .expect("own netns")
            .into();
        run("ip", &["netns", "add", &name]);
        let guard = NetNs { name, home };
        let target =
            std::fs::File::open(format!("/run/netns/{}", guard.name)).expect("open new netns");
        // SAFETY: setns on this thread with a valid namespace fd.
        let rc = unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        run("ip", &["link", "set", "lo", "up"]);
        guard
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // SAFETY: back to the namespace this thread started in.
        unsafe { libc::setns(self.home.as_raw_fd(), libc::CLONE_NEWNET) };
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A scratch directory with a private bpffs below it.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(unique(tag));
        std::fs::create_dir_all(dir.join("bpf")).unwrap();
        std::fs::create_dir_all(dir.join("manifests")).unwrap();
        let s = Scratch { dir };
        run("mount", &["-t", "bpf", "bpf", s.bpffs().to_str().unwrap()]);
        s
    }
    fn bpffs(&self) -> PathBuf {
        self.dir.join("bpf")
    }
    fn manifests(&self) -> PathBuf {
        self.dir.join("manifests")
    }
    fn ready(&self) -> PathBuf {
        self.dir.join("ready")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.bpffs()).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The agent process; killed on drop if still running.
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn start(s: &Scratch, extra: &[&str]) -> Agent {
        let log = s
            .dir
            .join(format!("agent-{}.log", SEQ.fetch_add(1, Ordering::Relaxed)));
        let mut cmd = Command::new(palisade_bin());
        // Quick polling unless the test sets its own.
        let poll: &[&str] = if extra.contains(&"--poll-ms") {
            &[]
        } else {
            &["--poll-ms", "100"]
        };
        cmd.args(agent_args(s))
            .args(poll)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        Agent {
            child: cmd.spawn().expect("start palisade agent"),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Exit status within `limit`, or None.
    fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn agent_args(s: &Scratch) -> Vec<String> {
    vec![
        "agent".into(),
        "--manifests".into(),
        s.manifests().display().to_string(),
        "--node".into(),
        "node1".into(),
        "--bpffs-root".into(),
        s.bpffs().display().to_string(),
        "--ready-file".into(),
        s.ready().display().to_string(),
    ]
}

fn rounds(s: &Scratch) -> u64 {
    std::fs::read_to_string(s.ready())
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits (bounded) until the agent finished a round after `before`.
fn wait_round_after(s: &Scratch, agent: &Agent, before: u64) -> u64 {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let now = rounds(s);
        if now > before {
            return now;
        }
        assert!(
            Instant::now() < end,
            "agent did not program after round {before}; log:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn add_pod_iface(host: &str, ip: &str) -> u32 {
    let peer = format!("{host}p");
    run(
        "ip",
        &["link", "add", host, "type", "veth", "peer", "name", &peer],
    );
    run("ip", &["link", "set", host, "up"]);
    run("ip", &["link", "set", &peer, "up"]);
    run("ip", &["route", "add", &format!("{ip}/32"), "dev", host]);
    let v: Value = serde_json::from_str(&run("ip", &["-j", "link", "show", host])).unwrap();
    v[0]["ifindex"].as_u64().unwrap() as u32
}

/// Endpoint records by ifindex, as bpftool prints them with BTF names.
fn endpoints(s: &Scratch) -> std::collections::BTreeMap<u64, Value> {
    let path = s.bpffs().join("node1/ENDPOINTS");
    let v: Value = serde_json::from_str(&run(
        "bpftool",
        &["-j", "map", "dump", "pinned", path.to_str().unwrap()],
    ))
    .unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let f = &e["formatted"];
            (f["key"].as_u64().unwrap(), f["value"].clone())
        })
        .collect()
}

fn identities(s: &Scratch) -> Vec<u64> {
    let path = s.bpffs().join("node1/IDENTITIES");
    let v: Value = serde_json::from_str(&run(
        "bpftool",
        &["-j", "map", "dump", "pinned", path.to_str().unwrap()],
    ))
    .unwrap();
    let mut ids: Vec<u64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["formatted"]["value"].as_u64().unwrap())
        .collect();
    ids.sort();
    ids
}

const PODS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {nodeName: node1, containers: [{name: c, image: x}]}
status: {phase: Running, podIP: 10.78.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop, labels: {app: client}}
spec: {nodeName: node1, containers: [{name: c, image: x}]}
status: {phase: Running, podIP: 10.78.0.3}
---
apiVersion: v1
kind: Pod
metadata: {name: far, namespace: shop, labels: {app: far}}
spec: {nodeName: node2, containers: [{name: c, image: x}]}
status: {phase: Running, podIP: 10.78.1.5}
"#;

fn policy(cidr: &str, egress: bool) -> String {
    let types = if egress {
        "[Ingress, Egress]"
    } else {
        "[Ingress]"
    };
    format!(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: web, namespace: shop}}
spec:
  podSelector: {{matchLabels: {{app: web}}}}
  policyTypes: {types}
  ingress:
  - from: [{{podSelector: {{matchLabels: {{app: client}}}}}}, {{ipBlock: {{cidr: "{cidr}"}}}}]
    ports: [{{protocol: TCP, port: 80}}]
"#
    )
}

#[test]
fn datapath_agent_once_watch_sigterm_and_restart() {
    let _ns = NetNs::enter("dpa");
    let s = Scratch::new("dpa");
    std::fs::write(s.manifests().join("pods.yaml"), PODS).unwrap();
    std::fs::write(
        s.manifests().join("policy.yaml"),
        policy("192.168.0.0/16", false),
    )
    .unwrap();
    let web = add_pod_iface("web0", "10.78.0.2");
    let client = add_pod_iface("cli0", "10.78.0.3");

    // --once programs and exits 0, leaving the pins.
    let mut once = Agent::start(&s, &["--once"]);
    let st = once.wait(Duration::from_secs(30)).expect("--once exits");
    assert!(st.success(), "agent --once failed:\n{}", once.log());
    assert!(
        once.log().contains("programmed generation=1 pods=2"),
        "{}",
        once.log()
    );
    assert_eq!(rounds(&s), 1);
    let eps = endpoints(&s);
    assert_eq!(
        eps[&u64::from(web)]["flags"].as_u64(),
        Some(u64::from(EP_ISOLATED_INGRESS))
    );
    assert_eq!(eps[&u64::from(client)]["flags"].as_u64(), Some(0));
    let ids_before = identities(&s);
    assert_eq!(
        ids_before.len(),
        3,
        "every pod IP of the cluster has an identity"
    );

    // The watch loop: an edit is programmed (generation flips).
    let mut agent = Agent::start(&s, &[]);
    let r = wait_round_after(&s, &agent, 1);
    let gen_before = endpoints(&s)[&u64::from(web)]["generation"]
        .as_u64()
        .unwrap();
    std::fs::write(
        s.manifests().join("policy.yaml"),
        policy("192.168.0.0/16", true),
    )
    .unwrap();
    let r = wait_round_after(&s, &agent, r);
    let ep = endpoints(&s)[&u64::from(web)].clone();
    assert_eq!(
        ep["flags"].as_u64(),
        Some(u64::from(EP_ISOLATED_INGRESS | EP_ISOLATED_EGRESS)),
        "{}",
        agent.log()
    );
    assert_eq!(ep["generation"].as_u64(), Some(gen_before ^ 1));

    // A new interface whose pod is unknown is held pending.
    let stray = add_pod_iface("new0", "10.78.0.9");
    let r = wait_round_after(&s, &agent, r);
    assert_eq!(
        endpoints(&s)[&u64::from(stray)]["flags"].as_u64(),
        Some(u64::from(EP_PENDING))
    );

    // Invalid input is reported and never unprograms: the policy keeps its
    // last good version.
    std::fs::write(
        s.manifests().join("policy.yaml"),
        policy("192.168.0.0/99", false),
    )
    .unwrap();
    let _ = wait_round_after(&s, &agent, r);
    let ep = endpoints(&s)[&u64::from(web)].clone();
    assert_eq!(
        ep["flags"].as_u64(),
        Some(u64::from(EP_ISOLATED_INGRESS | EP_ISOLATED_EGRESS))
    );
    assert!(
        agent.log().contains("NetworkPolicy shop/web"),
        "{}",
        agent.log()
    );

    // SIGTERM: clean exit, enforcement stays.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(agent.child.id() as i32, libc::SIGTERM) };
    let st = agent
        .wait(Duration::from_secs(10))
        .expect("agent exits on SIGTERM");
    assert!(st.success(), "{}", agent.log());
    let pinned = endpoints(&s);
    assert_eq!(pinned.len(), 3);
    for prog in ["pod_ingress", "pod_egress"] {
        assert!(s.bpffs().join(format!("node1/links/{web}-{prog}")).exists());
    }

    // A restart with the same input rewrites nothing: same identities, same
    // generations.
    std::fs::write(
        s.manifests().join("policy.yaml"),
        policy("192.168.0.0/16", true),
    )
    .unwrap();
    let mut again = Agent::start(&s, &["--once"]);
    assert!(
        again
            .wait(Duration::from_secs(30))
            .expect("--once exits")
            .success(),
        "{}",
        again.log()
    );
    assert!(again.log().contains("flipped=0"), "{}", again.log());
    assert_eq!(identities(&s), ids_before);
    assert_eq!(endpoints(&s), pinned);

    // kill -9 leaves the classifiers attached through their pinned links.
    let r = rounds(&s);
    let mut last = Agent::start(&s, &[]);
    wait_round_after(&s, &last, r);
    last.child.kill().unwrap();
    last.child.wait().unwrap();
    for hook in [TcAttachType::Ingress, TcAttachType::Egress] {
        let (_, progs) = SchedClassifier::query_tcx("web0", hook).expect("query tcx");
        assert_eq!(progs.len(), 1, "{hook:?} of web0 after kill -9");
    }
}

/// With polling all but off, a new pod interface still gets its classifiers
/// at once: the agent wakes on the route event.
#[test]
fn datapath_agent_wakes_on_route_events() {
    let _ns = NetNs::enter("dpe");
    let s = Scratch::new("dpe");
    std::fs::write(s.manifests().join("pods.yaml"), PODS).unwrap();
    let web = add_pod_iface("web0", "10.78.0.2");
    let agent = Agent::start(&s, &["--poll-ms", "600000"]);
    let r = wait_round_after(&s, &agent, 0);
    assert!(endpoints(&s).contains_key(&u64::from(web)));
    let stray = add_pod_iface("new0", "10.78.0.9");
    wait_round_after(&s, &agent, r);
    assert_eq!(
        endpoints(&s)[&u64::from(stray)]["flags"].as_u64(),
        Some(u64::from(EP_PENDING))
    );
    for hook in [TcAttachType::Ingress, TcAttachType::Egress] {
        let (_, progs) = SchedClassifier::query_tcx("new0", hook).expect("query tcx");
        assert_eq!(progs.len(), 1, "{hook:?} of new0");
    }
}
