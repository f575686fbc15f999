//! Loading manifests from files and directories.
//!
//! Directories are read recursively (`*.yaml`, `*.yml`, `*.json`, sorted by
//! path so the result never depends on the file system's order; hidden
//! entries skipped); a file named on its own is read whatever its
//! extension. Files hold one or more YAML documents or JSON values; a
//! `List` (or `PodList`, ...) contributes its items. Namespaces, Pods,
//! Services, Nodes, networking.k8s.io/v1 NetworkPolicies and
//! policy.networking.k8s.io/v1alpha2 ClusterNetworkPolicies are kept,
//! every other kind is ignored. A document or object that cannot be read becomes an
//! `InputError` and everything else still loads.

use crate::build::{build_sourced, check, Sourced};
use crate::cluster::ClusterPolicy;
use crate::model::{InputError, Model, Policy};
use k8s_openapi::api::core::v1 as core;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Objects read so far, each with its file.
#[derive(Default)]
struct Objects {
    namespaces: Vec<Sourced<core::Namespace>>,
    pods: Vec<Sourced<core::Pod>>,
    /// Converted as they are read: one that does not deserialize is still
    /// a policy (not understood), never dropped.
    policies: Vec<Sourced<Result<Policy, InputError>>>,
    services: Vec<Sourced<core::Service>>,
    /// Converted as they are read, like NetworkPolicies: a rule that does
    /// not deserialize is read fail closed, not the whole object lost.
    cluster_policies: Vec<Sourced<Result<ClusterPolicy, InputError>>>,
    nodes: Vec<Sourced<core::Node>>,
    errors: Vec<InputError>,
}

/// Loads every manifest under `paths` (files or directories, in the given
/// order) into a validated model.
pub fn load_paths(paths: &[PathBuf]) -> Model {
    let mut objects = Objects::default();
    for path in paths {
        let mut files = Vec::new();
        if let Err(e) = collect_files(path, true, &mut files) {
            objects.file_error(path, e.to_string());
            continue;
        }
        for file in files {
            match std::fs::read_to_string(&file) {
                Ok(text) => load_text(&text, &file, &mut objects),
                Err(e) => objects.file_error(&file, e.to_string()),
            }
        }
    }
    build_sourced(
        objects.namespaces,
        objects.pods,
        objects.policies,
        objects.services,
        objects.cluster_policies,
        objects.nodes,
        objects.errors,
    )
}

/// Loads manifests from a string, as if read from a file named `source`.
pub fn load_str(text: &str, source: &str) -> Model {
    let mut objects = Objects::default();
    load_text(text, Path::new(source), &mut objects);
    build_sourced(
        objects.namespaces,
        objects.pods,
        objects.policies,
        objects.services,
        objects.cluster_policies,
        objects.nodes,
        objects.errors,
    )
}

fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// `explicit`: the path was named by the user, so it is read whatever its
/// name; inside directories only manifest extensions count.
fn collect_files(path: &Path, explicit: bool, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    // Symlinked directories are not followed (no cycles); symlinked files are.
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()?;
        entries.sort();
        for entry in entries {
            let hidden = entry
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if !hidden {
                collect_files(&entry, false, out)?;
            }
        }
    } else if explicit || (is_manifest(path) && std::fs::metadata(path)?.is_file()) {
        out.push(path.to_path_buf());
    }
    Ok(())
}

fn load_text(text: &str, file: &Path, objects: &mut Objects) {
    let json = file.extension().and_then(|e| e.to_str()) == Some("json");
    // (first line, parsed value) per document.
    let documents: Vec<(usize, Result<Value, String>)> = if json {
        let mut out = Vec::new();
        for r in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
            match r {
                Ok(v) => out.push((0, Ok(v))),
                Err(e) => {
                    // A JSON stream cannot be resynchronized after an error.
                    out.push((e.line(), Err(e.to_string())));
                    break;
                }
            }
        }
        out
    } else {
        yaml_documents(text)
            .into_iter()
            .map(|(line, doc)| {
                let value = match serde_yaml::from_str::<serde_yaml::Value>(doc) {
                    Ok(v) => serde_json::to_value(v).map_err(|e| e.to_string()),
                    Err(_) => Err(yaml_error_in_file(doc, line)),
                };
                (line, value)
            })
            .collect()
    };
    let mut index = 0;
    for (line, doc) in documents {
        if matches!(doc, Ok(Value::Null)) {
            continue; // empty document (comments only, or `---` alone)
        }
        index += 1;
        let label = if line > 0 {
            format!("document {index} (line {line})")
        } else {
            format!("document {index}")
        };
        match doc {
            Ok(value) => objects.add(value, file, &label, None),
            Err(message) => objects.push_error(file, label, "syntax", message),
        }
    }
}

/// The parse error of a document starting on line `first_line`, with
/// line numbers counted in the whole file (parsed again behind padding:
/// only on this error path, so large files pay nothing for it).
fn yaml_error_in_file(doc: &str, first_line: usize) -> String {
    let padded = format!("{}{doc}", "\n".repeat(first_line.saturating_sub(1)));
    match serde_yaml::from_str::<serde_yaml::Value>(&padded) {
        Err(e) => e.to_string(),
        Ok(_) => "unparsable document".to_string(),
    }
}

/// Splits a YAML stream at its `---` document markers, returning each
/// document with its first line number. Splitting first (a marker is a
/// `---` at the start of a line, which can never be document content)
/// means a broken document loses only itself, never the ones after it.
fn yaml_documents(text: &str) -> Vec<(usize, &str)> {
    let mut docs = Vec::new();
    let mut start = 0; // byte offset of the current document
    let mut start_line = 1;
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let rest = line.strip_prefix("---");
        let is_marker =
            rest.is_some_and(|r| r.is_empty() || r.starts_with([' ', '\t', '\r', '\n']));
        if is_marker {
            docs.push((start_line, &text[start..offset]));
            // Content may follow the marker on the same line (`--- {...}`).
            start = offset + 3;
            start_line = i + 1;
        }
        offset += line.len();
    }
    docs.push((start_line, &text[start..]));
    docs
}

impl Objects {
    fn push_error(&mut self, file: &Path, object: String, field: &str, message: String) {
        self.errors.push(InputError {
            source: Some(file.display().to_string()),
            object,
            field: field.to_string(),
            message,
        });
    }

    fn file_error(&mut self, file: &Path, message: String) {
        self.push_error(file, "file".to_string(), "read", message);
    }

    /// One JSON value: an object or a list of them. `inherited` is the
    /// (apiVersion, kind) of items of a typed list, whose items may leave
    /// both out (as the API server returns them).
    fn add(&mut self, mut value: Value, file: &Path, label: &str, inherited: Option<(&str, &str)>) {
        let Some(map) = value.as_object_mut() else {
            self.push_error(
                file,
                label.to_string(),
                "(root)",
                "not an object".to_string(),
            );
            return;
        };
        if let Some((api_version, kind)) = inherited {
            map.entry("apiVersion")
                .or_insert_with(|| api_version.into());
            map.entry("kind").or_insert_with(|| kind.into());
        }
        let text = |key: &str| {
            map.get(key)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let (api_version, kind) = (text("apiVersion"), text("kind"));

        if let Some(item_kind) = kind.strip_suffix("List") {
            let Some(items) = map.get_mut("items").map(Value::take) else {
                self.push_error(
                    file,
                    format!("{label} ({kind})"),
                    "items",
                    "missing".to_string(),
                );
                return;
            };
            let Value::Array(items) = items else {
                self.push_error(
                    file,
                    format!("{label} ({kind})"),
                    "items",
                    "not a list".to_string(),
                );
                return;
            };
            let inherit = (!item_kind.is_empty()).then_some((api_version.as_str(), item_kind));
            for (j, item) in items.into_iter().enumerate() {
                self.add(item, file, &format!("{label} item {}", j + 1), inherit);
            }
            return;
        }

        let source = Some(file.display().to_string());
        match (api_version.as_str(), kind.as_str()) {
            ("v1", "Namespace") => {
                if let Some(object) = self.typed(value, file, "Namespace") {
                    self.namespaces.push(Sourced { source, object });
                }
            }
            ("v1", "Pod") => {
                if let Some(object) = self.typed(value, file, "Pod") {
                    self.pods.push(Sourced { source, object });
                }
            }
            ("v1", "Service") => {
                if let Some(object) = self.typed(value, file, "Service") {
                    self.services.push(Sourced { source, object });
                }
            }
            ("networking.k8s.io/v1", "NetworkPolicy") => {
                let object = check::policy_json(&value);
                self.policies.push(Sourced { source, object });
            }
            ("policy.networking.k8s.io/v1alpha2", "ClusterNetworkPolicy") => {
                let object = check::cluster_policy_json(&value);
                self.cluster_policies.push(Sourced { source, object });
            }
            ("v1", "Node") => {
                if let Some(object) = self.typed(value, file, "Node") {
                    self.nodes.push(Sourced { source, object });
                }
            }
            _ => {} // other kinds play no part in policy
        }
    }

    /// Deserializes into the k8s-openapi type; a type error names the path
    /// of the field that failed.
    fn typed<T: DeserializeOwned>(&mut self, value: Value, file: &Path, kind: &str) -> Option<T> {
        match check::deserialize::<_, T>(&value) {
            Ok(object) => Some(object),
            Err(issue) => {
                let meta = check::rough_meta(&value);
                let mut e = check::undeserializable(kind, &meta, issue);
                e.source = Some(file.display().to_string());
                self.errors.push(e);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::yaml_documents;

    #[test]
    fn documents_split_at_markers_only() {
        let text = "# header\n---\na: 1\n--- {b: 2}\nc: |\n  ---\n  text\n---\n";
        let docs = yaml_documents(text);
        let bodies: Vec<(usize, &str)> = docs.iter().map(|(l, d)| (*l, *d)).collect();
        assert_eq!(
            bodies,
            [
                (1, "# header\n"),
                (2, "\na: 1\n"),
                (4, " {b: 2}\nc: |\n  ---\n  text\n"),
                (8, "\n"),
            ]
        );
        // `----` and `---x` are content, not markers.
        assert_eq!(yaml_documents("a: |\n ok\n----\n").len(), 1);
    }
}
