//! kube-proxy emulation: a lab node DNATs Service ClusterIPs to their
//! backends with nftables, the way kube-proxy's nftables mode does, so the
//! datapath meets ClusterIP traffic as it does in a cluster (the client's
//! hook sees the ClusterIP, the backend's hook the backend's address).
//!
//! Tables `ip palisade_lab_kube_proxy` and `ip6 palisade_lab_kube_proxy`
//! in the node namespace: a `services` chain with one rule per ClusterIP
//! and port,
//!
//! ```text
//! ip daddr 10.96.0.10 tcp dport 80 numgen random mod 2 vmap { 0 : jump ep0, 1 : jump ep1 }
//! ```
//!
//! jumped to from nat chains `prerouting` (hook prerouting, priority
//! dstnat: pods' connections) and `output` (hook output: the node's own,
//! as kube-proxy DNATs host-network clients too), and one chain per
//! backend, `meta l4proto tcp counter dnat to 10.0.0.1:8080`. As in
//! kube-proxy, a chain per endpoint: its counter says how many connections
//! went to that backend (a nat chain sees only the first packet of a
//! connection), which is how tests tell which backend DNAT picked. A port
//! without backends gets no rule (its packets route nowhere and are lost;
//! kube-proxy would reject them). Masquerading (`masquerade`) adds marking
//! rules before the DNAT ones and a `postrouting` chain. Installing
//! replaces the whole table in one transaction (idempotent); the tables go
//! with the node namespace when the lab is torn down.

mod masquerade;

pub use masquerade::{Masquerade, MASQUERADE_MARK};

use crate::cluster::Cluster;
use crate::cluster_spec::Cidr;
use crate::lab::Lab;
use anyhow::{bail, Context, Result};
use palisade_policy::{Family, Model, Protocol};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};

/// The name of both tables (`ip` and `ip6` families).
pub const KUBE_PROXY_TABLE: &str = "palisade_lab_kube_proxy";

/// One ClusterIP and port, with where DNAT sends it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRule {
    /// The Service, `namespace/name`.
    pub service: String,
    pub cluster_ip: IpAddr,
    pub protocol: Protocol,
    pub port: u16,
    /// Backend addresses (of the ClusterIP's family) and target ports.
    pub backends: Vec<SocketAddr>,
}

/// A DNAT destination: ClusterIP, protocol and port, and one backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DnatTarget {
    pub cluster_ip: IpAddr,
    pub protocol: Protocol,
    pub port: u16,
    pub backend: SocketAddr,
}

/// The rules kube-proxy would program for the model's Services: every
/// ClusterIP and port, with the backends of that port having an address
/// of the ClusterIP's family (`Model::backends`).
pub fn service_rules(model: &Model) -> Vec<ServiceRule> {
    let mut rules = Vec::new();
    for svc in &model.services {
        for cluster_ip in &svc.cluster_ips {
            let family = Family::of(cluster_ip);
            for port in &svc.ports {
                let backends = model
                    .backends(svc, port)
                    .iter()
                    .filter_map(|b| b.pod.ip(family).map(|ip| SocketAddr::new(ip, b.port)))
                    .collect();
                rules.push(ServiceRule {
                    service: svc.key(),
                    cluster_ip: *cluster_ip,
                    protocol: port.protocol,
                    port: port.port,
                    backends,
                });
            }
        }
    }
    rules
}

/// nft's keyword for a protocol's header (`tcp dport ...`).
fn nft_proto(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

/// The chain of backend `index`.
fn endpoint_chain(index: usize) -> String {
    format!("ep{index}")
}

/// The backends in chain order: what `render` numbers `ep0`, `ep1`, ...
fn targets(rules: &[ServiceRule], family: Family) -> Vec<DnatTarget> {
    rules
        .iter()
        .filter(|r| Family::of(&r.cluster_ip) == family)
        .flat_map(|r| {
            r.backends.iter().map(|b| DnatTarget {
                cluster_ip: r.cluster_ip,
                protocol: r.protocol,
                port: r.port,
                backend: *b,
            })
        })
        .collect()
}

/// The nft script replacing the table of `family` with `rules` (those of
/// its family), masquerading as `masq` says; `pod_prefixes` stand for the
/// cluster CIDRs (see `masquerade`). Creating the table first makes the
/// delete valid when it did not exist, and the whole script is one
/// transaction.
pub fn render(
    rules: &[ServiceRule],
    family: Family,
    masq: Masquerade,
    pod_prefixes: &[Cidr],
) -> Result<String> {
    let (fam, match_addr) = match family {
        Family::V4 => ("ip", "ip daddr"),
        Family::V6 => ("ip6", "ip6 daddr"),
    };
    let pod_prefixes = masquerade::merge(pod_prefixes.iter().copied(), family);
    let table = format!("{fam} {KUBE_PROXY_TABLE}");
    let mut out = format!("table {table}\ndelete table {table}\ntable {table} {{\n");
    // Chains that are jumped to come first.
    out.push_str(&masquerade::chains());
    let mut chains = String::new();
    let mut services = String::new();
    let mut index = 0;
    for r in rules.iter().filter(|r| Family::of(&r.cluster_ip) == family) {
        if r.backends.is_empty() {
            continue;
        }
        if let Some(b) = r.backends.iter().find(|b| Family::of(&b.ip()) != family) {
            bail!(
                "Service {} {} {}/{}: backend {b} is not of the ClusterIP's family",
                r.service,
                r.cluster_ip,
                r.port,
                r.protocol.name()
            );
        }
        let matcher = format!(
            "{match_addr} {} {} dport {}",
            r.cluster_ip,
            nft_proto(r.protocol),
            r.port
        );
        // Marking first: the DNAT rule's jump never returns.
        if let Some(mark) = masquerade::service_rule(masq, family, &matcher, &pod_prefixes) {
            services.push_str(&format!("    {mark}\n"));
        }
        let arms: Vec<String> = (0..r.backends.len())
            .map(|k| format!("{k} : jump {}", endpoint_chain(index + k)))
            .collect();
        services.push_str(&format!(
            "    {matcher} numgen random mod {} vmap {{ {} }}\n",
            r.backends.len(),
            arms.join(", ")
        ));
        for b in &r.backends {
            chains.push_str(&format!("  chain {} {{\n", endpoint_chain(index)));
            if let Some(mark) = masquerade::endpoint_rule(masq, b.ip()) {
                chains.push_str(&format!("    {mark}\n"));
            }
            // `SocketAddr` prints IPv6 as `[addr]:port`, as nft wants it.
            // A port rewrite needs the protocol matched in the same rule.
            chains.push_str(&format!(
                "    meta l4proto {} counter dnat to {b}\n  }}\n",
                nft_proto(r.protocol)
            ));
            index += 1;
        }
    }
    out.push_str(&chains);
    out.push_str("  chain services {\n");
    out.push_str(&services);
    out.push_str("  }\n");
    // nft names the -100 priority `dstnat` only for the prerouting hook.
    for (hook, priority) in [("prerouting", "dstnat"), ("output", "-100")] {
        out.push_str(&format!(
            "  chain {hook} {{\n    type nat hook {hook} priority {priority}; policy accept;\n    jump services\n  }}\n"
        ));
    }
    out.push_str("}\n");
    Ok(out)
}

/// Every prefix pods of `lab` take addresses from: host-local's subnets
/// and each pod's own address.
fn pod_prefixes(lab: &Lab) -> Vec<Cidr> {
    let ranges = lab.ipam_ranges().iter().map(|r| r.subnet);
    let pods = lab.pods().iter().flat_map(|p| {
        p.spec
            .ips
            .iter()
            .map(|ip| Cidr::new(*ip, if ip.is_ipv4() { 32 } else { 128 }))
    });
    ranges.chain(pods).collect()
}

/// Runs `nft` with `args` in namespace `netns`, `script` on its stdin.
fn nft(netns: &str, args: &[&str], script: Option<&str>) -> Result<String> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, "nft"])
        .args(args)
        .stdin(if script.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running `nft` (is nftables installed?)")?;
    if let Some(script) = script {
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(script.as_bytes())
            .context("feeding `nft`")?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "`nft {}` in netns {netns} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            script
                .map(|s| format!("\nscript:\n{s}"))
                .unwrap_or_default()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Lab {
    /// Programs the node's DNAT for `rules` (replacing what an earlier call
    /// installed), both families, masquerading as kube-proxy does by
    /// default (`Masquerade::Hairpin`). Checks that connection tracking
    /// works in the node namespace: NAT, and the replies' reverse
    /// translation, depend on it.
    pub fn install_kube_proxy(&self, rules: &[ServiceRule]) -> Result<()> {
        self.install_kube_proxy_with(rules, Masquerade::default())
    }

    /// `install_kube_proxy` with the masquerade mode `masq`; the cluster
    /// CIDRs of `Masquerade::Hairpin` are this lab's pods' prefixes.
    pub fn install_kube_proxy_with(&self, rules: &[ServiceRule], masq: Masquerade) -> Result<()> {
        self.install_kube_proxy_for(rules, masq, &pod_prefixes(self))
    }

    fn install_kube_proxy_for(
        &self,
        rules: &[ServiceRule],
        masq: Masquerade,
        pod_prefixes: &[Cidr],
    ) -> Result<()> {
        let netns = self.node_netns();
        let script = format!(
            "{}{}",
            render(rules, Family::V4, masq, pod_prefixes)?,
            render(rules, Family::V6, masq, pod_prefixes)?
        );
        nft(&netns, &["-f", "-"], Some(&script))
            .with_context(|| format!("lab {}: installing the kube-proxy emulation", self.id()))?;
        // The nat chain pulls conntrack in; its per-namespace sysctls show
        // that it is there for this namespace.
        let tracked = self.run_in_node(|| {
            std::path::Path::new("/proc/sys/net/netfilter/nf_conntrack_max").exists()
        })?;
        if !tracked {
            bail!(
                "lab {}: connection tracking is not enabled in node namespace {netns} \
                 (nf_conntrack missing): Service DNAT cannot work",
                self.id()
            );
        }
        Ok(())
    }

    /// Connections the node masqueraded so far in `family` (the counter
    /// of the masquerade rule: a nat chain sees a connection's first
    /// packet only).
    pub fn kube_proxy_masquerades(&self, family: Family) -> Result<u64> {
        let fam = match family {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        };
        let json = nft(
            &self.node_netns(),
            &["-j", "list", "table", fam, KUBE_PROXY_TABLE],
            None,
        )?;
        chain_counters(&json)?
            .get(masquerade::MASQUERADING)
            .copied()
            .with_context(|| {
                format!(
                    "lab {}: no masquerade counter in table {fam} {KUBE_PROXY_TABLE}",
                    self.id()
                )
            })
    }

    /// Removes the kube-proxy emulation (a no-op when not installed).
    pub fn remove_kube_proxy(&self) -> Result<()> {
        let netns = self.node_netns();
        let script = ["ip", "ip6"]
            .iter()
            .map(|f| format!("table {f} {KUBE_PROXY_TABLE}\ndelete table {f} {KUBE_PROXY_TABLE}\n"))
            .collect::<String>();
        nft(&netns, &["-f", "-"], Some(&script))
            .with_context(|| format!("lab {}: removing the kube-proxy emulation", self.id()))?;
        Ok(())
    }

    /// Connections DNATed to each backend so far, by reading the endpoint
    /// chains' counters. `rules` must be those last installed (they say
    /// which chain is which backend).
    pub fn kube_proxy_picks(&self, rules: &[ServiceRule]) -> Result<BTreeMap<DnatTarget, u64>> {
        let netns = self.node_netns();
        let mut picks = BTreeMap::new();
        for (family, fam) in [(Family::V4, "ip"), (Family::V6, "ip6")] {
            let targets = targets(rules, family);
            if targets.is_empty() {
                continue;
            }
            let json = nft(
                &netns,
                &["-j", "list", "table", fam, KUBE_PROXY_TABLE],
                None,
            )?;
            let counters = chain_counters(&json)?;
            for (i, t) in targets.into_iter().enumerate() {
                let n = counters.get(&endpoint_chain(i)).copied().with_context(|| {
                    format!(
                        "lab {}: no counter in chain {} of table {fam} {KUBE_PROXY_TABLE}: \
                         were these rules installed?",
                        self.id(),
                        endpoint_chain(i)
                    )
                })?;
                picks.insert(t, n);
            }
        }
        Ok(picks)
    }
}

impl Cluster {
    /// kube-proxy on every node (`Lab::install_kube_proxy`), masquerading
    /// as it does by default.
    pub fn install_kube_proxy(&self, rules: &[ServiceRule]) -> Result<()> {
        self.install_kube_proxy_with(rules, Masquerade::default())
    }

    /// kube-proxy on every node with the masquerade mode `masq`; the
    /// cluster CIDRs are the pods' prefixes of every node (as
    /// `--cluster-cidr` is cluster-wide).
    pub fn install_kube_proxy_with(&self, rules: &[ServiceRule], masq: Masquerade) -> Result<()> {
        let prefixes: Vec<Cidr> = self
            .nodes()
            .iter()
            .flat_map(|n| pod_prefixes(&n.lab))
            .collect();
        for n in self.nodes() {
            n.lab
                .install_kube_proxy_for(rules, masq, &prefixes)
                .with_context(|| format!("node {}", n.name))?;
        }
        Ok(())
    }
}

/// Chain name -> packets of its counter, from `nft -j list table`.
fn chain_counters(json: &str) -> Result<BTreeMap<String, u64>> {
    let v: serde_json::Value = serde_json::from_str(json).context("parsing `nft -j` output")?;
    let mut out = BTreeMap::new();
    for item in v["nftables"].as_array().into_iter().flatten() {
        let Some(rule) = item.get("rule") else {
            continue;
        };
        let Some(chain) = rule["chain"].as_str() else {
            continue;
        };
        for e in rule["expr"].as_array().into_iter().flatten() {
            if let Some(packets) = e.get("counter").and_then(|c| c["packets"].as_u64()) {
                out.insert(chain.to_string(), packets);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(cip: &str, port: u16, backends: &[&str]) -> ServiceRule {
        ServiceRule {
            service: "shop/web".into(),
            cluster_ip: cip.parse().unwrap(),
            protocol: Protocol::Tcp,
            port,
            backends: backends.iter().map(|b| b.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn rules_render_one_chain_per_backend_per_family() {
        let rules = [
            rule("10.96.0.10", 80, &["10.0.0.1:8080", "10.0.0.2:8081"]),
            rule("10.96.0.11", 81, &[]),
            rule("fd00::10", 80, &["[fd00::1]:8080"]),
        ];
        let none = Masquerade::None;
        let v4 = render(&rules, Family::V4, none, &[]).unwrap();
        assert!(v4.starts_with(
            "table ip palisade_lab_kube_proxy\ndelete table ip palisade_lab_kube_proxy\n"
        ));
        assert!(v4.contains(
            "ip daddr 10.96.0.10 tcp dport 80 numgen random mod 2 vmap { 0 : jump ep0, 1 : jump ep1 }"
        ));
        assert!(v4.contains("chain ep1 {\n    meta l4proto tcp counter dnat to 10.0.0.2:8081\n"));
        assert!(!v4.contains("10.96.0.11"), "no backends, no rule");
        assert!(!v4.contains("fd00"));
        assert!(
            !v4.contains("jump mark-for-masquerade"),
            "None marks nothing"
        );
        assert!(v4.contains(
            "type nat hook prerouting priority dstnat; policy accept;\n    jump services"
        ));
        assert!(
            v4.contains("type nat hook output priority -100; policy accept;\n    jump services")
        );
        let v6 = render(&rules, Family::V6, none, &[]).unwrap();
        assert!(v6
            .contains("ip6 daddr fd00::10 tcp dport 80 numgen random mod 1 vmap { 0 : jump ep0 }"));
        assert!(v6.contains("counter dnat to [fd00::1]:8080"));
        assert_eq!(targets(&rules, Family::V4).len(), 2);
        assert_eq!(targets(&rules, Family::V6)[0].backend.port(), 8080);

        let mixed = [rule("10.96.0.10", 80, &["[fd00::1]:80"])];
        assert!(render(&mixed, Family::V4, none, &[]).is_err());
    }

    #[test]
    fn masquerade_rules_precede_dnat() {
        let rules = [rule("10.96.0.10", 80, &["10.0.0.1:8080"])];
        let pods = [
            Cidr::new("10.0.0.1".parse().unwrap(), 32),
            Cidr::new("10.0.0.0".parse().unwrap(), 29),
        ];
        let hairpin = render(&rules, Family::V4, Masquerade::Hairpin, &pods).unwrap();
        assert!(hairpin.contains(
            "    ip daddr 10.96.0.10 tcp dport 80 ip saddr != { 10.0.0.0/29 } jump mark-for-masquerade\n    \
             ip daddr 10.96.0.10 tcp dport 80 numgen"
        ), "{hairpin}");
        assert!(hairpin.contains(
            "chain ep0 {\n    ip saddr 10.0.0.1 jump mark-for-masquerade\n    meta l4proto tcp counter dnat"
        ), "{hairpin}");
        assert!(hairpin.contains("hook postrouting priority srcnat"));
        let all = render(&rules, Family::V4, Masquerade::All, &pods).unwrap();
        assert!(
            all.contains("tcp dport 80 jump mark-for-masquerade\n"),
            "{all}"
        );
        // The IPv6 table has no IPv6 prefixes: no cluster CIDR rule.
        let v6 = [rule("fd00::10", 80, &["[fd00::1]:8080"])];
        let v6 = render(&v6, Family::V6, Masquerade::Hairpin, &pods).unwrap();
        assert!(!v6.contains("saddr !="), "{v6}");
        assert!(
            v6.contains("ip6 saddr fd00::1 jump mark-for-masquerade"),
            "{v6}"
        );
    }

    #[test]
    fn counters_are_read_per_chain() {
        let json = r#"{"nftables": [{"metainfo": {}},
            {"table": {"family": "ip", "name": "palisade_lab_kube_proxy"}},
            {"rule": {"chain": "prerouting", "expr": [{"numgen": {}}]}},
            {"rule": {"chain": "ep0", "expr": [{"counter": {"packets": 3, "bytes": 180}}, {"dnat": {}}]}},
            {"rule": {"chain": "ep1", "expr": [{"counter": {"packets": 0, "bytes": 0}}, {"dnat": {}}]}}]}"#;
        let c = chain_counters(json).unwrap();
        assert_eq!(c.get("ep0"), Some(&3));
        assert_eq!(c.get("ep1"), Some(&0));
        assert_eq!(c.len(), 2);
    }
}
