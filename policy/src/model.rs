//! The validated policy model: what the oracle and the compiler read.
//!
//! Sources (manifest directories, the Kubernetes API) produce k8s-openapi
//! objects; `palisade_policy::build` validates them into these types. Everything here
//! is already checked: CIDRs parsed, ports in range, protocols known. An
//! object that failed validation is absent and reported in `Model::errors`,
//! except a NetworkPolicy: one that cannot be understood is kept as
//! [`Policy::unreadable`] (isolation with nothing allowed) and reported in
//! `Model::warnings`, since dropping it would open what it closes.

use crate::cluster::{Action, ClusterPolicy, ClusterRuleRef, Node};
use ipnetwork::IpNetwork;
use std::collections::BTreeMap;
use std::net::IpAddr;

pub use crate::labels::Labels;

/// L4 protocols a NetworkPolicy port can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// IANA protocol number (what the packet carries).
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => palisade_common::PROTO_TCP,
            Protocol::Udp => palisade_common::PROTO_UDP,
            Protocol::Sctp => palisade_common::PROTO_SCTP,
        }
    }

    pub fn from_number(n: u8) -> Option<Protocol> {
        match n {
            palisade_common::PROTO_TCP => Some(Protocol::Tcp),
            palisade_common::PROTO_UDP => Some(Protocol::Udp),
            palisade_common::PROTO_SCTP => Some(Protocol::Sctp),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SelectorOp {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub op: SelectorOp,
    pub values: Vec<String>,
}

/// A label selector; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    pub match_labels: Labels,
    pub match_expressions: Vec<Requirement>,
}

/// A container port a pod declares (for named ports).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedPort {
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
}

/// A namespace: its name and labels (always including
/// `kubernetes.io/metadata.name`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    pub name: String,
    pub labels: Labels,
}

/// A pod that takes part in traffic: with at least one IP, in any phase but
/// Succeeded and Failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    pub node: Option<String>,
    /// Pod IPs (one per family at most, as Kubernetes assigns them).
    pub ips: Vec<IpAddr>,
    pub ports: Vec<NamedPort>,
    /// Phase Pending (init containers running): policy applies to it and
    /// it is a peer like any pod, but it is no Service backend yet (it is
    /// not Ready, so no EndpointSlice lists it).
    pub pending: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    /// `podSelector` and/or `namespaceSelector`. `namespaces: None` means
    /// the policy's own namespace; `pods: None` means every pod.
    Pods {
        namespaces: Option<Selector>,
        pods: Option<Selector>,
    },
    IpBlock {
        cidr: IpNetwork,
        except: Vec<IpNetwork>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortMatch {
    /// Every port of the protocol.
    Any,
    /// `port` ..= `end` (end == port without `endPort`).
    Range { port: u16, end: u16 },
    /// A named container port.
    Named(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSpec {
    pub protocol: Protocol,
    pub port: PortMatch,
}

/// One ingress or egress rule. `peers: None` (from/to empty or absent)
/// matches every peer; `ports: None` matches every protocol and port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub peers: Option<Vec<Peer>>,
    pub ports: Option<Vec<PortSpec>>,
}

/// How a policy's isolation is applied, from the annotation
/// `palisade.dev/enforcement` (absent: enforced).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Enforcement {
    /// Packets the policy's isolation denies are dropped.
    #[default]
    Enforce,
    /// Packets the policy's isolation would deny pass, reported and
    /// counted as "would deny". Ignored for a direction that an enforced
    /// policy isolates.
    Audit,
}

impl Enforcement {
    /// The annotation value naming this mode.
    pub fn name(self) -> &'static str {
        match self {
            Enforcement::Enforce => "enforce",
            Enforcement::Audit => "audit",
        }
    }
}

/// A field of a policy that Palisade could not take as written, and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FieldIssue {
    /// The field's path (`spec.ingress[0].ports[0].port`).
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for FieldIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub namespace: String,
    pub name: String,
    /// Enforced or audit-only (the annotation, or forced to audit for
    /// every policy by [`Model::audit_all`]).
    pub enforcement: Enforcement,
    pub pod_selector: Selector,
    /// Effective policyTypes (defaulting already applied).
    pub isolates_ingress: bool,
    pub isolates_egress: bool,
    pub ingress: Vec<Rule>,
    pub egress: Vec<Rule>,
    /// Set when Palisade cannot understand the policy (a field that fails
    /// validation or does not have the shape of its type). What the API
    /// server accepted is enforced, and deny is the only safe reading: the
    /// policy isolates its pods in its directions and allows nothing
    /// ([`Policy::rules`] is empty whatever `ingress` and `egress` hold).
    /// Its directions and `pod_selector` are what could be read: both
    /// directions, and every pod of its namespace, when they could not.
    pub unreadable: Option<FieldIssue>,
    /// Problems read past (an unknown `palisade.dev/enforcement` value,
    /// taken as `enforce`): the policy is used, and they are reported.
    pub warnings: Vec<FieldIssue>,
}

/// Where a Service port sends traffic on its backends.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TargetPort {
    Number(u16),
    /// A container port name, resolved on each backend pod (pods lacking
    /// it are no backends of that Service port).
    Name(String),
}

/// One port of a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// Required by Kubernetes only when a Service has several ports.
    pub name: Option<String>,
    pub port: u16,
    pub protocol: Protocol,
    /// `targetPort` (the port itself when left out).
    pub target: TargetPort,
}

/// A Service: the ClusterIPs its clients dial and the pods behind them.
/// NetworkPolicy never names a Service; the datapath needs its ClusterIPs
/// to decide a client's egress after kube-proxy's DNAT, by backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    /// `spec.clusterIPs` (else `spec.clusterIP`); empty for headless
    /// (`None`) and ExternalName Services. At most one per family.
    pub cluster_ips: Vec<IpAddr>,
    pub ports: Vec<ServicePort>,
    /// `spec.selector`; `None` when absent or empty: such a Service's
    /// endpoints are managed by someone else and no backends are computed.
    pub selector: Option<Labels>,
}

/// One backend of a Service port: a selected pod and the port the
/// Service port's traffic reaches on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backend<'a> {
    pub pod: &'a Pod,
    pub port: u16,
}

/// An object that was skipped, with the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputError {
    /// File the object came from, when it came from a file.
    pub source: Option<String>,
    /// `Kind namespace/name`, or the document index when unparsable.
    pub object: String,
    /// The offending field, as a JSON-ish path (`spec.ingress[0].from[1].ipBlock.cidr`).
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(src) = &self.source {
            write!(f, "{src}: ")?;
        }
        write!(f, "{}: {}: {}", self.object, self.field, self.message)
    }
}

/// The whole validated model. Pods not taking part in traffic are absent.
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub namespaces: BTreeMap<String, Namespace>,
    pub pods: Vec<Pod>,
    pub policies: Vec<Policy>,
    /// ClusterNetworkPolicies of both tiers, in evaluation order
    /// ([`ClusterPolicy::order_key`]).
    pub cluster_policies: Vec<ClusterPolicy>,
    /// Nodes, for ClusterNetworkPolicy `nodes` peers (sorted by name).
    pub nodes: Vec<Node>,
    /// Sorted by namespace and name.
    pub services: Vec<Service>,
    /// Objects skipped, with the reason.
    pub errors: Vec<InputError>,
    /// Problems in objects the model still holds: NetworkPolicies not
    /// understood (isolating with nothing allowed) and values read past
    /// (an unknown enforcement value, enforced). Each message says what
    /// was made of the object.
    pub warnings: Vec<InputError>,
}

/// Direction of a check, as seen from the pod whose policy is consulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    /// `ingress` or `egress`, as the tools print it.
    pub fn name(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// A packet's identity for a verdict: addresses, L4 protocol number and
/// destination port (0 for protocols without ports).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Flow {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub dport: u16,
}

/// Which rule allowed a flow: policy `namespace/name`, direction, rule index.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct RuleRef {
    pub policy: String,
    pub direction: Direction,
    pub rule: usize,
}

/// The verdict of one direction's check.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum DirVerdict {
    /// The pod is not isolated in this direction (or the address is not a
    /// local pod's: nothing to check).
    NotIsolated,
    /// Allowed by these rules (all of them, sorted).
    Allowed(Vec<RuleRef>),
    /// Denied: isolated by these enforced policies (`namespace/name`,
    /// sorted) and no rule allows it.
    Denied(Vec<String>),
    /// Passes, but only because the isolation is audit-only: isolated by
    /// these audit policies (`namespace/name`, sorted) and no rule allows
    /// it, so it is reported as "would deny".
    WouldDeny(Vec<String>),
    /// Decided by a ClusterNetworkPolicy rule: its Accept allows, its
    /// Deny denies.
    Cluster(ClusterRuleRef),
}

impl DirVerdict {
    /// Whether the packet passes this check (a would-deny passes).
    pub fn allows(&self) -> bool {
        match self {
            DirVerdict::Denied(_) => false,
            DirVerdict::Cluster(r) => r.action == Action::Accept,
            _ => true,
        }
    }

    pub fn would_deny(&self) -> bool {
        matches!(self, DirVerdict::WouldDeny(_))
    }
}

/// A full verdict: the source pod's egress and the destination pod's ingress.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Verdict {
    pub egress: DirVerdict,
    pub ingress: DirVerdict,
}

impl Verdict {
    /// Whether the packet passes both checks.
    pub fn allowed(&self) -> bool {
        self.egress.allows() && self.ingress.allows()
    }

    /// Whether the packet passes only because audit-mode isolation does
    /// not drop: it passes, and one side would deny it. (A packet one side
    /// denies is denied, whatever the other side would have done.)
    pub fn would_deny(&self) -> bool {
        self.allowed() && (self.egress.would_deny() || self.ingress.would_deny())
    }
}
