//! Human-readable renderings of a compiled node (JSON and text), for
//! `palisade compile` and for debugging: every map entry with the rule
//! groups its bits stand for, and identities with their label sets.

use crate::identity::IdentityAllocator;
use crate::types::{CompiledDirection, CompiledNode, CompiledPod, PortPrefix};
use palisade_common::{
    RuleBits, SpillKey, RULE_BITS, SPILL_ANY_PEER, SPILL_CIDR_CLASS, SPILL_IDENTITY,
};
use palisade_policy::{Direction, Protocol};
use serde_json::{json, Value};
use std::fmt::Write;

fn bit_groups(bits: u64) -> Vec<u32> {
    (0..64).filter(|b| bits & (1 << b) != 0).collect()
}

fn proto_name(proto: u8) -> String {
    Protocol::from_number(proto).map_or_else(|| proto.to_string(), |p| p.name().to_string())
}

fn spill_kind(kind: u32) -> &'static str {
    match kind {
        SPILL_ANY_PEER => "any-peer",
        SPILL_IDENTITY => "identity",
        SPILL_CIDR_CLASS => "cidr-class",
        _ => "unknown",
    }
}

fn value_json(v: &RuleBits) -> Value {
    json!({ "bits": format!("{:#x}", v.bits), "groups": bit_groups(v.bits), "class": v.class })
}

/// Adds the identity's namespace and labels to a JSON entry.
fn add_identity(entry: &mut Value, alloc: &IdentityAllocator, id: u32) {
    entry["identity"] = json!(id);
    if let Some(k) = alloc.key(id) {
        entry["namespace"] = json!(k.namespace);
        entry["labels"] = json!(k.labels);
    }
}

fn dir_json(d: &CompiledDirection, alloc: &IdentityAllocator) -> Value {
    if !d.isolated {
        return json!({ "isolated": false });
    }
    let groups: Vec<Value> = d
        .groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let bit = (i < RULE_BITS as usize).then_some(i);
            json!({ "index": i, "bit": bit, "spilled": bit.is_none(), "rules": g.rules })
        })
        .collect();
    let identities: Vec<Value> = d
        .identities
        .iter()
        .map(|(id, v)| {
            let mut e = value_json(v);
            add_identity(&mut e, alloc, *id);
            e
        })
        .collect();
    let cidrs: Vec<Value> = d
        .cidrs
        .iter()
        .map(|(net, v)| {
            let mut e = value_json(v);
            e["cidr"] = json!(net.to_string());
            e
        })
        .collect();
    let ports: Vec<Value> = d
        .ports
        .iter()
        .map(|(p, v)| {
            let mut e = value_json(v);
            e["proto"] = json!(proto_name(p.proto));
            e["port"] = json!(p.port);
            e["len"] = json!(p.len);
            e["range"] = json!(port_range(p));
            e
        })
        .collect();
    let spill: Vec<Value> = d
        .spill
        .iter()
        .map(|(k, v)| {
            json!({
                "kind": spill_kind(k.kind),
                "peer": k.peer,
                "port_class": k.port_class,
                "group": d.spill_groups.get(k),
                "first": v.first,
                "after_admin": v.after_admin,
            })
        })
        .collect();
    let classes: serde_json::Map<String, Value> = d
        .classes
        .iter()
        .map(|(c, gs)| (c.to_string(), json!(gs)))
        .collect();
    json!({
        "isolated": true,
        "audit": d.audit,
        "isolating": d.isolating,
        "groups": groups,
        "any_peer": { "bits": format!("{:#x}", d.any_peer), "groups": bit_groups(d.any_peer) },
        "any_port": { "bits": format!("{:#x}", d.any_port), "groups": bit_groups(d.any_port) },
        "any_port_class": d.any_port_class,
        "spill_any_peer": d.spill_any_peer,
        "identities": identities,
        "cidrs": cidrs,
        "ports": ports,
        "spill": spill,
        "classes": classes,
    })
}

/// `[first, last]` port of a port prefix.
fn port_range(p: &PortPrefix) -> [u16; 2] {
    let size = 1u32 << (16 - u32::from(p.len));
    [p.port, (u32::from(p.port) + size - 1) as u16]
}

fn pod_json(p: &CompiledPod, alloc: &IdentityAllocator) -> Value {
    json!({
        "pod": format!("{}/{}", p.namespace, p.name),
        "ips": p.ips,
        "error": p.error,
        "ingress": dir_json(&p.ingress, alloc),
        "egress": dir_json(&p.egress, alloc),
    })
}

/// The whole node as JSON: local pods with both directions, then the
/// node-wide identity table and Service ClusterIPs.
pub fn to_json(node_name: &str, node: &CompiledNode, alloc: &IdentityAllocator) -> Value {
    let pods: Vec<Value> = node.pods.values().map(|p| pod_json(p, alloc)).collect();
    let identities: Vec<Value> = node
        .identities
        .iter()
        .map(|(ip, id)| {
            let mut e = json!({ "ip": ip });
            add_identity(&mut e, alloc, *id);
            e
        })
        .collect();
    json!({
        "node": node_name,
        "pods": pods,
        "identities": identities,
        "services": node.services.iter().map(|f| f.to_string()).collect::<Vec<_>>(),
    })
}

fn groups_text(bits: u64) -> String {
    let gs = bit_groups(bits);
    if gs.is_empty() {
        "-".into()
    } else {
        gs.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
    }
}

fn identity_text(alloc: &IdentityAllocator, id: u32) -> String {
    match alloc.key(id) {
        Some(k) => {
            let labels: Vec<String> = k.labels.iter().map(|(a, b)| format!("{a}={b}")).collect();
            format!("{} {{{}}}", k.namespace, labels.join(","))
        }
        None => "?".into(),
    }
}

fn dir_text(out: &mut String, dir: Direction, d: &CompiledDirection, alloc: &IdentityAllocator) {
    let name = match dir {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    };
    if !d.isolated {
        let _ = writeln!(out, "  {name}: not isolated");
        return;
    }
    // Audit-only isolation lets through what no rule allows ("would
    // deny"): say so on the first line, it changes what every entry means.
    let mode = if d.audit {
        " (audit: would deny, not drop)"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "  {name}: isolated{mode} by {}, {} group(s)",
        d.isolating.join(", "),
        d.groups.len()
    );
    for (i, g) in d.groups.iter().enumerate() {
        let rules: Vec<String> = g
            .rules
            .iter()
            .map(|r| {
                format!(
                    "{} {}[{}]",
                    r.policy,
                    if r.direction == Direction::Ingress {
                        "ingress"
                    } else {
                        "egress"
                    },
                    r.rule
                )
            })
            .collect();
        let slot = if i < RULE_BITS as usize {
            format!("bit {i}")
        } else {
            "spilled".into()
        };
        let _ = writeln!(out, "    group {i} ({slot}): {}", rules.join(", "));
    }
    let _ = writeln!(
        out,
        "    any peer: {}   any port: {}",
        groups_text(d.any_peer),
        groups_text(d.any_port)
    );
    if d.any_port_class != 0 || d.spill_any_peer {
        let _ = writeln!(
            out,
            "    any-port class: {}   spilled any-peer: {}",
            d.any_port_class, d.spill_any_peer
        );
    }
    for (id, v) in &d.identities {
        let _ = writeln!(
            out,
            "    identity {id} ({}): groups {}",
            identity_text(alloc, *id),
            groups_text(v.bits)
        );
    }
    for (net, v) in &d.cidrs {
        let _ = writeln!(
            out,
            "    cidr {net}: groups {} class {}",
            groups_text(v.bits),
            v.class
        );
    }
    for (p, v) in &d.ports {
        let [lo, hi] = port_range(p);
        let _ = writeln!(
            out,
            "    port {} {}/{} ({lo}-{hi}): groups {} class {}",
            proto_name(p.proto),
            p.port,
            p.len,
            groups_text(v.bits),
            v.class
        );
    }
    for (c, gs) in &d.classes {
        let _ = writeln!(out, "    class {c}: spilled groups {gs:?}");
    }
    for (k, v) in &d.spill {
        let SpillKey {
            kind,
            peer,
            port_class,
        } = *k;
        let _ = writeln!(
            out,
            "    spill {} {peer} port-class {port_class}: first group {}",
            spill_kind(kind),
            spill_group_text(v.first)
        );
    }
}

/// A spill value's group and action (`SpillValue` encoding).
fn spill_group_text(v: u32) -> String {
    if v == palisade_common::SPILL_NONE {
        return "none".into();
    }
    let action = match v & 3 {
        palisade_common::SPILL_DENY => "deny",
        palisade_common::SPILL_PASS => "pass",
        _ => "allow",
    };
    format!("{} ({action})", v >> 2)
}

/// The node as text, one block per local pod, then the identity table
/// and the Service ClusterIPs.
pub fn to_text(node_name: &str, node: &CompiledNode, alloc: &IdentityAllocator) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "node {node_name}: {} local pod(s)", node.pods.len());
    for p in node.pods.values() {
        let ips: Vec<String> = p.ips.iter().map(ToString::to_string).collect();
        let _ = writeln!(out, "pod {}/{} ({})", p.namespace, p.name, ips.join(", "));
        if let Some(e) = &p.error {
            let _ = writeln!(out, "  error: {e}");
        }
        dir_text(&mut out, Direction::Ingress, &p.ingress, alloc);
        dir_text(&mut out, Direction::Egress, &p.egress, alloc);
    }
    let _ = writeln!(out, "identities ({} addresses):", node.identities.len());
    for (ip, id) in &node.identities {
        let _ = writeln!(out, "  {ip} -> {id} ({})", identity_text(alloc, *id));
    }
    // Egress to these is decided after DNAT, by backend.
    let _ = writeln!(out, "service frontends ({}):", node.services.len());
    for f in &node.services {
        let _ = writeln!(out, "  {f}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile;
    use palisade_policy::{Model, Peer, Pod, Policy, PortMatch, PortSpec, Rule, Selector, Service};

    fn model() -> Model {
        let pod = |name: &str, ip: &str, node: &str| Pod {
            namespace: "shop".into(),
            name: name.into(),
            labels: [("app".to_string(), name.to_string())].into(),
            node: Some(node.into()),
            ips: vec![ip.parse().unwrap()],
            ports: vec![],
            pending: false,
        };
        Model {
            cluster_policies: vec![],
            nodes: vec![],
            namespaces: Default::default(),
            pods: vec![pod("web", "10.0.0.1", "n1"), pod("db", "10.0.0.2", "n2")],
            policies: vec![Policy {
                namespace: "shop".into(),
                name: "web".into(),
                enforcement: Default::default(),
                pod_selector: Selector::default(),
                isolates_ingress: true,
                isolates_egress: false,
                ingress: vec![Rule {
                    peers: Some(vec![
                        Peer::Pods {
                            namespaces: None,
                            pods: None,
                        },
                        Peer::IpBlock {
                            cidr: "10.0.0.0/8".parse().unwrap(),
                            except: vec!["10.9.0.0/16".parse().unwrap()],
                        },
                    ]),
                    ports: Some(vec![PortSpec {
                        protocol: Protocol::Tcp,
                        port: PortMatch::Range { port: 80, end: 81 },
                    }]),
                }],
                egress: vec![],
                unreadable: None,
                warnings: vec![],
            }],
            services: vec![Service {
                namespace: "shop".into(),
                name: "web".into(),
                cluster_ips: vec!["10.96.0.10".parse().unwrap()],
                ports: vec![palisade_policy::ServicePort {
                    name: None,
                    port: 80,
                    protocol: Protocol::Tcp,
                    target: palisade_policy::TargetPort::Number(8080),
                }],
                selector: None,
            }],
            errors: vec![],
            warnings: vec![],
        }
    }

    #[test]
    fn json_lists_groups_entries_and_identities() {
        let mut alloc = IdentityAllocator::new();
        let node = compile(&model(), "n1", &mut alloc);
        let doc = to_json("n1", &node, &alloc);
        let pod = &doc["pods"][0];
        assert_eq!(pod["pod"], "shop/web");
        let ing = &pod["ingress"];
        assert_eq!(ing["isolated"], true);
        assert_eq!(ing["audit"], false);
        assert_eq!(ing["isolating"], json!(["shop/web"]));
        assert_eq!(ing["groups"][0]["rules"][0]["policy"], "shop/web");
        assert_eq!(ing["ports"][0]["proto"], "TCP");
        assert_eq!(ing["ports"][0]["port"], 80);
        assert_eq!(ing["ports"][0]["len"], 15);
        assert_eq!(ing["ports"][0]["range"], json!([80, 81]));
        let cidrs: Vec<&str> = ing["cidrs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["cidr"].as_str().unwrap())
            .collect();
        assert_eq!(cidrs, vec!["10.0.0.0/8", "10.9.0.0/16"]);
        assert_eq!(ing["cidrs"][1]["groups"], json!([]));
        assert_eq!(ing["identities"].as_array().unwrap().len(), 2);
        assert_eq!(pod["egress"], json!({ "isolated": false }));
        let ids = doc["identities"].as_array().unwrap();
        assert_eq!(ids.len(), 2);
        assert_eq!(ids[0]["namespace"], "shop");
        assert!(ids[0]["labels"]["app"].is_string());
        assert_eq!(doc["services"], json!(["10.96.0.10:80/TCP"]));
    }

    #[test]
    fn text_names_every_entry() {
        let mut alloc = IdentityAllocator::new();
        let node = compile(&model(), "n1", &mut alloc);
        let text = to_text("n1", &node, &alloc);
        for needle in [
            "pod shop/web (10.0.0.1)",
            "ingress: isolated by shop/web, 1 group(s)",
            "group 0 (bit 0): shop/web ingress[0]",
            "cidr 10.9.0.0/16: groups - class 0",
            "port TCP 80/15 (80-81): groups 0",
            "egress: not isolated",
            "10.0.0.2 -> ",
            "service frontends (1):\n  10.96.0.10:80/TCP\n",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
    }
}
