//! Compiles the large generated cluster once, then applies pod label and
//! policy changes, printing times (wall and this thread's CPU time: on a
//! shared machine wall time also counts other processes' turns), the
//! entries per local pod and the peak memory (VmHWM) of the process:
//! `cargo run --release -p palisade-compiler --example scale`.

use palisade_compiler::gen::{cluster, ClusterSize, LOCAL_NODE};
use palisade_compiler::{Change, CompiledPod, Compiler, IdentityAllocator};
use palisade_policy::{PortMatch, PortSpec, Protocol};
use std::time::{Duration, Instant};

fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs `f`, returning its result, wall time and CPU time.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration, Duration) {
    let (wall, cpu) = (Instant::now(), thread_cpu());
    let out = f();
    (out, wall.elapsed(), thread_cpu() - cpu)
}

fn main() {
    let (model, wall, _) = timed(|| cluster(&ClusterSize::LARGE));
    println!(
        "generated {} pods, {} policies in {wall:?}",
        model.pods.len(),
        model.policies.len()
    );
    let hwm_model = vm_hwm_kib().unwrap_or(0);

    let (mut compiler, wall, cpu) =
        timed(|| Compiler::from_model(&model, LOCAL_NODE, IdentityAllocator::new()));
    let hwm_compiled = vm_hwm_kib().unwrap_or(0);
    let node = compiler.compiled();
    println!(
        "cold compile: {wall:?} wall, {cpu:?} CPU; {} local pods, {} identities, {} addresses",
        node.pods.len(),
        compiler.allocator().len(),
        node.identities.len()
    );
    let n = node.pods.len().max(1) as f64;
    let mean =
        |f: &dyn Fn(&CompiledPod) -> usize| node.pods.values().map(f).sum::<usize>() as f64 / n;
    println!(
        "entries per pod (both directions, mean): identity {:.1}, cidr {:.1}, port {:.1}, spill {:.1}; max groups {}",
        mean(&|p| p.ingress.identities.len() + p.egress.identities.len()),
        mean(&|p| p.ingress.cidrs.len() + p.egress.cidrs.len()),
        mean(&|p| p.ingress.ports.len() + p.egress.ports.len()),
        mean(&|p| p.ingress.spill.len() + p.egress.spill.len()),
        node.pods.values().map(|p| p.ingress.groups.len().max(p.egress.groups.len())).max().unwrap_or(0),
    );
    println!(
        "peak memory (VmHWM): {} MiB after generating the model, {} MiB after the cold compile",
        hwm_model / 1024,
        hwm_compiled / 1024
    );

    // 100 pods spread over the cluster (local ones included) each get a
    // label set of their own: a new identity per change.
    let mut cpus = Vec::new();
    let mut recompiled = 0;
    for k in 0..100 {
        let mut pod = model.pods[(k * 1_499) % model.pods.len()].clone();
        pod.labels.insert("canary".into(), "true".into());
        let (applied, _, cpu) = timed(|| compiler.apply(Change::UpsertPod(pod)));
        recompiled += applied.pods.len();
        cpus.push(cpu);
    }
    cpus.sort();
    println!(
        "pod label change (CPU): median {:?}, p90 {:?}, max {:?}; {:.2} local pods changed per change",
        cpus[50],
        cpus[90],
        cpus[99],
        recompiled as f64 / 100.0
    );

    // A policy selecting every pod of a local pod's namespace.
    let local_ns = &model
        .pods
        .iter()
        .find(|p| p.node.as_deref() == Some(LOCAL_NODE))
        .expect("a local pod")
        .namespace;
    let mut policy = model
        .policies
        .iter()
        .find(|p| &p.namespace == local_ns && p.name == "pol-01")
        .expect("policy")
        .clone();
    policy.ingress[0].ports = Some(vec![PortSpec {
        protocol: Protocol::Tcp,
        port: PortMatch::Range {
            port: 8000,
            end: 8999,
        },
    }]);
    let (applied, wall, cpu) = timed(|| compiler.apply(Change::UpsertPolicy(policy)));
    println!(
        "policy change: {wall:?} wall, {cpu:?} CPU; {} local pods recompiled",
        applied.pods.len()
    );
}
