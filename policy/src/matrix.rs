//! The reachability matrix: the oracle's verdict for every ordered pair of
//! distinct pods and every probed port, in the shape the lab compares its
//! measurements against.

use crate::cluster::{Action, ClusterRuleRef, Tier};
use crate::model::{DirVerdict, Flow, Model, Protocol, Verdict};
use crate::oracle::evaluate;
use crate::query::Family;
use std::fmt;
use std::str::FromStr;

/// A probed destination port, written `80/TCP`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProbePort {
    pub port: u16,
    pub protocol: Protocol,
}

impl fmt::Display for ProbePort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, self.protocol.name())
    }
}

impl FromStr for Protocol {
    type Err = String;

    /// `TCP`, `UDP` or `SCTP`, any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "TCP" => Ok(Protocol::Tcp),
            "UDP" => Ok(Protocol::Udp),
            "SCTP" => Ok(Protocol::Sctp),
            _ => Err(format!("unknown protocol {s:?}: expected TCP, UDP or SCTP")),
        }
    }
}

impl FromStr for ProbePort {
    type Err = String;

    /// `PORT/PROTO`; a bare `PORT` is TCP.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (port, protocol) = match s.split_once('/') {
            Some((p, proto)) => (p, proto.parse()?),
            None => (s, Protocol::Tcp),
        };
        let port: u16 = port
            .trim()
            .parse()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("bad port in {s:?}: expected 1-65535"))?;
        Ok(ProbePort { port, protocol })
    }
}

/// One cell of the matrix. Serialized as
/// `{"from":"x/a","to":"y/b","port":80,"protocol":"TCP","allowed":true}`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MatrixEntry {
    pub from: String,
    pub to: String,
    pub port: u16,
    #[serde(with = "protocol_name")]
    pub protocol: Protocol,
    pub allowed: bool,
}

/// Protocols as Kubernetes spells them (`TCP`), not as Rust does.
mod protocol_name {
    use crate::model::Protocol;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(p: &Protocol, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(p.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Protocol, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A matrix entry with its audit mark: `would_deny` when the packet
/// passes only because the isolation it meets is audit-only (see
/// `Verdict::would_deny`), and the oracle's verdict it was read from
/// (`None` for a measured entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatrixCell {
    pub entry: MatrixEntry,
    pub would_deny: bool,
    pub verdict: Option<Verdict>,
}

impl MatrixCell {
    /// The ClusterNetworkPolicy rules that decided the cell: for a denied
    /// cell the refusing side's Deny (egress first: a packet its source
    /// refuses never reaches the destination), for an allowed one every
    /// side a cluster Accept allowed. Empty when NetworkPolicy (or no
    /// policy) decided.
    pub fn cluster_rules(&self) -> Vec<&ClusterRuleRef> {
        let Some(v) = &self.verdict else {
            return Vec::new();
        };
        let sides = [&v.egress, &v.ingress];
        if !self.entry.allowed {
            return match sides.into_iter().find(|s| !s.allows()) {
                Some(DirVerdict::Cluster(r)) => vec![r],
                _ => Vec::new(),
            };
        }
        sides
            .into_iter()
            .filter_map(|s| match s {
                DirVerdict::Cluster(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    /// The cell's mark in a table (see [`MARKS`]).
    pub fn mark(&self) -> char {
        let cluster = self.cluster_rules();
        let by = |tier, action| cluster.iter().any(|r| r.tier == tier && r.action == action);
        match (self.entry.allowed, self.would_deny) {
            (true, true) => '~',
            (true, false) if by(Tier::Admin, Action::Accept) => '+',
            (true, false) => '.',
            (false, _) if by(Tier::Admin, Action::Deny) => 'D',
            (false, _) if by(Tier::Baseline, Action::Deny) => 'B',
            (false, _) => 'X',
        }
    }
}

/// What each mark of a table means, in the order the legend lists them.
pub const MARKS: [(char, &str); 7] = [
    ('.', "allowed"),
    (
        '+',
        "allowed, a side of it by an Admin ClusterNetworkPolicy Accept (whatever NetworkPolicy says)",
    ),
    ('~', "allowed only because the isolation is in audit mode (would deny)"),
    ('X', "denied by NetworkPolicy (isolated, no rule allows it)"),
    ('D', "denied by an Admin ClusterNetworkPolicy Deny"),
    ('B', "denied by a Baseline ClusterNetworkPolicy Deny"),
    ('-', "a pod and itself (not probed)"),
];

/// The legend of [`render_cells`]' marks, one line each.
pub fn render_legend() -> String {
    MARKS
        .iter()
        .map(|(m, what)| format!("{m} {what}\n"))
        .collect()
}

/// Every ordered pair of distinct pods having an address of `family`
/// (sorted by `namespace/name`), for each port in the given order: port
/// first, then source, then destination.
pub fn matrix(model: &Model, ports: &[ProbePort], family: Family) -> Vec<MatrixEntry> {
    matrix_cells(model, ports, family)
        .into_iter()
        .map(|c| c.entry)
        .collect()
}

/// [`matrix`], each entry with its audit mark.
pub fn matrix_cells(model: &Model, ports: &[ProbePort], family: Family) -> Vec<MatrixCell> {
    let mut pods: Vec<_> = model
        .pods
        .iter()
        .filter_map(|p| p.ip(family).map(|ip| (p.key(), ip)))
        .collect();
    pods.sort();
    let mut out = Vec::new();
    for probe in ports {
        for (from, src) in &pods {
            for (to, dst) in &pods {
                if from == to {
                    continue;
                }
                let flow = Flow {
                    src: *src,
                    dst: *dst,
                    proto: probe.protocol.number(),
                    dport: probe.port,
                };
                let verdict = evaluate(model, &flow);
                out.push(MatrixCell {
                    entry: MatrixEntry {
                        from: from.clone(),
                        to: to.clone(),
                        port: probe.port,
                        protocol: probe.protocol,
                        allowed: verdict.allowed(),
                    },
                    would_deny: verdict.would_deny(),
                    verdict: Some(verdict),
                });
            }
        }
    }
    out
}

/// Truth tables, one per port in order of first appearance: sources down,
/// destinations across, `.` allowed, `X` denied, `-` not probed (a pod to
/// itself).
pub fn render_table(entries: &[MatrixEntry]) -> String {
    let cells: Vec<MatrixCell> = entries
        .iter()
        .map(|e| MatrixCell {
            entry: e.clone(),
            would_deny: false,
            verdict: None,
        })
        .collect();
    render_cells(&cells)
}

/// [`render_table`] with the oracle's marks: `~` for a packet that passes
/// only because audit-mode isolation does not drop (it would be denied if
/// the audit policies were enforced), and the marks of the
/// ClusterNetworkPolicy tiers ([`MARKS`]).
pub fn render_cells(cells: &[MatrixCell]) -> String {
    let mut probes: Vec<ProbePort> = Vec::new();
    let mut pods: Vec<&str> = Vec::new();
    for MatrixCell { entry: e, .. } in cells {
        let probe = ProbePort {
            port: e.port,
            protocol: e.protocol,
        };
        if !probes.contains(&probe) {
            probes.push(probe);
        }
        for p in [e.from.as_str(), e.to.as_str()] {
            if !pods.contains(&p) {
                pods.push(p);
            }
        }
    }
    pods.sort();
    // Rows are padded to the longest name, each column to its own.
    let width = pods.iter().map(|p| p.len()).max().unwrap_or(1);

    let mut out = String::new();
    for probe in probes {
        out.push_str(&format!("{probe}\n{:width$}", "-"));
        for to in &pods {
            out.push_str(&format!(" {to}"));
        }
        out.push('\n');
        for from in &pods {
            let mut row = format!("{from:width$}");
            for to in &pods {
                let cell = cells
                    .iter()
                    .find(|c| {
                        let e = &c.entry;
                        e.from == *from
                            && e.to == *to
                            && e.port == probe.port
                            && e.protocol == probe.protocol
                    })
                    .map_or('-', MatrixCell::mark);
                // Centre the mark under its column's name.
                let w = to.len();
                let left = (w - 1) / 2;
                row.push_str(&format!(
                    " {:left$}{cell}{:right$}",
                    "",
                    "",
                    right = w - 1 - left
                ));
            }
            out.push_str(row.trim_end());
            out.push('\n');
        }
    }
    out
}
