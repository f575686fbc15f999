//! Compiles the large generated cluster once and prints the time, the
//! entries per local pod and the peak memory (VmHWM) of the process:
//! `cargo run --release -p palisade-compiler --example scale`.

use palisade_compiler::gen::{cluster, ClusterSize, LOCAL_NODE};
use palisade_compiler::{Change, Compiler, IdentityAllocator};
use std::time::Instant;

fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() {
    let t = Instant::now();
    let model = cluster(&ClusterSize::LARGE);
    println!("generated {} pods, {} policies in {:?}", model.pods.len(), model.policies.len(), t.elapsed());
    let hwm_model = vm_hwm_kib().unwrap_or(0);

    let t = Instant::now();
    let mut compiler = Compiler::from_model(&model, LOCAL_NODE, IdentityAllocator::new());
    let cold = t.elapsed();
    let hwm_compiled = vm_hwm_kib().unwrap_or(0);
    let node = compiler.compiled();
    let n = node.pods.len().max(1);
    let sum = |f: &dyn Fn(&palisade_compiler::CompiledPod) -> usize| node.pods.values().map(f).sum::<usize>();
    println!("cold compile: {cold:?} for {} local pods, {} identities, {} addresses", node.pods.len(), compiler.allocator().len(), node.identities.len());
    println!(
        "entries per pod (both directions, mean): identity {}, cidr {}, port {}, spill {}; max groups {}",
        sum(&|p| p.ingress.identities.len() + p.egress.identities.len()) / n,
        sum(&|p| p.ingress.cidrs.len() + p.egress.cidrs.len()) / n,
        sum(&|p| p.ingress.ports.len() + p.egress.ports.len()) / n,
        sum(&|p| p.ingress.spill.len() + p.egress.spill.len()) / n,
        node.pods.values().map(|p| p.ingress.groups.len().max(p.egress.groups.len())).max().unwrap_or(0),
    );
    println!("peak memory (VmHWM): {} MiB after generating the model, {} MiB after the cold compile", hwm_model / 1024, hwm_compiled / 1024);

    let mut pod = model.pods[12_345].clone();
    pod.labels.insert("canary".into(), "true".into());
    let t = Instant::now();
    let applied = compiler.apply(Change::UpsertPod(pod));
    println!("pod label change: {:?}, {} local pods recompiled", t.elapsed(), applied.pods.len());

    // A policy selecting a local pod (every pod of its namespace).
    let local_ns = &model.pods.iter().find(|p| p.node.as_deref() == Some(LOCAL_NODE)).expect("a local pod").namespace;
    let mut policy = model.policies.iter().find(|p| &p.namespace == local_ns && p.name == "pol-01").expect("policy").clone();
    policy.ingress[0].ports = Some(vec![palisade_policy::PortSpec {
        protocol: palisade_policy::Protocol::Tcp,
        port: palisade_policy::PortMatch::Range { port: 8000, end: 8999 },
    }]);
    let t = Instant::now();
    let applied = compiler.apply(Change::UpsertPolicy(policy));
    println!("policy change: {:?}, {} local pods recompiled", t.elapsed(), applied.pods.len());
}
