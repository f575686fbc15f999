//! Objects whose JSON does not have the shape of their Kubernetes type (a
//! number where a selector belongs, an object where a port belongs).
//!
//! The API server stored them, so a NetworkPolicy among them is enforced
//! as what can be read of it, not understood: its pods (its `podSelector`
//! when that reads, else every pod of its namespace) isolated in its
//! directions (its `policyTypes`, or Ingress plus Egress when it has an
//! `egress` section; both when they do not read), nothing allowed.

use super::meta::{checked_name, object_name};
use super::policy::{enforcement, policy_types, ENFORCEMENT_ANNOTATION};
use super::selector;
use crate::model::{FieldIssue, InputError, Policy, Selector};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// Deserializes `value` (a `serde_json::Value` or a reference to one) into
/// a Kubernetes type; a type error names the path of the field that
/// failed (`(root)` for the object itself).
pub fn deserialize<'de, D, T>(value: D) -> Result<T, FieldIssue>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let field = e.path().to_string();
        FieldIssue {
            field: if field == "." {
                "(root)".to_string()
            } else {
                field
            },
            message: e.into_inner().to_string(),
        }
    })
}

/// Name, namespace, uid and resourceVersion read loosely from an object
/// that may not deserialize: enough to say which object an error is about,
/// and for a watcher to keep its place.
pub fn rough_meta(value: &Value) -> ObjectMeta {
    let get = |key: &str| {
        value
            .get("metadata")
            .and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    ObjectMeta {
        name: get("name"),
        namespace: get("namespace"),
        uid: get("uid"),
        resource_version: get("resourceVersion"),
        ..ObjectMeta::default()
    }
}

/// The NetworkPolicy `value`, which does not deserialize (`issue` says
/// where), as an unreadable policy. An error only when its name or
/// namespace cannot be read.
pub fn policy(value: &Value, issue: FieldIssue) -> Result<Policy, InputError> {
    let meta = rough_meta(value);
    let (namespace, name) = checked_name(&meta, true).map_err(|e| InputError {
        source: None,
        object: object_name("NetworkPolicy", &meta, true),
        field: e.field,
        message: e.message,
    })?;
    let annotation = value
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(ENFORCEMENT_ANNOTATION))
        .and_then(Value::as_str);
    let (enforcement, warnings) = enforcement(annotation);
    let spec = value.get("spec");
    let (isolates_ingress, isolates_egress) = directions(spec).unwrap_or((true, true));
    Ok(Policy {
        namespace,
        name,
        enforcement,
        pod_selector: pod_selector(spec).unwrap_or_default(),
        isolates_ingress,
        isolates_egress,
        ingress: Vec::new(),
        egress: Vec::new(),
        unreadable: Some(issue),
        warnings,
    })
}

/// `spec.podSelector` when it reads and validates (absent: every pod).
fn pod_selector(spec: Option<&Value>) -> Option<Selector> {
    match spec?.get("podSelector") {
        None | Some(Value::Null) => Some(Selector::default()),
        Some(v) => {
            let sel: LabelSelector = serde_json::from_value(v.clone()).ok()?;
            selector::convert(&sel, "spec.podSelector").ok()
        }
    }
}

/// The effective policyTypes when they can be read.
fn directions(spec: Option<&Value>) -> Option<(bool, bool)> {
    let spec = spec?.as_object()?;
    let types: Option<Vec<String>> = match spec.get("policyTypes") {
        None | Some(Value::Null) => None,
        Some(v) => Some(serde_json::from_value(v.clone()).ok()?),
    };
    let has_egress = !matches!(spec.get("egress"), None | Some(Value::Null));
    policy_types(types.as_deref(), has_egress).ok()
}
