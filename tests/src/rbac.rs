//! RBAC as the API server's authorizer sees it: the (API group, resource,
//! verb) a request needs, derived from its method and path as Kubernetes
//! derives its request attributes, and the triples the deployed
//! ClusterRole grants.

use k8s_openapi::api::rbac::v1::ClusterRole;
use std::collections::BTreeSet;
use std::path::Path;

/// (API group, resource, verb); the core group is "".
pub type Attr = (String, String, String);

/// What a request needs, from `METHOD /path?query` (the fake API server's
/// `requests()` lines); None for non-resource paths (`/version`, `/api`).
pub fn request_attributes(request: &str) -> Option<Attr> {
    let (method, target) = request.split_once(' ')?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    // `namespaces/NS/RESOURCE...` is namespaced; `namespaces[/NAME]` is
    // the namespaces resource itself.
    let rest = match rest {
        ["namespaces", _ns, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    let (resource, name, sub) = match rest {
        [resource] => (*resource, None, None),
        [resource, name] => (*resource, Some(*name), None),
        [resource, name, sub] => (*resource, Some(*name), Some(*sub)),
        _ => return None,
    };
    let watch = query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    let verb = match (method, name) {
        ("GET", _) if watch => "watch",
        ("GET", None) => "list",
        ("GET", Some(_)) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", None) => "deletecollection",
        ("DELETE", Some(_)) => "delete",
        _ => return None,
    };
    let resource = match sub {
        Some(sub) => format!("{resource}/{sub}"),
        None => resource.to_string(),
    };
    Some((group.to_string(), resource, verb.to_string()))
}

/// The ClusterRole of `deploy/clusterrole.yaml`.
pub fn deployed_role() -> ClusterRole {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/clusterrole.yaml");
    let text = std::fs::read_to_string(&path).expect("read deploy/clusterrole.yaml");
    serde_yaml::from_str(&text).expect("deploy/clusterrole.yaml is a ClusterRole")
}

/// Every triple `role` grants. Wildcards, per-name rules and non-resource
/// URLs would make the set meaningless: they fail here.
pub fn granted(role: &ClusterRole) -> BTreeSet<Attr> {
    let mut out = BTreeSet::new();
    for rule in role.rules.iter().flatten() {
        assert!(rule.resource_names.is_none(), "no per-name rules");
        assert!(rule.non_resource_urls.is_none(), "no non-resource URLs");
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    assert!(
                        ![group, resource, verb].iter().any(|s| s.contains('*')),
                        "no wildcards"
                    );
                    out.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(r: &str) -> Option<(String, String, String)> {
        request_attributes(r)
    }

    fn t(g: &str, r: &str, v: &str) -> Option<Attr> {
        Some((g.into(), r.into(), v.into()))
    }

    #[test]
    fn requests_map_to_the_attributes_the_authorizer_checks() {
        assert_eq!(attr("GET /api/v1/pods?limit=500"), t("", "pods", "list"));
        assert_eq!(
            attr("GET /api/v1/pods?watch=true&resourceVersion=5"),
            t("", "pods", "watch")
        );
        assert_eq!(attr("GET /api/v1/namespaces"), t("", "namespaces", "list"));
        assert_eq!(attr("GET /api/v1/namespaces/a"), t("", "namespaces", "get"));
        assert_eq!(
            attr("GET /api/v1/namespaces/a/pods/p"),
            t("", "pods", "get")
        );
        assert_eq!(
            attr("PATCH /api/v1/namespaces/a/pods/p/status"),
            t("", "pods/status", "patch")
        );
        assert_eq!(
            attr("GET /apis/networking.k8s.io/v1/networkpolicies?watch=1"),
            t("networking.k8s.io", "networkpolicies", "watch")
        );
        assert_eq!(
            attr("POST /apis/events.k8s.io/v1/namespaces/shop/events"),
            t("events.k8s.io", "events", "create")
        );
        assert_eq!(
            attr("DELETE /api/v1/namespaces/a/services"),
            t("", "services", "deletecollection")
        );
        assert_eq!(attr("GET /version"), None);
    }
}
