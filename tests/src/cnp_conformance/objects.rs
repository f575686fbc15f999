//! The objects in force at a step: Kubernetes objects as JSON values,
//! keyed by kind, namespace and name, in the order they were first
//! created (so the manifest text a runner writes is stable).

use super::ObjectRef;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::net::IpAddr;

/// Kind, namespace (none for cluster-scoped kinds) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectKey {
    pub fn of(o: &Value) -> Result<ObjectKey> {
        let kind = o["kind"].as_str().context("object without kind")?;
        let name = o["metadata"]["name"]
            .as_str()
            .with_context(|| format!("{kind} without metadata.name"))?;
        Ok(ObjectKey {
            kind: kind.to_string(),
            namespace: o["metadata"]["namespace"].as_str().map(String::from),
            name: name.to_string(),
        })
    }

    pub fn of_ref(r: &ObjectRef) -> ObjectKey {
        ObjectKey {
            kind: r.kind.clone(),
            namespace: r.namespace.clone(),
            name: r.name.clone(),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Objects {
    items: Vec<(ObjectKey, Value)>,
}

impl Objects {
    pub fn new(objects: impl IntoIterator<Item = Value>) -> Result<Objects> {
        let mut out = Objects::default();
        for o in objects {
            out.apply(o)?;
        }
        Ok(out)
    }

    /// Creates `o`, or replaces the object with its key.
    pub fn apply(&mut self, o: Value) -> Result<()> {
        let key = ObjectKey::of(&o)?;
        match self.items.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = o,
            None => self.items.push((key, o)),
        }
        Ok(())
    }

    pub fn delete(&mut self, key: &ObjectKey) -> Result<()> {
        let before = self.items.len();
        self.items.retain(|(k, _)| k != key);
        if self.items.len() == before {
            bail!("delete: no {key}");
        }
        Ok(())
    }

    pub fn get(&self, key: &ObjectKey) -> Option<&Value> {
        self.items.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Value> {
        self.items.iter().map(|(_, v)| v)
    }

    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.items
            .iter()
            .filter(move |(k, _)| k.kind == kind)
            .map(|(_, v)| v)
    }

    /// The pod `namespace/name`.
    pub fn pod(&self, key: &str) -> Result<&Value> {
        let (ns, name) = key
            .split_once('/')
            .with_context(|| format!("pod {key}: not namespace/name"))?;
        self.get(&ObjectKey {
            kind: "Pod".into(),
            namespace: Some(ns.into()),
            name: name.into(),
        })
        .with_context(|| format!("no pod {key}"))
    }

    /// Every object as one multi-document YAML text (what a manifest
    /// directory or `palisade_policy::load_str` reads).
    pub fn to_yaml(&self) -> String {
        self.iter()
            .map(|o| serde_yaml::to_string(o).expect("a JSON value serializes"))
            .collect::<Vec<_>>()
            .join("---\n")
    }
}

/// A pod's `status.podIP`: what upstream dials.
pub fn pod_ip(pod: &Value) -> Result<IpAddr> {
    pod["status"]["podIP"]
        .as_str()
        .with_context(|| format!("{}: no status.podIP", pod["metadata"]["name"]))?
        .parse()
        .with_context(|| format!("{}: status.podIP", pod["metadata"]["name"]))
}

pub fn node_name(pod: &Value) -> Result<String> {
    pod["spec"]["nodeName"]
        .as_str()
        .map(String::from)
        .with_context(|| format!("{}: no spec.nodeName", pod["metadata"]["name"]))
}

pub fn host_network(pod: &Value) -> bool {
    pod["spec"]["hostNetwork"].as_bool().unwrap_or(false)
}

/// A Node's `status.addresses` that are IPs.
pub fn node_addresses(node: &Value) -> Vec<IpAddr> {
    node["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["address"].as_str()?.parse().ok())
        .collect()
}
