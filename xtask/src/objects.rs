//! The manifests' objects as JSON, and the lab's own copy of the
//! manifests, where every lab pod names the node it was placed on.
//!
//! The agents read the copy (files, or the API server serving it), never
//! the user's originals: a pod the placement put on a node must say so in
//! `spec.nodeName`, or no agent would take it as its own.

use crate::placement::Placement;
use anyhow::{Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Kinds the agents read.
const KINDS: [&str; 6] = [
    "Namespace",
    "Pod",
    "NetworkPolicy",
    "Service",
    "Node",
    "ClusterNetworkPolicy",
];

/// The kinds of `KINDS` that have no namespace.
fn cluster_scoped(kind: &str) -> bool {
    matches!(kind, "Namespace" | "Node" | "ClusterNetworkPolicy")
}

/// `(kind, namespace, name)`: an object's identity on the API server
/// (cluster-scoped kinds have an empty namespace).
pub type ObjectKey = (String, String, String);

/// The Namespaces, Pods, NetworkPolicies, Services, Nodes and
/// ClusterNetworkPolicies of the manifests, as
/// JSON, in file order (directories: `*.yaml`, `*.yml`, `*.json`, sorted,
/// hidden entries skipped; `*List` documents contribute their items). A
/// namespaced object without a namespace gets `default`, as `kubectl
/// apply` would give it. Documents that do not parse are left out here:
/// the model load reports them.
pub fn read_objects(paths: &[PathBuf]) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for f in manifest_files(paths)? {
        let text = std::fs::read_to_string(&f)
            .with_context(|| format!("reading manifest {}", f.display()))?;
        for v in documents(&text) {
            let items = match v["kind"].as_str() {
                Some(k) if k.ends_with("List") => {
                    v["items"].as_array().cloned().unwrap_or_default()
                }
                _ => vec![v],
            };
            for mut o in items {
                let Some(kind) = o["kind"].as_str().filter(|k| KINDS.contains(k)) else {
                    continue;
                };
                if !cluster_scoped(kind) && o["metadata"]["namespace"].as_str().is_none() {
                    o["metadata"]["namespace"] = Value::from("default");
                }
                out.push(o);
            }
        }
    }
    Ok(out)
}

/// The objects by identity; a later document replaces an earlier one, as
/// applying the files in order would.
pub fn by_key(objects: Vec<Value>) -> BTreeMap<ObjectKey, Value> {
    objects.into_iter().map(|o| (object_key(&o), o)).collect()
}

pub fn object_key(o: &Value) -> ObjectKey {
    let kind = o["kind"].as_str().unwrap_or_default().to_string();
    let namespace = if cluster_scoped(&kind) {
        String::new()
    } else {
        o["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string()
    };
    let name = o["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (kind, namespace, name)
}

/// Copies the manifests into `dest` (created), one file per source file,
/// numbered to keep their order. A file holding a lab pod without a
/// `spec.nodeName` is rewritten with the node the placement chose; any
/// other file is copied byte for byte (comments and all).
pub fn write_placed_copy(sources: &[PathBuf], dest: &Path, placement: &Placement) -> Result<()> {
    std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    for (i, f) in manifest_files(sources)?.iter().enumerate() {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("reading manifest {}", f.display()))?;
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // The agent reads only these extensions from a directory.
        let ext_ok = matches!(
            f.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        );
        let name = if ext_ok { name } else { format!("{name}.yaml") };
        let target = dest.join(format!("{i:02}-{name}"));
        let mut docs = documents(&text);
        let mut changed = false;
        for d in &mut docs {
            changed |= place_document(d, placement);
        }
        let content = if changed {
            let parts = docs
                .iter()
                .map(serde_yaml::to_string)
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("re-encoding {}", f.display()))?;
            parts.join("---\n")
        } else {
            text
        };
        std::fs::write(&target, content)
            .with_context(|| format!("writing {}", target.display()))?;
    }
    Ok(())
}

/// Sets `spec.nodeName` of the lab pods in `doc` (or its items) that have
/// none; true when anything changed.
fn place_document(doc: &mut Value, placement: &Placement) -> bool {
    if let Some(items) = doc["items"].as_array_mut() {
        let mut changed = false;
        for item in items {
            changed |= place_document(item, placement);
        }
        return changed;
    }
    if doc["kind"].as_str() != Some("Pod") || doc["spec"]["nodeName"].as_str().is_some() {
        return false;
    }
    let (_, namespace, name) = object_key(doc);
    match placement.node(&format!("{namespace}/{name}")) {
        Some(node) => {
            doc["spec"]["nodeName"] = Value::from(node);
            true
        }
        None => false,
    }
}

/// The YAML (or JSON) documents of a file that parse, as JSON values.
fn documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .filter_map(|doc| {
            let v = <serde_yaml::Value as serde::Deserialize>::deserialize(doc).ok()?;
            serde_json::to_value(v).ok()
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// The files the agent reads from `paths`, in its order.
pub fn manifest_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths {
        collect(p, true, &mut files)?;
    }
    Ok(files)
}

fn collect(path: &Path, explicit: bool, out: &mut Vec<PathBuf>) -> Result<()> {
    let meta =
        std::fs::symlink_metadata(path).with_context(|| format!("manifests {}", path.display()))?;
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("listing {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                !p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'))
            })
            .collect();
        entries.sort();
        for e in entries {
            collect(&e, false, out)?;
        }
    } else if explicit
        || matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        )
    {
        out.push(path.to_path_buf());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const PODS: &str = "# the shop\n\
        apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x}\nspec: {nodeName: n2}\nstatus: {podIPs: [{ip: 10.0.0.1}]}\n---\n\
        apiVersion: v1\nkind: Pod\nmetadata: {name: b}\nstatus: {podIPs: [{ip: 10.0.0.2}]}\n";
    const POLICY: &str = "# kept verbatim\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
        metadata: {name: deny, namespace: x}\nspec: {podSelector: {}}\n";

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("xtask-objects-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("src")).unwrap();
        d
    }

    #[test]
    fn the_copy_names_placed_nodes_and_keeps_other_files() {
        let d = scratch("copy");
        std::fs::write(d.join("src/pods.yaml"), PODS).unwrap();
        std::fs::write(d.join("src/policy.yml"), POLICY).unwrap();
        std::fs::write(d.join("src/notes.txt"), "ignored").unwrap();
        let placement = Placement {
            nodes: vec!["n1".into(), "n2".into()],
            node_of: BTreeMap::from([
                ("x/a".to_string(), "n2".to_string()),
                ("default/b".to_string(), "n1".to_string()),
            ]),
        };
        let dest = d.join("copy");
        write_placed_copy(&[d.join("src")], &dest, &placement).unwrap();
        let names: Vec<String> = std::fs::read_dir(&dest)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(names, ["00-pods.yaml", "01-policy.yml"]);
        assert_eq!(
            std::fs::read_to_string(dest.join("01-policy.yml")).unwrap(),
            POLICY
        );
        let objects = by_key(read_objects(&[dest]).unwrap());
        let pod = |ns: &str, n: &str| &objects[&("Pod".into(), ns.into(), n.into())];
        assert_eq!(pod("x", "a")["spec"]["nodeName"], "n2");
        assert_eq!(pod("default", "b")["spec"]["nodeName"], "n1");
        assert!(objects.contains_key(&("NetworkPolicy".into(), "x".into(), "deny".into())));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn cluster_scoped_kinds_get_no_namespace() {
        let d = scratch("cluster");
        std::fs::write(
            d.join("src/cnp.yaml"),
            "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\n\
             metadata: {name: guard}\nspec: {tier: Admin, priority: 1, subject: {namespaces: {}}}\n---\n\
             apiVersion: v1\nkind: Node\nmetadata: {name: n1}\n",
        )
        .unwrap();
        let objects = by_key(read_objects(&[d.join("src")]).unwrap());
        let keys: Vec<&ObjectKey> = objects.keys().collect();
        assert_eq!(
            keys,
            [
                &("ClusterNetworkPolicy".into(), String::new(), "guard".into()),
                &("Node".into(), String::new(), "n1".into())
            ]
        );
        assert!(objects
            .values()
            .all(|o| o["metadata"].get("namespace").is_none()));
        let _ = std::fs::remove_dir_all(&d);
    }
}
