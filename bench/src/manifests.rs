//! The workload as Kubernetes manifests (Namespaces, Pods with their
//! addresses in `status.podIPs`, NetworkPolicies): what `palisade agent
//! --manifests` reads.

use crate::workload::{Labels, Peer, Workload};
use std::fmt::Write;

pub fn render(w: &Workload) -> String {
    let mut out = String::new();
    for ns in &w.namespaces {
        let _ = write!(
            out,
            "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {}\n  labels: {}\n",
            ns.name,
            flow(&ns.labels)
        );
    }
    for p in &w.pods {
        let _ = write!(
            out,
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {}\n  namespace: {}\n  labels: {}\n\
             spec:\n  nodeName: {}\n  containers:\n    - {{name: app, image: bench}}\n\
             status:\n  phase: Running\n  podIPs: [{{ip: {}}}]\n",
            p.name,
            p.namespace,
            flow(&p.labels),
            p.node,
            p.ip
        );
    }
    for pol in &w.policies {
        let _ = write!(
            out,
            "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {}\n  namespace: {}\n\
             spec:\n  podSelector:\n    matchLabels: {}\n  policyTypes: [Ingress]\n  ingress:\n",
            pol.name,
            pol.namespace,
            flow(&pol.selector)
        );
        for rule in &pol.rules {
            let peer = match &rule.peer {
                Peer::Pods(sel) => format!("{{podSelector: {{matchLabels: {}}}}}", flow(sel)),
                Peer::Namespaces(sel) => {
                    format!("{{namespaceSelector: {{matchLabels: {}}}}}", flow(sel))
                }
                Peer::NamespacedPods { namespaces, pods } => format!(
                    "{{namespaceSelector: {{matchLabels: {}}}, podSelector: {{matchLabels: {}}}}}",
                    flow(namespaces),
                    flow(pods)
                ),
                Peer::IpBlock { cidr, except } => {
                    let except: Vec<String> = except.iter().map(|e| e.to_string()).collect();
                    format!(
                        "{{ipBlock: {{cidr: {cidr}, except: [{}]}}}}",
                        except.join(", ")
                    )
                }
            };
            let ports: Vec<String> = rule
                .ports
                .iter()
                .map(|p| {
                    if p.first == p.last {
                        format!("{{protocol: {}, port: {}}}", p.proto.upper(), p.first)
                    } else {
                        format!(
                            "{{protocol: {}, port: {}, endPort: {}}}",
                            p.proto.upper(),
                            p.first,
                            p.last
                        )
                    }
                })
                .collect();
            let _ = writeln!(
                out,
                "    - from: [{peer}]\n      ports: [{}]",
                ports.join(", ")
            );
        }
    }
    out
}

/// `{k: v, ...}`; keys and values are plain identifiers, no quoting needed.
fn flow(labels: &Labels) -> String {
    let kv: Vec<String> = labels.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!("{{{}}}", kv.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The policy crate reads the manifests without error, with every rule.
    #[test]
    fn manifests_load_cleanly() {
        let w = Workload::generate(100);
        let dir =
            std::env::temp_dir().join(format!("palisade-bench-manifests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bench.yaml");
        std::fs::write(&file, render(&w)).unwrap();
        let model = palisade_policy::load_paths(std::slice::from_ref(&file));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(model.errors.is_empty(), "{:?}", model.errors);
        assert_eq!(model.pods.len(), w.pods.len());
        assert_eq!(model.policies.len(), w.policies.len());
    }
}
