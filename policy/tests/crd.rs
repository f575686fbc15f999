//! The ClusterNetworkPolicy CRD in `deploy/crd/`: the committed file is
//! what the Rust types generate, and its schema has, field by field, the
//! types and constraints of the upstream v1alpha2 schema (standard and
//! experimental channels: the experimental one is a superset, and the
//! agent understands all of it, so the CRD is that one).
//!
//! The upstream schema is transcribed by hand below as one line per field
//! path. Compared: type, format, enum, minimum/maximum, min/maxItems,
//! min/maxLength, min/maxProperties, required, list and map types, the
//! presence of a `pattern` (not its text), and CEL rules by their message.
//! Descriptions are not compared.

use palisade_policy::crd::{definition, definition_yaml, DEFINITION_PATH};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

#[test]
fn the_committed_crd_is_the_generated_one() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(DEFINITION_PATH);
    let committed = std::fs::read_to_string(&path).expect("the committed CRD");
    assert!(
        committed == definition_yaml(),
        "{DEFINITION_PATH} is stale: run `cargo xtask crd`"
    );
}

#[test]
fn names_scope_and_version_are_the_upstream_ones() {
    let crd = serde_json::to_value(definition()).unwrap();
    let spec = &crd["spec"];
    assert_eq!(
        crd["metadata"]["name"],
        "clusternetworkpolicies.policy.networking.k8s.io"
    );
    assert_eq!(spec["group"], "policy.networking.k8s.io");
    assert_eq!(spec["scope"], "Cluster");
    let names = &spec["names"];
    assert_eq!(names["kind"], "ClusterNetworkPolicy");
    assert_eq!(names["listKind"], "ClusterNetworkPolicyList");
    assert_eq!(names["plural"], "clusternetworkpolicies");
    assert_eq!(names["singular"], "clusternetworkpolicy");
    assert_eq!(names["shortNames"], serde_json::json!(["cnp"]));
    let versions = spec["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 1);
    let v = &versions[0];
    assert_eq!(v["name"], "v1alpha2");
    assert_eq!(
        (&v["served"], &v["storage"]),
        (&Value::Bool(true), &Value::Bool(true))
    );
    assert_eq!(v["subresources"], serde_json::json!({"status": {}}));
    let columns: Vec<(&str, &str, &str)> = v["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap();
            (s("name"), s("type"), s("jsonPath"))
        })
        .collect();
    assert_eq!(
        columns,
        [
            ("Tier", "string", ".spec.tier"),
            ("Priority", "string", ".spec.priority"),
            ("Age", "date", ".metadata.creationTimestamp"),
        ]
    );
}

/// `path constraints...`, one per field of the upstream schema. Paths:
/// `.` properties, `[]` list items, `{}` map values.
const UPSTREAM: &str = r#"
(root) object required=metadata,spec
apiVersion string
kind string
metadata object
spec object required=priority,subject,tier
spec.tier string enum=Admin|Baseline
spec.priority integer format=int32 minimum=0 maximum=1000
spec.subject object minProperties=1 maxProperties=1
spec.subject.namespaces SELECTOR
spec.subject.pods object required=podSelector
spec.subject.pods.namespaceSelector SELECTOR
spec.subject.pods.podSelector SELECTOR
spec.ingress array maxItems=25
spec.ingress[] object required=action,from
spec.ingress[].name string maxLength=100
spec.ingress[].action string enum=Accept|Deny|Pass
spec.ingress[].from array minItems=1 maxItems=25
spec.ingress[].from[] object minProperties=1 maxProperties=1
spec.ingress[].from[].namespaces SELECTOR
spec.ingress[].from[].pods object required=podSelector
spec.ingress[].from[].pods.namespaceSelector SELECTOR
spec.ingress[].from[].pods.podSelector SELECTOR
spec.ingress[].protocols PROTOCOLS
spec.egress array maxItems=25
spec.egress[] object required=action,to cel=networks/nodes/domainNames_peer_cannot_be_set_with_namedPorts_since_there_are_no_namedPorts_for_networks/nodes/domainNames
spec.egress[].name string maxLength=100
spec.egress[].action string enum=Accept|Deny|Pass
spec.egress[].to array minItems=1 maxItems=25
spec.egress[].to[] object minProperties=1 maxProperties=1
spec.egress[].to[].namespaces SELECTOR
spec.egress[].to[].pods object required=podSelector
spec.egress[].to[].pods.namespaceSelector SELECTOR
spec.egress[].to[].pods.podSelector SELECTOR
spec.egress[].to[].nodes SELECTOR
spec.egress[].to[].networks array minItems=1 maxItems=25 list=set
spec.egress[].to[].networks[] string maxLength=43 cel=Invalid_CIDR_format_provided
spec.egress[].to[].domainNames array minItems=1 maxItems=25 list=set
spec.egress[].to[].domainNames[] string pattern
spec.egress[].protocols PROTOCOLS
status object required=conditions
status.conditions array list=map mapKeys=type
status.conditions[] object required=lastTransitionTime,message,reason,status,type
status.conditions[].lastTransitionTime string format=date-time
status.conditions[].message string maxLength=32768
status.conditions[].observedGeneration integer format=int64 minimum=0
status.conditions[].reason string minLength=1 maxLength=1024 pattern
status.conditions[].status string enum=True|False|Unknown
status.conditions[].type string maxLength=316 pattern
"#;

/// Every label selector's fields (`metav1.LabelSelector`, atomic).
const SELECTOR: &str = r#"
 object map=atomic
.matchLabels object
.matchLabels{} string
.matchExpressions array list=atomic
.matchExpressions[] object required=key,operator
.matchExpressions[].key string
.matchExpressions[].operator string
.matchExpressions[].values array list=atomic
.matchExpressions[].values[] string
"#;

/// A rule's `protocols` (the same for both directions).
const PROTOCOLS: &str = r#"
 array minItems=1 maxItems=25
[] object minProperties=1 maxProperties=1
[].destinationNamedPort string
[].tcp PORT
[].udp PORT
[].sctp PORT
"#;

/// One protocol's match.
const PORT: &str = r#"
 object minProperties=1
.destinationPort object minProperties=1 maxProperties=1
.destinationPort.number integer format=int32 minimum=1 maximum=65535
.destinationPort.range object required=end,start cel=Start_port_must_be_less_than_End_port
.destinationPort.range.start integer format=int32 minimum=1 maximum=65535
.destinationPort.range.end integer format=int32 minimum=1 maximum=65535
"#;

/// The table with its shorthands (SELECTOR, PROTOCOLS, PORT) expanded:
/// path -> sorted constraints.
fn upstream() -> BTreeMap<String, Vec<String>> {
    fn expand(text: &str, prefix: &str, out: &mut BTreeMap<String, Vec<String>>) {
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            // A sub-table's own line starts with a space: the prefix itself.
            let (suffix, rest) = match line.strip_prefix(' ') {
                Some(rest) => ("", rest),
                None => line.split_once(' ').unwrap_or((line, "")),
            };
            let path = match (prefix, suffix) {
                ("", "(root)") => String::new(),
                _ => format!("{prefix}{suffix}"),
            };
            let sub = match rest {
                "SELECTOR" => Some(SELECTOR),
                "PROTOCOLS" => Some(PROTOCOLS),
                "PORT" => Some(PORT),
                _ => None,
            };
            match sub {
                Some(sub) => expand(sub, &path, out),
                None => {
                    let mut c: Vec<String> = rest
                        .split_whitespace()
                        .map(|s| s.replace('_', " "))
                        .collect();
                    c.sort();
                    assert!(out.insert(path.clone(), c).is_none(), "{path} twice");
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    expand(UPSTREAM, "", &mut out);
    out
}

/// Our schema in the table's form.
fn ours() -> BTreeMap<String, Vec<String>> {
    fn walk(s: &Value, path: &str, out: &mut BTreeMap<String, Vec<String>>) {
        let mut c = Vec::new();
        // k8s-openapi keeps minimum and maximum as f64 (`1000.0`): the
        // same number to the API server.
        let text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            Value::Number(n) if n.as_f64().is_some_and(|f| f.fract() == 0.0) => {
                (n.as_f64().unwrap() as i64).to_string()
            }
            other => other.to_string(),
        };
        let list = |v: &Value| {
            let items: Vec<String> = v.as_array().unwrap().iter().map(text).collect();
            items
        };
        for (key, v) in s.as_object().expect("a schema is an object") {
            match key.as_str() {
                "description" | "properties" | "items" | "additionalProperties" => {}
                "type" => c.push(text(v)),
                "enum" => c.push(format!("enum={}", list(v).join("|"))),
                "required" => {
                    let mut r = list(v);
                    r.sort();
                    c.push(format!("required={}", r.join(",")));
                }
                "pattern" => c.push("pattern".into()),
                "x-kubernetes-list-type" => c.push(format!("list={}", text(v))),
                "x-kubernetes-map-type" => c.push(format!("map={}", text(v))),
                "x-kubernetes-list-map-keys" => c.push(format!("mapKeys={}", list(v).join(","))),
                "x-kubernetes-validations" => {
                    for rule in v.as_array().unwrap() {
                        c.push(format!("cel={}", text(&rule["message"])));
                    }
                }
                "format" | "minimum" | "maximum" | "minItems" | "maxItems" | "minLength"
                | "maxLength" | "minProperties" | "maxProperties" => {
                    c.push(format!("{key}={}", text(v)))
                }
                other => c.push(format!("unexpected key {other}")),
            }
        }
        c.sort();
        out.insert(path.to_string(), c);
        let join = |p: &str, k: &str| {
            if p.is_empty() {
                k.to_string()
            } else {
                format!("{p}.{k}")
            }
        };
        if let Some(props) = s.get("properties").and_then(Value::as_object) {
            for (k, v) in props {
                walk(v, &join(path, k), out);
            }
        }
        if let Some(items) = s.get("items") {
            walk(items, &format!("{path}[]"), out);
        }
        if let Some(values) = s.get("additionalProperties").filter(|v| v.is_object()) {
            walk(values, &format!("{path}{{}}"), out);
        }
    }
    let crd = serde_json::to_value(definition()).unwrap();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let mut out = BTreeMap::new();
    walk(schema, "", &mut out);
    out
}

#[test]
fn every_field_has_the_upstream_type_and_constraints() {
    let (upstream, ours) = (upstream(), ours());
    let mut problems = Vec::new();
    for (path, want) in &upstream {
        match ours.get(path) {
            None => problems.push(format!("{path}: missing")),
            Some(got) if got != want => {
                problems.push(format!("{path}: upstream {want:?}, ours {got:?}"))
            }
            Some(_) => {}
        }
    }
    for path in ours.keys().filter(|p| !upstream.contains_key(*p)) {
        problems.push(format!("{path}: not in the upstream schema"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The table covers the whole schema (168 paths upstream).
    assert_eq!(upstream.len(), 168);
}
