//! The PATCH bodies: JSON merge patch (RFC 7386) and Kubernetes'
//! strategic merge patch.
//!
//! A strategic merge patch merges maps as a merge patch does; lists are
//! replaced whole unless the field's type declares a patch strategy, in
//! which case they merge: by a key (`spec.ports` by `port`, containers by
//! `name`...) or, for lists of strings, as sets (`metadata.finalizers`).
//! The strategies are those of the Kubernetes types of the kinds served
//! (`MERGE_LISTS`); NetworkPolicy declares none, so its lists are always
//! replaced. Directives kubectl sends are applied: `$patch: replace |
//! delete | merge`, `$retainKeys`, `$setElementOrder/<field>` and
//! `$deleteFromPrimitiveList/<field>`; any other directive is refused (422)
//! rather than stored as a field.

use crate::reply::ApiError;
use crate::state::Kind;
use serde_json::{json, Map, Value};

/// RFC 7386 JSON merge patch.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let obj = target.as_object_mut().expect("made an object above");
    for (k, v) in fields {
        if v.is_null() {
            obj.remove(k);
        } else {
            merge(obj.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum ListStrategy {
    Replace,
    /// Elements are maps identified by this field.
    ByKey(&'static str),
    /// Elements are scalars, merged as a set.
    Set,
}

/// Lists that merge, by kind (None: every kind) and field path (`*` for
/// the elements of a list), from the `patchStrategy`/`patchMergeKey` tags
/// of the Kubernetes API types. Status fields are left out: writes to the
/// main resource keep the stored status.
const MERGE_LISTS: &[(Option<Kind>, &str, ListStrategy)] = {
    use ListStrategy::*;
    const POD: Option<Kind> = Some(Kind::Pod);
    &[
        (None, "metadata.finalizers", Set),
        (None, "metadata.ownerReferences", ByKey("uid")),
        (Some(Kind::Service), "spec.ports", ByKey("port")),
        (POD, "spec.volumes", ByKey("name")),
        (POD, "spec.initContainers", ByKey("name")),
        (POD, "spec.containers", ByKey("name")),
        (POD, "spec.ephemeralContainers", ByKey("name")),
        (POD, "spec.imagePullSecrets", ByKey("name")),
        (POD, "spec.hostAliases", ByKey("ip")),
        (POD, "spec.topologySpreadConstraints", ByKey("topologyKey")),
        (POD, "spec.schedulingGates", ByKey("name")),
        (POD, "spec.resourceClaims", ByKey("name")),
        (POD, "spec.*.*.ports", ByKey("containerPort")),
        (POD, "spec.*.*.env", ByKey("name")),
        (POD, "spec.*.*.volumeMounts", ByKey("mountPath")),
        (POD, "spec.*.*.volumeDevices", ByKey("devicePath")),
    ]
};

fn strategy(kind: Kind, path: &[&str]) -> ListStrategy {
    let matches = |pattern: &str| {
        let p: Vec<&str> = pattern.split('.').collect();
        p.len() == path.len() && p.iter().zip(path).all(|(a, b)| *a == "*" || a == b)
    };
    MERGE_LISTS
        .iter()
        .find(|(k, pattern, _)| k.is_none_or(|k| k == kind) && matches(pattern))
        .map_or(ListStrategy::Replace, |(_, _, s)| *s)
}

/// Applies a strategic merge patch to `target` (an object of `kind`).
pub fn strategic(kind: Kind, target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    let (Value::Object(t), Value::Object(p)) = (target, patch) else {
        return Err(ApiError::bad_request(
            "a strategic merge patch must be a JSON object",
        ));
    };
    match merge_map(kind, t, p, &mut Vec::new())? {
        Outcome::Keep => Ok(()),
        Outcome::Delete => Err(ApiError::invalid(
            "$patch: delete of the whole object: use DELETE",
        )),
    }
}

enum Outcome {
    Keep,
    Delete,
}

fn at(path: &[&str], field: &str) -> String {
    path.iter()
        .chain([&field])
        .copied()
        .collect::<Vec<_>>()
        .join(".")
}

fn merge_map<'a>(
    kind: Kind,
    target: &mut Map<String, Value>,
    patch: &'a Map<String, Value>,
    path: &mut Vec<&'a str>,
) -> Result<Outcome, ApiError> {
    match patch.get("$patch").map(|v| v.as_str()) {
        None | Some(Some("merge")) => {}
        Some(Some("delete")) => return Ok(Outcome::Delete),
        // The patch's fields are the whole map.
        Some(Some("replace")) => target.clear(),
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "{}: unknown $patch directive {}",
                at(path, "$patch"),
                other.map_or("(not a string)".into(), |s| format!("{s:?}"))
            )))
        }
    }
    if let Some(keep) = patch.get("$retainKeys") {
        let keep = strings(keep).ok_or_else(|| {
            ApiError::invalid(format!(
                "{}: must be a list of field names",
                at(path, "$retainKeys")
            ))
        })?;
        target.retain(|k, _| keep.contains(&k.as_str()) || patch.contains_key(k));
    }
    let mut orders = Vec::new();
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix("$setElementOrder/") {
            orders.push((field, value));
        } else if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            let gone = value.as_array().cloned().unwrap_or_default();
            if let Some(Value::Array(list)) = target.get_mut(field) {
                list.retain(|v| !gone.contains(v));
            }
        } else if key == "$patch" || key == "$retainKeys" {
        } else if key.starts_with('$') {
            return Err(ApiError::invalid(format!(
                "{}: unknown strategic merge patch directive",
                at(path, key)
            )));
        } else {
            path.push(key);
            let r = merge_field(kind, target, key, value, path);
            path.pop();
            r?;
        }
    }
    for (field, order) in orders {
        path.push(field);
        let key = match strategy(kind, path) {
            ListStrategy::ByKey(k) => Some(k),
            _ => None,
        };
        path.pop();
        if let Some(Value::Array(list)) = target.get_mut(field) {
            reorder(list, order, key);
        }
    }
    Ok(Outcome::Keep)
}

fn strings(v: &Value) -> Option<Vec<&str>> {
    v.as_array()?.iter().map(Value::as_str).collect()
}

fn merge_field<'a>(
    kind: Kind,
    target: &mut Map<String, Value>,
    key: &str,
    value: &'a Value,
    path: &mut Vec<&'a str>,
) -> Result<(), ApiError> {
    match value {
        Value::Null => {
            target.remove(key);
        }
        Value::Object(p) => {
            let mut current = match target.remove(key) {
                Some(Value::Object(m)) => m,
                _ => Map::new(),
            };
            if let Outcome::Keep = merge_map(kind, &mut current, p, path)? {
                target.insert(key.to_string(), Value::Object(current));
            }
        }
        Value::Array(p) => {
            let current = match target.remove(key) {
                Some(Value::Array(l)) => l,
                _ => Vec::new(),
            };
            let merged = merge_list(kind, current, p, path)?;
            target.insert(key.to_string(), Value::Array(merged));
        }
        scalar => {
            target.insert(key.to_string(), scalar.clone());
        }
    }
    Ok(())
}

fn merge_list<'a>(
    kind: Kind,
    mut current: Vec<Value>,
    patch: &'a [Value],
    path: &mut Vec<&'a str>,
) -> Result<Vec<Value>, ApiError> {
    let field = path.join(".");
    match strategy(kind, path) {
        ListStrategy::Replace => {
            if patch.iter().any(|e| {
                e.as_object()
                    .is_some_and(|m| m.keys().any(|k| k.starts_with('$')))
            }) {
                return Err(ApiError::invalid(format!(
                    "{field}: a directive in a list that is replaced whole"
                )));
            }
            Ok(patch.to_vec())
        }
        ListStrategy::Set => {
            for v in patch {
                if !current.contains(v) {
                    current.push(v.clone());
                }
            }
            Ok(current)
        }
        ListStrategy::ByKey(key) => {
            let replace = patch
                .iter()
                .any(|e| e.get("$patch") == Some(&json!("replace")));
            if replace {
                current.clear();
            }
            path.push("*");
            let r = merge_keyed(kind, &mut current, patch, key, &field, path);
            path.pop();
            r.map(|()| current)
        }
    }
}

fn merge_keyed<'a>(
    kind: Kind,
    current: &mut Vec<Value>,
    patch: &'a [Value],
    key: &str,
    field: &str,
    path: &mut Vec<&'a str>,
) -> Result<(), ApiError> {
    for (i, element) in patch.iter().enumerate() {
        let Value::Object(e) = element else {
            return Err(ApiError::invalid(format!(
                "{field}[{i}]: must be an object"
            )));
        };
        if e.get("$patch") == Some(&json!("replace")) && e.len() == 1 {
            continue;
        }
        let Some(id) = e.get(key) else {
            return Err(ApiError::invalid(format!(
                "{field}[{i}]: has no merge key {key:?}"
            )));
        };
        let found = current.iter().position(|c| c.get(key) == Some(id));
        let mut merged = match found {
            Some(at) => match current.remove(at) {
                Value::Object(m) => m,
                _ => Map::new(),
            },
            None => Map::new(),
        };
        if let Outcome::Keep = merge_map(kind, &mut merged, e, path)? {
            let at = found.unwrap_or(current.len());
            current.insert(at, Value::Object(merged));
        }
    }
    Ok(())
}

/// `$setElementOrder`: the listed elements in the listed order, the others
/// (only on the server) after them in their own order.
fn reorder(list: &mut [Value], order: &Value, key: Option<&str>) {
    let Some(order) = order.as_array() else {
        return;
    };
    let id = |v: &Value| match key {
        Some(k) => v.get(k).cloned(),
        None => Some(v.clone()),
    };
    let rank = |v: &Value| {
        id(v)
            .and_then(|i| order.iter().position(|o| id(o) == Some(i.clone())))
            .unwrap_or(usize::MAX)
    };
    list.sort_by_key(rank);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smp(kind: Kind, target: Value, patch: Value) -> Result<Value, ApiError> {
        let mut t = target;
        strategic(kind, &mut t, &patch)?;
        Ok(t)
    }

    #[test]
    fn maps_merge_and_unlisted_lists_are_replaced() {
        let policy = json!({"metadata": {"name": "p", "labels": {"a": "1", "b": "2"}},
            "spec": {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}],
                     "policyTypes": ["Ingress"]}});
        let patch = json!({"metadata": {"labels": {"a": null, "c": "3"}},
            "spec": {"ingress": [{"ports": [{"port": 80}]}], "policyTypes": ["Ingress", "Egress"],
                     "$setElementOrder/policyTypes": ["Ingress", "Egress"]}});
        let out = smp(Kind::NetworkPolicy, policy, patch).unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"b": "2", "c": "3"}));
        assert_eq!(out["spec"]["ingress"], json!([{"ports": [{"port": 80}]}]));
        assert_eq!(out["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    }

    #[test]
    fn service_ports_merge_by_port() {
        let svc = json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "tls"}]}});
        let patch = json!({"spec": {
            "$setElementOrder/ports": [{"port": 443}, {"port": 80}, {"port": 53}],
            "ports": [{"port": 80, "targetPort": 8080}, {"port": 53, "protocol": "UDP"}]}});
        let out = smp(Kind::Service, svc, patch).unwrap();
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port": 443, "name": "tls"}, {"port": 80, "name": "http", "targetPort": 8080},
                   {"port": 53, "protocol": "UDP"}])
        );
        let del = json!({"spec": {"ports": [{"port": 443, "$patch": "delete"}]}});
        let out = smp(Kind::Service, out, del).unwrap();
        let ports: Vec<&Value> = out["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| &p["port"])
            .collect();
        assert_eq!(ports, [&json!(80), &json!(53)]);
    }

    #[test]
    fn pod_containers_merge_by_name_down_to_their_env() {
        let pod = json!({"spec": {"containers": [{"name": "a", "image": "x",
            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}]}});
        let patch = json!({"spec": {"containers": [{"name": "a", "image": "y",
            "env": [{"name": "B", "value": "3"}]}]}});
        let out = smp(Kind::Pod, pod, patch).unwrap();
        assert_eq!(out["spec"]["containers"][0]["image"], "y");
        assert_eq!(
            out["spec"]["containers"][0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "3"}])
        );
    }

    #[test]
    fn directives() {
        let ns = json!({"metadata": {"finalizers": ["a", "b"], "labels": {"x": "1", "y": "2"}}});
        let patch = json!({"metadata": {"finalizers": ["c"], "$deleteFromPrimitiveList/finalizers": ["a"],
            "labels": {"$patch": "replace", "z": "3"}}});
        let out = smp(Kind::Namespace, ns, patch).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["b", "c"]));
        assert_eq!(out["metadata"]["labels"], json!({"z": "3"}));
        let out = smp(
            Kind::Namespace,
            out,
            json!({"metadata": {"labels": {"$patch": "delete"}}}),
        )
        .unwrap();
        assert!(out["metadata"].get("labels").is_none());
        let retain = json!({"spec": {"a": 1, "b": 2}});
        let out = smp(
            Kind::Pod,
            retain,
            json!({"spec": {"$retainKeys": ["a", "c"], "c": 3}}),
        )
        .unwrap();
        assert_eq!(out["spec"], json!({"a": 1, "c": 3}));
    }

    #[test]
    fn unknown_directives_are_refused() {
        for patch in [
            json!({"spec": {"$patch": "merge-ish"}}),
            json!({"spec": {"$frobnicate": true}}),
            json!({"spec": {"ingress": [{"$patch": "delete"}]}}),
            json!({"$patch": "delete"}),
        ] {
            let e = smp(Kind::NetworkPolicy, json!({"spec": {}}), patch.clone()).unwrap_err();
            assert_eq!(e.code, 422, "{patch}: {e:?}");
        }
        let e = smp(
            Kind::Service,
            json!({}),
            json!({"spec": {"ports": [{"name": "x"}]}}),
        )
        .unwrap_err();
        assert!(
            e.message
                .contains("spec.ports[0]: has no merge key \"port\""),
            "{}",
            e.message
        );
    }

    #[test]
    fn merge_patch_replaces_lists_and_drops_nulls() {
        let mut t = json!({"a": {"b": 1, "c": [1, 2]}});
        merge(&mut t, &json!({"a": {"b": null, "c": [3]}, "d": "x"}));
        assert_eq!(t, json!({"a": {"c": [3]}, "d": "x"}));
    }
}
