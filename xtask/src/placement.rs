//! Which lab node each pod runs on.
//!
//! The manifests' `spec.nodeName` is honoured: every distinct node name of
//! the lab's pods is one lab node. Pods without one are spread round robin
//! (in `namespace/name` order) over those nodes, or over `node-1` ...
//! `node-N` when no pod names a node (N from `--nodes`, else 1).

use anyhow::{bail, Result};
use palisade_policy::Pod;
use std::collections::{BTreeMap, BTreeSet};

/// The lab's nodes and the node of every lab pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Node names, sorted: the first one hosts the API server when there
    /// are several.
    pub nodes: Vec<String>,
    /// `namespace/name` -> node name.
    pub node_of: BTreeMap<String, String>,
}

impl Placement {
    /// The node of a pod (`namespace/name`), if it is a lab pod.
    pub fn node(&self, key: &str) -> Option<&str> {
        self.node_of.get(key).map(String::as_str)
    }

    /// The pods (`namespace/name`) placed on `node`, sorted.
    pub fn pods_on(&self, node: &str) -> Vec<&str> {
        self.node_of
            .iter()
            .filter(|(_, n)| *n == node)
            .map(|(k, _)| k.as_str())
            .collect()
    }
}

/// Places `pods` (the lab's pods); `nodes` is `--nodes` when given.
pub fn place(pods: &[Pod], nodes: Option<u8>) -> Result<Placement> {
    let named: BTreeSet<&str> = pods.iter().filter_map(|p| p.node.as_deref()).collect();
    let names: Vec<String> = if named.is_empty() {
        let n = usize::from(nodes.unwrap_or(1));
        if n > pods.len() {
            bail!(
                "--nodes {n}: only {} pods to spread, so some node would have none; use fewer --nodes",
                pods.len()
            );
        }
        (1..=n).map(|k| format!("node-{k}")).collect()
    } else {
        if let Some(n) = nodes.filter(|&n| usize::from(n) != named.len()) {
            let list: Vec<&str> = named.iter().copied().collect();
            bail!(
                "--nodes {n} contradicts the manifests: their pods name {} nodes ({}); drop --nodes or pass --nodes {}",
                named.len(),
                list.join(", "),
                named.len()
            );
        }
        named.iter().map(|n| n.to_string()).collect()
    };
    let mut sorted: Vec<&Pod> = pods.iter().collect();
    sorted.sort_by_key(|p| p.key());
    let mut node_of = BTreeMap::new();
    let mut next = 0;
    for p in sorted {
        let node = match &p.node {
            Some(n) => n.clone(),
            None => {
                let n = names[next % names.len()].clone();
                next += 1;
                n
            }
        };
        node_of.insert(p.key(), node);
    }
    Ok(Placement {
        nodes: names,
        node_of,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pods `x/<name>` with the given node names (`-`: none).
    fn pods(list: &[(&str, &str)]) -> Vec<Pod> {
        let text: Vec<String> = list
            .iter()
            .enumerate()
            .map(|(i, (name, node))| {
                let node = if *node == "-" {
                    String::new()
                } else {
                    format!("nodeName: {node}")
                };
                format!(
                    "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: x}}\n\
                     spec: {{{node}}}\nstatus: {{podIPs: [{{ip: 10.0.0.{}}}]}}\n",
                    i + 1
                )
            })
            .collect();
        let m = palisade_policy::load_str(&text.join("---\n"), "t.yaml");
        assert!(m.errors.is_empty(), "{:?}", m.errors);
        m.pods
    }

    #[test]
    fn named_nodes_are_honoured_and_the_rest_spread_over_them() {
        let p = place(
            &pods(&[
                ("a", "zeta"),
                ("b", "-"),
                ("c", "alpha"),
                ("d", "-"),
                ("e", "-"),
            ]),
            None,
        )
        .unwrap();
        assert_eq!(p.nodes, ["alpha", "zeta"]);
        assert_eq!(p.node("x/a"), Some("zeta"));
        assert_eq!(p.node("x/c"), Some("alpha"));
        // Unnamed pods in key order: b, d, e over alpha, zeta, alpha.
        assert_eq!(p.node("x/b"), Some("alpha"));
        assert_eq!(p.node("x/d"), Some("zeta"));
        assert_eq!(p.node("x/e"), Some("alpha"));
        assert_eq!(p.pods_on("alpha"), ["x/b", "x/c", "x/e"]);
    }

    #[test]
    fn nodes_flag_matching_the_named_count_is_accepted() {
        let p = place(&pods(&[("a", "n1"), ("b", "n2")]), Some(2)).unwrap();
        assert_eq!(p.nodes, ["n1", "n2"]);
    }

    #[test]
    fn nodes_flag_contradicting_the_manifests_is_an_error() {
        let e = place(&pods(&[("a", "n1"), ("b", "n2")]), Some(3))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--nodes 3") && e.contains("n1, n2"), "{e}");
    }

    #[test]
    fn unnamed_pods_go_round_robin_over_numbered_nodes() {
        let p = place(&pods(&[("b", "-"), ("a", "-"), ("c", "-")]), Some(2)).unwrap();
        assert_eq!(p.nodes, ["node-1", "node-2"]);
        assert_eq!(p.node("x/a"), Some("node-1"));
        assert_eq!(p.node("x/b"), Some("node-2"));
        assert_eq!(p.node("x/c"), Some("node-1"));
        let one = place(&pods(&[("a", "-"), ("b", "-")]), None).unwrap();
        assert_eq!(one.nodes, ["node-1"]);
        assert_eq!(one.pods_on("node-1"), ["x/a", "x/b"]);
    }

    #[test]
    fn more_nodes_than_pods_is_an_error() {
        let e = place(&pods(&[("a", "-"), ("b", "-")]), Some(3))
            .unwrap_err()
            .to_string();
        assert!(e.contains("fewer --nodes"), "{e}");
    }
}
