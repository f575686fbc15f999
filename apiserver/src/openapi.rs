//! OpenAPI v3: `/openapi/v3` (the index of group versions) and one
//! document per group version, describing the paths, operations and
//! query parameters served. No schemas: the document is what clients read
//! to learn which operations and parameters exist.
//!
//! Why kubectl needs it: before `apply`, `create` or `replace` it
//! validates (`--validate=strict` by default). When the PATCH operation of
//! the object's kind (`x-kubernetes-group-version-kind`) lists the
//! `fieldValidation` query parameter, kubectl leaves validation to the
//! server and sends `fieldValidation=Strict`, which the server honours
//! (`validate.rs`). Otherwise it validates itself against the OpenAPI v2
//! schema, served only as protobuf, and without that refuses to apply.
//!
//! The PATCH operations declare no request body: kubectl then computes
//! its strategic merge patches from its compiled-in types (exact for the
//! built-in kinds served here) instead of from schemas this document does
//! not carry.

use crate::discovery::group_versions;
use crate::reply::{full, Body};
use crate::resources::group_prefix;
use crate::state::Kind;
use hyper::{Response, StatusCode};
use serde_json::{json, Map, Value};

/// The answer to a GET under `/openapi/v3`, None for other paths.
pub fn route(path: &str) -> Option<Response<Body>> {
    let rest = path.strip_prefix("/openapi/v3")?;
    let body = match rest.trim_start_matches('/') {
        "" => index(),
        gv => {
            let (group, version) = match gv.strip_prefix("apis/") {
                Some(g) => g.split_once('/')?,
                None => ("", gv.strip_prefix("api/")?),
            };
            if !group_versions().contains(&(group, version)) {
                return None;
            }
            document(group, version)
        }
    };
    Some(full(StatusCode::OK, body))
}

/// `{"paths": {"api/v1": {"serverRelativeURL": "/openapi/v3/api/v1?hash=..."}}}`.
fn index() -> Value {
    let mut paths = Map::new();
    for (g, v) in group_versions() {
        let key = group_prefix(g, v).trim_start_matches('/').to_string();
        // The hash lets clients cache a document until it changes.
        let hash = fnv(document(g, v).to_string().as_bytes());
        paths.insert(
            key.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={hash:016X}")}),
        );
    }
    json!({ "paths": paths })
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn document(group: &str, version: &str) -> Value {
    let mut paths = Map::new();
    for kind in Kind::of_group_version(group, version) {
        for (path, item) in kind_paths(kind) {
            paths.insert(path, item);
        }
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": {}},
    })
}

fn params(names: &[&str]) -> Vec<Value> {
    names
        .iter()
        .map(|n| json!({"name": n, "in": "query", "schema": {"type": "string"}}))
        .collect()
}

const LIST_PARAMS: [&str; 9] = [
    "allowWatchBookmarks",
    "continue",
    "fieldSelector",
    "labelSelector",
    "limit",
    "resourceVersion",
    "resourceVersionMatch",
    "timeoutSeconds",
    "watch",
];
const WRITE_PARAMS: [&str; 3] = ["dryRun", "fieldManager", "fieldValidation"];
const PATCH_PARAMS: [&str; 4] = ["dryRun", "fieldManager", "fieldValidation", "force"];

/// The operations of one kind's paths, each tagged with the kind and the
/// action as the API server tags them.
fn kind_paths(kind: Kind) -> Vec<(String, Value)> {
    let gvk = json!({"group": kind.group(), "version": kind.version(), "kind": kind.name()});
    let op = |action: &str, query: &[&str]| {
        json!({
            "x-kubernetes-group-version-kind": gvk,
            "x-kubernetes-action": action,
            "parameters": params(query),
            "responses": {"200": {"description": "OK"}},
        })
    };
    let base = format!("{}/", kind.prefix());
    let (collection, object) = if kind.namespaced() {
        let c = format!("{base}namespaces/{{namespace}}/{}", kind.plural());
        (c.clone(), format!("{c}/{{name}}"))
    } else {
        let c = format!("{base}{}", kind.plural());
        (c.clone(), format!("{c}/{{name}}"))
    };
    let mut out = vec![
        (
            collection,
            json!({"get": op("list", &LIST_PARAMS), "post": op("post", &WRITE_PARAMS)}),
        ),
        (
            object,
            json!({
                "get": op("get", &[]),
                "put": op("put", &WRITE_PARAMS),
                "patch": op("patch", &PATCH_PARAMS),
                "delete": op("delete", &["dryRun"]),
            }),
        ),
    ];
    if kind.namespaced() {
        out.push((
            format!("{base}{}", kind.plural()),
            json!({"get": op("list", &LIST_PARAMS)}),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_patch_operation_takes_field_validation() {
        for kind in Kind::ALL {
            let doc = document(kind.group(), kind.version());
            let patches: Vec<&Value> = doc["paths"]
                .as_object()
                .unwrap()
                .values()
                .filter_map(|p| p.get("patch"))
                .filter(|op| op["x-kubernetes-group-version-kind"]["kind"] == kind.name())
                .collect();
            assert_eq!(patches.len(), 1, "{kind:?}");
            let names: Vec<&str> = patches[0]["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            assert!(names.contains(&"fieldValidation"), "{kind:?}: {names:?}");
        }
        let index = index();
        assert!(
            index["paths"]["apis/networking.k8s.io/v1"]["serverRelativeURL"]
                .as_str()
                .unwrap()
                .starts_with("/openapi/v3/apis/networking.k8s.io/v1?hash=")
        );
        assert!(index["paths"]["api/v1"].is_object());
    }
}
