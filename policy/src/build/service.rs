//! Service objects: their ClusterIPs (what the datapath defers egress
//! decisions on), ports and selector (what backends are computed from).

use super::meta::checked_name;
use super::{parse_protocol, FieldError, FieldResult};
use crate::model::{Labels, Service, ServicePort, TargetPort};
use crate::names;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The ClusterIP value of a headless Service.
const HEADLESS: &str = "None";

pub fn convert(svc: &core::Service) -> FieldResult<Service> {
    let (namespace, name) = checked_name(&svc.metadata, true)?;
    let spec = svc.spec.as_ref();
    let external_name = spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName");
    // An ExternalName Service is a DNS alias: no ClusterIP, nothing NATed.
    let cluster_ips = match spec {
        Some(s) if !external_name => cluster_ips(s)?,
        _ => Vec::new(),
    };
    let mut ports = Vec::new();
    for (i, p) in spec
        .and_then(|s| s.ports.as_deref())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let p = port(p, i)?;
        // kube-proxy keys its rules by (ClusterIP, protocol, port): two
        // entries for one key cannot both be served (the API rejects them).
        if ports
            .iter()
            .any(|q: &ServicePort| q.port == p.port && q.protocol == p.protocol)
        {
            return Err(FieldError::new(
                format!("spec.ports[{i}].port"),
                format!("{}/{} is listed twice", p.port, p.protocol.name()),
            ));
        }
        ports.push(p);
    }
    let selector = match spec.and_then(|s| s.selector.as_ref()) {
        Some(sel) if !sel.is_empty() => Some(selector(sel)?),
        _ => None,
    };
    Ok(Service {
        namespace,
        name,
        cluster_ips,
        ports,
        selector,
    })
}

/// `spec.clusterIPs`, or `spec.clusterIP` when the list is absent (older
/// API servers and hand-written manifests); both must agree on the first
/// address when both are given, as the API server enforces.
fn cluster_ips(spec: &core::ServiceSpec) -> FieldResult<Vec<IpAddr>> {
    let single = spec.cluster_ip.as_deref().filter(|s| !s.is_empty());
    let list: Vec<(String, &str)> = match spec.cluster_ips.as_deref() {
        Some(list) if !list.is_empty() => list
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("spec.clusterIPs[{i}]"), s.as_str()))
            .collect(),
        _ => single
            .map(|s| vec![("spec.clusterIP".to_string(), s)])
            .unwrap_or_default(),
    };
    if let (Some(single), Some((field, first))) = (single, list.first()) {
        if single != *first {
            return Err(FieldError::new(
                field.clone(),
                format!("{first:?} differs from spec.clusterIP {single:?}"),
            ));
        }
    }
    if list.iter().any(|(_, s)| *s == HEADLESS) {
        if let Some((field, _)) = list.get(1) {
            return Err(FieldError::new(
                field.clone(),
                "a headless Service (clusterIP None) has no other ClusterIP",
            ));
        }
        return Ok(Vec::new());
    }
    let mut ips: Vec<IpAddr> = Vec::new();
    for (field, s) in list {
        let ip: IpAddr = s.parse().map_err(|_| {
            FieldError::new(
                field.clone(),
                format!("{s:?} is not an IP address (nor \"None\")"),
            )
        })?;
        if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() {
            return Err(FieldError::new(
                field,
                format!("{ip} cannot be a ClusterIP"),
            ));
        }
        if ips.iter().any(|known| known.is_ipv4() == ip.is_ipv4()) {
            return Err(FieldError::new(
                field,
                format!("{ip}: a Service has at most one ClusterIP per family"),
            ));
        }
        ips.push(ip);
    }
    Ok(ips)
}

fn port(p: &core::ServicePort, i: usize) -> FieldResult<ServicePort> {
    let field = |f: &str| format!("spec.ports[{i}].{f}");
    let number = |n: i32, f: &str| {
        u16::try_from(n)
            .ok()
            .filter(|&n| n != 0)
            .ok_or_else(|| FieldError::new(field(f), format!("{n} is out of range 1-65535")))
    };
    let port = number(p.port, "port")?;
    let protocol =
        parse_protocol(p.protocol.as_deref()).map_err(|m| FieldError::new(field("protocol"), m))?;
    if let Some(name) = p.name.as_deref().filter(|n| !n.is_empty()) {
        names::check_dns_label(name).map_err(|m| FieldError::new(field("name"), m))?;
    }
    let target = match &p.target_port {
        None => TargetPort::Number(port),
        Some(IntOrString::Int(n)) => TargetPort::Number(number(*n, "targetPort")?),
        Some(IntOrString::String(s)) => {
            // The API accepts a number written as a string as that number.
            match s.parse::<i32>() {
                Ok(n) => TargetPort::Number(number(n, "targetPort")?),
                Err(_) => {
                    names::check_port_name(s)
                        .map_err(|m| FieldError::new(field("targetPort"), m))?;
                    TargetPort::Name(s.clone())
                }
            }
        }
    };
    Ok(ServicePort {
        name: p.name.clone().filter(|n| !n.is_empty()),
        port,
        protocol,
        target,
    })
}

/// A Service selector is a plain label map: keys and values are checked
/// as labels, since they are compared with pod labels verbatim.
fn selector(sel: &BTreeMap<String, String>) -> FieldResult<Labels> {
    for (k, v) in sel {
        let field = format!("spec.selector[{k:?}]");
        names::check_label_key(k).map_err(|m| FieldError::new(&field, m))?;
        names::check_label_value(v).map_err(|m| FieldError::new(&field, m))?;
    }
    Ok(Labels::from(sel.clone()))
}
