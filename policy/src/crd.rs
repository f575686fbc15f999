//! The ClusterNetworkPolicy API object (`policy.networking.k8s.io/v1alpha2`)
//! as the API server serves it: what manifests and watchers deserialize,
//! and what the CustomResourceDefinition in `deploy/` is generated from
//! ([`definition`]). Validation into the model is `build/cluster.rs`.
//!
//! Every optional field is an `Option` and unknown keys are ignored, so an
//! object written against a newer version of the API still deserializes:
//! a peer or protocol entry whose only key is one this version does not
//! know reads as an entry with no field set, which the conversion fails
//! closed on instead of skipping.
//!
//! What the schema derive cannot say (exactly one field of a peer, the CEL
//! rules, list and map types, the newtypes' string constraints) is added
//! by [`definition`], and what it says that the API does not (`nullable`
//! on every optional field, a default on `namespaceSelector`) is removed.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::core::CustomResourceExt;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// `spec`: where the policy sits, whom it applies to, and its rules.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "policy.networking.k8s.io",
    version = "v1alpha2",
    kind = "ClusterNetworkPolicy",
    plural = "clusternetworkpolicies",
    shortname = "cnp",
    status = "ClusterNetworkPolicyStatus",
    printcolumn = r#"{"name":"Tier","type":"string","jsonPath":".spec.tier"}"#,
    printcolumn = r#"{"name":"Priority","type":"string","jsonPath":".spec.priority"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetworkPolicySpec {
    /// Admin (before NetworkPolicy) or Baseline (after it).
    pub tier: Tier,
    /// 0..=1000; lower values are evaluated first within the tier.
    #[schemars(range(min = 0, max = 1000))]
    pub priority: i32,
    /// The pods the policy applies to: exactly one field.
    pub subject: Subject,
    /// Ingress rules, first match decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 25))]
    pub ingress: Option<Vec<IngressRule>>,
    /// Egress rules, first match decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 25))]
    pub egress: Option<Vec<EgressRule>>,
}

/// `spec.tier`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum Tier {
    #[default]
    Admin,
    Baseline,
}

/// A rule's `action`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum Action {
    #[default]
    Accept,
    Deny,
    Pass,
}

/// `status`: conditions an implementation reports.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
pub struct ClusterNetworkPolicyStatus {
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// `spec.subject`: exactly one of `namespaces` (every pod of the selected
/// namespaces) and `pods`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
pub struct Subject {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
}

/// Pods selected by labels in namespaces selected by labels.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespacedPod {
    /// Empty: every namespace.
    #[serde(default)]
    pub namespace_selector: LabelSelector,
    pub pod_selector: LabelSelector,
}

/// One ingress rule.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
pub struct IngressRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 100))]
    pub name: Option<String>,
    pub action: Action,
    #[schemars(length(min = 1, max = 25))]
    pub from: Vec<IngressPeer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 25))]
    pub protocols: Option<Vec<Protocol>>,
}

/// One egress rule.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
pub struct EgressRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 100))]
    pub name: Option<String>,
    pub action: Action,
    #[schemars(length(min = 1, max = 25))]
    pub to: Vec<EgressPeer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 25))]
    pub protocols: Option<Vec<Protocol>>,
}

/// One `from` entry: exactly one field.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
pub struct IngressPeer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
}

/// One `to` entry: exactly one field.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EgressPeer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
    /// The `status.addresses` IPs of the selected Nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<LabelSelector>,
    /// CIDRs of either family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 25))]
    pub networks: Option<Vec<Cidr>>,
    /// Domain names (Accept rules only upstream; not supported here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 25))]
    pub domain_names: Option<Vec<DomainName>>,
}

/// A CIDR string (its syntax is checked by conversion and by the CRD's CEL).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct Cidr(pub String);

/// A domain name, optionally with a leading `*.` wildcard.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct DomainName(
    #[schemars(regex(
        pattern = r"^(\*\.)?([a-zA-z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.)+[a-zA-z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.?$"
    ))]
    pub String,
);

/// One `protocols` entry: exactly one of `tcp`, `udp`, `sctp` and
/// `destinationNamedPort`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Protocol {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<ProtocolPort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<ProtocolPort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sctp: Option<ProtocolPort>,
    /// A container port name of the destination pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_named_port: Option<String>,
}

/// The match of one protocol (`tcp`, `udp`, `sctp`).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProtocolPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_port: Option<Port>,
}

/// Exactly one of a port number and a range.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
pub struct Port {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub number: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<PortRange>,
}

/// `start` ..= `end`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
pub struct PortRange {
    #[schemars(range(min = 1, max = 65535))]
    pub start: i32,
    #[schemars(range(min = 1, max = 65535))]
    pub end: i32,
}

/// The CRD as `deploy/` installs it: the derived schema, plus what the
/// derive cannot express, added at the paths the API declares them.
pub fn definition() -> CustomResourceDefinition {
    let mut crd = serde_json::to_value(ClusterNetworkPolicy::crd()).expect("a CRD serializes");
    let schema = crd
        .pointer_mut("/spec/versions/0/schema/openAPIV3Schema")
        .expect("the derive writes a schema");
    normalize(schema);
    let root = schema.as_object_mut().expect("an object schema");
    root.remove("title");
    root.insert("required".into(), json!(["metadata", "spec"]));
    let props = &mut schema["properties"];
    props["apiVersion"] = json!({"type": "string"});
    props["kind"] = json!({"type": "string"});
    props["metadata"] = json!({"type": "object"});
    let spec = &mut schema["properties"]["spec"];
    one_of(&mut spec["properties"]["subject"]);
    for (rules, peers) in [("ingress", "from"), ("egress", "to")] {
        let rule = &mut spec["properties"][rules]["items"];
        let peer = &mut rule["properties"][peers]["items"];
        one_of(peer);
        if rules == "egress" {
            let props = &mut peer["properties"];
            props["networks"]["x-kubernetes-list-type"] = json!("set");
            props["domainNames"]["x-kubernetes-list-type"] = json!("set");
            let network = &mut props["networks"]["items"];
            network["maxLength"] = json!(43);
            network["x-kubernetes-validations"] =
                json!([{"rule": "isCIDR(self)", "message": "Invalid CIDR format provided"}]);
            props["domainNames"]["items"]["pattern"] = json!(DOMAIN_NAME_PATTERN);
            rule["x-kubernetes-validations"] = json!([{
                "rule": "!(self.to.exists(peer, has(peer.networks) || has(peer.nodes) || has(peer.domainNames)) && has(self.protocols) && self.protocols.exists(protocol, has(protocol.destinationNamedPort)))",
                "message": "networks/nodes/domainNames peer cannot be set with namedPorts since there are no namedPorts for networks/nodes/domainNames"
            }]);
        }
        let protocol = &mut rule["properties"]["protocols"]["items"];
        one_of(protocol);
        for name in ["tcp", "udp", "sctp"] {
            let p = &mut protocol["properties"][name];
            p["minProperties"] = json!(1);
            let port = &mut p["properties"]["destinationPort"];
            one_of(port);
            port["properties"]["range"]["x-kubernetes-validations"] = json!([{
                "rule": "self.start < self.end",
                "message": "Start port must be less than End port"
            }]);
        }
    }
    let status = &mut schema["properties"]["status"];
    status["required"] = json!(["conditions"]);
    let conditions = &mut status["properties"]["conditions"];
    conditions["x-kubernetes-list-type"] = json!("map");
    conditions["x-kubernetes-list-map-keys"] = json!(["type"]);
    condition(&mut conditions["items"]["properties"]);
    let names = &mut crd["spec"]["names"];
    names["listKind"] = json!("ClusterNetworkPolicyList");
    names.as_object_mut().expect("names").remove("categories");
    serde_json::from_value(crd).expect("the patched CRD is still a CRD")
}

/// A domain name, optionally under a `*.` wildcard (the API's pattern,
/// `A-z` ranges and all).
const DOMAIN_NAME_PATTERN: &str = r"^(\*\.)?([a-zA-z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.)+[a-zA-z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.?$";

/// Removes what the derive adds that the API does not have (`nullable`,
/// defaults), writes whole-number bounds as integers, and marks label
/// selectors atomic as Kubernetes' own schema does.
fn normalize(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            map.remove("nullable");
            map.remove("default");
            for key in ["minimum", "maximum"] {
                if let Some(n) = map.get(key).and_then(Value::as_f64) {
                    map.insert(key.into(), json!(n as i64));
                }
            }
            let props = map.get("properties");
            let selector = props.is_some_and(|p| {
                p.get("matchLabels").is_some() && p.get("matchExpressions").is_some()
            });
            if selector {
                map.insert("x-kubernetes-map-type".into(), json!("atomic"));
                let exprs = &mut map["properties"]["matchExpressions"];
                exprs["x-kubernetes-list-type"] = json!("atomic");
                exprs["items"]["properties"]["values"]["x-kubernetes-list-type"] = json!("atomic");
            }
            for (key, v) in map.iter_mut() {
                // Enum values and required lists are data, not schemas.
                if key != "enum" && key != "required" {
                    normalize(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalize),
        _ => {}
    }
}

/// The checks the API server's own schema puts on `metav1.Condition`.
fn condition(props: &mut Value) {
    props["message"]["maxLength"] = json!(32768);
    props["observedGeneration"]["minimum"] = json!(0);
    let reason = &mut props["reason"];
    reason["minLength"] = json!(1);
    reason["maxLength"] = json!(1024);
    reason["pattern"] = json!("^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$");
    props["status"]["enum"] = json!(["True", "False", "Unknown"]);
    let kind = &mut props["type"];
    kind["maxLength"] = json!(316);
    kind["pattern"] = json!(
        r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
    );
}

/// Exactly one property set.
fn one_of(schema: &mut Value) {
    schema["minProperties"] = json!(1);
    schema["maxProperties"] = json!(1);
}

/// Where [`definition_yaml`] is committed, from the workspace root.
pub const DEFINITION_PATH: &str = "deploy/crd/clusternetworkpolicies.yaml";

/// [`definition`] as the YAML committed in `deploy/`.
pub fn definition_yaml() -> String {
    let header = "# Generated from palisade-policy's crd.rs by `cargo xtask crd`; do not edit.\n";
    let body = serde_yaml::to_string(&definition()).expect("a CRD serializes as YAML");
    format!("{header}{body}")
}
