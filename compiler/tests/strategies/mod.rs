//! Generators shared by the property tests: small random topologies
//! (namespaces, dual-stack pods with named ports), policies (selectors with
//! expressions, overlapping ipBlocks with excepts, port ranges, named
//! ports, policyTypes variants, enforced and audit modes, policies not
//! understood) and flows.
#![allow(dead_code)]

mod cluster;
#[allow(unused_imports)]
pub use cluster::*;

use ipnetwork::IpNetwork;
use palisade_common::{PROTO_ICMP, PROTO_ICMPV6, PROTO_SCTP, PROTO_TCP, PROTO_UDP};
use palisade_policy::{
    Enforcement, FieldIssue, Flow, Labels, Model, NamedPort, Namespace, Peer, Pod, Policy,
    PortMatch, PortSpec, Protocol, Requirement, Rule, Selector, SelectorOp, NAMESPACE_NAME_LABEL,
};
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const NODE: &str = "node-a";
pub const NAMESPACES: [&str; 3] = ["ns0", "ns1", "ns2"];

pub fn cases(default: u32) -> u32 {
    std::env::var("PALISADE_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------- topology ----------

pub fn v4(i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, i))
}

pub fn v6(i: u8) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, u16::from(i)))
}

pub fn labels_strategy(
    keys: &'static [&'static str],
    values: &'static [&'static str],
) -> impl Strategy<Value = Labels> {
    proptest::collection::btree_map(
        proptest::sample::select(keys).prop_map(str::to_string),
        proptest::sample::select(values).prop_map(str::to_string),
        0..=2,
    )
    .prop_map(Labels::from)
}

pub fn protocol() -> impl Strategy<Value = Protocol> {
    prop_oneof![4 => Just(Protocol::Tcp), 2 => Just(Protocol::Udp), 1 => Just(Protocol::Sctp)]
}

pub const PORT_NAMES: [&str; 3] = ["http", "dns", "metrics"];
pub const PORTS: [u16; 6] = [53, 80, 81, 443, 8080, 9090];

pub fn named_port() -> impl Strategy<Value = NamedPort> {
    (
        proptest::sample::select(&PORT_NAMES[..]),
        proptest::sample::select(&PORTS[..]),
        protocol(),
    )
        .prop_map(|(name, port, protocol)| NamedPort {
            name: name.into(),
            port,
            protocol,
        })
}

/// Pods `p0..` with distinct addresses: `10.0.0.(i+1)` and/or `fd00::(i+1)`.
pub fn pods_strategy() -> impl Strategy<Value = Vec<Pod>> {
    proptest::collection::vec(
        (
            0..NAMESPACES.len(),
            labels_strategy(&["app", "tier"], &["a", "b"]),
            0..3u8, // 0: dual-stack, 1: v4 only, 2: v6 only
            proptest::collection::vec(named_port(), 0..=2),
        ),
        1..=5,
    )
    .prop_map(|specs| {
        specs
            .into_iter()
            .enumerate()
            .map(|(i, (ns, labels, fam, ports))| {
                let n = i as u8 + 1;
                let ips = match fam {
                    0 => vec![v4(n), v6(n)],
                    1 => vec![v4(n)],
                    _ => vec![v6(n)],
                };
                Pod {
                    namespace: NAMESPACES[ns].into(),
                    name: format!("p{i}"),
                    labels,
                    node: Some(NODE.into()),
                    ips,
                    ports,
                    pending: false,
                }
            })
            .collect()
    })
}

pub fn namespaces_strategy() -> impl Strategy<Value = Vec<Namespace>> {
    proptest::collection::vec(labels_strategy(&["team"], &["a", "b"]), NAMESPACES.len()).prop_map(
        |ls| {
            ls.into_iter()
                .zip(NAMESPACES)
                .map(|(mut labels, name)| {
                    labels.insert(NAMESPACE_NAME_LABEL.into(), name.into());
                    Namespace {
                        name: name.into(),
                        labels,
                    }
                })
                .collect()
        },
    )
}

// ---------- policies ----------

pub fn requirement(keys: &'static [&'static str]) -> impl Strategy<Value = Requirement> {
    let op = prop_oneof![
        Just(SelectorOp::In),
        Just(SelectorOp::NotIn),
        Just(SelectorOp::Exists),
        Just(SelectorOp::DoesNotExist)
    ];
    (
        proptest::sample::select(keys),
        op,
        proptest::collection::vec(proptest::sample::select(&["a", "b", "c"][..]), 1..=2),
    )
        .prop_map(|(key, op, values)| {
            let values = match op {
                SelectorOp::In | SelectorOp::NotIn => {
                    values.into_iter().map(str::to_string).collect()
                }
                _ => vec![],
            };
            Requirement {
                key: key.into(),
                op,
                values,
            }
        })
}

pub fn selector(keys: &'static [&'static str]) -> impl Strategy<Value = Selector> {
    (
        proptest::collection::btree_map(
            proptest::sample::select(keys).prop_map(str::to_string),
            proptest::sample::select(&["a", "b"][..]).prop_map(str::to_string),
            0..=1,
        ),
        proptest::collection::vec(requirement(keys), 0..=1),
    )
        .prop_map(|(match_labels, match_expressions)| Selector {
            match_labels: match_labels.into(),
            match_expressions,
        })
}

pub fn ns_selector() -> impl Strategy<Value = Selector> {
    prop_oneof![
        2 => selector(&["team"]),
        1 => proptest::sample::select(&NAMESPACES[..]).prop_map(|n| Selector {
            match_labels: [(NAMESPACE_NAME_LABEL.to_string(), n.to_string())].into(),
            match_expressions: vec![],
        }),
    ]
}

/// A prefix inside `base` (or `base` itself), for `except`.
pub fn sub_prefix(base: IpNetwork, pick: u128, extra: u8) -> IpNetwork {
    let max = if base.is_ipv4() { 32 } else { 128 };
    let len = (base.prefix() + extra).min(max);
    let addr = match base {
        IpNetwork::V4(n) => {
            let host_bits = 32 - u32::from(n.prefix());
            let off = if host_bits == 0 {
                0
            } else {
                (pick as u32) & (u32::MAX >> (32 - host_bits))
            };
            IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) | off))
        }
        IpNetwork::V6(n) => {
            let host_bits = 128 - u32::from(n.prefix());
            let off = if host_bits == 0 {
                0
            } else {
                pick & (u128::MAX >> (128 - host_bits))
            };
            IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) | off))
        }
    };
    let net = IpNetwork::new(addr, len).unwrap();
    IpNetwork::new(net.network(), len).unwrap()
}

/// CIDRs around the pod addresses and some outside addresses, of both
/// families, from /0 to host routes.
pub fn cidr() -> impl Strategy<Value = IpNetwork> {
    let v4s = prop_oneof![
        (0..12u8, 24..=32u8).prop_map(|(i, l)| IpNetwork::new(v4(i), l).unwrap()),
        Just("10.0.0.0/8".parse().unwrap()),
        Just("0.0.0.0/0".parse().unwrap()),
        Just("192.168.0.0/16".parse().unwrap()),
    ];
    let v6s = prop_oneof![
        (0..12u8, 120..=128u8).prop_map(|(i, l)| IpNetwork::new(v6(i), l).unwrap()),
        Just("fd00::/64".parse().unwrap()),
        Just("::/0".parse().unwrap()),
        Just("2001:db8::/32".parse().unwrap()),
    ];
    prop_oneof![v4s, v6s].prop_map(|n| IpNetwork::new(n.network(), n.prefix()).unwrap())
}

pub fn peer() -> impl Strategy<Value = Peer> {
    let pods = (
        proptest::option::of(ns_selector()),
        proptest::option::of(selector(&["app", "tier"])),
    )
        .prop_map(|(namespaces, pods)| Peer::Pods { namespaces, pods });
    let block = (
        cidr(),
        proptest::collection::vec((any::<u128>(), 0..=6u8), 0..=2),
    )
        .prop_map(|(cidr, ex)| {
            let except = ex
                .into_iter()
                .map(|(pick, extra)| sub_prefix(cidr, pick, extra))
                .collect();
            Peer::IpBlock { cidr, except }
        });
    prop_oneof![pods, block]
}

pub fn port_spec() -> impl Strategy<Value = PortSpec> {
    let port = prop_oneof![
        1 => Just(PortMatch::Any),
        4 => (proptest::sample::select(&PORTS[..]), prop_oneof![Just(0u16), 1..4u16, Just(1000u16)])
            .prop_map(|(port, span)| PortMatch::Range { port, end: port.saturating_add(span) }),
        2 => proptest::sample::select(&PORT_NAMES[..]).prop_map(|n| PortMatch::Named(n.into())),
    ];
    (protocol(), port).prop_map(|(protocol, port)| PortSpec { protocol, port })
}

pub fn rule() -> impl Strategy<Value = Rule> {
    (
        proptest::option::weighted(0.75, proptest::collection::vec(peer(), 1..=3)),
        proptest::option::weighted(0.7, proptest::collection::vec(port_spec(), 1..=3)),
    )
        .prop_map(|(peers, ports)| Rule { peers, ports })
}

/// Mostly enforced, so that audit policies meet enforced ones on one pod
/// as well as isolating pods alone.
pub fn enforcement() -> impl Strategy<Value = Enforcement> {
    prop_oneof![2 => Just(Enforcement::Enforce), 1 => Just(Enforcement::Audit)]
}

pub fn policy(index: usize) -> impl Strategy<Value = Policy> {
    (
        0..NAMESPACES.len(),
        enforcement(),
        prop_oneof![1 => Just(Selector::default()), 2 => selector(&["app", "tier"])],
        any::<bool>(),
        any::<bool>(),
        proptest::collection::vec(rule(), 0..=3),
        proptest::collection::vec(rule(), 0..=3),
        proptest::bool::weighted(0.15),
    )
        .prop_map(
            move |(
                ns,
                enforcement,
                pod_selector,
                isolates_ingress,
                isolates_egress,
                mut ingress,
                mut egress,
                unreadable,
            )| {
                // As the model builder does: rules of a direction the policy
                // does not isolate are dropped.
                if !isolates_ingress {
                    ingress.clear();
                }
                if !isolates_egress {
                    egress.clear();
                }
                Policy {
                    namespace: NAMESPACES[ns].into(),
                    name: format!("pol{index}"),
                    enforcement,
                    pod_selector,
                    isolates_ingress,
                    isolates_egress,
                    ingress,
                    egress,
                    // Not understood: isolating with nothing allowed. Its
                    // rules are left in place (the builder clears them) to
                    // prove that neither the oracle nor the compiler reads
                    // them.
                    unreadable: unreadable.then(|| FieldIssue {
                        field: "spec.ingress[0].ports[0].port".into(),
                        message: "not understood".into(),
                    }),
                    warnings: vec![],
                }
            },
        )
}

pub fn model_strategy(max_policies: usize) -> impl Strategy<Value = Model> {
    (namespaces_strategy(), pods_strategy(), 1..=max_policies)
        .prop_flat_map(|(namespaces, pods, n)| {
            let policies: Vec<_> = (0..n).map(policy).collect();
            (Just(namespaces), Just(pods), policies)
        })
        .prop_map(|(namespaces, pods, policies)| Model {
            namespaces: namespaces
                .into_iter()
                .map(|n| (n.name.clone(), n))
                .collect(),
            pods,
            policies,
            ..Model::default()
        })
}

// ---------- flows ----------

pub const EDGE_PORTS: [u16; 16] = [
    0, 1, 52, 53, 54, 79, 80, 81, 82, 443, 1080, 1083, 8080, 9090, 10080, 65535,
];

/// Raw flow material; addresses are resolved against the model (pod
/// addresses or outside ones) when checking.
#[derive(Clone, Debug)]
pub struct FlowSpec {
    pub v6: bool,
    pub src: usize,
    pub dst: usize,
    pub proto: u8,
    pub dport: u16,
    /// Use the destination pod's container port number `i` (and its
    /// protocol) instead, when it has one: named ports then resolve.
    pub named: Option<usize>,
}

pub fn flow_spec() -> impl Strategy<Value = FlowSpec> {
    let proto = prop_oneof![
        4 => Just(PROTO_TCP),
        2 => Just(PROTO_UDP),
        1 => Just(PROTO_SCTP),
        1 => Just(PROTO_ICMP),
    ];
    let dport = prop_oneof![3 => proptest::sample::select(&EDGE_PORTS[..]), 1 => any::<u16>()];
    let named = proptest::option::weighted(0.3, 0..2usize);
    (any::<bool>(), 0..9usize, 0..9usize, proto, dport, named).prop_map(
        |(v6, src, dst, proto, dport, named)| FlowSpec {
            v6,
            src,
            dst,
            proto,
            dport,
            named,
        },
    )
}

/// Addresses a flow can use: the pods' addresses of the family, then
/// outside addresses (inside and outside the generated CIDRs).
pub fn addresses(model: &Model, v6_family: bool) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = model
        .pods
        .iter()
        .flat_map(|p| p.ips.iter().copied())
        .filter(|ip| ip.is_ipv6() == v6_family)
        .collect();
    if v6_family {
        out.extend([
            v6(9),
            v6(200),
            "2001:db8::5".parse().unwrap(),
            "2a00::1".parse().unwrap(),
        ]);
    } else {
        out.extend([
            v4(9),
            v4(200),
            "192.168.1.5".parse().unwrap(),
            "8.8.8.8".parse().unwrap(),
        ]);
    }
    out
}

pub fn to_flow(model: &Model, f: &FlowSpec) -> Flow {
    let addrs = addresses(model, f.v6);
    let (src, dst) = (addrs[f.src % addrs.len()], addrs[f.dst % addrs.len()]);
    let container_port = f.named.and_then(|i| {
        let pod = model.pods.iter().find(|p| p.ips.contains(&dst))?;
        pod.ports.get(i % pod.ports.len().max(1))
    });
    if let Some(p) = container_port {
        return Flow {
            src,
            dst,
            proto: p.protocol.number(),
            dport: p.port,
        };
    }
    let proto = if f.v6 && f.proto == PROTO_ICMP {
        PROTO_ICMPV6
    } else {
        f.proto
    };
    let dport = if matches!(proto, PROTO_TCP | PROTO_UDP | PROTO_SCTP) {
        f.dport
    } else {
        0
    };
    Flow {
        src,
        dst,
        proto,
        dport,
    }
}
