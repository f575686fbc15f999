//! Node objects: what `nodes` peers of ClusterNetworkPolicy select.

use super::cluster::checked_name;
use super::meta::checked_labels;
use super::{FieldError, FieldResult};
use crate::cluster::Node;
use k8s_openapi::api::core::v1 as core;
use std::net::IpAddr;

/// Address types that carry an IP; the others (`Hostname`,
/// `InternalDNS`, `ExternalDNS`) carry names, which match no packet.
const IP_TYPES: [&str; 2] = ["InternalIP", "ExternalIP"];

/// Name, labels and the IPs among `status.addresses` (each once, in order).
pub fn convert(node: &core::Node) -> FieldResult<Node> {
    let name = checked_name(&node.metadata)?;
    let labels = checked_labels(&node.metadata)?;
    let mut addresses: Vec<IpAddr> = Vec::new();
    let listed = node.status.as_ref().and_then(|s| s.addresses.as_deref());
    for (i, a) in listed.unwrap_or_default().iter().enumerate() {
        let ip = match a.address.trim().parse::<IpAddr>() {
            Ok(ip) => ip,
            // A name in a name's type is no error; an unknown type
            // carrying an IP is still an address of the node.
            Err(_) if !IP_TYPES.contains(&a.type_.as_str()) => continue,
            Err(_) => {
                return Err(FieldError::new(
                    format!("status.addresses[{i}].address"),
                    format!("{:?} is not an IP address (type {})", a.address, a.type_),
                ))
            }
        };
        if !addresses.contains(&ip) {
            addresses.push(ip);
        }
    }
    Ok(Node {
        name,
        labels,
        addresses,
    })
}
