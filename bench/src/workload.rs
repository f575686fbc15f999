//! The benchmark's cluster: a client and a server pod on the lab node, an
//! outsider pod (used to check that an engine enforces), filler pods and
//! namespaces that only exist in the manifests, and policies totalling R
//! ingress rules on the server.
//!
//! Every rule has one peer, and the peers mix same-namespace pod
//! selectors, namespace selectors, namespace-and-pod selectors and ipBlocks
//! with `except`, on TCP and UDP ports. The only rule that allows the client
//! is the last one: a first packet from the client walks every other rule
//! in the designs that evaluate rules in order (iptables).
//!
//! The same description is rendered as Kubernetes manifests (Palisade), as
//! iptables rules with ipsets and as an nftables ruleset, from the peers'
//! resolved addresses, the way those plugins resolve selectors.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// The namespace of the server and of the same-namespace filler pods.
pub const SERVER_NS: &str = "bench";
pub const CLIENT_NS: &str = "bench-client";
/// The node of the lab pods; filler pods are on another node.
pub const NODE: &str = "bench-node";
const OTHER_NODE: &str = "other-node";

pub const SERVER: &str = "bench/server";
pub const CLIENT: &str = "bench-client/client";
pub const OUTSIDER: &str = "bench-client/outsider";

/// The ports the load tool uses: request/response, connect/request/
/// response/close, and one bulk stream. The client's rule allows exactly
/// this range (`port` + `endPort`).
pub const PORT_RR: u16 = 5201;
pub const PORT_CRR: u16 = 5202;
pub const PORT_STREAM: u16 = 5203;

/// Rules per NetworkPolicy: R rules make ceil(R / 10) policies.
const RULES_PER_POLICY: usize = 10;

pub type Labels = Vec<(String, String)>;

#[derive(Clone, Debug)]
pub struct Namespace {
    pub name: String,
    pub labels: Labels,
}

#[derive(Clone, Debug)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    pub node: &'static str,
    pub ip: Ipv4Addr,
}

impl Pod {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    /// Lower case, as iptables and nft spell it.
    pub fn lower(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }

    /// As NetworkPolicy spells it.
    pub fn upper(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
        }
    }
}

/// A port or an inclusive range (`port` + `endPort`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ports {
    pub proto: Proto,
    pub first: u16,
    pub last: u16,
}

impl Ports {
    fn one(proto: Proto, port: u16) -> Ports {
        Ports {
            proto,
            first: port,
            last: port,
        }
    }
}

/// An IPv4 prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Net {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl Net {
    pub fn first(self) -> u32 {
        u32::from(self.addr) & mask(self.len)
    }

    pub fn last(self) -> u32 {
        self.first() | !mask(self.len)
    }
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

#[derive(Clone, Debug)]
pub enum Peer {
    /// `podSelector` alone: pods of the policy's namespace.
    Pods(Labels),
    /// `namespaceSelector` alone.
    Namespaces(Labels),
    /// Both in one peer: pods matching `pods` in namespaces matching `namespaces`.
    NamespacedPods {
        namespaces: Labels,
        pods: Labels,
    },
    IpBlock {
        cidr: Net,
        except: Vec<Net>,
    },
}

#[derive(Clone, Debug)]
pub struct Rule {
    pub peer: Peer,
    pub ports: Vec<Ports>,
}

#[derive(Clone, Debug)]
pub struct Policy {
    pub namespace: String,
    pub name: String,
    /// `podSelector` of the policy (selects the server).
    pub selector: Labels,
    pub rules: Vec<Rule>,
}

/// Whom a rule's peer lets in, once selectors are resolved.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Sources {
    /// Pod addresses (an ipset `hash:ip`).
    Ips(Vec<Ipv4Addr>),
    /// A prefix minus its exceptions (an ipset `hash:net` with `nomatch`).
    Block { cidr: Net, except: Vec<Net> },
}

impl Sources {
    /// The source ranges as inclusive `[first, last]` address intervals,
    /// disjoint and sorted: nftables interval sets need them so.
    pub fn intervals(&self) -> Vec<(u32, u32)> {
        match self {
            Sources::Ips(ips) => ips
                .iter()
                .map(|ip| (u32::from(*ip), u32::from(*ip)))
                .collect(),
            Sources::Block { cidr, except } => {
                let mut out = vec![(cidr.first(), cidr.last())];
                for e in except {
                    out = out
                        .into_iter()
                        .flat_map(|(a, b)| subtract((a, b), (e.first(), e.last())))
                        .collect();
                }
                out
            }
        }
    }
}

fn subtract((a, b): (u32, u32), (x, y): (u32, u32)) -> Vec<(u32, u32)> {
    if y < a || x > b {
        return vec![(a, b)];
    }
    let mut out = Vec::new();
    if x > a {
        out.push((a, x - 1));
    }
    if y < b {
        out.push((y + 1, b));
    }
    out
}

/// Everything the engines are programmed with for one rule count.
#[derive(Clone, Debug)]
pub struct Workload {
    pub rules: usize,
    pub namespaces: Vec<Namespace>,
    pub pods: Vec<Pod>,
    pub policies: Vec<Policy>,
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn matches(selector: &Labels, labels: &Labels) -> bool {
    selector.iter().all(|kv| labels.contains(kv))
}

impl Workload {
    /// The cluster for `rules` rules (0: no policy at all).
    pub fn generate(rules: usize) -> Workload {
        // Enough filler pods and namespaces that peers are many distinct
        // sets, few enough that a big rule count stays a few seconds of
        // programming for every engine.
        let same_ns_pods = (rules / 20).clamp(4, 200);
        let filler_pods = (rules / 10).clamp(8, 1000);
        let filler_ns = (filler_pods / 10).clamp(2, 100);

        let mut namespaces = vec![
            Namespace {
                name: SERVER_NS.into(),
                labels: labels(&[("name", SERVER_NS)]),
            },
            Namespace {
                name: CLIENT_NS.into(),
                labels: labels(&[("name", CLIENT_NS), ("role", "bench-client")]),
            },
        ];
        for k in 0..filler_ns {
            let team = format!("t{}", k % 8);
            namespaces.push(Namespace {
                name: format!("fill-{k}"),
                labels: labels(&[("name", &format!("fill-{k}")), ("team", &team)]),
            });
        }

        let lab_pod = |ns: &str, name: &str, app: &str, last: u8| Pod {
            namespace: ns.into(),
            name: name.into(),
            labels: labels(&[("app", app)]),
            node: NODE,
            ip: Ipv4Addr::new(10, 64, 0, last),
        };
        let mut pods = vec![
            lab_pod(SERVER_NS, "server", "bench-server", 2),
            lab_pod(CLIENT_NS, "client", "bench-client", 3),
            lab_pod(CLIENT_NS, "outsider", "outsider", 4),
        ];
        for k in 0..same_ns_pods {
            pods.push(Pod {
                namespace: SERVER_NS.into(),
                name: format!("w-{k}"),
                labels: labels(&[("app", &format!("w{k}"))]),
                node: OTHER_NODE,
                ip: Ipv4Addr::new(10, 65, (k / 250) as u8, (k % 250 + 2) as u8),
            });
        }
        for k in 0..filler_pods {
            pods.push(Pod {
                namespace: format!("fill-{}", k % filler_ns),
                name: format!("f-{k}"),
                labels: labels(&[
                    ("app", &format!("f{}", k % 50)),
                    ("tier", &format!("t{}", k % 5)),
                ]),
                node: OTHER_NODE,
                ip: Ipv4Addr::new(10, 66, (k / 250) as u8, (k % 250 + 2) as u8),
            });
        }

        let mut all_rules: Vec<Rule> = (0..rules.saturating_sub(1))
            .map(|i| filler_rule(i, same_ns_pods, filler_ns))
            .collect();
        if rules > 0 {
            all_rules.push(Rule {
                peer: Peer::NamespacedPods {
                    namespaces: labels(&[("role", "bench-client")]),
                    pods: labels(&[("app", "bench-client")]),
                },
                ports: vec![Ports {
                    proto: Proto::Tcp,
                    first: PORT_RR,
                    last: PORT_STREAM,
                }],
            });
        }
        let policies = all_rules
            .chunks(RULES_PER_POLICY)
            .enumerate()
            .map(|(k, chunk)| Policy {
                namespace: SERVER_NS.into(),
                name: format!("p-{k}"),
                selector: labels(&[("app", "bench-server")]),
                rules: chunk.to_vec(),
            })
            .collect();
        Workload {
            rules,
            namespaces,
            pods,
            policies,
        }
    }

    /// Pods the lab brings up (with interfaces on the lab node).
    pub fn lab_pods(&self) -> impl Iterator<Item = &Pod> {
        self.pods.iter().filter(|p| p.node == NODE)
    }

    pub fn pod(&self, key: &str) -> Option<&Pod> {
        self.pods.iter().find(|p| p.key() == key)
    }

    /// Local pods some policy selects (isolated for ingress), with the
    /// policies selecting each, in order.
    pub fn isolated(&self) -> Vec<(&Pod, Vec<&Policy>)> {
        self.lab_pods()
            .map(|pod| {
                let pols = self
                    .policies
                    .iter()
                    .filter(|p| p.namespace == pod.namespace && matches(&p.selector, &pod.labels))
                    .collect::<Vec<_>>();
                (pod, pols)
            })
            .filter(|(_, pols)| !pols.is_empty())
            .collect()
    }

    /// Resolves a rule's peer in `policy_ns` the way a plugin resolves
    /// selectors: into the addresses of the pods it selects, or a block.
    pub fn sources(&self, policy_ns: &str, peer: &Peer) -> Sources {
        let ns_labels: BTreeMap<&str, &Labels> = self
            .namespaces
            .iter()
            .map(|n| (n.name.as_str(), &n.labels))
            .collect();
        let ns_matches =
            |ns: &str, sel: &Labels| ns_labels.get(ns).is_some_and(|l| matches(sel, l));
        let pick = |f: &dyn Fn(&Pod) -> bool| {
            let mut ips: Vec<Ipv4Addr> = self.pods.iter().filter(|p| f(p)).map(|p| p.ip).collect();
            ips.sort();
            ips.dedup();
            Sources::Ips(ips)
        };
        match peer {
            Peer::Pods(sel) => pick(&|p| p.namespace == policy_ns && matches(sel, &p.labels)),
            Peer::Namespaces(sel) => pick(&|p| ns_matches(&p.namespace, sel)),
            Peer::NamespacedPods { namespaces, pods } => {
                pick(&|p| ns_matches(&p.namespace, namespaces) && matches(pods, &p.labels))
            }
            Peer::IpBlock { cidr, except } => Sources::Block {
                cidr: *cidr,
                except: except.clone(),
            },
        }
    }
}

/// Filler rule `i`: kinds in turn, ports that never cover the bench ports,
/// one disjoint /24 per ipBlock (within 172.16.0.0/12) so that no two
/// blocks overlap.
fn filler_rule(i: usize, same_ns_pods: usize, filler_ns: usize) -> Rule {
    let port = |base: usize, span: usize| (base + i % span) as u16;
    match i % 4 {
        0 => Rule {
            peer: Peer::Pods(labels(&[("app", &format!("w{}", i % same_ns_pods))])),
            ports: vec![Ports::one(Proto::Tcp, port(1000, 2000))],
        },
        1 => Rule {
            peer: Peer::Namespaces(labels(&[("name", &format!("fill-{}", i % filler_ns))])),
            ports: vec![
                Ports::one(Proto::Tcp, port(3000, 500)),
                Ports::one(Proto::Udp, port(3000, 500)),
            ],
        },
        2 => Rule {
            peer: Peer::NamespacedPods {
                namespaces: labels(&[("team", &format!("t{}", i % 8))]),
                pods: labels(&[("tier", &format!("t{}", i % 5))]),
            },
            ports: vec![Ports {
                proto: Proto::Tcp,
                first: port(4000, 100),
                last: port(4000, 100) + 9,
            }],
        },
        _ => {
            let j = i / 4;
            let cidr = Net {
                addr: Ipv4Addr::new(172, 16 + (j / 256 % 16) as u8, (j % 256) as u8, 0),
                len: 24,
            };
            let except = if j.is_multiple_of(2) {
                vec![Net {
                    addr: Ipv4Addr::new(172, 16 + (j / 256 % 16) as u8, (j % 256) as u8, 128),
                    len: 26,
                }]
            } else {
                Vec::new()
            };
            Rule {
                peer: Peer::IpBlock { cidr, except },
                ports: vec![Ports::one(Proto::Tcp, port(8000, 1000))],
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_counts_and_the_client_rule_last() {
        for r in [0, 1, 10, 25, 1000] {
            let w = Workload::generate(r);
            let total: usize = w.policies.iter().map(|p| p.rules.len()).sum();
            assert_eq!(total, r);
            if r > 0 {
                let last = w.policies.last().unwrap().rules.last().unwrap();
                let client = w.pod(CLIENT).unwrap().ip;
                assert_eq!(w.sources(SERVER_NS, &last.peer), Sources::Ips(vec![client]));
            }
        }
    }

    #[test]
    fn only_the_last_rule_admits_the_client_or_the_outsider() {
        let w = Workload::generate(1000);
        let client = u32::from(w.pod(CLIENT).unwrap().ip);
        let outsider = u32::from(w.pod(OUTSIDER).unwrap().ip);
        let rules: Vec<&Rule> = w.policies.iter().flat_map(|p| &p.rules).collect();
        for (k, r) in rules.iter().enumerate() {
            let covers = |a: u32| {
                w.sources(SERVER_NS, &r.peer)
                    .intervals()
                    .iter()
                    .any(|(x, y)| (*x..=*y).contains(&a))
            };
            assert_eq!(covers(client), k == rules.len() - 1, "rule {k}");
            assert!(!covers(outsider), "rule {k}");
        }
    }

    #[test]
    fn blocks_minus_exceptions_are_disjoint_intervals() {
        let s = Sources::Block {
            cidr: Net {
                addr: Ipv4Addr::new(172, 16, 0, 0),
                len: 24,
            },
            except: vec![Net {
                addr: Ipv4Addr::new(172, 16, 0, 128),
                len: 26,
            }],
        };
        let base = u32::from(Ipv4Addr::new(172, 16, 0, 0));
        assert_eq!(
            s.intervals(),
            vec![(base, base + 127), (base + 192, base + 255)]
        );
    }
}
