//! The workload as the best a netfilter design can do: per isolated pod,
//! one lookup of `ip saddr . meta l4proto . th dport` in a hash set of
//! exact (pod address, protocol, port) elements, and one in an interval
//! set for ipBlocks and port ranges; a verdict map dispatching by output
//! interface; established and related packets accepted before anything.
//! Everything lives in one `ip` table, removed as a whole.

use crate::workload::{Sources, Workload};
use std::collections::BTreeSet;
use std::fmt::Write;
use std::net::Ipv4Addr;

pub const TABLE: &str = "palisade_bench";

/// Port ranges up to this span become exact elements (one per port):
/// a hash lookup beats an interval lookup.
const EXPAND_SPAN: u16 = 64;

pub struct Rendered {
    /// `nft -f` input.
    pub script: String,
    /// Elements across all sets.
    pub elements: usize,
}

pub fn render(w: &Workload, host_veth: &dyn Fn(&str) -> String) -> Rendered {
    let mut sets = String::new();
    let mut chains = String::new();
    let mut vmap = Vec::new();
    let mut elements = 0;
    for (k, (pod, pols)) in w.isolated().into_iter().enumerate() {
        let mut exact: BTreeSet<String> = BTreeSet::new();
        let mut ranges: BTreeSet<String> = BTreeSet::new();
        for pol in pols {
            for rule in &pol.rules {
                let src = w.sources(&pol.namespace, &rule.peer);
                let single_ips = matches!(src, Sources::Ips(_));
                for (a, b) in src.intervals() {
                    for p in &rule.ports {
                        let proto = p.proto.lower();
                        if single_ips && p.last - p.first < EXPAND_SPAN {
                            for port in p.first..=p.last {
                                exact.insert(format!("{} . {proto} . {port}", Ipv4Addr::from(a)));
                            }
                        } else {
                            let port = if p.first == p.last {
                                p.first.to_string()
                            } else {
                                format!("{}-{}", p.first, p.last)
                            };
                            let addr = if a == b {
                                Ipv4Addr::from(a).to_string()
                            } else {
                                format!("{}-{}", Ipv4Addr::from(a), Ipv4Addr::from(b))
                            };
                            ranges.insert(format!("{addr} . {proto} . {port}"));
                        }
                    }
                }
            }
        }
        elements += exact.len() + ranges.len();
        let iface = host_veth(&pod.key());
        let chain = format!("to_{k}");
        vmap.push(format!("\"{iface}\" : jump {chain}"));
        let _ = writeln!(chains, "  chain {chain} {{");
        for (name, flags, elems) in [
            (format!("exact_{k}"), "", &exact),
            (format!("ranges_{k}"), "flags interval; ", &ranges),
        ] {
            if elems.is_empty() {
                continue;
            }
            let list: Vec<&str> = elems.iter().map(String::as_str).collect();
            let _ = writeln!(
                sets,
                "  set {name} {{ type ipv4_addr . inet_proto . inet_service; {flags}elements = {{ {} }} }}",
                list.join(", ")
            );
            let _ = writeln!(
                chains,
                "    ip saddr . meta l4proto . th dport @{name} accept"
            );
        }
        let _ = writeln!(chains, "    drop\n  }}");
    }

    let mut script = format!("table ip {TABLE} {{\n");
    script.push_str(&sets);
    let _ = writeln!(script, "  map to_pod {{ type ifname : verdict;");
    if !vmap.is_empty() {
        let _ = writeln!(script, "    elements = {{ {} }}", vmap.join(", "));
    }
    script.push_str("  }\n");
    script.push_str(&chains);
    script.push_str(
        "  chain forward {\n    type filter hook forward priority filter; policy accept;\n    \
         ct state established,related accept\n    ct state invalid drop\n    \
         oifname vmap @to_pod\n  }\n}\n",
    );
    Rendered { script, elements }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_is_an_exact_element_and_blocks_are_ranges() {
        let w = crate::workload::Workload::generate(100);
        let r = render(&w, &|_| "cali0".into());
        assert!(r.script.contains("10.64.0.3 . tcp . 5201"));
        assert!(r.script.contains("10.64.0.3 . tcp . 5203"));
        assert!(r.script.contains("172.16.0.0-172.16.0.127 . tcp . "));
        assert!(r.script.contains("\"cali0\" : jump to_0"));
        assert!(r.elements > 100);
    }

    #[test]
    fn no_policy_has_no_pod_chain() {
        let r = render(&crate::workload::Workload::generate(0), &|_| "cali0".into());
        assert!(!r.script.contains("jump"));
        assert_eq!(r.elements, 0);
    }
}
