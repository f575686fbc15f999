//! Drift: what differs between the pinned maps and the current compile,
//! i.e. what the agent would rewrite on its next round.

use super::*;

/// Differences between two keyed tables, one line each.
pub(super) fn diff_map<K: Ord, V: PartialEq>(
    what: &str,
    pinned: &BTreeMap<K, V>,
    want: &BTreeMap<K, V>,
    key: impl Fn(&K) -> String,
    val: impl Fn(&V) -> String,
    out: &mut Vec<String>,
) {
    let keys: BTreeSet<&K> = pinned.keys().chain(want.keys()).collect();
    for k in keys {
        let (p, w) = (pinned.get(k), want.get(k));
        if p != w {
            let show = |v: Option<&V>| v.map_or_else(|| "absent".to_string(), &val);
            out.push(format!(
                "{what} {}: pinned {}, compiled {}",
                key(k),
                show(p),
                show(w)
            ));
        }
    }
}

pub(super) fn diff_dir(
    node: &Node,
    dir: Direction,
    pinned: &CompiledDirection,
    want: &CompiledDirection,
    out: &mut Vec<String>,
) {
    let d = dir.name();
    if pinned.isolated != want.isolated {
        let word = |i: bool| if i { "isolated" } else { "not isolated" };
        out.push(format!(
            "{d}: pinned {}, compiled {}",
            word(pinned.isolated),
            word(want.isolated)
        ));
        return;
    }
    if !want.isolated {
        return;
    }
    if pinned.audit != want.audit {
        let word = |a: bool| if a { "audit" } else { "enforce" };
        out.push(format!(
            "{d}: pinned in {} mode, compiled in {} mode",
            word(pinned.audit),
            word(want.audit)
        ));
    }
    let mut scalar = |name: &str, p: String, w: String| {
        if p != w {
            out.push(format!("{d} {name}: pinned {p}, compiled {w}"));
        }
    };
    scalar(
        "any-peer",
        format!("groups {:?}", groups_of(pinned.any_peer)),
        format!("groups {:?}", groups_of(want.any_peer)),
    );
    scalar(
        "any-port",
        format!("groups {:?}", groups_of(pinned.any_port)),
        format!("groups {:?}", groups_of(want.any_port)),
    );
    scalar(
        "any-port class",
        pinned.any_port_class.to_string(),
        want.any_port_class.to_string(),
    );
    scalar(
        "spill any-peer",
        pinned.spill_any_peer.to_string(),
        want.spill_any_peer.to_string(),
    );
    // ClusterNetworkPolicy: what each bit does, and whether what no bit
    // decides passes.
    scalar("open", pinned.open.to_string(), want.open.to_string());
    for (name, p, w) in [
        ("Admin tier", pinned.admin, want.admin),
        ("Deny", pinned.deny, want.deny),
        ("Pass", pinned.pass, want.pass),
    ] {
        scalar(
            &format!("{name} bits"),
            format!("groups {:?}", groups_of(p)),
            format!("groups {:?}", groups_of(w)),
        );
    }
    diff_map(
        &format!("{d} identity"),
        &pinned.identities,
        &want.identities,
        |id| format!("{id} ({})", node.identity_name(*id)),
        bits_text,
        out,
    );
    diff_map(
        &format!("{d} CIDR"),
        &pinned.cidrs,
        &want.cidrs,
        IpNetwork::to_string,
        bits_text,
        out,
    );
    diff_map(
        &format!("{d} port"),
        &pinned.ports,
        &want.ports,
        port_text,
        bits_text,
        out,
    );
    diff_map(
        &format!("{d} spill"),
        &pinned.spill,
        &want.spill,
        |k| spill_text(node, k),
        |v| {
            format!(
                "first {:#x}, after the Admin tier {:#x}",
                v.first, v.after_admin
            )
        },
        out,
    );
}

/// Everything that differs between the pins and the current compile for
/// one pod (and the node's identity trie, which its lookups use).
pub(super) fn drift(node: &Node, key: &str, pinned: Option<&CompiledPod>) -> Vec<String> {
    let mut out = Vec::new();
    let want = &node.compiled.pods[key];
    match pinned {
        None => out.push("no endpoint record: the pod is not programmed".to_string()),
        Some(p) => {
            let state = |pod: &CompiledPod| pod.error.is_some();
            if state(p) != state(want) {
                out.push(format!(
                    "endpoint: pinned {}, compiled {}",
                    p.error.as_deref().unwrap_or("programmed"),
                    want.error.as_deref().unwrap_or("programmed")
                ));
            }
            if p.ips != want.ips {
                out.push(format!(
                    "addresses: pinned {:?}, compiled {:?}",
                    p.ips, want.ips
                ));
            }
            if p.error.is_none() && want.error.is_none() {
                diff_dir(
                    node,
                    Direction::Ingress,
                    &p.ingress,
                    &want.ingress,
                    &mut out,
                );
                diff_dir(node, Direction::Egress, &p.egress, &want.egress, &mut out);
            }
        }
    }
    // The node's own addresses are IDENTITY_HOST, over any pod claiming one
    // (as the writer programs them); this runs in the agent's namespace.
    let node_addrs = crate::datapath::node_addrs::read().unwrap_or_default();
    let want_ids: BTreeMap<Lpm<IpKey>, u32> = node
        .compiled
        .identities
        .iter()
        .filter(|(ip, _)| !node_addrs.contains(ip))
        .map(|(ip, id)| (*ip, *id))
        .chain(node_addrs.iter().map(|ip| (*ip, IDENTITY_HOST)))
        .map(|(ip, id)| (encode::host_key(ip), id))
        .collect();
    diff_map(
        "identity trie",
        &node.pinned_ids,
        &want_ids,
        |k| match readback::key_ip(&k.1) {
            Some(ip) if encode::host_ip(*k).is_some() => ip.to_string(),
            _ => format!("prefix {}/{} (family {})", hex(&k.1.addr), k.0, k.1.family),
        },
        |id| format!("{id} ({})", node.identity_name(*id)),
        &mut out,
    );
    out
}
