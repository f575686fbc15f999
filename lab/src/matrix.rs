//! Comparing a measured matrix with the oracle's (both are
//! `palisade_policy::MatrixEntry` lists, so they compare entry by entry).

use palisade_policy::MatrixEntry;
use std::collections::BTreeMap;

/// One disagreement between two matrices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    pub from: String,
    pub to: String,
    pub port: u16,
    pub protocol: String,
    /// `None`: the flow is missing from that matrix.
    pub measured: Option<bool>,
    pub expected: Option<bool>,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = |b: Option<bool>| match b {
            Some(true) => "allowed",
            Some(false) => "denied",
            None => "absent",
        };
        write!(
            f,
            "{} -> {} {}/{}: measured {}, expected {}",
            self.from,
            self.to,
            self.port,
            self.protocol,
            v(self.measured),
            v(self.expected)
        )
    }
}

/// Entries whose verdicts differ, or that only one side has.
pub fn diff(measured: &[MatrixEntry], expected: &[MatrixEntry]) -> Vec<Difference> {
    let index = |m: &[MatrixEntry]| -> BTreeMap<(String, String, u16, String), bool> {
        m.iter()
            .map(|e| {
                (
                    (
                        e.from.clone(),
                        e.to.clone(),
                        e.port,
                        e.protocol.name().to_string(),
                    ),
                    e.allowed,
                )
            })
            .collect()
    };
    let (m, e) = (index(measured), index(expected));
    let mut keys: Vec<_> = m.keys().chain(e.keys()).cloned().collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|k| {
            let (mv, ev) = (m.get(&k).copied(), e.get(&k).copied());
            (mv != ev).then_some(Difference {
                from: k.0,
                to: k.1,
                port: k.2,
                protocol: k.3,
                measured: mv,
                expected: ev,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_policy::Protocol;

    fn entry(port: u16, protocol: Protocol, allowed: bool) -> MatrixEntry {
        MatrixEntry {
            from: "x/a".into(),
            to: "y/b".into(),
            port,
            protocol,
            allowed,
        }
    }

    #[test]
    fn diff_reports_changed_and_missing() {
        let m = vec![
            entry(80, Protocol::Tcp, true),
            entry(81, Protocol::Tcp, false),
        ];
        let e = vec![
            entry(80, Protocol::Tcp, false),
            entry(80, Protocol::Udp, true),
        ];
        let shown: Vec<String> = diff(&m, &e).iter().map(|d| d.to_string()).collect();
        assert_eq!(
            shown,
            vec![
                "x/a -> y/b 80/TCP: measured allowed, expected denied",
                "x/a -> y/b 80/UDP: measured absent, expected allowed",
                "x/a -> y/b 81/TCP: measured denied, expected absent",
            ]
        );
        assert!(diff(&m, &m).is_empty());
    }
}
