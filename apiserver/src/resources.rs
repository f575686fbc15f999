//! The REST face of each kind (group, version, resource names, scope,
//! verbs), and the paths that name a collection or one object.

use crate::selector::Selector;
use crate::state::Kind;
use serde_json::Value;

/// The verbs every served kind supports (discovery lists them).
pub const VERBS: [&str; 7] = [
    "create", "delete", "get", "list", "patch", "update", "watch",
];

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Namespace,
        Kind::Pod,
        Kind::Service,
        Kind::NetworkPolicy,
        Kind::Node,
        Kind::ClusterNetworkPolicy,
    ];

    /// The API group; "" for the core group.
    pub fn group(self) -> &'static str {
        match self {
            Kind::NetworkPolicy => "networking.k8s.io",
            Kind::ClusterNetworkPolicy => "policy.networking.k8s.io",
            Kind::Namespace | Kind::Pod | Kind::Service | Kind::Node => "",
        }
    }

    pub fn version(self) -> &'static str {
        match self {
            Kind::ClusterNetworkPolicy => "v1alpha2",
            _ => "v1",
        }
    }

    /// The resource name in paths.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Namespace => "namespaces",
            Kind::Pod => "pods",
            Kind::Service => "services",
            Kind::NetworkPolicy => "networkpolicies",
            Kind::Node => "nodes",
            Kind::ClusterNetworkPolicy => "clusternetworkpolicies",
        }
    }

    pub fn singular(self) -> &'static str {
        match self {
            Kind::Namespace => "namespace",
            Kind::Pod => "pod",
            Kind::Service => "service",
            Kind::NetworkPolicy => "networkpolicy",
            Kind::Node => "node",
            Kind::ClusterNetworkPolicy => "clusternetworkpolicy",
        }
    }

    pub fn short_names(self) -> &'static [&'static str] {
        match self {
            Kind::Namespace => &["ns"],
            Kind::Pod => &["po"],
            Kind::Service => &["svc"],
            Kind::NetworkPolicy => &["netpol"],
            Kind::Node => &["no"],
            Kind::ClusterNetworkPolicy => &["cnp"],
        }
    }

    /// `kubectl get all` covers these.
    pub fn categories(self) -> &'static [&'static str] {
        match self {
            Kind::Pod | Kind::Service => &["all"],
            Kind::Namespace | Kind::NetworkPolicy | Kind::Node | Kind::ClusterNetworkPolicy => &[],
        }
    }

    /// Whether the kind has a status the main resource's writes leave
    /// alone (the API server's status subresource).
    pub fn has_status(self) -> bool {
        self != Kind::NetworkPolicy
    }

    /// `plural` or `plural.group`, as the API server names a resource in
    /// messages (`networkpolicies.networking.k8s.io "deny" not found`).
    pub fn qualified(self) -> String {
        match self.group() {
            "" => self.plural().to_string(),
            g => format!("{}.{g}", self.plural()),
        }
    }

    /// The path prefix of its group version: `/api/v1` or
    /// `/apis/<group>/<version>`.
    pub fn prefix(self) -> String {
        group_prefix(self.group(), self.version())
    }

    /// The kinds of one group version.
    pub fn of_group_version<'a>(
        group: &'a str,
        version: &'a str,
    ) -> impl Iterator<Item = Kind> + 'a {
        Kind::ALL
            .into_iter()
            .filter(move |k| k.group() == group && k.version() == version)
    }
}

pub fn group_prefix(group: &str, version: &str) -> String {
    match group {
        "" => format!("/api/{version}"),
        g => format!("/apis/{g}/{version}"),
    }
}

/// What a list or watch covers: one kind, in one namespace or all of
/// them, narrowed by selectors.
#[derive(Clone, Debug)]
pub struct Collection {
    pub kind: Kind,
    pub namespace: Option<String>,
    pub selector: Selector,
}

impl Collection {
    pub fn selects(&self, object: &Value) -> bool {
        let ns = object["metadata"]["namespace"].as_str().unwrap_or_default();
        self.namespace.as_deref().is_none_or(|n| n == ns) && self.selector.selects(object)
    }
}

/// A resource path: a collection, or one object of it (`name`).
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub kind: Kind,
    /// None: every namespace (a cluster-wide collection or a
    /// cluster-scoped kind).
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl Target {
    /// `/api/v1/pods`, `/api/v1/namespaces/x/pods[/a]`,
    /// `/api/v1/namespaces[/x]`,
    /// `/apis/networking.k8s.io/v1/namespaces/x/networkpolicies[/p]`;
    /// None for anything else (subresources included).
    pub fn parse(path: &str) -> Option<Target> {
        let (group, version, rest) = if let Some(rest) = path.strip_prefix("/api/") {
            let (version, rest) = rest.split_once('/')?;
            ("", version, rest)
        } else {
            let rest = path.strip_prefix("/apis/")?;
            let (group, rest) = rest.split_once('/')?;
            let (version, rest) = rest.split_once('/')?;
            (group, version, rest)
        };
        let kind_of =
            |plural: &str| Kind::of_group_version(group, version).find(|k| k.plural() == plural);
        let segments: Vec<&str> = rest.split('/').collect();
        if segments.iter().any(|s| s.is_empty()) {
            return None;
        }
        let target = |kind, namespace: Option<&str>, name: Option<&str>| Target {
            kind,
            namespace: namespace.map(str::to_string),
            name: name.map(str::to_string),
        };
        match segments[..] {
            ["namespaces", ns, plural] => {
                let kind = kind_of(plural).filter(|k| k.namespaced())?;
                Some(target(kind, Some(ns), None))
            }
            ["namespaces", ns, plural, name] => {
                let kind = kind_of(plural).filter(|k| k.namespaced())?;
                Some(target(kind, Some(ns), Some(name)))
            }
            [plural] => Some(target(kind_of(plural)?, None, None)),
            [plural, name] => {
                let kind = kind_of(plural).filter(|k| !k.namespaced())?;
                Some(target(kind, None, Some(name)))
            }
            _ => None,
        }
    }

    /// The namespace part of the object key ("" for cluster-scoped kinds).
    pub fn namespace_key(&self) -> &str {
        self.namespace.as_deref().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(kind: Kind, ns: Option<&str>, name: Option<&str>) -> Option<Target> {
        Some(Target {
            kind,
            namespace: ns.map(str::to_string),
            name: name.map(str::to_string),
        })
    }

    #[test]
    fn paths_name_collections_and_objects() {
        assert_eq!(Target::parse("/api/v1/pods"), t(Kind::Pod, None, None));
        assert_eq!(
            Target::parse("/api/v1/namespaces/x/pods/a"),
            t(Kind::Pod, Some("x"), Some("a"))
        );
        assert_eq!(
            Target::parse("/api/v1/namespaces/x"),
            t(Kind::Namespace, None, Some("x"))
        );
        assert_eq!(
            Target::parse("/apis/networking.k8s.io/v1/namespaces/x/networkpolicies"),
            t(Kind::NetworkPolicy, Some("x"), None)
        );
        assert_eq!(
            Target::parse("/apis/networking.k8s.io/v1/networkpolicies"),
            t(Kind::NetworkPolicy, None, None)
        );
    }

    #[test]
    fn other_paths_are_not_resources() {
        for p in [
            "/api/v1/networkpolicies",
            "/apis/networking.k8s.io/v1/pods",
            "/api/v1/namespaces/x/status",
            "/api/v1/namespaces/x/pods/a/status",
            "/api/v1/pods/a",
            "/api/v1/namespaces//pods",
            "/api/v2/pods",
            "/apis/networking.k8s.io/v1/namespaces/x/networkpolicies/p/",
        ] {
            assert_eq!(Target::parse(p), None, "{p}");
        }
    }
}
