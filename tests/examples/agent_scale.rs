//! Agent memory and time to enforce at cluster scale.
//!
//! ```text
//! cargo build -p palisade-agent
//! cargo run -p palisade-tests --example agent_scale -- --pods 10000 --policies 1000 --samples 30
//! cargo run -p palisade-tests --example agent_scale -- --pods 150000 --memory-limit-mib 960
//! ```
//!
//! `--memory-limit-mib` runs the agent in a memory cgroup with that limit
//! (what the DaemonSet's limit does), its maps charged to it too, and
//! reports the cgroup's peak and any OOM kill.
//!
//! A lab node with a few local pods runs `palisade agent --kubeconfig`
//! against the fake API server, which serves `--pods` synthetic pods of
//! other nodes (one namespace per 100 pods, labels drawn from small sets so
//! that selectors match many pods), `--policies` NetworkPolicies over them
//! (pod, namespace and ipBlock peers, ingress and egress) and policies
//! selecting the local pods whose peers are remote pods. It prints:
//!
//! - the agent's VmHWM and VmRSS (`/proc/<pid>/status`) after its first
//!   sync and again after the samples;
//! - the time from starting the agent to its first programmed round;
//! - time to enforce, median and p99 over `--samples`: from the API write
//!   to the end of the agent's programming round that read it (the round
//!   counter of its ready file, polled every millisecond), for a new local
//!   pod (its interface already there, held pending, until its Pod object
//!   appears) and for a policy change on the local pods; and the agent's
//!   own `palisade_time_to_enforce_seconds` mean over the same period;
//! - a route-only change: a pod whose Pod object is known gets its
//!   interface and host route (the lab wires it as a point-to-point CNI
//!   does); timed from the start of the wiring to the end of the round,
//!   and by the agent itself from its seeing the route to the end of the
//!   round (`palisade_time_to_enforce_seconds` over those samples).
//!
//! A measurement, not a test: nothing here asserts a duration. Needs root.

use anyhow::{bail, Context, Result};
use palisade_fake_apiserver::FakeApiServer;
use palisade_lab::{
    AgentOptions, AgentProcess, Family, Lab, LabSpec, PodSpec, ProbePort, Protocol,
};
use palisade_tests::memcg::MemCgroup;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

struct Args {
    pods: u32,
    policies: u32,
    samples: u32,
    /// Run the agent in a memory cgroup with this limit (MiB).
    memory_limit_mib: Option<u32>,
}

fn args() -> Result<Args> {
    let mut a = Args {
        pods: 10_000,
        policies: 1_000,
        samples: 30,
        memory_limit_mib: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        let n: u32 = value
            .parse()
            .with_context(|| format!("{flag}: {value:?} is not a number"))?;
        match flag.as_str() {
            "--pods" => a.pods = n,
            "--policies" => a.policies = n,
            "--samples" => a.samples = n,
            "--memory-limit-mib" => a.memory_limit_mib = Some(n),
            _ => bail!("unknown flag {flag} (--pods, --policies, --samples, --memory-limit-mib)"),
        }
    }
    if a.pods > 1 << 20 {
        bail!("--pods: at most {}", 1 << 20);
    }
    Ok(a)
}

const NODE: &str = "scale-node";
const METRICS: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 9090);
const LOCAL_PODS: u16 = 4;

fn namespaces(n: u32) -> u32 {
    (n / 100).max(10)
}

/// Synthetic pod `i` of another node: `10.64.0.0/12` addresses.
fn remote_pod(i: u32, nns: u32) -> Value {
    let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 64, 0, 1)) + i);
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("pod-{i}"), "namespace": format!("syn-{}", i % nns),
                     "labels": {"app": format!("app-{}", i % 50), "tier": format!("t-{}", i % 3)},
                     "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
        "spec": {"nodeName": format!("node-{}", i % 100), "containers": [{"name": "c", "image": "img",
                 "ports": [{"name": "http", "containerPort": 80}]}]},
        "status": {"phase": "Running", "podIP": ip.to_string(), "podIPs": [{"ip": ip.to_string()}]},
    })
}

fn synthetic_policy(j: u32, nns: u32) -> Value {
    let mut from = vec![
        json!({"podSelector": {"matchLabels": {"app": format!("app-{}", (j + 7) % 50)}}}),
        json!({"namespaceSelector": {"matchLabels": {"team": format!("team-{}", j % 20)}},
               "podSelector": {"matchLabels": {"tier": format!("t-{}", j % 3)}}}),
    ];
    if j.is_multiple_of(10) {
        from.push(json!({"ipBlock": {"cidr": "10.64.0.0/12", "except": ["10.65.0.0/16"]}}));
    }
    let mut spec = json!({
        "podSelector": {"matchLabels": {"app": format!("app-{}", j % 50)}},
        "ingress": [{"from": from, "ports": [{"protocol": "TCP", "port": 80},
                                             {"protocol": "TCP", "port": 8080, "endPort": 8090}]}],
    });
    if j.is_multiple_of(5) {
        spec["egress"] = json!([{"to": [{"namespaceSelector": {}}],
                                 "ports": [{"protocol": "UDP", "port": 53}]}]);
    }
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"name": format!("pol-{j}"), "namespace": format!("syn-{}", j % nns)},
           "spec": spec})
}

fn local_ip(k: u16) -> Ipv4Addr {
    Ipv4Addr::new(10, 32, (k / 250) as u8, (k % 250 + 1) as u8)
}

fn local_pod(name: &str, k: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "local", "labels": {"app": "web"}},
        "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "img",
                 "ports": [{"name": "http", "containerPort": 80}]}]},
        "status": {"phase": "Running", "podIP": local_ip(k).to_string(),
                   "podIPs": [{"ip": local_ip(k).to_string()}]},
    })
}

/// The local pods' policy: remote peers by labels, on `port`.
fn local_policy(port: u16) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"name": "web", "namespace": "local"},
           "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                    "ingress": [{"from": [
                        {"namespaceSelector": {"matchLabels": {"team": "team-3"}},
                         "podSelector": {"matchLabels": {"app": "app-3"}}},
                        {"podSelector": {"matchLabels": {"app": "web"}}}],
                        "ports": [{"protocol": "TCP", "port": port}]}]}})
}

fn memory(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = |key: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("{key} in /proc/{pid}/status"))
    };
    Ok((kb("VmHWM:")?, kb("VmRSS:")?))
}

/// Waits until the agent's round count has not moved for 300 ms.
fn quiet(agent: &AgentProcess, limit: Duration) -> Result<()> {
    let end = Instant::now() + limit;
    let mut seen = agent.rounds();
    let mut since = Instant::now();
    while since.elapsed() < Duration::from_millis(300) {
        if Instant::now() > end {
            bail!("the agent kept programming for {limit:?}");
        }
        let now = agent.rounds();
        if now != seen {
            seen = now;
            since = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// Applies `change` and times it until the agent finished a round after it.
fn time_to_enforce(agent: &AgentProcess, change: impl FnOnce()) -> Result<Duration> {
    quiet(agent, Duration::from_secs(300))?;
    let before = agent.rounds();
    let t0 = Instant::now();
    change();
    while agent.rounds() <= before {
        if t0.elapsed() > Duration::from_secs(300) {
            bail!("no round within 300 s of a change");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(t0.elapsed())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(what: &str, mut d: Vec<Duration>) {
    d.sort();
    println!(
        "time to enforce, {what}: median {:.1} ms, p99 {:.1} ms, min {:.1} ms, max {:.1} ms ({} samples)",
        percentile(&d, 0.5).as_secs_f64() * 1e3,
        percentile(&d, 0.99).as_secs_f64() * 1e3,
        d[0].as_secs_f64() * 1e3,
        d[d.len() - 1].as_secs_f64() * 1e3,
        d.len()
    );
}

fn metric(lab: &Lab, name: &str) -> Option<f64> {
    let body = lab
        .run_in_node(|| {
            let mut c = TcpStream::connect_timeout(&METRICS, Duration::from_secs(2)).ok()?;
            c.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
            write!(c, "GET /metrics HTTP/1.1\r\nHost: agent\r\n\r\n").ok()?;
            let mut out = String::new();
            c.read_to_string(&mut out).ok()?;
            Some(out)
        })
        .ok()??;
    body.lines()
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.parse().ok())
}

/// The sum and count of the agent's histogram `name` (0 when unread).
fn histogram(lab: &Lab, name: &str) -> (f64, f64) {
    (
        metric(lab, &format!("{name}_sum")).unwrap_or(0.0),
        metric(lab, &format!("{name}_count")).unwrap_or(0.0),
    )
}

/// What `route_only` measured.
struct RouteOnly {
    /// From the start of the wiring to the end of the round programming it.
    enforced: Vec<Duration>,
    /// The lab's wiring alone.
    wiring: Vec<Duration>,
    /// The agent's own means: from its seeing the route to the classifiers
    /// attached, and to the end of the round.
    attach_mean: Option<f64>,
    enforce_mean: Option<f64>,
}

/// `samples` pods whose Pod objects are known before their interfaces:
/// each is wired in turn and timed until the round that programs it ends.
fn route_only(
    lab: &mut Lab,
    api: &FakeApiServer,
    agent: &AgentProcess,
    samples: u16,
) -> Result<RouteOnly> {
    const NAMES: [&str; 2] = [
        "palisade_time_to_attach_seconds",
        "palisade_time_to_enforce_seconds",
    ];
    let hist = |lab: &Lab| NAMES.map(|name| histogram(lab, name));
    let mut out = RouteOnly {
        enforced: Vec::new(),
        wiring: Vec::new(),
        attach_mean: None,
        enforce_mean: None,
    };
    let mut totals = [(0.0, 0.0); 2];
    for s in 0..samples {
        let k = LOCAL_PODS + samples + s;
        let name = format!("wired-{s}");
        api.apply(local_pod(&name, k))?;
        quiet(agent, Duration::from_secs(300))?;
        let pod = PodSpec {
            namespace: "local".into(),
            name,
            ips: vec![local_ip(k).into()],
            ports: vec![ProbePort {
                port: 80,
                protocol: Protocol::Tcp,
            }],
        };
        let before = hist(lab);
        let mut wired = Duration::ZERO;
        out.enforced.push(time_to_enforce(agent, || {
            let t = Instant::now();
            lab.add_pod(&pod).expect("wire a pod");
            wired = t.elapsed();
        })?);
        out.wiring.push(wired);
        quiet(agent, Duration::from_secs(300))?;
        for (i, ((s0, c0), (s1, c1))) in before.iter().zip(hist(lab)).enumerate() {
            totals[i].0 += s1 - s0;
            totals[i].1 += c1 - c0;
        }
    }
    let mean = |(sum, count): (f64, f64)| (count > 0.0).then(|| sum / count);
    out.attach_mean = mean(totals[0]);
    out.enforce_mean = mean(totals[1]);
    Ok(out)
}

/// Stops the agent (SIGTERM: its pins stay and keep enforcing) and starts
/// another on the same pins: the time to its first round.
fn restart(
    lab: &Lab,
    agent: AgentProcess,
    opts: &AgentOptions,
    memcg: Option<&MemCgroup>,
) -> Result<()> {
    lab.signal(&agent.process, libc::SIGTERM)?;
    let end = Instant::now() + Duration::from_secs(30);
    while lab.exit_status(&agent.process)?.is_none() {
        if Instant::now() > end {
            bail!("the agent did not stop within 30 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let started = Instant::now();
    let again = lab.start_agent(opts)?;
    if let Some(cg) = memcg {
        cg.start(again.process.pid)?;
    }
    lab.wait_agent(&again, 0, Duration::from_secs(900))?;
    let (hwm, _) = memory(again.process.pid)?;
    println!(
        "restart on the same pins: first round {:.2} s after start, VmHWM {} MiB",
        started.elapsed().as_secs_f64(),
        hwm / 1024
    );
    Ok(())
}

fn main() -> Result<()> {
    let a = args()?;
    let nns = namespaces(a.pods);
    let late = a.samples.min(200) as u16;
    let port = [ProbePort {
        port: 80,
        protocol: Protocol::Tcp,
    }];
    let mut spec = LabSpec::new("agent-scale");
    for k in 0..LOCAL_PODS + late {
        let name = if k < LOCAL_PODS {
            format!("web-{k}")
        } else {
            format!("late-{}", k - LOCAL_PODS)
        };
        spec = spec.pod("local", &name, &[local_ip(k).into()], &port);
    }
    let mut lab = Lab::up(&spec)?;
    let api =
        lab.run_in_node(|| FakeApiServer::start_at(SocketAddr::from(([127, 0, 0, 1], 0))))??;
    let kubeconfig = api.write_kubeconfig(&lab.dir().join("kubeconfig"))?;

    let t = Instant::now();
    api.apply(json!({"apiVersion": "v1", "kind": "Namespace",
                     "metadata": {"name": "local", "labels": {"team": "local"}}}))?;
    for n in 0..nns {
        api.apply(json!({"apiVersion": "v1", "kind": "Namespace",
                         "metadata": {"name": format!("syn-{n}"),
                                      "labels": {"team": format!("team-{}", n % 20)}}}))?;
    }
    for i in 0..a.pods {
        api.apply(remote_pod(i, nns))?;
    }
    for j in 0..a.policies {
        api.apply(synthetic_policy(j, nns))?;
    }
    for k in 0..LOCAL_PODS {
        api.apply(local_pod(&format!("web-{k}"), k))?;
    }
    api.apply(local_policy(80))?;
    eprintln!(
        "served {} pods, {nns} namespaces, {} policies in {:.1} s",
        a.pods,
        a.policies,
        t.elapsed().as_secs_f64()
    );

    let bpffs = lab.mount_bpffs()?;
    let mut opts = AgentOptions::kube(palisade_lab::palisade_bin()?, kubeconfig, NODE, bpffs);
    let cgroup_name = format!("palisade_scale_{}", std::process::id());
    let memcg = match a.memory_limit_mib {
        Some(mib) => {
            let mut cg = MemCgroup::new(&cgroup_name, u64::from(mib))?;
            opts.bin = cg.wrap(&opts.bin, lab.dir())?;
            Some(cg)
        }
        None => None,
    };
    opts.metrics_addr = Some(METRICS);
    opts.poll = Duration::from_millis(100);
    let started = Instant::now();
    let agent = lab.start_agent(&opts)?;
    if let Some(cg) = &memcg {
        cg.start(agent.process.pid)?;
    }
    lab.wait_agent(&agent, 0, Duration::from_secs(900))?;
    let first = started.elapsed();
    let (hwm, rss) = memory(agent.process.pid)?;
    println!(
        "pods {} namespaces {nns} policies {}: first round {:.2} s after start; after first sync VmHWM {} MiB, VmRSS {} MiB",
        a.pods,
        a.policies + 1,
        first.as_secs_f64(),
        hwm / 1024,
        rss / 1024
    );
    const HISTOGRAMS: [(&str, &str); 3] = [
        ("palisade_time_to_enforce_seconds", "time to enforce"),
        ("palisade_compile_seconds", "compile per round"),
        ("palisade_program_seconds", "kernel programming per round"),
    ];
    let at_start: Vec<(f64, f64)> = HISTOGRAMS.iter().map(|(n, _)| histogram(&lab, n)).collect();
    // Only the first round so far: what of its time was the agent's own.
    println!(
        "first round: compile {:.2} s, kernel programming {:.2} s (the rest: listing the cluster and the agent's start)",
        at_start[1].0, at_start[2].0
    );

    let mut new_pod = Vec::new();
    for s in 0..late {
        let k = LOCAL_PODS + s;
        new_pod.push(time_to_enforce(&agent, || {
            api.apply(local_pod(&format!("late-{s}"), k))
                .expect("apply a pod");
        })?);
    }
    let mut policy = Vec::new();
    for s in 0..a.samples {
        let port = if s % 2 == 0 { 81 } else { 80 };
        policy.push(time_to_enforce(&agent, || {
            api.apply(local_policy(port)).expect("apply a policy");
        })?);
    }
    let routed = route_only(&mut lab, &api, &agent, late)?;
    quiet(&agent, Duration::from_secs(300))?;
    let enforced = metric(&lab, "palisade_pods_enforced").unwrap_or(-1.0);
    let want = LOCAL_PODS + 2 * late;
    if enforced != f64::from(want) {
        bail!(
            "the agent enforces {enforced} pods, expected {want}; log:\n{}",
            lab.log(&agent.process)
        );
    }
    // The web pods admit web pods on the last port: one probe says the
    // programmed state is live.
    let last = if (a.samples.max(1) - 1) % 2 == 0 {
        81
    } else {
        80
    };
    let to = lab.ip("local/web-1", Family::V4)?;
    let reached = lab.probe(
        "local/web-0",
        to,
        80,
        Protocol::Tcp,
        palisade_lab::PROBE_TIMEOUT,
    )?;
    println!(
        "probe web-0 -> web-1:80 {} (policy admits port {last})",
        if reached { "allowed" } else { "denied" }
    );
    if !new_pod.is_empty() {
        summary("new local pod", new_pod);
    }
    if !policy.is_empty() {
        summary("policy change", policy);
    }
    if !routed.enforced.is_empty() {
        summary(
            "route-only change, from the start of the wiring",
            routed.enforced,
        );
        summary("(the lab's wiring of one pod alone)", routed.wiring);
        let ms = |m: Option<f64>| m.map_or("-".to_string(), |m| format!("{:.1} ms", m * 1e3));
        println!(
            "agent's own, route-only samples (from its seeing the route): classifiers attached mean {}, enforced mean {}",
            ms(routed.attach_mean),
            ms(routed.enforce_mean)
        );
    }
    // The agent's own view over the same period (means of its histograms).
    for ((name, what), (sum0, count0)) in HISTOGRAMS.iter().zip(at_start) {
        let (sum1, count1) = histogram(&lab, name);
        if count1 > count0 {
            println!(
                "agent's {name} ({what}) over the samples: mean {:.1} ms ({} observations)",
                (sum1 - sum0) / (count1 - count0) * 1e3,
                count1 - count0
            );
        }
    }
    let (hwm, rss) = memory(agent.process.pid)?;
    println!(
        "after the samples: VmHWM {} MiB, VmRSS {} MiB",
        hwm / 1024,
        rss / 1024
    );
    if let (Some(cg), Some(mib)) = (&memcg, a.memory_limit_mib) {
        palisade_tests::memcg::check_in(agent.process.pid, &cgroup_name)?;
        let used = cg.usage()?;
        println!(
            "memory cgroup limit {mib} MiB (maps included): peak {} MiB, limit hit {} times, OOM kills {}",
            used.peak_mib, used.limit_hits, used.oom_kills
        );
        if used.oom_kills > 0 {
            bail!("the agent was OOM-killed inside {mib} MiB");
        }
    }
    restart(&lab, agent, &opts, memcg.as_ref())?;
    drop(api);
    lab.teardown()
}
