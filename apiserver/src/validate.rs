//! Checking a written object the way the API server decodes it: into the
//! kind's typed form (k8s-openapi's types of the served API level).
//!
//! - A value of the wrong type (a string where a number goes, a list
//!   where a map goes) is always refused: 400, naming the field.
//! - Unknown fields (in the body, or in the object a patch produced) and
//!   duplicate fields (in a JSON body) follow the request's
//!   `fieldValidation`: `Strict` refuses them (400, naming each), `Warn`
//!   (the default) accepts the object and says so in `Warning` headers,
//!   `Ignore` accepts it silently. Unknown fields are never stored.

use crate::reply::ApiError;
use crate::state::Kind;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use palisade_policy::crd::ClusterNetworkPolicy;
use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::Serialize;
use serde_json::{Map, Value};
use std::cell::RefCell;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldValidation {
    Strict,
    Warn,
    Ignore,
}

impl FieldValidation {
    /// The `fieldValidation` query parameter (absent: `Warn`).
    pub fn parse(value: Option<&str>) -> Result<FieldValidation, ApiError> {
        match value.unwrap_or("Warn") {
            "Strict" => Ok(FieldValidation::Strict),
            "Warn" | "" => Ok(FieldValidation::Warn),
            "Ignore" => Ok(FieldValidation::Ignore),
            other => Err(ApiError::bad_request(format!(
                "fieldValidation: invalid value {other:?}: must be Ignore, Warn or Strict"
            ))),
        }
    }
}

/// A JSON body, with the paths of fields given twice (the last one wins,
/// as in the API server's decoder).
pub fn parse_json(bytes: &[u8]) -> Result<(Value, Vec<String>), ApiError> {
    let duplicates = RefCell::new(Vec::new());
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Track {
        path: String::new(),
        duplicates: &duplicates,
    }
    .deserialize(&mut de)
    .and_then(|v| de.end().map(|()| v))
    .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?;
    Ok((value, duplicates.into_inner()))
}

/// Builds a `Value` while noting duplicate keys by path.
struct Track<'a> {
    path: String,
    duplicates: &'a RefCell<Vec<String>>,
}

impl<'de> DeserializeSeed<'de> for Track<'_> {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Track<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        loop {
            let seed = Track {
                path: format!("{}[{}]", self.path, out.len()),
                duplicates: self.duplicates,
            };
            match seq.next_element_seed(seed)? {
                Some(v) => out.push(v),
                None => return Ok(Value::Array(out)),
            }
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = join(&self.path, &key);
            let seed = Track {
                path: path.clone(),
                duplicates: self.duplicates,
            };
            let value = map.next_value_seed(seed)?;
            if out.insert(key, value).is_some() {
                self.duplicates.borrow_mut().push(path);
            }
        }
        Ok(Value::Object(out))
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Decodes `object` as `kind` and returns it as stored (unknown fields
/// dropped) with the warnings `Warn` gives. `duplicates` are the body's
/// duplicate fields.
pub fn check(
    kind: Kind,
    object: Value,
    duplicates: &[String],
    mode: FieldValidation,
) -> Result<(Value, Vec<String>), ApiError> {
    let typed = match kind {
        Kind::Namespace => round_trip::<Namespace>(kind, &object),
        Kind::Pod => round_trip::<Pod>(kind, &object),
        Kind::Service => round_trip::<Service>(kind, &object),
        Kind::NetworkPolicy => round_trip::<NetworkPolicy>(kind, &object),
        Kind::Node => round_trip::<Node>(kind, &object),
        Kind::ClusterNetworkPolicy => round_trip::<ClusterNetworkPolicy>(kind, &object),
    }?;
    let mut problems: Vec<String> = duplicates
        .iter()
        .map(|p| format!("duplicate field {p:?}"))
        .collect();
    let mut unknown = Vec::new();
    unknown_fields(&object, &typed, "", &mut unknown);
    problems.extend(unknown.iter().map(|p| format!("unknown field {p:?}")));
    match mode {
        FieldValidation::Strict if !problems.is_empty() => Err(ApiError::bad_request(format!(
            "{} in version {:?} cannot be handled as a {}: strict decoding error: {}",
            kind.name(),
            kind.version(),
            kind.name(),
            problems.join(", ")
        ))),
        FieldValidation::Ignore => Ok((typed, Vec::new())),
        _ => Ok((typed, problems)),
    }
}

fn round_trip<T: serde::de::DeserializeOwned + Serialize>(
    kind: Kind,
    object: &Value,
) -> Result<Value, ApiError> {
    let typed: T = serde_path_to_error::deserialize(object.clone()).map_err(|e| {
        ApiError::bad_request(format!(
            "{} in version {:?} cannot be handled as a {}: {}: {}",
            kind.name(),
            kind.version(),
            kind.name(),
            e.path(),
            e.inner()
        ))
    })?;
    serde_json::to_value(&typed)
        .map_err(|e| ApiError::new(500, "InternalError", format!("encoding: {e}")))
}

/// The paths of fields of `given` the typed form dropped. A null is the
/// field left out, not an unknown field.
fn unknown_fields(given: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (given, typed) {
        (Value::Object(g), Value::Object(t)) => {
            for (k, v) in g {
                let p = join(path, k);
                match t.get(k) {
                    Some(tv) => unknown_fields(v, tv, &p, out),
                    None if !v.is_null() => out.push(p),
                    None => {}
                }
            }
        }
        (Value::Array(g), Value::Array(t)) => {
            for (i, (gv, tv)) in g.iter().zip(t).enumerate() {
                unknown_fields(gv, tv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(spec: Value) -> Value {
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
               "metadata": {"name": "p", "namespace": "x"}, "spec": spec})
    }

    #[test]
    fn unknown_fields_follow_the_directive() {
        let p = policy(json!({"podSelector": {}, "ingres": [], "ingress": [{"form": []}]}));
        let e = check(Kind::NetworkPolicy, p.clone(), &[], FieldValidation::Strict).unwrap_err();
        assert_eq!(e.code, 400);
        assert!(
            e.message.contains(r#"unknown field "spec.ingres""#)
                && e.message
                    .contains(r#"unknown field "spec.ingress[0].form""#),
            "{}",
            e.message
        );
        let (stored, warnings) =
            check(Kind::NetworkPolicy, p.clone(), &[], FieldValidation::Warn).unwrap();
        assert_eq!(warnings.len(), 2);
        assert!(stored["spec"].get("ingres").is_none());
        let (_, none) = check(Kind::NetworkPolicy, p, &[], FieldValidation::Ignore).unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn wrong_types_are_refused_whatever_the_directive() {
        let p = policy(json!({"podSelector": {}, "ingress": [{"ports": [{"port": [80]}]}]}));
        let e = check(Kind::NetworkPolicy, p, &[], FieldValidation::Ignore).unwrap_err();
        assert!(
            e.message.contains("spec.ingress[0].ports[0].port"),
            "{}",
            e.message
        );
    }

    #[test]
    fn duplicate_fields_are_found_by_path() {
        let body = br#"{"kind": "NetworkPolicy", "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "policyTypes": []}}"#;
        let (v, dups) = parse_json(body).unwrap();
        assert_eq!(dups, ["spec.policyTypes"]);
        assert_eq!(v["spec"]["policyTypes"], json!([]));
        assert!(parse_json(b"{} x").is_err());
    }

    #[test]
    fn nulls_are_left_out_fields() {
        let p = policy(json!({"podSelector": {}, "egress": null}));
        let (_, warnings) = check(Kind::NetworkPolicy, p, &[], FieldValidation::Warn).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
    }
}
