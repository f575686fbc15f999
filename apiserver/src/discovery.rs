//! Discovery, as clients (kubectl, client-go) read it before anything
//! else: `/api`, `/api/v1`, `/apis`, `/apis/<group>[/<version>]` and
//! `/version`, in the legacy JSON form (`APIVersions`, `APIGroupList`,
//! `APIGroup`, `APIResourceList`).
//!
//! kubectl first asks for aggregated discovery (`Accept:
//! application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,
//! ...,application/json`); an answer whose `Content-Type` is plain
//! `application/json` tells it the server has only the legacy form, and it
//! reads the per-group documents instead.

use crate::reply::{full, Body};
use crate::resources::{group_prefix, VERBS};
use crate::state::Kind;
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

/// The server's version: the API level of the types it checks objects
/// against (k8s-openapi's `v1_33`).
const MAJOR: &str = "1";
const MINOR: &str = "33";

/// A resource served outside the kinds of [`Kind`]: events.k8s.io's
/// Events, written by the agent's event recorder.
struct Extra {
    group: &'static str,
    version: &'static str,
    resource: Value,
}

fn extras() -> Vec<Extra> {
    vec![Extra {
        group: "events.k8s.io",
        version: "v1",
        resource: json!({
            "name": "events", "singularName": "event", "namespaced": true,
            "kind": "Event", "verbs": ["create", "patch"], "shortNames": ["ev"],
        }),
    }]
}

/// Every group version served, core first.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    let extras = extras();
    let all = Kind::ALL
        .iter()
        .map(|k| (k.group(), k.version()))
        .chain(extras.iter().map(|e| (e.group, e.version)));
    for gv in all {
        if !out.contains(&gv) {
            out.push(gv);
        }
    }
    out
}

/// The answer to a discovery GET, None when `path` is no discovery path.
/// `host` is the request's `Host`, echoed as the server's address.
pub fn route(path: &str, host: &str) -> Option<Response<Body>> {
    let body = match path.trim_end_matches('/') {
        "/api" => api_versions(host),
        "/apis" => group_list(),
        "/version" => version(),
        p => {
            let (group, version) = match p.strip_prefix("/apis/") {
                Some(rest) => match rest.split_once('/') {
                    Some((g, v)) => (g, Some(v)),
                    None => (rest, None),
                },
                None => ("", Some(p.strip_prefix("/api/")?)),
            };
            match version {
                Some(v) => resource_list(group, v)?,
                None => api_group(group)?,
            }
        }
    };
    Some(full(StatusCode::OK, body))
}

fn api_versions(host: &str) -> Value {
    json!({
        "kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
    })
}

fn api_group(group: &str) -> Option<Value> {
    let versions: Vec<Value> = group_versions()
        .into_iter()
        .filter(|(g, _)| *g == group && !g.is_empty())
        .map(|(g, v)| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    let preferred = versions.first()?.clone();
    Some(json!({
        "kind": "APIGroup", "apiVersion": "v1", "name": group,
        "versions": versions, "preferredVersion": preferred,
    }))
}

fn group_list() -> Value {
    let mut groups: Vec<Value> = Vec::new();
    for (g, _) in group_versions() {
        if g.is_empty() || groups.iter().any(|x| x["name"] == g) {
            continue;
        }
        groups.extend(api_group(g));
    }
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn resource_list(group: &str, version: &str) -> Option<Value> {
    if !group_versions().contains(&(group, version)) {
        return None;
    }
    let mut resources: Vec<Value> = Kind::of_group_version(group, version)
        .map(|k| {
            json!({
                "name": k.plural(), "singularName": k.singular(),
                "namespaced": k.namespaced(), "kind": k.name(), "verbs": VERBS,
                "shortNames": k.short_names(), "categories": k.categories(),
            })
        })
        .collect();
    resources.extend(
        extras()
            .into_iter()
            .filter(|e| e.group == group && e.version == version)
            .map(|e| e.resource),
    );
    let group_version = group_prefix(group, version)
        .trim_start_matches("/api/")
        .trim_start_matches("/apis/")
        .to_string();
    Some(json!({
        "kind": "APIResourceList", "apiVersion": "v1",
        "groupVersion": group_version, "resources": resources,
    }))
}

fn version() -> Value {
    json!({
        "major": MAJOR, "minor": MINOR,
        "gitVersion": format!("v{MAJOR}.{MINOR}.0-palisade-fake"),
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_discoverable_in_its_group_version() {
        for k in Kind::ALL {
            let list = resource_list(k.group(), k.version()).unwrap();
            let r = list["resources"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["kind"] == k.name())
                .unwrap();
            assert_eq!(r["name"], k.plural());
            assert_eq!(r["namespaced"], k.namespaced());
            assert_eq!(list["groupVersion"], k.api_version());
        }
        let groups = group_list();
        let names: Vec<&str> = groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "networking.k8s.io",
                "policy.networking.k8s.io",
                "events.k8s.io"
            ]
        );
        assert!(resource_list("networking.k8s.io", "v2").is_none());
        assert!(route("/apis/nope", "h").is_none());
    }
}
