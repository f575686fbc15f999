//! One object of a served kind: GET, POST (create), PUT (replace), PATCH
//! (JSON patch, merge, strategic merge, server-side apply) and DELETE, as kubectl
//! and client-go send them.
//!
//! Every write goes through `State::write`/`delete_checked`, so it bumps
//! the revision and produces the watch event a test control's write
//! produces. The body must name the object of the path (kind, apiVersion,
//! namespace, name: 400 naming the field otherwise; `checks.rs`) and decode
//! as its kind (`validate.rs`). Updates keep what the server owns: uid,
//! creation time, and the status of kinds that have one (the API server
//! changes status only through the status subresource, which this server
//! does not serve: test controls play the kubelet).

use crate::checks::{
    check_name, check_namespace_exists, forget_server_fields, identify, not_found, update_of,
};
use crate::reply::{full, with_warnings, ApiError, Body};
use crate::resources::Target;
use crate::state::{Kind, State};
use crate::table::{self, Include};
use crate::validate::{self, FieldValidation};
use crate::{json_patch, patch};
use bytes::Bytes;
use hyper::{Method, Response, StatusCode};
use serde_json::{json, Value};
use std::collections::HashMap;

/// The largest body accepted (the API server's limit).
const MAX_BODY: usize = 3 * 1024 * 1024;

/// What a request's query and headers say about how to write.
struct Options {
    dry_run: bool,
    validation: FieldValidation,
    field_manager: Option<String>,
    content_type: String,
}

impl Options {
    fn parse(query: &HashMap<String, String>, content_type: &str) -> Result<Options, ApiError> {
        let dry_run = match query.get("dryRun").map(String::as_str) {
            None | Some("") => false,
            Some("All") => true,
            Some(v) => {
                return Err(ApiError::bad_request(format!(
                    "dryRun: unsupported value {v:?}: only \"All\""
                )))
            }
        };
        Ok(Options {
            dry_run,
            validation: FieldValidation::parse(query.get("fieldValidation").map(String::as_str))?,
            field_manager: query.get("fieldManager").cloned().filter(|m| !m.is_empty()),
            content_type: content_type
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase(),
        })
    }
}

/// A request on one object's path (or, for POST, its collection's).
pub struct Request<'a> {
    pub method: &'a Method,
    pub target: &'a Target,
    pub query: &'a HashMap<String, String>,
    pub content_type: &'a str,
    /// Read whole.
    pub body: &'a Bytes,
    /// A GET's answer as a Table (`table.rs`).
    pub form: Option<Include>,
}

/// Serves one object route.
pub fn handle(state: &State, req: &Request) -> Response<Body> {
    let Request {
        method,
        target,
        query,
        content_type,
        body,
        form,
    } = *req;
    let result = Options::parse(query, content_type).and_then(|opts| {
        if body.len() > MAX_BODY {
            return Err(ApiError::new(
                413,
                "RequestEntityTooLarge",
                "the body is too large",
            ));
        }
        match (method, target.name.as_deref()) {
            (&Method::GET, Some(name)) => get(state, target, name, form),
            (&Method::POST, None) => create(state, target, &opts, body),
            (&Method::PUT, Some(name)) => replace(state, target, name, &opts, body),
            (&Method::PATCH, Some(name)) => patch_object(state, target, name, &opts, body),
            (&Method::DELETE, Some(name)) => delete(state, target, name, query, body),
            _ => Err(ApiError::new(
                405,
                "MethodNotAllowed",
                format!("{method} is not supported on this path"),
            )),
        }
    });
    result.unwrap_or_else(|e| e.response())
}

fn get(
    state: &State,
    target: &Target,
    name: &str,
    form: Option<Include>,
) -> Result<Response<Body>, ApiError> {
    let object = state
        .get(target.kind, target.namespace_key(), name)
        .ok_or_else(|| not_found(target.kind, name))?;
    Ok(full(
        StatusCode::OK,
        match form {
            Some(include) => {
                let rv = json!({"resourceVersion": object["metadata"]["resourceVersion"]});
                table::table(target.kind, &[object], rv, include)
            }
            None => object,
        },
    ))
}

/// A POST or PUT body: JSON (duplicate fields noted) or YAML.
fn decode(opts: &Options, body: &[u8]) -> Result<(Value, Vec<String>), ApiError> {
    match opts.content_type.as_str() {
        "" | "application/json" => validate::parse_json(body),
        "application/yaml" => serde_yaml::from_slice(body)
            .map(|v| (v, Vec::new()))
            .map_err(|e| ApiError::bad_request(format!("the body is not YAML: {e}"))),
        other => Err(unsupported_media(
            other,
            "application/json, application/yaml",
        )),
    }
}

fn unsupported_media(given: &str, supported: &str) -> ApiError {
    ApiError::new(
        415,
        "UnsupportedMediaType",
        format!("the body's type {given:?} is not supported here; supported: {supported}"),
    )
}

fn create(
    state: &State,
    target: &Target,
    opts: &Options,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let kind = target.kind;
    if kind.namespaced() && target.namespace.is_none() {
        return Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("create {} under /namespaces/<namespace>/", kind.plural()),
        ));
    }
    let (mut object, duplicates) = decode(opts, body)?;
    identify(target, None, &mut object)?;
    forget_server_fields(&mut object);
    let name = creation_name(state, kind, &mut object)?;
    check_name(kind, &name)?;
    if object["metadata"]["resourceVersion"]
        .as_str()
        .is_some_and(|rv| !rv.is_empty())
    {
        return Err(ApiError::bad_request(
            "metadata.resourceVersion: must not be set on an object to be created",
        ));
    }
    check_namespace_exists(state, target)?;
    let (object, warnings) = validate::check(kind, object, &duplicates, opts.validation)?;
    let (stored, _) = state.write(
        kind,
        target.namespace_key(),
        &name,
        opts.dry_run,
        |current| match current {
            Some(_) => Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("{} {name:?} already exists", kind.qualified()),
            )
            .with_details(json!({"name": name, "group": kind.group(), "kind": kind.plural()}))),
            None => Ok(object),
        },
    )?;
    Ok(with_warnings(full(StatusCode::CREATED, stored), &warnings))
}

/// `metadata.name`, or one made from `metadata.generateName`.
fn creation_name(state: &State, kind: Kind, object: &mut Value) -> Result<String, ApiError> {
    let meta = &mut object["metadata"];
    if let Some(name) = meta["name"].as_str().filter(|n| !n.is_empty()) {
        return Ok(name.to_string());
    }
    let Some(prefix) = meta["generateName"].as_str().filter(|n| !n.is_empty()) else {
        return Err(ApiError::invalid(format!(
            "{} is invalid: metadata.name: Required value: name or generateName is required",
            kind.name()
        )));
    };
    // The next revision is unique per server, like the API server's
    // random suffix.
    let name = format!("{prefix}{:05x}", state.revision() + 1);
    meta["name"] = json!(name);
    Ok(name)
}

fn replace(
    state: &State,
    target: &Target,
    name: &str,
    opts: &Options,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let kind = target.kind;
    let (mut object, duplicates) = decode(opts, body)?;
    identify(target, Some(name), &mut object)?;
    let (stored, _, warnings) =
        write_validated(state, target, name, opts, &duplicates, |current| {
            let current = current.ok_or_else(|| not_found(kind, name))?;
            update_of(kind, name, current, &mut object)?;
            Ok(object)
        })?;
    Ok(with_warnings(full(StatusCode::OK, stored), &warnings))
}

/// Writes the object `make` builds from the stored one (None when there is
/// none), validated as every update is: the stored object, whether it was
/// created, and the validation's warnings.
fn write_validated(
    state: &State,
    target: &Target,
    name: &str,
    opts: &Options,
    duplicates: &[String],
    make: impl FnOnce(Option<&Value>) -> Result<Value, ApiError>,
) -> Result<(Value, bool, Vec<String>), ApiError> {
    let kind = target.kind;
    let mut warnings = Vec::new();
    let (stored, created) = state.write(
        kind,
        target.namespace_key(),
        name,
        opts.dry_run,
        |current| {
            let (object, w) = validate::check(kind, make(current)?, duplicates, opts.validation)?;
            warnings = w;
            Ok(object)
        },
    )?;
    Ok((stored, created, warnings))
}

#[derive(Clone, Copy, PartialEq)]
enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

fn patch_type(content_type: &str) -> Result<PatchType, ApiError> {
    match content_type {
        "application/json-patch+json" => Ok(PatchType::Json),
        "application/merge-patch+json" => Ok(PatchType::Merge),
        "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
        "application/apply-patch+yaml" => Ok(PatchType::Apply),
        other => Err(unsupported_media(
            other,
            "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml",
        )),
    }
}

fn patch_object(
    state: &State,
    target: &Target,
    name: &str,
    opts: &Options,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let kind = target.kind;
    let how = patch_type(&opts.content_type)?;
    let (mut patch, duplicates) = match how {
        PatchType::Apply => {
            if opts.field_manager.is_none() {
                return Err(ApiError::bad_request(
                    "fieldManager: required for apply patches (server-side apply)",
                ));
            }
            let desired: Value = serde_yaml::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("the apply patch is not YAML: {e}")))?;
            (desired, Vec::new())
        }
        _ => validate::parse_json(body)?,
    };
    if how == PatchType::Apply {
        identify(target, Some(name), &mut patch)?;
        check_name(kind, name)?;
        check_namespace_exists(state, target)?;
    }
    let (stored, created, warnings) =
        write_validated(state, target, name, opts, &duplicates, |current| {
            let mut object =
                patched(kind, how, current, &patch).ok_or_else(|| not_found(kind, name))??;
            if let Some(current) = current {
                // A patch may not move the object.
                identify(target, Some(name), &mut object)
                    .map_err(|e| ApiError::invalid(e.message))?;
                update_of(kind, name, current, &mut object)?;
            } else {
                forget_server_fields(&mut object);
            }
            Ok(object)
        })?;
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(with_warnings(full(code, stored), &warnings))
}

/// The object a patch makes of `current`; None when there is nothing to
/// patch (only server-side apply creates).
fn patched(
    kind: Kind,
    how: PatchType,
    current: Option<&Value>,
    patch: &Value,
) -> Option<Result<Value, ApiError>> {
    Some(match (how, current) {
        // Server-side apply: the body is the desired object, whole.
        (PatchType::Apply, _) => Ok(patch.clone()),
        (_, None) => return None,
        (PatchType::Json, Some(c)) => {
            let mut o = c.clone();
            json_patch::apply(&mut o, patch).map(|()| o)
        }
        (PatchType::Merge, Some(c)) => {
            let mut o = c.clone();
            patch::merge(&mut o, patch);
            Ok(o)
        }
        (PatchType::Strategic, Some(c)) => {
            let mut o = c.clone();
            patch::strategic(kind, &mut o, patch).map(|()| o)
        }
    })
}

/// DeleteOptions' preconditions and dry run, from the body (optional) and
/// the query.
fn delete(
    state: &State,
    target: &Target,
    name: &str,
    query: &HashMap<String, String>,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let kind = target.kind;
    let options: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        validate::parse_json(body)?.0
    };
    let dry_run = query.get("dryRun").is_some_and(|v| v == "All")
        || options["dryRun"]
            .as_array()
            .is_some_and(|d| d.iter().any(|v| v == "All"));
    let pre = options["preconditions"].clone();
    let check = |current: &Value| -> Result<(), ApiError> {
        for field in ["uid", "resourceVersion"] {
            if let Some(want) = pre[field].as_str() {
                if current["metadata"][field].as_str() != Some(want) {
                    return Err(ApiError::new(
                        409,
                        "Conflict",
                        format!(
                            "Operation cannot be fulfilled on {} {name:?}: precondition failed: {field} is {}, not {want:?}",
                            kind.qualified(),
                            current["metadata"][field]
                        ),
                    ));
                }
            }
        }
        Ok(())
    };
    let ns = target.namespace_key();
    if kind == Kind::Namespace {
        let current = state
            .get(kind, ns, name)
            .ok_or_else(|| not_found(kind, name))?;
        check(&current)?;
        if !dry_run {
            delete_contents(state, name);
        }
    }
    let deleted = state
        .delete_checked(kind, ns, name, dry_run, check)?
        .ok_or_else(|| not_found(kind, name))?;
    let uid = deleted["metadata"]["uid"].clone();
    Ok(full(
        StatusCode::OK,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": {"name": name, "group": kind.group(), "kind": kind.plural(), "uid": uid},
        }),
    ))
}

/// A deleted namespace takes its objects with it (the API server's
/// namespace controller empties it before it goes).
fn delete_contents(state: &State, namespace: &str) {
    for kind in Kind::ALL.into_iter().filter(|k| k.namespaced()) {
        for name in state.names_in(kind, namespace) {
            state.delete(kind, namespace, &name);
        }
    }
}
