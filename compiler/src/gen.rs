//! A generator of large, realistic clusters for benchmarks and scale tests:
//! namespaces with team/env labels, pods of a few deployments per
//! namespace (one label set each, like pod-template-hash), dual-stack
//! addresses, named container ports, and per-namespace policies mixing
//! default-deny, same-namespace, cross-namespace, ipBlock (with excepts),
//! port ranges and named ports.

use ipnetwork::IpNetwork;
use palisade_policy::{
    Enforcement, Labels, Model, NamedPort, Namespace, Peer, Pod, Policy, PortMatch, PortSpec,
    Protocol, Rule, Selector, NAMESPACE_NAME_LABEL,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Size of a generated cluster.
#[derive(Clone, Copy, Debug)]
pub struct ClusterSize {
    pub namespaces: usize,
    pub pods: usize,
    pub policies: usize,
    /// Pods placed on [`LOCAL_NODE`].
    pub local_pods: usize,
    /// Deployments (distinct label sets) per namespace.
    pub apps_per_namespace: usize,
}

impl ClusterSize {
    /// 150,000 pods in 1,000 namespaces, 10,000 policies, 110 local pods.
    pub const LARGE: ClusterSize = ClusterSize {
        namespaces: 1_000,
        pods: 150_000,
        policies: 10_000,
        local_pods: 110,
        apps_per_namespace: 15,
    };
}

/// The node whose pods the generated cluster puts `local_pods` of.
pub const LOCAL_NODE: &str = "node-local";

fn labels(pairs: &[(&str, String)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn sel(pairs: &[(&str, String)]) -> Selector {
    Selector {
        match_labels: labels(pairs),
        match_expressions: vec![],
    }
}

fn ns_name(i: usize) -> String {
    format!("ns-{i:04}")
}

fn app(j: usize) -> String {
    format!("app-{j:02}")
}

fn tier(j: usize) -> &'static str {
    ["web", "api", "db"][j % 3]
}

/// Pod `i`'s addresses: 10.x.y.z from the index (skipping 10.255/16,
/// kept for "outside" addresses) and fd00::/64 with the same index.
pub fn pod_ips(i: usize) -> Vec<IpAddr> {
    let n = i as u32 + 1;
    vec![
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (n & 0x00ff_ffff))),
        IpAddr::V6(Ipv6Addr::from((0xfd00u128 << 112) | u128::from(n))),
    ]
}

fn pod(i: usize, size: &ClusterSize) -> Pod {
    let ns = i % size.namespaces;
    let j = (i / size.namespaces) % size.apps_per_namespace;
    let local_every = (size.pods / size.local_pods.max(1)).max(1);
    let node = if size.local_pods > 0
        && i.is_multiple_of(local_every)
        && i / local_every < size.local_pods
    {
        LOCAL_NODE.to_string()
    } else {
        format!("node-{}", i % 1_400)
    };
    let mut ports = vec![NamedPort {
        name: "metrics".into(),
        port: 9090,
        protocol: Protocol::Tcp,
    }];
    if tier(j) == "web" {
        ports.push(NamedPort {
            name: "http".into(),
            port: 8080 + (j % 2) as u16,
            protocol: Protocol::Tcp,
        });
    }
    Pod {
        namespace: ns_name(ns),
        name: format!("{}-{i}", app(j)),
        labels: labels(&[
            ("app", app(j)),
            ("tier", tier(j).to_string()),
            ("pod-template-hash", format!("h{j:02}{ns:04}")),
        ]),
        node: Some(node),
        ips: pod_ips(i),
        ports,
        pending: false,
    }
}

fn tcp(port: u16, end: u16) -> PortSpec {
    PortSpec {
        protocol: Protocol::Tcp,
        port: PortMatch::Range { port, end },
    }
}

fn net(s: &str) -> IpNetwork {
    s.parse().expect("generator CIDR")
}

/// Policy `k` of namespace `ns`: a rotation of common shapes.
fn policy(ns: usize, k: usize, size: &ClusterSize) -> Policy {
    let namespace = ns_name(ns);
    let target = k % size.apps_per_namespace;
    let mut p = Policy {
        namespace: namespace.clone(),
        name: format!("pol-{k:02}"),
        enforcement: Enforcement::Enforce,
        pod_selector: sel(&[("app", app(target))]),
        isolates_ingress: true,
        isolates_egress: false,
        ingress: vec![],
        egress: vec![],
        unreadable: None,
        warnings: vec![],
    };
    match k % 10 {
        // Default deny ingress for the namespace.
        0 => p.pod_selector = Selector::default(),
        // Same-namespace traffic.
        1 => {
            p.pod_selector = Selector::default();
            p.ingress.push(Rule {
                peers: Some(vec![Peer::Pods {
                    namespaces: None,
                    pods: None,
                }]),
                ports: None,
            });
        }
        // Next tier up, on the app port and a range.
        2 | 3 => p.ingress.push(Rule {
            peers: Some(vec![Peer::Pods {
                namespaces: None,
                pods: Some(sel(&[("app", app((target + 1) % size.apps_per_namespace))])),
            }]),
            ports: Some(vec![tcp(8080, 8080), tcp(9000, 9100)]),
        }),
        // Cross-namespace: web pods of the same team, named port.
        4 => p.ingress.push(Rule {
            peers: Some(vec![Peer::Pods {
                namespaces: Some(sel(&[("team", format!("team-{}", ns % 20))])),
                pods: Some(sel(&[("tier", "web".into())])),
            }]),
            ports: Some(vec![PortSpec {
                protocol: Protocol::Tcp,
                port: PortMatch::Named("http".into()),
            }]),
        }),
        // Monitoring from one namespace.
        5 => p.ingress.push(Rule {
            peers: Some(vec![Peer::Pods {
                namespaces: Some(sel(&[(NAMESPACE_NAME_LABEL, ns_name(0))])),
                pods: None,
            }]),
            ports: Some(vec![tcp(9090, 9090)]),
        }),
        // External clients, with holes.
        6 => p.ingress.push(Rule {
            peers: Some(vec![
                Peer::IpBlock {
                    cidr: net("0.0.0.0/0"),
                    except: vec![net("10.0.0.0/8"), net("192.168.0.0/16")],
                },
                Peer::IpBlock {
                    cidr: net("10.255.0.0/16"),
                    except: vec![net("10.255.7.0/24")],
                },
                Peer::IpBlock {
                    cidr: net("::/0"),
                    except: vec![net("fd00::/64")],
                },
            ]),
            ports: Some(vec![tcp(443, 443), tcp(80, 80)]),
        }),
        // Egress: DNS to kube-system-like namespace, HTTPS out.
        7 => {
            p.isolates_egress = true;
            p.egress.push(Rule {
                peers: Some(vec![Peer::Pods {
                    namespaces: Some(sel(&[(NAMESPACE_NAME_LABEL, ns_name(1))])),
                    pods: None,
                }]),
                ports: Some(vec![
                    PortSpec {
                        protocol: Protocol::Udp,
                        port: PortMatch::Range { port: 53, end: 53 },
                    },
                    tcp(53, 53),
                ]),
            });
            p.egress.push(Rule {
                peers: Some(vec![Peer::IpBlock {
                    cidr: net("0.0.0.0/0"),
                    except: vec![net("10.0.0.0/8")],
                }]),
                ports: Some(vec![tcp(443, 443)]),
            });
        }
        // Egress to web pods of the namespace by named port.
        8 => {
            p.isolates_egress = true;
            p.egress.push(Rule {
                peers: Some(vec![Peer::Pods {
                    namespaces: None,
                    pods: Some(sel(&[("tier", "web".into())])),
                }]),
                ports: Some(vec![PortSpec {
                    protocol: Protocol::Tcp,
                    port: PortMatch::Named("http".into()),
                }]),
            });
        }
        // Production namespaces, a port range.
        _ => p.ingress.push(Rule {
            peers: Some(vec![Peer::Pods {
                namespaces: Some(sel(&[("env", "prod".into())])),
                pods: Some(sel(&[("tier", tier(target).into())])),
            }]),
            ports: Some(vec![tcp(5000, 5999)]),
        }),
    }
    p
}

/// Generates a cluster of `size`.
pub fn cluster(size: &ClusterSize) -> Model {
    let namespaces = (0..size.namespaces)
        .map(|i| {
            let name = ns_name(i);
            let ns = Namespace {
                name: name.clone(),
                labels: labels(&[
                    (NAMESPACE_NAME_LABEL, name.clone()),
                    ("team", format!("team-{}", i % 20)),
                    ("env", ["prod", "staging", "dev"][i % 3].to_string()),
                ]),
            };
            (name, ns)
        })
        .collect();
    let pods = (0..size.pods).map(|i| pod(i, size)).collect();
    let per_ns = size.policies.div_ceil(size.namespaces.max(1));
    let policies = (0..size.policies)
        .map(|i| {
            policy(
                i % size.namespaces,
                i / size.namespaces % per_ns.max(1),
                size,
            )
        })
        .collect();
    Model {
        namespaces,
        pods,
        policies,
        ..Model::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_cluster_has_the_requested_shape() {
        let size = ClusterSize {
            namespaces: 10,
            pods: 1_000,
            policies: 100,
            local_pods: 11,
            apps_per_namespace: 5,
        };
        let m = cluster(&size);
        assert_eq!(m.pods.len(), 1_000);
        assert_eq!(m.policies.len(), 100);
        assert_eq!(m.namespaces.len(), 10);
        let local = m
            .pods
            .iter()
            .filter(|p| p.node.as_deref() == Some(LOCAL_NODE))
            .count();
        assert_eq!(local, 11);
        let mut ips: Vec<_> = m.pods.iter().flat_map(|p| p.ips.clone()).collect();
        ips.sort();
        ips.dedup();
        assert_eq!(ips.len(), 2_000, "addresses are unique");
        let mut names: Vec<_> = m
            .policies
            .iter()
            .map(|p| (p.namespace.clone(), p.name.clone()))
            .collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 100, "policy names are unique");
    }
}
