//! `palisade inspect` and `palisade explain`: what the kernel enforces, read
//! back from the pinned maps and told in policy terms.
//!
//! The kernel holds numbers (identities, bits, prefixes). The names come
//! from compiling the manifests the way the agent does (identity numbers
//! taken over from the pinned trie, so they line up), and the same compile
//! is the reference the pinned contents are compared with: any difference
//! is drift, i.e. what the agent would rewrite on its next round.

use super::offline::{self, CheckArgs, CheckOutput, Query};
use super::ManifestArgs;
use crate::datapath::encode::{self, Lpm};
use crate::datapath::iface::{self, HostRoute, Interfaces};
use crate::datapath::load::DEFAULT_BPFFS_ROOT;
use crate::datapath::readback::{self, PinnedEndpoint, PinnedNode, RecordSource};
use anyhow::{Context, Result};
use ipnetwork::IpNetwork;
use palisade_common::{
    IpKey, RuleBits, SpillKey, EP_DENY_ALL, EP_ISOLATED_EGRESS, EP_ISOLATED_INGRESS, EP_PENDING,
    IDENTITY_HOST, IDENTITY_WORLD, RULE_BITS, SPILL_ANY_PEER, SPILL_CIDR_CLASS, SPILL_IDENTITY,
};
use palisade_compiler::{
    lookup, CompiledDirection, CompiledNode, CompiledPod, IdentityAllocator, LookupVerdict,
    PortPrefix,
};
use palisade_policy::{evaluate, Action, DirVerdict, Direction, Family, Model, Protocol};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{Display, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod drift;
mod render;

use drift::drift;
use render::*;

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InspectOutput {
    /// A readable listing, then the drift.
    #[default]
    Text,
    /// One JSON document with the same contents.
    Json,
}

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// The pod: NAMESPACE/POD.
    pub pod: String,
    #[command(flatten)]
    pub manifests: ManifestArgs,
    /// The node whose pins are read (the agent's --node).
    #[arg(long)]
    pub node: String,
    /// The agent's --bpffs-root.
    #[arg(long, default_value = DEFAULT_BPFFS_ROOT)]
    pub bpffs_root: PathBuf,
    #[arg(long, value_enum, default_value_t)]
    pub output: InspectOutput,
}

#[derive(clap::Args, Debug)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub manifests: ManifestArgs,
    /// The node whose pins are read (the agent's --node).
    #[arg(long)]
    pub node: String,
    /// The agent's --bpffs-root.
    #[arg(long, default_value = DEFAULT_BPFFS_ROOT)]
    pub bpffs_root: PathBuf,
    /// Source: NAMESPACE/POD or an IP address.
    #[arg(long)]
    pub from: String,
    /// Destination: NAMESPACE/POD or an IP address.
    #[arg(long)]
    pub to: String,
    /// PORT/PROTOCOL (TCP, UDP or SCTP; a bare PORT is TCP), or ICMP.
    #[arg(long)]
    pub port: String,
    /// Address family used for pods given by name (4 or 6).
    #[arg(long, value_parser = offline::parse_family)]
    pub family: Option<Family>,
}

/// The manifests compiled as the agent compiles them, next to the pins.
struct Node {
    name: String,
    model: Model,
    alloc: IdentityAllocator,
    /// What the compiler produces now.
    compiled: CompiledNode,
    routes: BTreeMap<IpAddr, HostRoute>,
    ifaces: Interfaces,
    pinned: PinnedNode,
    pinned_ids: BTreeMap<Lpm<IpKey>, u32>,
}

impl Node {
    fn open(manifests: &ManifestArgs, node: &str, bpffs_root: &Path) -> Result<(Node, bool)> {
        let (model, failed) = offline::load(manifests);
        let pinned = PinnedNode::open(bpffs_root, node)?;
        let pinned_ids = pinned.identities()?;
        let mut alloc = IdentityAllocator::new();
        let by_ip: BTreeMap<IpAddr, u32> = pinned_ids
            .iter()
            .filter_map(|(k, id)| encode::host_ip(*k).map(|ip| (ip, *id)))
            .collect();
        alloc.seed_from_pinned(&model, &by_ip);
        let compiled = palisade_compiler::compile(&model, node, &mut alloc);
        let routes = iface::host_routes()?;
        let ifaces = iface::match_pods(
            &routes,
            compiled
                .pods
                .iter()
                .map(|(k, p)| (k.as_str(), p.ips.as_slice())),
        );
        Ok((
            Node {
                name: node.to_string(),
                model,
                alloc,
                compiled,
                routes,
                ifaces,
                pinned,
                pinned_ids,
            },
            failed,
        ))
    }

    fn ifname(&self, ifindex: u32) -> Option<&str> {
        self.routes
            .values()
            .find(|r| r.ifindex == ifindex)
            .map(|r| r.ifname.as_str())
    }

    /// The node's identity trie as the lookup model wants it (host entries).
    fn pinned_host_ids(&self) -> BTreeMap<IpAddr, u32> {
        self.pinned_ids
            .iter()
            .filter_map(|(k, id)| encode::host_ip(*k).map(|ip| (ip, *id)))
            .collect()
    }

    /// A local pod's pinned state with the rule names of the current
    /// compile; `None` when it has no interface or no endpoint record.
    fn pinned_pod(&self, key: &str) -> Result<Option<(PinnedEndpoint, CompiledPod)>> {
        let (Some(ifindex), Some(fresh)) = (self.ifaces.pods.get(key), self.compiled.pods.get(key))
        else {
            return Ok(None);
        };
        let Some(ep) = self.pinned.endpoint(*ifindex)? else {
            return Ok(None);
        };
        let mut pod = readback::decode_pod(&fresh.namespace, &fresh.name, &ep)?;
        name_groups(&mut pod.ingress, &fresh.ingress);
        name_groups(&mut pod.egress, &fresh.egress);
        Ok(Some((ep, pod)))
    }

    /// The pinned state as a compiled node, for the lookup model.
    fn pinned_node(&self) -> Result<CompiledNode> {
        let mut node = CompiledNode {
            identities: self.pinned_host_ids(),
            pods: BTreeMap::new(),
            services: Default::default(),
        };
        for key in self.ifaces.pods.keys() {
            if let Some((_, pod)) = self.pinned_pod(key)? {
                node.pods.insert(key.clone(), pod);
            }
        }
        Ok(node)
    }

    fn identity_name(&self, id: u32) -> String {
        match id {
            IDENTITY_HOST => "host".to_string(),
            IDENTITY_WORLD => "world".to_string(),
            _ => match self.alloc.key(id) {
                Some(k) => format!("{} {}", k.namespace, labels_text(&k.labels)),
                None => "unknown (no pod of the manifests has it)".to_string(),
            },
        }
    }
}

/// `NAMESPACE/POD`, checked.
fn pod_key(s: &str) -> Result<String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(s.to_string())
        }
        _ => anyhow::bail!("{s:?}: expected NAMESPACE/POD"),
    }
}

pub fn inspect(args: InspectArgs) -> Result<ExitCode> {
    let key = pod_key(&args.pod)?;
    let (node, failed) = Node::open(&args.manifests, &args.node, &args.bpffs_root)?;
    if !node.compiled.pods.contains_key(&key) {
        anyhow::bail!(
            "pod {key} is not a running pod with an address on node {:?} in the manifests",
            node.name
        );
    }
    let ifindex = *node.ifaces.pods.get(&key).with_context(|| {
        format!(
            "pod {key}: no host route to its addresses {:?} in this network namespace: no interface to inspect",
            node.compiled.pods[&key].ips
        )
    })?;
    let pinned = node.pinned_pod(&key)?;
    let mut drifts = drift(&node, &key, pinned.as_ref().map(|(_, p)| p));
    if let Some((ep, _)) = &pinned {
        if ep.source == RecordSource::CellDiffers {
            drifts.push(
                "the classifiers' copy of the endpoint record (ENDPOINT_CELLS) differs from ENDPOINTS"
                    .to_string(),
            );
        }
    }
    let ifname = node.ifname(ifindex).unwrap_or("?");
    match args.output {
        InspectOutput::Json => {
            let doc = json!({
                "pod": key,
                "node": node.name,
                "ifindex": ifindex,
                "ifname": ifname,
                "endpoint": pinned.as_ref().map(|(ep, pod)| json!({
                    "flags": flag_names(ep.endpoint.flags),
                    "generation": ep.endpoint.generation,
                    "read_from": ep.source.name(),
                    "addresses": pod.ips,
                    "ingress": dir_json(&node, &pod.ingress),
                    "egress": dir_json(&node, &pod.egress),
                })),
                "drift": drifts,
            });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        InspectOutput::Text => {
            let mut out = format!(
                "pod {key} on node {}: interface {ifname} (ifindex {ifindex})\n",
                node.name
            );
            match &pinned {
                None => out.push_str("no endpoint record pinned for this interface\n"),
                Some((ep, pod)) => {
                    let flags = flag_names(ep.endpoint.flags);
                    let _ = writeln!(
                        out,
                        "endpoint: flags [{}], generation {}, addresses {}; {}",
                        flags.join(", "),
                        ep.endpoint.generation,
                        list(&pod.ips),
                        ep.source.describe()
                    );
                    if let Some(e) = &pod.error {
                        let _ = writeln!(out, "{e}: all traffic denied");
                    } else {
                        dir_text(&node, Direction::Ingress, &pod.ingress, &mut out);
                        dir_text(&node, Direction::Egress, &pod.egress, &mut out);
                    }
                }
            }
            if drifts.is_empty() {
                out.push_str("drift: none (the pinned maps match the manifests)\n");
            } else {
                let _ = writeln!(
                    out,
                    "drift: {} difference(s) between the pinned maps and the manifests:",
                    drifts.len()
                );
                for d in &drifts {
                    let _ = writeln!(out, "  {d}");
                }
            }
            print!("{out}");
        }
    }
    Ok(if !drifts.is_empty() || failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn list<T: Display>(items: &[T]) -> String {
    items
        .iter()
        .map(T::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------- explain

/// One direction as the pinned maps decide it; `oracle` is the oracle's
/// verdict of the same direction, whose exact rule a cluster group's line
/// names beside the group's rules (a group holds every rule of one tier
/// and action sharing its port set; the oracle knows which one matched).
fn kernel_line(
    node: &Node,
    pinned: &CompiledNode,
    dir: Direction,
    addr: IpAddr,
    v: &LookupVerdict,
    oracle: &DirVerdict,
) -> String {
    let d = dir.name();
    let local = node
        .compiled
        .pods
        .iter()
        .find(|(_, p)| p.ips.contains(&addr))
        .map(|(k, _)| k.as_str());
    let Some(pod) = local else {
        return format!(
            "{d}: {addr} is no pod of node {}: not checked here",
            node.name
        );
    };
    match v {
        LookupVerdict::NotIsolated => {
            let open = pinned
                .pods
                .get(pod)
                .is_some_and(|p| p.direction(dir).isolated && p.direction(dir).open);
            if open {
                format!(
                    "{d} of {pod}: no cluster rule group decides it and no NetworkPolicy isolates it: allowed"
                )
            } else {
                format!("{d} of {pod}: not isolated (or not programmed): allowed")
            }
        }
        LookupVerdict::Denied => format!("{d} of {pod}: denied by the pinned maps"),
        LookupVerdict::WouldDeny => format!(
            "{d} of {pod}: no rule allows it; passed because the isolation is in audit mode (would deny)"
        ),
        LookupVerdict::Allowed { group, rules } => {
            let names = if rules.is_empty() {
                "rules unknown to the manifests".to_string()
            } else {
                rules
                    .iter()
                    .map(offline::describe_rule)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            format!("{d} of {pod}: allowed by rule group {group}: {names}")
        }
        LookupVerdict::Cluster {
            group,
            rules,
            action,
        } => {
            let word = if *action == Action::Deny {
                "denied"
            } else {
                "allowed"
            };
            let tier = rules.first().map_or("", |r| r.tier.name());
            let names: Vec<String> = rules.iter().map(offline::describe_cluster_rule).collect();
            let exact = match oracle {
                DirVerdict::Cluster(r) if rules.contains(r) => format!(
                    "; the oracle's rule: {} rule {} of {}",
                    r.direction.name(),
                    r.rule,
                    r.policy
                ),
                DirVerdict::Cluster(r) => format!(
                    "; the oracle decides by another rule: {}",
                    offline::describe_cluster_rule(r)
                ),
                _ => "; the oracle decides without a cluster rule".to_string(),
            };
            format!(
                "{d} of {pod}: {word} by rule group {group} ({tier} tier, {}): {}{exact}",
                action.name(),
                names.join(", ")
            )
        }
    }
}

pub fn explain(args: ExplainArgs) -> Result<ExitCode> {
    let (node, failed) = Node::open(&args.manifests, &args.node, &args.bpffs_root)?;
    let check = CheckArgs {
        manifests: args.manifests.clone(),
        from: args.from.clone(),
        to: args.to.clone(),
        port: args.port.clone(),
        family: args.family,
        output: CheckOutput::Text,
    };
    let query = Query::resolve(&node.model, &check)?;
    let pinned = node.pinned_node()?;
    let kernel = lookup::check(&pinned, &query.flow);
    let oracle = evaluate(&node.model, &query.flow);

    // Only the checks of this node's pods run here: compare those.
    let is_local = |addr: IpAddr| node.compiled.pods.values().any(|p| p.ips.contains(&addr));
    let mut disagree = Vec::new();
    let mut kernel_allows = true;
    // Each side: direction, the pod's address, the kernel's verdict and the
    // oracle's.
    let sides = [
        (
            Direction::Egress,
            query.flow.src,
            &kernel.egress,
            &oracle.egress,
        ),
        (
            Direction::Ingress,
            query.flow.dst,
            &kernel.ingress,
            &oracle.ingress,
        ),
    ];
    for (dir, addr, k, o) in sides {
        if !is_local(addr) {
            continue;
        }
        kernel_allows &= k.allows();
        if k.allows() != o.allows() {
            disagree.push(format!(
                "{}: pinned maps {}, oracle {}",
                dir.name(),
                word(k.allows()),
                word(o.allows())
            ));
        }
    }
    let mut out = format!(
        "kernel (pinned maps of node {}): {} {} -> {} {}\n",
        node.name,
        word(kernel_allows),
        query.from,
        query.to,
        query.port
    );
    for (dir, addr, v, o) in sides {
        let _ = writeln!(out, "  {}", kernel_line(&node, &pinned, dir, addr, v, o));
    }
    let _ = write!(
        out,
        "oracle (palisade check): {}",
        query.explain(&node.model, &oracle)
    );
    if disagree.is_empty() {
        out.push_str("agree: the pinned maps decide this node's checks as the oracle does\n");
    } else {
        out.push_str("DISAGREE: the pinned maps and the oracle differ on this node's checks:\n");
        for d in &disagree {
            let _ = writeln!(out, "  {d}");
        }
    }
    print!("{out}");
    Ok(if !disagree.is_empty() || failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn word(allowed: bool) -> &'static str {
    if allowed {
        "ALLOW"
    } else {
        "DENY"
    }
}

#[cfg(test)]
mod tests {
    use super::drift::diff_map;
    use super::*;

    #[test]
    fn port_prefixes_read_as_ranges() {
        let p = |port, len| PortPrefix {
            proto: palisade_common::PROTO_TCP,
            port,
            len,
        };
        assert_eq!(port_text(&p(80, 16)), "TCP 80");
        assert_eq!(port_text(&p(8080, 13)), "TCP 8080-8087");
        assert_eq!(port_text(&p(0, 0)), "TCP any port");
    }

    #[test]
    fn tables_diff_by_key() {
        let a: BTreeMap<u32, u32> = [(1, 1), (2, 2)].into_iter().collect();
        let b: BTreeMap<u32, u32> = [(2, 3), (4, 4)].into_iter().collect();
        let mut out = Vec::new();
        diff_map("x", &a, &b, u32::to_string, u32::to_string, &mut out);
        assert_eq!(
            out,
            vec![
                "x 1: pinned 1, compiled absent",
                "x 2: pinned 2, compiled 3",
                "x 4: pinned absent, compiled 4"
            ]
        );
    }

    #[test]
    fn pod_keys_are_checked() {
        assert_eq!(pod_key("ns/a").unwrap(), "ns/a");
        for bad in ["a", "/a", "ns/", "ns/a/b"] {
            assert!(pod_key(bad).is_err(), "{bad}");
        }
    }
}
