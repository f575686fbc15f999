//! Pod objects: only pods that can send and receive traffic enter the
//! model.

use super::meta::{checked_labels, checked_name};
use super::{parse_protocol, FieldError, FieldResult};
use crate::model::{NamedPort, Pod};
use crate::names;
use k8s_openapi::api::core::v1 as core;
use std::net::IpAddr;

/// `Ok(None)` for a pod that takes no part in pod networking:
/// - phase Succeeded or Failed: its containers are gone and its address
///   is released (and may already belong to another pod);
/// - no address assigned yet;
/// - `hostNetwork: true` (it has the node's address and no veth of its
///   own; NetworkPolicy does not apply to it).
pub fn convert(pod: &core::Pod) -> FieldResult<Option<Pod>> {
    let (namespace, name) = checked_name(&pod.metadata, true)?;
    let labels = checked_labels(&pod.metadata)?;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();

    let phase = status.and_then(|s| s.phase.as_deref());
    match phase {
        // Pending pods with an address run init containers that need the
        // network; Unknown means the node stopped reporting, not that the
        // pod stopped. Both are enforced like Running ones.
        None | Some("Running" | "Pending" | "Unknown") => {}
        Some("Succeeded" | "Failed") => return Ok(None),
        Some(other) => {
            return Err(FieldError::new(
                "status.phase",
                format!("unknown phase {other:?}"),
            ))
        }
    }
    if spec.and_then(|s| s.host_network) == Some(true) {
        return Ok(None);
    }

    let ips = status.map(addresses).transpose()?.unwrap_or_default();
    if ips.is_empty() {
        return Ok(None);
    }

    let mut ports = Vec::new();
    for (i, c) in spec
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        for (j, p) in c.ports.iter().flatten().enumerate() {
            let field = |f: &str| format!("spec.containers[{i}].ports[{j}].{f}");
            let port = u16::try_from(p.container_port)
                .ok()
                .filter(|&n| n != 0)
                .ok_or_else(|| {
                    FieldError::new(
                        field("containerPort"),
                        format!("{} is out of range 1-65535", p.container_port),
                    )
                })?;
            let protocol = parse_protocol(p.protocol.as_deref())
                .map_err(|m| FieldError::new(field("protocol"), m))?;
            // Only named ports are recorded: an unnamed one can never be
            // referenced by a policy.
            if let Some(port_name) = &p.name {
                names::check_port_name(port_name).map_err(|m| FieldError::new(field("name"), m))?;
                ports.push(NamedPort {
                    name: port_name.clone(),
                    port,
                    protocol,
                });
            }
        }
    }

    Ok(Some(Pod {
        namespace,
        name,
        labels,
        node: spec
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty()),
        ips,
        ports,
        pending: phase == Some("Pending"),
    }))
}

/// `status.podIP` and `status.podIPs`, parsed and merged (the first entry
/// of podIPs is podIP); at most one address per family, as Kubernetes
/// assigns them.
fn addresses(status: &core::PodStatus) -> FieldResult<Vec<IpAddr>> {
    let mut ips: Vec<IpAddr> = Vec::new();
    let parse = |s: &str, field: String| {
        s.parse::<IpAddr>()
            .map_err(|_| FieldError::new(field, format!("{s:?} is not an IP address")))
    };
    if let Some(ip) = status.pod_ip.as_deref().filter(|s| !s.is_empty()) {
        ips.push(parse(ip, "status.podIP".into())?);
    }
    for (i, entry) in status.pod_ips.iter().flatten().enumerate() {
        let field = format!("status.podIPs[{i}].ip");
        let ip = parse(&entry.ip, field.clone())?;
        if ips.contains(&ip) {
            continue;
        }
        if ips.iter().any(|known| known.is_ipv4() == ip.is_ipv4()) {
            return Err(FieldError::new(
                field,
                format!("{ip}: a pod has at most one address per family"),
            ));
        }
        ips.push(ip);
    }
    Ok(ips)
}
