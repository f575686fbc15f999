//! The results: a table for people, `report.json` for tools.

use crate::load::Sample;
use crate::stats::{figure, median, Figure};
use serde::Serialize;

/// All rounds of one engine at one rule count.
pub struct Series {
    pub engine: &'static str,
    pub rules: usize,
    pub rounds: Vec<Sample>,
    /// Seconds from starting to install the engine until it enforces, per round.
    pub install_s: Vec<f64>,
    /// The figures besides the datapath's, per round.
    pub extras: Vec<crate::figures::Extras>,
}

/// One line of `datapath` in report.json: medians over rounds, then the
/// details.
#[derive(Serialize)]
pub struct Entry {
    pub engine: &'static str,
    pub rules: usize,
    pub rr_tps: f64,
    pub crr_cps: f64,
    pub stream_gbps: f64,
    pub rtt_p50_us: f64,
    pub rtt_p99_us: f64,
    pub install_s: f64,
    pub rounds: usize,
    pub detail: Detail,
}

#[derive(Serialize)]
pub struct Detail {
    pub rr_tps: Figure,
    pub crr_cps: Figure,
    pub stream_gbps: Figure,
    pub rtt_p50_us: Figure,
    pub rtt_p99_us: Figure,
    /// Every round's raw sample, in round order.
    pub samples: Vec<Sample>,
}

pub fn entries(series: &[Series]) -> Vec<Entry> {
    series
        .iter()
        .map(|s| {
            let base = series
                .iter()
                .find(|b| b.engine == "none" && b.rules == s.rules)
                .map(|b| b.rounds.as_slice());
            let f = |m: fn(&Sample) -> f64| figure(&s.rounds, base, m);
            let detail = Detail {
                rr_tps: f(|x| x.rr_tps),
                crr_cps: f(|x| x.crr_cps),
                stream_gbps: f(|x| x.stream_gbps),
                rtt_p50_us: f(|x| x.rtt_p50_us),
                rtt_p99_us: f(|x| x.rtt_p99_us),
                samples: s.rounds.clone(),
            };
            Entry {
                engine: s.engine,
                rules: s.rules,
                rr_tps: detail.rr_tps.median,
                crr_cps: detail.crr_cps.median,
                stream_gbps: detail.stream_gbps.median,
                rtt_p50_us: detail.rtt_p50_us.median,
                rtt_p99_us: detail.rtt_p99_us.median,
                install_s: median(&s.install_s),
                rounds: s.rounds.len(),
                detail,
            }
        })
        .collect()
}

/// `value (ratio x) ±spread%`.
fn cell(f: &Figure, decimals: usize) -> String {
    let ratio = f
        .ratio_to_none
        .map(|r| format!(" ({r:.2}x)"))
        .unwrap_or_default();
    format!("{:.decimals$}{ratio} ±{:.0}%", f.median, f.spread_pct)
}

pub fn table(entries: &[Entry]) -> String {
    let header = [
        "rules",
        "engine",
        "RR trans/s",
        "CRR conn/s",
        "stream Gbit/s",
        "p50 us",
        "p99 us",
        "install s",
    ];
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.rules.to_string(),
                e.engine.to_string(),
                cell(&e.detail.rr_tps, 0),
                cell(&e.detail.crr_cps, 0),
                cell(&e.detail.stream_gbps, 2),
                cell(&e.detail.rtt_p50_us, 1),
                cell(&e.detail.rtt_p99_us, 1),
                format!("{:.2}", e.install_s),
            ]
        })
        .collect();
    let mut out = crate::figures::columns(&header, &rows, true);
    out.push_str(
        "\nmedian over rounds (ratio to `none` of the same round, median over rounds) ±(max-min)/median\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_come_from_the_same_rule_count_baseline() {
        let s = |rr: f64| Sample {
            rr_tps: rr,
            crr_cps: 1.0,
            stream_gbps: 1.0,
            rtt_p50_us: 1.0,
            rtt_p99_us: 1.0,
        };
        let series = vec![
            Series {
                engine: "none",
                rules: 10,
                rounds: vec![s(100.0), s(120.0)],
                install_s: vec![0.0, 0.0],
                extras: Vec::new(),
            },
            Series {
                engine: "iptables",
                rules: 10,
                rounds: vec![s(50.0), s(60.0)],
                install_s: vec![0.1, 0.3],
                extras: Vec::new(),
            },
        ];
        let e = entries(&series);
        assert_eq!(e[1].detail.rr_tps.ratio_to_none, Some(0.5));
        assert_eq!(e[1].rr_tps, 55.0);
        assert!((e[1].install_s - 0.2).abs() < 1e-9);
        let t = table(&e);
        assert!(t.contains("iptables"));
        assert!(t.contains("(0.50x)"));
    }
}
