//! The figures beside the datapath's: the classifier's cost per packet
//! (BPF_PROG_TEST_RUN), the attached programs' run statistics during the
//! load, and the engines' kernel memory. Collected per round, reported as
//! medians over rounds, in report.json and as tables.

use crate::bpfstats::Counters;
use crate::classifier;
use crate::stats::median;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Kernel memory of one engine's policy state, one round.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    pub bytes: u64,
    /// Fixed-size state beside it (Palisade's conntrack, events, counters).
    pub fixed_bytes: Option<u64>,
    /// Maps (Palisade's inner maps) or sets (ipsets) counted.
    pub objects: u64,
    /// Palisade: the part of `bytes` in per-pod inner maps (the rest is the
    /// node-wide policy maps).
    pub pod_maps_bytes: Option<u64>,
}

/// What one round of one engine gave besides the datapath sample.
#[derive(Clone, Debug, Default)]
pub struct Extras {
    pub classifier: Option<classifier::Sample>,
    /// Program name to its counters over the load measurement.
    pub bpf_stats: BTreeMap<String, Counters>,
    pub memory: Option<Memory>,
}

/// `classifier` in report.json: medians over rounds of each round's
/// median ns per packet.
#[derive(Serialize, Debug)]
pub struct ClassifierEntry {
    pub rules: usize,
    pub new_flow_ns: f64,
    pub established_ns: f64,
    /// Absent when nothing is isolated (R = 0): the outsider is allowed.
    pub denied_ns: Option<f64>,
    pub noop_ns: f64,
    pub rounds: usize,
}

/// `bpf_stats` in report.json.
#[derive(Serialize, Debug)]
pub struct BpfStatsEntry {
    pub rules: usize,
    pub engine: &'static str,
    pub program: String,
    /// Median over rounds of the runs during one load measurement.
    pub runs: f64,
    /// Median over rounds of run_time_ns / run_cnt.
    pub avg_ns: f64,
}

/// `memory` in report.json.
#[derive(Serialize, Debug)]
pub struct MemoryEntry {
    pub engine: &'static str,
    pub rules: usize,
    pub bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_maps_bytes: Option<u64>,
    pub objects: u64,
}

/// The rounds of one engine at one rule count.
pub struct Rounds<'a> {
    pub engine: &'static str,
    pub rules: usize,
    pub extras: &'a [Extras],
}

fn med(values: impl Iterator<Item = f64>) -> f64 {
    median(&values.collect::<Vec<_>>())
}

pub fn classifier_entries(all: &[Rounds]) -> Vec<ClassifierEntry> {
    all.iter()
        .filter_map(|r| {
            let s: Vec<&classifier::Sample> = r
                .extras
                .iter()
                .filter_map(|e| e.classifier.as_ref())
                .collect();
            if s.is_empty() {
                return None;
            }
            let denied: Vec<f64> = s.iter().filter_map(|x| x.denied_ns).collect();
            Some(ClassifierEntry {
                rules: r.rules,
                new_flow_ns: med(s.iter().map(|x| x.new_flow_ns)),
                established_ns: med(s.iter().map(|x| x.established_ns)),
                denied_ns: (!denied.is_empty()).then(|| median(&denied)),
                noop_ns: med(s.iter().map(|x| x.noop_ns)),
                rounds: s.len(),
            })
        })
        .collect()
}

pub fn bpf_stats_entries(all: &[Rounds]) -> Vec<BpfStatsEntry> {
    let mut out = Vec::new();
    for r in all {
        let programs: std::collections::BTreeSet<&String> =
            r.extras.iter().flat_map(|e| e.bpf_stats.keys()).collect();
        for p in programs {
            let c: Vec<Counters> = r
                .extras
                .iter()
                .filter_map(|e| e.bpf_stats.get(p).copied())
                .collect();
            let avg: Vec<f64> = c.iter().filter_map(|c| c.avg_ns()).collect();
            if avg.is_empty() {
                continue;
            }
            out.push(BpfStatsEntry {
                rules: r.rules,
                engine: r.engine,
                program: p.clone(),
                runs: med(c.iter().map(|c| c.runs as f64)),
                avg_ns: median(&avg),
            });
        }
    }
    out
}

pub fn memory_entries(all: &[Rounds]) -> Vec<MemoryEntry> {
    all.iter()
        .filter_map(|r| {
            let m: Vec<Memory> = r.extras.iter().filter_map(|e| e.memory).collect();
            if m.is_empty() {
                return None;
            }
            let opt = |f: fn(&Memory) -> Option<u64>| {
                let v: Vec<f64> = m.iter().filter_map(|x| f(x).map(|b| b as f64)).collect();
                (!v.is_empty()).then(|| median(&v) as u64)
            };
            Some(MemoryEntry {
                engine: r.engine,
                rules: r.rules,
                bytes: med(m.iter().map(|x| x.bytes as f64)) as u64,
                fixed_bytes: opt(|x| x.fixed_bytes),
                pod_maps_bytes: opt(|x| x.pod_maps_bytes),
                objects: med(m.iter().map(|x| x.objects as f64)) as u64,
            })
        })
        .collect()
}

/// Left-aligned columns two spaces apart under `header`; with `group`, a
/// blank line wherever the first column changes (one block per rule count).
pub fn columns(header: &[&str], rows: &[Vec<String>], group: bool) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            rows.iter()
                .map(|r| r[c].len())
                .chain([header[c].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = String::new();
    let head: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    let _ = writeln!(out, "{}", line(&head));
    let mut last: Option<&String> = None;
    for r in rows {
        if group && last.is_some_and(|l| *l != r[0]) {
            out.push('\n');
        }
        last = Some(&r[0]);
        let _ = writeln!(out, "{}", line(r));
    }
    out
}

/// `value (+above noop)`.
fn above(ns: f64, noop: f64) -> String {
    format!("{ns:.0} ({:+.0})", ns - noop)
}

pub fn classifier_table(e: &[ClassifierEntry]) -> String {
    let rows: Vec<Vec<String>> = e
        .iter()
        .map(|c| {
            vec![
                c.rules.to_string(),
                above(c.new_flow_ns, c.noop_ns),
                above(c.established_ns, c.noop_ns),
                c.denied_ns
                    .map(|d| above(d, c.noop_ns))
                    .unwrap_or_else(|| "-".into()),
                format!("{:.0}", c.noop_ns),
            ]
        })
        .collect();
    let mut out = columns(
        &[
            "rules",
            "new flow ns",
            "established ns",
            "denied ns",
            "noop ns",
        ],
        &rows,
        false,
    );
    out.push_str(
        "classifier per packet (BPF_PROG_TEST_RUN on pod_ingress over the agent's maps): \
         median ns (above the noop program)\n",
    );
    out
}

pub fn bpf_stats_table(e: &[BpfStatsEntry]) -> String {
    let noop = |rules: usize| {
        e.iter()
            .find(|b| b.rules == rules && b.engine == "noop")
            .map(|b| b.avg_ns)
    };
    let rows: Vec<Vec<String>> = e
        .iter()
        .map(|b| {
            let avg = match noop(b.rules) {
                Some(n) if b.engine != "noop" => above(b.avg_ns, n),
                _ => format!("{:.0}", b.avg_ns),
            };
            vec![
                b.rules.to_string(),
                b.engine.to_string(),
                b.program.clone(),
                format!("{:.0}", b.runs),
                avg,
            ]
        })
        .collect();
    let mut out = columns(
        &["rules", "engine", "program", "runs", "avg ns"],
        &rows,
        false,
    );
    out.push_str(
        "attached programs during the load (kernel run statistics): median runs and ns per run \
         (above the noop program)\n",
    );
    out
}

fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / 1024.0 / 1024.0)
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{bytes} B")
    }
}

pub fn memory_table(e: &[MemoryEntry]) -> String {
    let rows: Vec<Vec<String>> = e
        .iter()
        .map(|m| {
            vec![
                m.rules.to_string(),
                m.engine.to_string(),
                human(m.bytes),
                m.objects.to_string(),
                m.pod_maps_bytes.map(human).unwrap_or_else(|| "-".into()),
                m.fixed_bytes.map(human).unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut out = columns(
        &[
            "rules",
            "engine",
            "policy memory",
            "maps/sets",
            "in pod maps",
            "fixed",
        ],
        &rows,
        false,
    );
    out.push_str(
        "kernel memory of the policy state: palisade = policy maps + per-pod inner maps \
         (memlock), iptables = ipsets (Size in memory); nftables reports none\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extras(new: f64, noop: f64, runs: u64, run_ns: u64, bytes: u64) -> Extras {
        Extras {
            classifier: Some(classifier::Sample {
                new_flow_ns: new,
                established_ns: new / 2.0,
                denied_ns: None,
                noop_ns: noop,
            }),
            bpf_stats: [("pod_ingress".to_string(), Counters { runs, run_ns })].into(),
            memory: Some(Memory {
                bytes,
                fixed_bytes: Some(1 << 20),
                objects: 8,
                pod_maps_bytes: Some(bytes / 2),
            }),
        }
    }

    #[test]
    fn medians_over_rounds() {
        let rounds = [
            extras(300.0, 100.0, 1000, 200_000, 4096),
            extras(500.0, 120.0, 3000, 300_000, 8192),
            extras(400.0, 90.0, 2000, 600_000, 4096),
        ];
        let all = [Rounds {
            engine: "palisade",
            rules: 100,
            extras: &rounds,
        }];
        let c = classifier_entries(&all);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].new_flow_ns, 400.0);
        assert_eq!(c[0].established_ns, 200.0);
        assert_eq!(c[0].noop_ns, 100.0);
        assert_eq!(c[0].denied_ns, None);
        assert_eq!(c[0].rounds, 3);
        let b = bpf_stats_entries(&all);
        // 200, 100 and 300 ns per run.
        assert_eq!(b[0].avg_ns, 200.0);
        assert_eq!(b[0].runs, 2000.0);
        let m = memory_entries(&all);
        assert_eq!(m[0].bytes, 4096);
        assert_eq!(m[0].fixed_bytes, Some(1 << 20));
        assert_eq!(m[0].pod_maps_bytes, Some(2048));
        let t = classifier_table(&c);
        assert!(t.contains("400 (+300)"), "{t}");
        assert!(memory_table(&m).contains("4.0 KiB"));
    }

    #[test]
    fn engines_without_extras_have_no_entries() {
        let rounds = [Extras::default(), Extras::default()];
        let all = [Rounds {
            engine: "none",
            rules: 0,
            extras: &rounds,
        }];
        assert!(classifier_entries(&all).is_empty());
        assert!(bpf_stats_entries(&all).is_empty());
        assert!(memory_entries(&all).is_empty());
    }
}
