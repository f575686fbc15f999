//! The benchmark's course: one lab, then for each rule count, rounds in
//! which every engine is installed, checked, measured and removed, in an
//! order reversed every other round (a slow drift of the machine then
//! weighs on all engines alike).

use crate::engines::{self, Engine, Setup};
use crate::figures::{self, Extras, Rounds};
use crate::load::{self, Servers};
use crate::report::{self, Series};
use crate::workload::{Workload, CLIENT, OUTSIDER, SERVER};
use crate::{collect, iptables, manifests, nft, plot, Args};
use anyhow::{bail, Context, Result};
use palisade_lab::{Lab, LabSpec};
use std::path::{Path, PathBuf};
use std::time::Duration;

const FULL_RULES: [usize; 5] = [0, 10, 100, 1000, 10000];
const QUICK_RULES: [usize; 3] = [0, 100, 10000];
/// A connection the policy allows opens within this (the client check).
const REACH_TIMEOUT: Duration = Duration::from_secs(2);
/// A connection the policy denies is given this long before it counts as
/// refused (it is dropped, so it can only time out).
const DENY_TIMEOUT: Duration = Duration::from_millis(500);

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the bench crate sits in the workspace")
        .to_path_buf()
}

struct Plan {
    rules: Vec<usize>,
    engines: Vec<Engine>,
    rounds: usize,
    duration: Duration,
}

fn plan(args: &Args, has_noop: bool) -> Result<Plan> {
    let rules = if !args.rules.is_empty() {
        args.rules.clone()
    } else if args.quick {
        QUICK_RULES.to_vec()
    } else {
        FULL_RULES.to_vec()
    };
    let all = [
        Engine::None,
        Engine::Noop,
        Engine::Palisade,
        Engine::Iptables,
        Engine::Nftables,
    ];
    let engines = if args.engines.is_empty() {
        all.iter()
            .copied()
            .filter(|e| *e != Engine::Noop || has_noop)
            .collect()
    } else {
        let mut picked = Vec::new();
        for name in &args.engines {
            let e = all
                .iter()
                .copied()
                .find(|e| e.name() == name)
                .with_context(|| {
                    format!("--engines: unknown engine {name} (none, noop, palisade, iptables, nftables)")
                })?;
            if e == Engine::Noop && !has_noop {
                bail!("--engines: noop: the eBPF object has no noop program");
            }
            picked.push(e);
        }
        picked
    };
    let rounds = args.rounds.unwrap_or(if args.quick { 3 } else { 5 });
    if rounds == 0 {
        bail!("--rounds: at least 1");
    }
    let duration =
        Duration::from_millis(
            args.duration_ms
                .unwrap_or(if args.quick { 1000 } else { 2000 }),
        );
    if duration.is_zero() || duration > Duration::from_secs(60) {
        bail!("--duration-ms: between 1 and 60000");
    }
    Ok(Plan {
        rules,
        engines,
        rounds,
        duration,
    })
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub fn run(args: Args) -> Result<()> {
    let root = workspace_root();
    let object_path = args
        .ebpf_object
        .clone()
        .or_else(|| std::env::var_os("PALISADE_EBPF_OBJECT").map(PathBuf::from))
        .unwrap_or_else(|| root.join("ebpf/target/bpfel-unknown-none/release/palisade-ebpf"));
    let object = std::fs::read(&object_path).with_context(|| {
        format!(
            "reading the eBPF object {} (run `cargo xtask build-ebpf`)",
            object_path.display()
        )
    })?;
    let has_noop = engines::object_has_noop(&object)?;
    let palisade_bin = match &args.palisade_bin {
        Some(p) => p.clone(),
        None => palisade_lab::palisade_bin()?,
    };
    let plan = plan(&args, has_noop)?;
    if !has_noop {
        eprintln!(
            "bench: the eBPF object has no noop program: the noop engine and the classifier cost are left out"
        );
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| root.join("target/bench/report.json"));
    let load_start = loadavg();
    eprintln!(
        "bench: rules {:?}, engines {:?}, {} rounds of {:?} per measurement; load average {load_start}",
        plan.rules,
        plan.engines.iter().map(|e| e.name()).collect::<Vec<_>>(),
        plan.rounds,
        plan.duration
    );

    let base = Workload::generate(0);
    let mut spec = LabSpec::new("palisade-bench");
    for p in base.lab_pods() {
        spec = spec.pod(&p.namespace, &p.name, &[p.ip.into()], &[]);
    }
    let lab = Lab::up(&spec)?;
    let bpffs = lab.mount_bpffs()?;
    let _servers = Servers::start(&lab, SERVER)?;
    let server_ip = base.pod(SERVER).context("no server pod")?.ip;

    let mut series: Vec<Series> = Vec::new();
    for &rules in &plan.rules {
        let workload = Workload::generate(rules);
        let dir = lab.dir().join(format!("manifests-{rules}"));
        std::fs::create_dir_all(&dir)?;
        palisade_lab::write_manifest(&dir.join("bench.yaml"), &manifests::render(&workload))?;
        describe(&lab, &workload);
        let setup = Setup {
            lab: &lab,
            workload: &workload,
            manifests: dir,
            palisade_bin: &palisade_bin,
            ebpf_object: &object,
            bpffs: &bpffs,
        };
        let mut mine: Vec<Series> = plan
            .engines
            .iter()
            .map(|e| Series {
                engine: e.name(),
                rules,
                rounds: Vec::new(),
                install_s: Vec::new(),
                extras: Vec::new(),
            })
            .collect();
        for round in 0..plan.rounds {
            let mut order: Vec<usize> = (0..plan.engines.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for k in order {
                let engine = plan.engines[k];
                eprint!(
                    "bench: R={rules} round {}/{} {} ... ",
                    round + 1,
                    plan.rounds,
                    engine.name()
                );
                let (sample, install_s, extras) = one(&setup, engine, server_ip, plan.duration)
                    .with_context(|| {
                        format!("{} with {rules} rules, round {}", engine.name(), round + 1)
                    })?;
                eprintln!(
                    "rr {:.0}/s crr {:.0}/s stream {:.2} Gbit/s p50 {:.1} us (installed in {install_s:.2} s)",
                    sample.rr_tps, sample.crr_cps, sample.stream_gbps, sample.rtt_p50_us
                );
                if let Some(c) = &extras.classifier {
                    eprintln!(
                        "bench:   classifier: new flow {:.0} ns, established {:.0} ns, noop {:.0} ns",
                        c.new_flow_ns, c.established_ns, c.noop_ns
                    );
                }
                mine[k].rounds.push(sample);
                mine[k].install_s.push(install_s);
                mine[k].extras.push(extras);
            }
        }
        series.extend(mine);
    }
    drop(_servers);
    lab.teardown()?;

    let entries = report::entries(&series);
    let rounds: Vec<Rounds> = series
        .iter()
        .map(|s| Rounds {
            engine: s.engine,
            rules: s.rules,
            extras: &s.extras,
        })
        .collect();
    let classifier = figures::classifier_entries(&rounds);
    let bpf_stats = figures::bpf_stats_entries(&rounds);
    let memory = figures::memory_entries(&rounds);
    let load_end = loadavg();
    println!("{}", report::table(&entries));
    if !classifier.is_empty() {
        println!("{}", figures::classifier_table(&classifier));
    }
    if !bpf_stats.is_empty() {
        println!("{}", figures::bpf_stats_table(&bpf_stats));
    }
    if !memory.is_empty() {
        println!("{}", figures::memory_table(&memory));
    }
    println!(
        "{} CPUs, load average {load_start} at start, {load_end} at end",
        cpus()
    );
    let json = serde_json::json!({
        "datapath": entries,
        "classifier": classifier,
        "bpf_stats": bpf_stats,
        "memory": memory,
        "config": {
            "quick": args.quick,
            "rules": plan.rules,
            "engines": plan.engines.iter().map(|e| e.name()).collect::<Vec<_>>(),
            "noop_available": has_noop,
            "rounds": plan.rounds,
            "duration_s": plan.duration.as_secs_f64(),
        },
        "machine": {
            "cpus": cpus(),
            "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
            "loadavg_start": load_start,
            "loadavg_end": load_end,
        },
    });
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("writing {}", out.display()))?;
    eprintln!("bench: wrote {}", out.display());
    let png = out.with_file_name("report.png");
    plot::write(&entries, &png).with_context(|| format!("drawing {}", png.display()))?;
    eprintln!("bench: wrote {}", png.display());
    Ok(())
}

/// Installs one engine, checks that it lets the client in and (when it
/// enforces a policy) keeps the outsider out, measures (with the run
/// statistics of its programs, if it has any), takes the figures only a
/// running engine gives (Palisade's classifier cost, memory), removes it
/// and checks that the removal let the outsider back in.
fn one(
    s: &Setup,
    engine: Engine,
    server: std::net::Ipv4Addr,
    duration: Duration,
) -> Result<(load::Sample, f64, Extras)> {
    let (installed, install) = engines::install(engine, s)?;
    let install_s = install.as_secs_f64();
    let result = (|| {
        if !load::reaches(s.lab, CLIENT, server, REACH_TIMEOUT)? {
            bail!("the client cannot reach the server");
        }
        let isolating = engine.enforces() && s.workload.rules > 0;
        if load::reaches(s.lab, OUTSIDER, server, DENY_TIMEOUT)? == isolating {
            bail!(
                "the outsider {} the server: the engine does not enforce the workload",
                if isolating { "reaches" } else { "cannot reach" }
            );
        }
        let (sample, bpf_stats) = collect::measure(s, &installed, server, duration)?;
        let extras = Extras {
            bpf_stats,
            classifier: collect::classifier_cost(s, &installed, server)?,
            memory: collect::memory_of(s, &installed)?,
        };
        Ok((sample, extras))
    })();
    let removed = installed.remove(s);
    let (sample, extras) = result?;
    removed?;
    if !load::reaches(s.lab, OUTSIDER, server, REACH_TIMEOUT)? {
        bail!("the outsider cannot reach the server after the engine was removed");
    }
    Ok((sample, install_s, extras))
}

/// What each engine will be given, once per rule count.
fn describe(lab: &Lab, w: &Workload) {
    let veth = |k: &str| lab.pod(k).map(|p| p.host_veth.clone()).unwrap_or_default();
    let ipt = iptables::render(w, &veth);
    let nft = nft::render(w, &veth);
    eprintln!(
        "bench: R={}: {} policies, {} pods in {} namespaces; iptables: {} rules, {} ipsets; nftables: {} set elements",
        w.rules,
        w.policies.len(),
        w.pods.len(),
        w.namespaces.len(),
        ipt.policy_rules,
        ipt.set_names.len(),
        nft.elements
    );
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
