//! The workload as iptables-based plugins program it (Calico's and
//! kube-router's layout):
//!
//! - `FORWARD` jumps to `PAL-FORWARD`, which accepts established and
//!   related packets first (conntrack: only a connection's first packet
//!   walks the policy), drops invalid ones, and dispatches packets going
//!   to a pod interface (`-o cali+`) to `PAL-TO-WL`;
//! - `PAL-TO-WL` has one jump per isolated pod, by interface, to the pod's
//!   chain `PAL-TW-<iface>`, which jumps to one chain per policy selecting
//!   the pod (`PAL-PI-<n>`) and ends with a DROP;
//! - a policy chain has one rule per policy rule and port, each matching
//!   the peer's ipset (`hash:ip` of the selected pods' addresses, or
//!   `hash:net` of an ipBlock with its exceptions as `nomatch` entries).
//!   Identical peer sets share one ipset, as plugins share them per selector.
//!
//! Rendered as `ipset restore` and `iptables-restore --noflush` input, and
//! removed again without touching anything else of the namespace.

use crate::workload::{Sources, Workload};
use std::collections::BTreeMap;
use std::fmt::Write;

pub const CHAIN_FORWARD: &str = "PAL-FORWARD";
const CHAIN_TO_WL: &str = "PAL-TO-WL";
/// Every ipset name starts with this (removal finds them by it).
pub const SET_PREFIX: &str = "pal-";

pub struct Rendered {
    /// `ipset restore` input.
    pub ipsets: String,
    /// `iptables-restore --noflush` input (filter table).
    pub rules: String,
    /// `ipset destroy` names, for removal.
    pub set_names: Vec<String>,
    /// Chains created, for removal (after `PAL-FORWARD` is unhooked).
    pub chains: Vec<String>,
    /// Rule count in the policy chains (one per rule and port).
    pub policy_rules: usize,
}

pub fn render(w: &Workload, host_veth: &dyn Fn(&str) -> String) -> Rendered {
    let mut sets: BTreeMap<Sources, String> = BTreeMap::new();
    let mut ipsets = String::new();
    let mut set_of = |s: Sources| -> String {
        let n = sets.len();
        sets.entry(s.clone())
            .or_insert_with(|| {
                let name = format!("{SET_PREFIX}{n}");
                match &s {
                    Sources::Ips(ips) => {
                        let _ = writeln!(ipsets, "create {name} hash:ip family inet");
                        for ip in ips {
                            let _ = writeln!(ipsets, "add {name} {ip}");
                        }
                    }
                    Sources::Block { cidr, except } => {
                        let _ = writeln!(ipsets, "create {name} hash:net family inet");
                        let _ = writeln!(ipsets, "add {name} {cidr}");
                        for e in except {
                            let _ = writeln!(ipsets, "add {name} {e} nomatch");
                        }
                    }
                }
                name
            })
            .clone()
    };

    let mut chains = vec![CHAIN_FORWARD.to_string(), CHAIN_TO_WL.to_string()];
    let mut body = String::new();
    let mut policy_rules = 0;
    let mut policy_chain: BTreeMap<(String, String), String> = BTreeMap::new();
    for (n, pol) in w.policies.iter().enumerate() {
        let chain = format!("PAL-PI-{n}");
        policy_chain.insert((pol.namespace.clone(), pol.name.clone()), chain.clone());
        chains.push(chain.clone());
        for rule in &pol.rules {
            let set = set_of(w.sources(&pol.namespace, &rule.peer));
            for p in &rule.ports {
                let dport = if p.first == p.last {
                    p.first.to_string()
                } else {
                    format!("{}:{}", p.first, p.last)
                };
                let _ = writeln!(
                    body,
                    "-A {chain} -p {proto} -m set --match-set {set} src -m {proto} --dport {dport} -j ACCEPT",
                    proto = p.proto.lower()
                );
                policy_rules += 1;
            }
        }
    }
    let mut dispatch = String::new();
    for (pod, pols) in w.isolated() {
        let iface = host_veth(&pod.key());
        let chain = format!("PAL-TW-{iface}");
        chains.push(chain.clone());
        let _ = writeln!(dispatch, "-A {CHAIN_TO_WL} -o {iface} -j {chain}");
        for pol in pols {
            let target = &policy_chain[&(pol.namespace.clone(), pol.name.clone())];
            let _ = writeln!(dispatch, "-A {chain} -j {target}");
        }
        let _ = writeln!(dispatch, "-A {chain} -j DROP");
    }

    let mut rules = String::from("*filter\n");
    for c in &chains {
        let _ = writeln!(rules, ":{c} - [0:0]");
    }
    let _ = writeln!(
        rules,
        "-A {CHAIN_FORWARD} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"
    );
    let _ = writeln!(
        rules,
        "-A {CHAIN_FORWARD} -m conntrack --ctstate INVALID -j DROP"
    );
    let _ = writeln!(rules, "-A {CHAIN_FORWARD} -o cali+ -j {CHAIN_TO_WL}");
    rules.push_str(&dispatch);
    rules.push_str(&body);
    let _ = writeln!(rules, "-I FORWARD 1 -j {CHAIN_FORWARD}");
    rules.push_str("COMMIT\n");

    Rendered {
        ipsets,
        rules,
        set_names: sets.into_values().collect(),
        chains,
        policy_rules,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_per_rule_and_port_and_shared_sets() {
        let w = crate::workload::Workload::generate(100);
        let r = render(&w, &|k| format!("cali{:011x}", k.len()));
        let ports: usize = w
            .policies
            .iter()
            .flat_map(|p| &p.rules)
            .map(|r| r.ports.len())
            .sum();
        assert_eq!(r.policy_rules, ports);
        assert_eq!(r.rules.matches(" -j ACCEPT").count(), ports + 1);
        assert!(
            r.set_names.len() < 100,
            "sets are shared: {}",
            r.set_names.len()
        );
        assert!(r.rules.contains("-A PAL-TW-cali"));
        assert!(r.rules.trim_end().ends_with("COMMIT"));
    }

    #[test]
    fn no_policy_leaves_only_the_base_chains() {
        let w = crate::workload::Workload::generate(0);
        let r = render(&w, &|_| "cali0".into());
        assert_eq!(r.policy_rules, 0);
        assert!(r.ipsets.is_empty());
        assert_eq!(r.chains, vec![CHAIN_FORWARD, CHAIN_TO_WL]);
    }
}
