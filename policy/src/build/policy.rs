//! NetworkPolicy objects: defaulting and validation of the spec.

use super::meta::checked_name;
use super::{parse_protocol, selector, FieldError, FieldResult};
use crate::model::{Enforcement, FieldIssue, Peer, Policy, PortMatch, PortSpec, Rule, Selector};
use crate::names;
use ipnetwork::IpNetwork;
use k8s_openapi::api::networking::v1 as net;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The annotation that puts a NetworkPolicy in audit mode (`audit`) or
/// says it is enforced (`enforce`, the default when absent).
pub const ENFORCEMENT_ANNOTATION: &str = "palisade.dev/enforcement";

/// A NetworkPolicy as the model holds it. Only a name or namespace that
/// cannot be read is an error (the policy cannot be told apart from
/// others); any other problem gives a policy marked unreadable, which
/// isolates what could be read of its pods and directions and allows
/// nothing: a policy the API server accepted is never dropped into
/// openness.
pub fn convert(np: &net::NetworkPolicy) -> FieldResult<Policy> {
    let (namespace, name) = checked_name(&np.metadata, true)?;
    let annotation = np
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ENFORCEMENT_ANNOTATION));
    let (enforcement, warnings) = enforcement(annotation.map(String::as_str));
    let mut policy = Policy {
        namespace,
        name,
        enforcement,
        // Until the spec is read: its whole namespace, both directions
        // (what an unreadable policy isolates when nothing more is known).
        pod_selector: Selector::default(),
        isolates_ingress: true,
        isolates_egress: true,
        ingress: Vec::new(),
        egress: Vec::new(),
        unreadable: None,
        warnings,
    };
    if let Err(e) = read_spec(np.spec.as_ref(), &mut policy) {
        policy.ingress.clear();
        policy.egress.clear();
        policy.unreadable = Some(e.into());
    }
    Ok(policy)
}

/// Reads the spec into `policy`. The pod selector and the directions are
/// stored as soon as each is read, so that a later error leaves them in
/// place for the unreadable policy.
fn read_spec(spec: Option<&net::NetworkPolicySpec>, policy: &mut Policy) -> FieldResult<()> {
    let spec = spec.ok_or_else(|| FieldError::new("spec", "missing"))?;
    let types = policy_types(spec.policy_types.as_deref(), spec.egress.is_some());
    if let Ok((ingress, egress)) = types {
        (policy.isolates_ingress, policy.isolates_egress) = (ingress, egress);
    }
    policy.pod_selector = selector::convert(&spec.pod_selector, "spec.podSelector")?;
    let (isolates_ingress, isolates_egress) = types?;

    let mut ingress = Vec::new();
    for (i, r) in spec.ingress.iter().flatten().enumerate() {
        let field = format!("spec.ingress[{i}]");
        ingress.push(rule(r.from.as_deref(), r.ports.as_deref(), &field, "from")?);
    }
    let mut egress = Vec::new();
    for (i, r) in spec.egress.iter().flatten().enumerate() {
        let field = format!("spec.egress[{i}]");
        egress.push(rule(r.to.as_deref(), r.ports.as_deref(), &field, "to")?);
    }
    // Rules of a direction the policy does not isolate are ignored by
    // Kubernetes; dropping them here keeps every consumer from having to
    // remember that. (They are still validated above.)
    if isolates_ingress {
        policy.ingress = ingress;
    }
    if isolates_egress {
        policy.egress = egress;
    }
    Ok(())
}

/// The enforcement annotation's value: `audit` or `enforce` (the default).
/// Anything else is read as `enforce`, with a warning: the API server
/// accepted the policy, so it is enforced; and a typo must not silently
/// enforce a trial either, hence the warning.
pub(super) fn enforcement(value: Option<&str>) -> (Enforcement, Vec<FieldIssue>) {
    match value {
        None | Some("enforce") => (Enforcement::Enforce, Vec::new()),
        Some("audit") => (Enforcement::Audit, Vec::new()),
        Some(other) => (
            Enforcement::Enforce,
            vec![FieldIssue {
                field: format!("metadata.annotations[{ENFORCEMENT_ANNOTATION:?}]"),
                message: format!(
                    r#"unknown value {other:?} (must be "audit" or "enforce"): the policy is enforced"#
                ),
            }],
        ),
    }
}

/// Effective policyTypes. Absent (or empty) means Ingress, plus Egress
/// when the policy has an `egress` section: present, even as an empty
/// list, which is how a manifest says "deny all egress".
pub(super) fn policy_types(
    types: Option<&[String]>,
    has_egress: bool,
) -> FieldResult<(bool, bool)> {
    match types {
        None | Some([]) => Ok((true, has_egress)),
        Some(types) => {
            let (mut ingress, mut egress) = (false, false);
            for (i, t) in types.iter().enumerate() {
                match t.as_str() {
                    "Ingress" => ingress = true,
                    "Egress" => egress = true,
                    other => {
                        return Err(FieldError::new(
                            format!("spec.policyTypes[{i}]"),
                            format!("unknown policy type {other:?}: must be Ingress or Egress"),
                        ))
                    }
                }
            }
            Ok((ingress, egress))
        }
    }
}

/// One rule; `peer_key` is `from` or `to`. Empty and absent lists both
/// mean "all" (`None`).
fn rule(
    peers: Option<&[net::NetworkPolicyPeer]>,
    ports: Option<&[net::NetworkPolicyPort]>,
    field: &str,
    peer_key: &str,
) -> FieldResult<Rule> {
    let peers = match peers {
        None | Some([]) => None,
        Some(list) => Some(
            list.iter()
                .enumerate()
                .map(|(j, p)| peer(p, &format!("{field}.{peer_key}[{j}]")))
                .collect::<FieldResult<Vec<_>>>()?,
        ),
    };
    let ports = match ports {
        None | Some([]) => None,
        Some(list) => Some(
            list.iter()
                .enumerate()
                .map(|(k, p)| port(p, &format!("{field}.ports[{k}]")))
                .collect::<FieldResult<Vec<_>>>()?,
        ),
    };
    Ok(Rule { peers, ports })
}

fn peer(p: &net::NetworkPolicyPeer, field: &str) -> FieldResult<Peer> {
    match (&p.ip_block, &p.namespace_selector, &p.pod_selector) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err(FieldError::new(
            field,
            "ipBlock may not be combined with podSelector or namespaceSelector",
        )),
        (Some(block), None, None) => ip_block(block, &format!("{field}.ipBlock")),
        (None, None, None) => Err(FieldError::new(
            field,
            "must specify podSelector, namespaceSelector or ipBlock",
        )),
        (None, ns, pods) => Ok(Peer::Pods {
            namespaces: ns
                .as_ref()
                .map(|s| selector::convert(s, &format!("{field}.namespaceSelector")))
                .transpose()?,
            pods: pods
                .as_ref()
                .map(|s| selector::convert(s, &format!("{field}.podSelector")))
                .transpose()?,
        }),
    }
}

/// Parses a CIDR. Host bits are accepted and cleared (`10.0.0.1/24` is
/// `10.0.0.0/24`), as older API servers stored such values unchanged and
/// every implementation reads them as the network; a bare address without
/// a prefix length is rejected.
pub(super) fn cidr(s: &str, field: &str) -> FieldResult<IpNetwork> {
    let bad = || {
        FieldError::new(
            field,
            format!("{s:?} is not a CIDR (address/prefix-length)"),
        )
    };
    if !s.contains('/') {
        return Err(bad());
    }
    let net: IpNetwork = s.trim().parse().map_err(|_| bad())?;
    IpNetwork::new(net.network(), net.prefix()).map_err(|_| bad())
}

fn ip_block(block: &net::IPBlock, field: &str) -> FieldResult<Peer> {
    let outer = cidr(&block.cidr, &format!("{field}.cidr"))?;
    let mut except = Vec::new();
    for (i, e) in block.except.iter().flatten().enumerate() {
        let f = format!("{field}.except[{i}]");
        let inner = cidr(e, &f)?;
        let inside = inner.is_ipv4() == outer.is_ipv4()
            && inner.prefix() > outer.prefix()
            && outer.contains(inner.network());
        if !inside {
            return Err(FieldError::new(
                f,
                format!("{inner} must be strictly inside cidr {outer}"),
            ));
        }
        except.push(inner);
    }
    Ok(Peer::IpBlock {
        cidr: outer,
        except,
    })
}

fn port(p: &net::NetworkPolicyPort, field: &str) -> FieldResult<PortSpec> {
    let protocol = parse_protocol(p.protocol.as_deref())
        .map_err(|m| FieldError::new(format!("{field}.protocol"), m))?;
    let in_range = |n: i32, f: &str| {
        u16::try_from(n).ok().filter(|&n| n != 0).ok_or_else(|| {
            FieldError::new(
                format!("{field}.{f}"),
                format!("{n} is out of range 1-65535"),
            )
        })
    };
    let port = match (&p.port, p.end_port) {
        (None, None) => PortMatch::Any,
        (None, Some(_)) => {
            return Err(FieldError::new(
                format!("{field}.endPort"),
                "endPort requires a numeric port",
            ))
        }
        (Some(IntOrString::Int(n)), end) => {
            let port = in_range(*n, "port")?;
            let end = match end {
                None => port,
                Some(e) => {
                    let end = in_range(e, "endPort")?;
                    if end < port {
                        return Err(FieldError::new(
                            format!("{field}.endPort"),
                            format!("{end} is less than port {port}"),
                        ));
                    }
                    end
                }
            };
            PortMatch::Range { port, end }
        }
        (Some(IntOrString::String(_)), Some(_)) => {
            return Err(FieldError::new(
                format!("{field}.endPort"),
                "endPort may only be used with a numeric port",
            ))
        }
        (Some(IntOrString::String(name)), None) => {
            names::check_port_name(name)
                .map_err(|m| FieldError::new(format!("{field}.port"), m))?;
            PortMatch::Named(name.clone())
        }
    };
    Ok(PortSpec { protocol, port })
}
