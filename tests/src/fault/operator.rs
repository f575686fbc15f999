//! What an operator sees of a fault: the agent's `/healthz` and `/readyz`
//! answers over time, its metrics, the Events the API server recorded and
//! the agent's log lines; and the table row each fault test prints
//! (`FAULT-ROW | fault | wrongly allowed | wrongly dropped | reported`,
//! collected with `--nocapture`).

use super::{FaultNode, Tally};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// `text` without its ANSI color sequences (`ESC [ ... m`).
pub fn strip_colors(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| *c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

/// `/healthz` and `/readyz` of the agent at `addr` as `HEALTHZ/READYZ`
/// status codes, or `down` when nothing answers.
pub fn health(node: &FaultNode, addr: SocketAddr) -> String {
    match (node.get(addr, "/healthz"), node.get(addr, "/readyz")) {
        (None, None) => "down".to_string(),
        (h, r) => {
            let code = |a: Option<(u16, String)>| a.map_or("-".to_string(), |(c, _)| c.to_string());
            format!("{}/{}", code(h), code(r))
        }
    }
}

/// The samples of the agent's `/metrics` (name with labels -> value);
/// empty when it does not answer.
pub fn metrics(node: &FaultNode, addr: SocketAddr) -> BTreeMap<String, f64> {
    let Some((200, body)) = node.get(addr, "/metrics") else {
        return BTreeMap::new();
    };
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// One sample (0 when absent).
pub fn metric(node: &FaultNode, addr: SocketAddr, name: &str) -> f64 {
    metrics(node, addr).get(name).copied().unwrap_or(0.0)
}

/// The first line of `log` containing `needle`, from its message on (no
/// timestamp, level or target), without fields whose value is a path.
pub fn log_line(log: &str, needle: &str) -> Option<String> {
    let line = log.lines().find(|l| l.contains(needle))?;
    // `2025-01-01T00:00:00.000000Z  WARN target: message field=value`.
    let message = ["ERROR ", "WARN ", "INFO "]
        .iter()
        .find_map(|lvl| line.split_once(lvl).map(|(_, rest)| rest))
        .and_then(|rest| rest.split_once(": ").map(|(_, m)| m))
        .unwrap_or(line);
    let kept: Vec<&str> = message
        .split_whitespace()
        .filter(|w| !w.contains("=/"))
        .collect();
    Some(kept.join(" "))
}

/// The counts of the first round `log` reports (`flipped=N ... failed=N`
/// of its first `programmed generation=` line).
#[track_caller]
pub fn programmed(log: &str) -> String {
    let line = log_line(log, "programmed generation=")
        .unwrap_or_else(|| panic!("no programming round in:\n{log}"));
    line.split_whitespace()
        .filter(|w| w.starts_with("flipped=") || w.starts_with("failed="))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What the operator saw, collected by a test as it checks it.
#[derive(Debug, Default)]
pub struct Operator {
    seen: Vec<String>,
    /// This run's directories and what the table calls them: the lab's
    /// as `LAB`, the tmpfs standing for `/run/palisade` as that.
    redact: Vec<(String, &'static str)>,
}

/// Longest log message quoted in the table.
const QUOTE: usize = 120;

impl Operator {
    pub fn new(node: &FaultNode) -> Operator {
        let mut redact = vec![(node.lab.dir().display().to_string(), "LAB")];
        if let Some(run) = &node.run {
            redact.insert(0, (run.dir().display().to_string(), "/run/palisade"));
        }
        Operator {
            seen: Vec::new(),
            redact,
        }
    }

    /// Records one thing the operator saw.
    pub fn saw(&mut self, what: impl Into<String>) {
        let what = self.redacted(what.into());
        self.seen.push(what);
    }

    fn redacted(&self, mut text: String) -> String {
        for (dir, name) in &self.redact {
            text = text.replace(dir, name);
        }
        text
    }

    /// Checks that `log` has a line with `needle`; records its message
    /// (shortened) and returns it whole.
    #[track_caller]
    pub fn log(&mut self, log: &str, needle: &str) -> String {
        let line = log_line(log, needle)
            .unwrap_or_else(|| panic!("no log line with {needle:?} in:\n{log}"));
        let mut quoted = self.redacted(line.clone());
        if quoted.len() > QUOTE {
            let cut = (0..=QUOTE).rev().find(|i| quoted.is_char_boundary(*i));
            quoted.truncate(cut.unwrap_or(0));
            quoted.push_str("...");
        }
        self.saw(format!("log \"{quoted}\""));
        line
    }

    pub fn cell(&self) -> String {
        self.seen.join("; ")
    }
}

/// Prints the fault's table row (and the streams' details).
pub fn row(fault: &str, tally: &Tally, operator: &Operator) {
    let allowed = tally.wrongly_allowed().to_string();
    row_cells(fault, &allowed, &tally.dropped_cell(), operator);
    eprintln!("{fault}: {tally:?}");
}

/// A row whose traffic cells say something else than the streams' counts.
pub fn row_cells(fault: &str, allowed: &str, dropped: &str, operator: &Operator) {
    println!(
        "FAULT-ROW | {fault} | {allowed} | {dropped} | {} |",
        operator.cell()
    );
}
