//! Rendering pinned state in policy terms, as text and as JSON.

use super::*;

/// The kernel keeps no names: the groups (and the spilled groups behind
/// classes and spill keys) and the isolating policies are those of the
/// current compile.
pub(super) fn name_groups(pinned: &mut CompiledDirection, fresh: &CompiledDirection) {
    pinned.groups = fresh.groups.clone();
    pinned.isolating = fresh.isolating.clone();
    pinned.classes = fresh.classes.clone();
    pinned.spill_groups = fresh
        .spill_groups
        .iter()
        .filter(|(k, _)| pinned.spill.contains_key(k))
        .map(|(k, g)| (*k, *g))
        .collect();
}

pub(super) fn labels_text(labels: &palisade_policy::Labels) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{{{}}}", inner.join(","))
}

pub(super) fn groups_of(bits: u64) -> Vec<u32> {
    (0..64).filter(|b| bits & (1u64 << b) != 0).collect()
}

pub(super) fn bits_text(v: &RuleBits) -> String {
    let mut s = format!("groups {:?}", groups_of(v.bits));
    if v.class != 0 {
        let _ = write!(s, " class {}", v.class);
    }
    s
}

pub(super) fn proto_name(proto: u8) -> String {
    Protocol::from_number(proto).map_or_else(|| proto.to_string(), |p| p.name().to_string())
}

pub(super) fn port_text(p: &PortPrefix) -> String {
    let size = 1u32 << (16 - u32::from(p.len.min(16)));
    let last = (u32::from(p.port) + size - 1) as u16;
    if p.len == 0 {
        format!("{} any port", proto_name(p.proto))
    } else if size == 1 {
        format!("{} {}", proto_name(p.proto), p.port)
    } else {
        format!("{} {}-{}", proto_name(p.proto), p.port, last)
    }
}

pub(super) fn spill_text(node: &Node, k: &SpillKey) -> String {
    let peer = match k.kind {
        SPILL_ANY_PEER => "any peer".to_string(),
        SPILL_IDENTITY => format!("identity {} ({})", k.peer, node.identity_name(k.peer)),
        SPILL_CIDR_CLASS => format!("CIDR class {}", k.peer),
        other => format!("kind {other} peer {}", k.peer),
    };
    format!("{peer}, port class {}", k.port_class)
}

pub(super) fn rule_names(g: &palisade_compiler::RuleGroup) -> String {
    g.rules
        .iter()
        .map(offline::describe_rule)
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn flag_names(flags: u32) -> Vec<&'static str> {
    let mut out = Vec::new();
    for (bit, name) in [
        (EP_ISOLATED_INGRESS, "isolated-ingress"),
        (EP_ISOLATED_EGRESS, "isolated-egress"),
        (EP_PENDING, "pending"),
        (EP_DENY_ALL, "deny-all"),
    ] {
        if flags & bit != 0 {
            out.push(name);
        }
    }
    out
}

// ---------------------------------------------------------------- drift

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn dir_text(node: &Node, dir: Direction, d: &CompiledDirection, out: &mut String) {
    let name = dir.name();
    if !d.isolated {
        let _ = writeln!(out, "{name}: not isolated (everything allowed)");
        return;
    }
    let _ = writeln!(out, "{name}: isolated");
    let _ = writeln!(out, "  rule groups (names from the manifests):");
    if d.groups.is_empty() {
        let _ = writeln!(out, "    none: everything denied");
    }
    for (i, g) in d.groups.iter().enumerate() {
        let slot = if i < RULE_BITS as usize {
            format!("bit {i}")
        } else {
            format!("spilled group {i}")
        };
        let _ = writeln!(out, "    {slot}: {}", rule_names(g));
    }
    let _ = writeln!(out, "  any peer: groups {:?}", groups_of(d.any_peer));
    let _ = writeln!(out, "  any port: groups {:?}", groups_of(d.any_port));
    if d.any_port_class != 0 || d.spill_any_peer {
        let _ = writeln!(
            out,
            "  spilled: any-port class {}, any-peer {}",
            d.any_port_class, d.spill_any_peer
        );
    }
    let _ = writeln!(out, "  identities ({}):", d.identities.len());
    for (id, v) in &d.identities {
        let _ = writeln!(
            out,
            "    {id} {}: {}",
            node.identity_name(*id),
            bits_text(v)
        );
    }
    let _ = writeln!(out, "  CIDRs ({}):", d.cidrs.len());
    for (net, v) in &d.cidrs {
        let _ = writeln!(out, "    {net}: {}", bits_text(v));
    }
    let _ = writeln!(out, "  ports ({}):", d.ports.len());
    for (p, v) in &d.ports {
        let _ = writeln!(out, "    {}: {}", port_text(p), bits_text(v));
    }
    let _ = writeln!(out, "  spill entries ({}):", d.spill.len());
    for k in d.spill.keys() {
        let group = d
            .spill_groups
            .get(k)
            .map_or_else(String::new, |g| format!(" (group {g})"));
        let _ = writeln!(out, "    {}{group}", spill_text(node, k));
    }
}

pub(super) fn dir_json(node: &Node, d: &CompiledDirection) -> Value {
    if !d.isolated {
        return json!({ "isolated": false });
    }
    let bits = |v: &RuleBits| json!({ "groups": groups_of(v.bits), "class": v.class });
    json!({
        "isolated": true,
        "groups": d.groups.iter().enumerate().map(|(i, g)| json!({
            "index": i,
            "bit": (i < RULE_BITS as usize).then_some(i),
            "rules": g.rules,
        })).collect::<Vec<_>>(),
        "any_peer": groups_of(d.any_peer),
        "any_port": groups_of(d.any_port),
        "any_port_class": d.any_port_class,
        "spill_any_peer": d.spill_any_peer,
        "identities": d.identities.iter().map(|(id, v)| {
            let mut e = bits(v);
            e["identity"] = json!(id);
            if let Some(k) = node.alloc.key(*id) {
                e["namespace"] = json!(k.namespace);
                e["labels"] = json!(k.labels);
            }
            e
        }).collect::<Vec<_>>(),
        "cidrs": d.cidrs.iter().map(|(net, v)| {
            let mut e = bits(v);
            e["cidr"] = json!(net.to_string());
            e
        }).collect::<Vec<_>>(),
        "ports": d.ports.iter().map(|(p, v)| {
            let mut e = bits(v);
            e["protocol"] = json!(proto_name(p.proto));
            e["port"] = json!(p.port);
            e["len"] = json!(p.len);
            e
        }).collect::<Vec<_>>(),
        "spill": d.spill.iter().map(|(k, v)| json!({
            "kind": k.kind,
            "peer": k.peer,
            "port_class": k.port_class,
            "group": d.spill_groups.get(k),
            "first": v.first,
            "after_admin": v.after_admin,
        })).collect::<Vec<_>>(),
    })
}
