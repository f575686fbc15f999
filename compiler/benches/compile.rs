//! Compiler benchmarks on the large generated cluster (150,000 pods in
//! 1,000 namespaces, 10,000 policies, 110 local pods):
//! `cargo bench -p palisade-compiler --bench compile`.
//!
//! Reports the cold compile, the incremental recompile after one pod label
//! change and after one policy change, and prints the map entries per local
//! pod. Peak memory is measured by the `scale` example (a benchmark
//! harness's own allocations would blur it).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use palisade_compiler::gen::{cluster, ClusterSize, LOCAL_NODE};
use palisade_compiler::{Change, Compiler, IdentityAllocator};
use palisade_policy::{Model, PortMatch, PortSpec, Protocol};
use std::hint::black_box;
use std::time::Duration;

fn print_entries(compiler: &Compiler) {
    let node = compiler.compiled();
    let n = node.pods.len().max(1);
    let total = |f: &dyn Fn(&palisade_compiler::CompiledDirection) -> usize| {
        node.pods
            .values()
            .map(|p| f(&p.ingress) + f(&p.egress))
            .sum::<usize>()
    };
    eprintln!(
        "{} local pods; entries per pod (both directions): identity {:.1}, cidr {:.1}, port {:.1}, spill {:.1}; node identity trie {}",
        node.pods.len(),
        total(&|d| d.identities.len()) as f64 / n as f64,
        total(&|d| d.cidrs.len()) as f64 / n as f64,
        total(&|d| d.ports.len()) as f64 / n as f64,
        total(&|d| d.spill.len()) as f64 / n as f64,
        node.identities.len(),
    );
}

fn benches(c: &mut Criterion) {
    let model: Model = cluster(&ClusterSize::LARGE);
    let mut group = c.benchmark_group("compile");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    group.bench_function("cold_150k_pods", |b| {
        b.iter_with_large_drop(|| {
            Compiler::from_model(&model, LOCAL_NODE, IdentityAllocator::new())
        })
    });
    group.finish();

    let mut compiler = Compiler::from_model(&model, LOCAL_NODE, IdentityAllocator::new());
    print_entries(&compiler);

    // One pod's labels flip between two sets (a new identity each time the
    // canary label appears, freed when it goes). Pods spread over the
    // cluster, local ones included.
    let mut group = c.benchmark_group("incremental");
    let mut k = 0usize;
    group.bench_function("pod_label_change", |b| {
        b.iter_batched(
            || {
                k += 1;
                let mut pod = model.pods[(k / 2 * 1_499) % model.pods.len()].clone();
                if k % 2 == 1 {
                    pod.labels.insert("canary".into(), "true".into());
                }
                Change::UpsertPod(pod)
            },
            |change| black_box(compiler.apply(change)),
            BatchSize::SmallInput,
        )
    });

    // A policy selecting every pod of a local pod's namespace flips its
    // ports.
    let local_ns = model
        .pods
        .iter()
        .find(|p| p.node.as_deref() == Some(LOCAL_NODE))
        .expect("a local pod")
        .namespace
        .clone();
    let base = model
        .policies
        .iter()
        .find(|p| p.namespace == local_ns && p.name == "pol-01")
        .expect("policy pol-01")
        .clone();
    let mut changed = base.clone();
    changed.ingress[0].ports = Some(vec![PortSpec {
        protocol: Protocol::Tcp,
        port: PortMatch::Range {
            port: 8000,
            end: 8999,
        },
    }]);
    let mut flip = false;
    group.bench_function("policy_change", |b| {
        b.iter_batched(
            || {
                flip = !flip;
                Change::UpsertPolicy(if flip { changed.clone() } else { base.clone() })
            },
            |change| black_box(compiler.apply(change)),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(compile_benches, benches);
criterion_main!(compile_benches);
