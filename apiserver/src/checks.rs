//! The checks of a client's write (`objects.rs`), in the API server's
//! words where it has them: the body is the path's object, names are
//! valid, the namespace exists, update preconditions hold; and what the
//! server owns (status, uid, timestamps) is kept from the client.

use crate::reply::ApiError;
use crate::resources::Target;
use crate::state::{Kind, State};
use serde_json::{json, Value};

/// 404 for an object of `kind`, with the `details` clients read.
pub fn not_found(kind: Kind, name: &str) -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        format!("{} {name:?} not found", kind.qualified()),
    )
    .with_details(json!({"name": name, "group": kind.group(), "kind": kind.plural()}))
}

/// Checks that `object` is the path's object and fills in what the path
/// implies (kind, apiVersion, namespace). `name`: the path's, if any.
pub fn identify(target: &Target, name: Option<&str>, object: &mut Value) -> Result<(), ApiError> {
    let kind = target.kind;
    if !object.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    for (field, expected) in [("kind", kind.name()), ("apiVersion", kind.api_version())] {
        match object[field].as_str() {
            None | Some("") => object[field] = json!(expected),
            Some(given) if given != expected => {
                return Err(ApiError::bad_request(format!(
                    "{field}: {given:?} does not match the path, which serves {} {:?}",
                    kind.qualified(),
                    expected
                )))
            }
            Some(_) => {}
        }
    }
    if !object["metadata"].is_object() {
        object["metadata"] = json!({});
    }
    let meta = &mut object["metadata"];
    if let Some(ns) = &target.namespace {
        match meta["namespace"].as_str() {
            None | Some("") => meta["namespace"] = json!(ns),
            Some(given) if given != ns => {
                return Err(ApiError::bad_request(format!(
                    "metadata.namespace: {given:?} does not match the namespace in the path, {ns:?}"
                )))
            }
            Some(_) => {}
        }
    } else if let Some(m) = meta.as_object_mut() {
        // A cluster-scoped object has no namespace.
        m.remove("namespace");
    }
    if let Some(name) = name {
        match meta["name"].as_str() {
            Some(given) if given == name => {}
            given => {
                return Err(ApiError::bad_request(format!(
                    "metadata.name: {} does not match the name in the path, {name:?}",
                    given.map_or("(missing)".to_string(), |g| format!("{g:?}"))
                )))
            }
        }
    }
    Ok(())
}

/// A name the API server would accept for `kind` (RFC 1123 subdomain;
/// RFC 1123 label for Namespaces, RFC 1035 label for Services), or its
/// 422 in the API server's words.
pub fn check_name(kind: Kind, name: &str) -> Result<(), ApiError> {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let (max, dots, rule) = match kind {
        Kind::Namespace => (63, false, "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"),
        Kind::Service => (63, false, "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character"),
        Kind::Pod | Kind::NetworkPolicy | Kind::Node | Kind::ClusterNetworkPolicy => (253, true, "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"),
    };
    let first_ok = |c: char| {
        if kind == Kind::Service {
            c.is_ascii_lowercase()
        } else {
            alnum(c)
        }
    };
    let ok = name.len() <= max
        && name.starts_with(first_ok)
        && name.ends_with(alnum)
        && name
            .chars()
            .all(|c| alnum(c) || c == '-' || (dots && c == '.'));
    if ok {
        return Ok(());
    }
    Err(ApiError::invalid(format!(
        "{} {name:?} is invalid: metadata.name: Invalid value: {name:?}: {rule} (at most {max} characters)",
        kind.name()
    )))
}

pub fn check_namespace_exists(state: &State, target: &Target) -> Result<(), ApiError> {
    match &target.namespace {
        Some(ns) if state.get(Kind::Namespace, "", ns).is_none() => {
            Err(not_found(Kind::Namespace, ns))
        }
        _ => Ok(()),
    }
}

/// For an update of `current`: the preconditions the new object carries
/// (`resourceVersion`, `uid`) hold, and the stored status stays.
pub fn update_of(
    kind: Kind,
    name: &str,
    current: &Value,
    object: &mut Value,
) -> Result<(), ApiError> {
    let conflict = |why: &str| {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {name:?}: {why}",
                kind.qualified()
            ),
        )
    };
    let (new, old) = (&object["metadata"], &current["metadata"]);
    if new["resourceVersion"]
        .as_str()
        .is_some_and(|rv| !rv.is_empty())
        && new["resourceVersion"] != old["resourceVersion"]
    {
        return Err(conflict(
            "the object has been modified; please apply your changes to the latest version and try again",
        ));
    }
    if new["uid"].as_str().is_some_and(|u| !u.is_empty()) && new["uid"] != old["uid"] {
        return Err(conflict(
            "the uid in the object does not match the stored object's",
        ));
    }
    if kind.has_status() {
        match current.get("status") {
            Some(s) => object["status"] = s.clone(),
            None => {
                object.as_object_mut().map(|o| o.remove("status"));
            }
        }
    }
    forget_server_fields(object);
    Ok(())
}

/// Drops what only the server sets (`meta.rs` sets it again: fresh on a
/// creation, the stored object's on an update), as the API server ignores
/// these fields in a client's body.
pub fn forget_server_fields(object: &mut Value) {
    if let Some(meta) = object["metadata"].as_object_mut() {
        for field in ["uid", "creationTimestamp", "generation"] {
            meta.remove(field);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_kinds_rules() {
        assert!(check_name(Kind::NetworkPolicy, "allow-web.v2").is_ok());
        assert!(check_name(Kind::Namespace, "a.b").is_err());
        assert!(check_name(Kind::Service, "1svc").is_err());
        assert!(check_name(Kind::Pod, "Web").is_err());
        assert!(check_name(Kind::Pod, "web-").is_err());
        let e = check_name(Kind::Namespace, &"x".repeat(64)).unwrap_err();
        assert_eq!(e.code, 422);
        assert!(e.message.contains("metadata.name"), "{}", e.message);
    }

    #[test]
    fn the_body_must_name_the_paths_object() {
        let target =
            Target::parse("/apis/networking.k8s.io/v1/namespaces/x/networkpolicies/p").unwrap();
        let mut ok = json!({"metadata": {"name": "p"}});
        identify(&target, Some("p"), &mut ok).unwrap();
        assert_eq!(ok["metadata"]["namespace"], "x");
        assert_eq!(ok["kind"], "NetworkPolicy");
        for (body, field) in [
            (json!({"kind": "Pod", "metadata": {"name": "p"}}), "kind"),
            (
                json!({"apiVersion": "v1", "metadata": {"name": "p"}}),
                "apiVersion",
            ),
            (
                json!({"metadata": {"name": "p", "namespace": "y"}}),
                "metadata.namespace",
            ),
            (json!({"metadata": {"name": "q"}}), "metadata.name"),
            (json!({"metadata": {}}), "metadata.name"),
        ] {
            let mut b = body.clone();
            let e = identify(&target, Some("p"), &mut b).unwrap_err();
            assert_eq!(e.code, 400, "{body}");
            assert!(e.message.starts_with(field), "{body}: {}", e.message);
        }
    }
}
