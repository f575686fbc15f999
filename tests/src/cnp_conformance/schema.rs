//! ClusterNetworkPolicy `policy.networking.k8s.io/v1alpha2` as its CRD
//! defines it (network-policy-api v0.2.0): strict types (an unknown or
//! misspelt field fails to deserialize) and the CRD's validations (bounds,
//! one-of fields, CEL rules), so the suite's policies are known to be what
//! an API server would accept, independently of Palisade's own loader.

use serde::Deserialize;
use std::collections::BTreeMap;

pub const API_VERSION: &str = "policy.networking.k8s.io/v1alpha2";
pub const KIND: &str = "ClusterNetworkPolicy";

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterNetworkPolicy {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: Spec,
    #[serde(default)]
    pub status: Option<serde_json::Value>,
}

/// The metadata fields the suite uses (a cluster-scoped object: no
/// namespace).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub tier: Tier,
    pub priority: i32,
    pub subject: Subject,
    #[serde(default)]
    pub ingress: Vec<IngressRule>,
    #[serde(default)]
    pub egress: Vec<EgressRule>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub enum Tier {
    Admin,
    Baseline,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub enum Action {
    Accept,
    Deny,
    Pass,
}

/// Exactly one field.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    #[serde(default)]
    pub namespaces: Option<LabelSelector>,
    #[serde(default)]
    pub pods: Option<NamespacedPod>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NamespacedPod {
    pub namespace_selector: LabelSelector,
    pub pod_selector: LabelSelector,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default)]
    pub match_labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub match_expressions: Option<Vec<Requirement>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirement {
    pub key: String,
    pub operator: String,
    #[serde(default)]
    pub values: Option<Vec<String>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngressRule {
    #[serde(default)]
    pub name: Option<String>,
    pub action: Action,
    pub from: Vec<IngressPeer>,
    #[serde(default)]
    pub protocols: Option<Vec<ProtocolEntry>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressRule {
    #[serde(default)]
    pub name: Option<String>,
    pub action: Action,
    pub to: Vec<EgressPeer>,
    #[serde(default)]
    pub protocols: Option<Vec<ProtocolEntry>>,
}

/// Exactly one field.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngressPeer {
    #[serde(default)]
    pub namespaces: Option<LabelSelector>,
    #[serde(default)]
    pub pods: Option<NamespacedPod>,
}

/// Exactly one field; `nodes` and `domainNames` are experimental-channel.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EgressPeer {
    #[serde(default)]
    pub namespaces: Option<LabelSelector>,
    #[serde(default)]
    pub pods: Option<NamespacedPod>,
    #[serde(default)]
    pub nodes: Option<LabelSelector>,
    #[serde(default)]
    pub networks: Option<Vec<String>>,
    #[serde(default)]
    pub domain_names: Option<Vec<String>>,
}

/// Exactly one field.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProtocolEntry {
    #[serde(default)]
    pub tcp: Option<ProtocolPort>,
    #[serde(default)]
    pub udp: Option<ProtocolPort>,
    #[serde(default)]
    pub sctp: Option<ProtocolPort>,
    #[serde(default)]
    pub destination_named_port: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProtocolPort {
    #[serde(default)]
    pub destination_port: Option<Port>,
}

/// Exactly one field.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Port {
    #[serde(default)]
    pub number: Option<i32>,
    #[serde(default)]
    pub range: Option<PortRange>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortRange {
    pub start: i32,
    pub end: i32,
}

/// What a valid object uses beyond the standard channel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Channel {
    pub nodes: bool,
    pub domain_names: bool,
    pub named_ports: bool,
}

impl Channel {
    /// Uses a field the standard channel's CRD does not have.
    pub fn experimental(&self) -> bool {
        self.nodes || self.domain_names
    }
}

/// Parses `value` and applies the CRD's validations: the problems found
/// (empty when an API server would accept it) and the channel it needs.
pub fn check(value: &serde_json::Value) -> Result<Channel, Vec<String>> {
    let cnp: ClusterNetworkPolicy =
        serde_json::from_value(value.clone()).map_err(|e| vec![format!("does not parse: {e}")])?;
    let mut issues = Vec::new();
    let mut channel = Channel::default();
    let mut issue = |field: String, msg: &str| issues.push(format!("{field}: {msg}"));
    if cnp.api_version != API_VERSION {
        issue("apiVersion".into(), "not policy.networking.k8s.io/v1alpha2");
    }
    if cnp.kind != KIND {
        issue("kind".into(), "not ClusterNetworkPolicy");
    }
    let spec = &cnp.spec;
    if !(0..=1000).contains(&spec.priority) {
        issue("spec.priority".into(), "outside 0..=1000");
    }
    let subject = [
        spec.subject.namespaces.is_some(),
        spec.subject.pods.is_some(),
    ];
    if subject.iter().filter(|s| **s).count() != 1 {
        issue("spec.subject".into(), "exactly one of namespaces, pods");
    }
    for (dir, n) in [
        ("ingress", spec.ingress.len()),
        ("egress", spec.egress.len()),
    ] {
        if n > 25 {
            issue(format!("spec.{dir}"), "more than 25 rules");
        }
    }
    for (i, r) in spec.ingress.iter().enumerate() {
        let field = format!("spec.ingress[{i}]");
        check_rule(
            &field,
            &r.name,
            r.from.len(),
            &r.protocols,
            &mut issues,
            &mut channel,
        );
        for (j, p) in r.from.iter().enumerate() {
            if [p.namespaces.is_some(), p.pods.is_some()]
                .iter()
                .filter(|s| **s)
                .count()
                != 1
            {
                issues.push(format!(
                    "{field}.from[{j}]: exactly one of namespaces, pods"
                ));
            }
        }
    }
    for (i, r) in spec.egress.iter().enumerate() {
        let field = format!("spec.egress[{i}]");
        check_rule(
            &field,
            &r.name,
            r.to.len(),
            &r.protocols,
            &mut issues,
            &mut channel,
        );
        let mut addressed = false;
        for (j, p) in r.to.iter().enumerate() {
            let set = [
                p.namespaces.is_some(),
                p.pods.is_some(),
                p.nodes.is_some(),
                p.networks.is_some(),
                p.domain_names.is_some(),
            ];
            if set.iter().filter(|s| **s).count() != 1 {
                issues.push(format!(
                    "{field}.to[{j}]: exactly one of namespaces, pods, nodes, networks, domainNames"
                ));
            }
            channel.nodes |= p.nodes.is_some();
            channel.domain_names |= p.domain_names.is_some();
            addressed |= p.nodes.is_some() || p.networks.is_some() || p.domain_names.is_some();
            if let Some(nets) = &p.networks {
                if !(1..=25).contains(&nets.len()) {
                    issues.push(format!("{field}.to[{j}].networks: 1 to 25 CIDRs"));
                }
                for (k, c) in nets.iter().enumerate() {
                    // isCIDR: an address and a prefix length.
                    if !c.contains('/') || c.parse::<ipnetwork::IpNetwork>().is_err() {
                        issues.push(format!("{field}.to[{j}].networks[{k}]: invalid CIDR {c}"));
                    }
                }
            }
            if p.domain_names.is_some() && r.action != Action::Accept {
                issues.push(format!("{field}.to[{j}]: domainNames only in Accept rules"));
            }
        }
        let named = r
            .protocols
            .iter()
            .flatten()
            .any(|p| p.destination_named_port.is_some());
        if addressed && named {
            issues.push(format!(
                "{field}: networks/nodes/domainNames peer cannot be set with namedPorts"
            ));
        }
    }
    if issues.is_empty() {
        Ok(channel)
    } else {
        Err(issues)
    }
}

/// What every rule of either direction must satisfy.
fn check_rule(
    field: &str,
    name: &Option<String>,
    peers: usize,
    protocols: &Option<Vec<ProtocolEntry>>,
    issues: &mut Vec<String>,
    channel: &mut Channel,
) {
    if name.as_ref().is_some_and(|n| n.len() > 100) {
        issues.push(format!("{field}.name: longer than 100"));
    }
    if !(1..=25).contains(&peers) {
        issues.push(format!("{field}: 1 to 25 peers"));
    }
    if let Some(ps) = protocols {
        if !(1..=25).contains(&ps.len()) {
            issues.push(format!("{field}.protocols: 1 to 25 entries"));
        }
        for (k, p) in ps.iter().enumerate() {
            check_protocol(&format!("{field}.protocols[{k}]"), p, issues, channel);
        }
    }
}

fn check_protocol(field: &str, p: &ProtocolEntry, issues: &mut Vec<String>, channel: &mut Channel) {
    let set = [
        p.tcp.is_some(),
        p.udp.is_some(),
        p.sctp.is_some(),
        p.destination_named_port.is_some(),
    ];
    if set.iter().filter(|s| **s).count() != 1 {
        issues.push(format!(
            "{field}: exactly one of tcp, udp, sctp, destinationNamedPort"
        ));
    }
    channel.named_ports |= p.destination_named_port.is_some();
    for port in [&p.tcp, &p.udp, &p.sctp]
        .into_iter()
        .flatten()
        .filter_map(|pp| pp.destination_port.as_ref())
    {
        let valid = |n: i32| (1..=65535).contains(&n);
        match (port.number, &port.range) {
            (Some(n), None) if valid(n) => {}
            (None, Some(r)) if valid(r.start) && valid(r.end) && r.start < r.end => {}
            _ => issues.push(format!(
                "{field}.destinationPort: one of number (1..=65535) or range (start < end)"
            )),
        }
    }
}
