//! Object metadata: names, namespaces, labels.

use super::{FieldError, FieldResult};
use crate::model::Labels;
use crate::names;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Namespace of a namespaced object; manifests without one land in
/// `default`, as `kubectl apply` puts them.
pub fn namespace_of(meta: &ObjectMeta) -> String {
    match meta.namespace.as_deref() {
        None | Some("") => "default".to_string(),
        Some(ns) => ns.to_string(),
    }
}

/// `Kind namespace/name` (or `Kind name` for cluster-scoped kinds), for
/// error messages; works on objects whose name is missing or invalid.
pub fn object_name(kind: &str, meta: &ObjectMeta, namespaced: bool) -> String {
    let name = meta.name.as_deref().unwrap_or("<unnamed>");
    if namespaced {
        format!("{kind} {}/{name}", namespace_of(meta))
    } else {
        format!("{kind} {name}")
    }
}

/// Validated name and (for namespaced objects) namespace.
pub fn checked_name(meta: &ObjectMeta, namespaced: bool) -> FieldResult<(String, String)> {
    let name = meta
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| FieldError::new("metadata.name", "missing"))?;
    if namespaced {
        names::check_dns_subdomain(&name).map_err(|m| FieldError::new("metadata.name", m))?;
        let ns = namespace_of(meta);
        names::check_dns_label(&ns).map_err(|m| FieldError::new("metadata.namespace", m))?;
        Ok((ns, name))
    } else {
        names::check_dns_label(&name).map_err(|m| FieldError::new("metadata.name", m))?;
        Ok((String::new(), name))
    }
}

/// The object's labels, each key and value checked (selectors compare
/// them verbatim, so a malformed one is a mistake worth reporting).
pub fn checked_labels(meta: &ObjectMeta) -> FieldResult<Labels> {
    let labels = meta.labels.clone().unwrap_or_default();
    for (k, v) in &labels {
        let field = format!("metadata.labels[{k:?}]");
        names::check_label_key(k).map_err(|m| FieldError::new(&field, m))?;
        names::check_label_value(v).map_err(|m| FieldError::new(&field, m))?;
    }
    Ok(Labels::from(labels).interned())
}
