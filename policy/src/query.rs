//! Lookups on the model shared by the oracle, the compiler and the CLI.

use crate::model::{
    Backend, Direction, Enforcement, Labels, Model, Namespace, Peer, Pod, Policy, Protocol, Rule,
    Service, ServicePort, TargetPort,
};
use std::borrow::Cow;
use std::net::IpAddr;

/// An address family, for picking one of a dual-stack pod's addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Family {
    #[default]
    V4,
    V6,
}

impl Family {
    pub fn of(ip: &IpAddr) -> Family {
        if ip.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    /// The wildcard address of the family (`0.0.0.0` or `::`), what a
    /// socket of the family binds to take any address and a free port.
    pub fn unspecified(self) -> IpAddr {
        match self {
            Family::V4 => std::net::Ipv4Addr::UNSPECIFIED.into(),
            Family::V6 => std::net::Ipv6Addr::UNSPECIFIED.into(),
        }
    }

    /// From the number users type: 4 or 6.
    pub fn from_number(n: u8) -> Option<Family> {
        match n {
            4 => Some(Family::V4),
            6 => Some(Family::V6),
            _ => None,
        }
    }
}

impl Pod {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The pod's address of that family, if it has one.
    pub fn ip(&self, family: Family) -> Option<IpAddr> {
        self.ips.iter().copied().find(|ip| Family::of(ip) == family)
    }

    /// Whether the pod declares container port `name` as `port`/`protocol`.
    /// Any declaration matching counts (Kubernetes does not forbid two
    /// containers from reusing a name).
    pub fn has_named_port(&self, name: &str, protocol: Protocol, port: u16) -> bool {
        self.ports
            .iter()
            .any(|p| p.name == name && p.protocol == protocol && p.port == port)
    }
}

impl Service {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Whether the Service's selector picks `pod`: same namespace, every
    /// selector label equal. A Service without selector picks none.
    pub fn selects(&self, pod: &Pod) -> bool {
        self.namespace == pod.namespace
            && self.selector.as_ref().is_some_and(|sel| {
                sel.iter()
                    .all(|(k, v)| pod.labels.get(k).is_some_and(|pv| pv == v))
            })
    }

    /// The port serving `port`/`protocol` on the ClusterIPs.
    pub fn port(&self, port: u16, protocol: Protocol) -> Option<&ServicePort> {
        self.ports
            .iter()
            .find(|p| p.port == port && p.protocol == protocol)
    }

    /// The ClusterIP of that family, if the Service has one.
    pub fn cluster_ip(&self, family: Family) -> Option<IpAddr> {
        self.cluster_ips
            .iter()
            .copied()
            .find(|ip| Family::of(ip) == family)
    }
}

impl ServicePort {
    /// The port this Service port reaches on `pod`: the number, or the
    /// pod's container port of that name and protocol (`None` when the
    /// pod declares none: it is then no backend of this port, as the
    /// EndpointSlice controller decides).
    pub fn target_on(&self, pod: &Pod) -> Option<u16> {
        match &self.target {
            TargetPort::Number(n) => Some(*n),
            TargetPort::Name(name) => pod
                .ports
                .iter()
                .find(|p| p.name == *name && p.protocol == self.protocol)
                .map(|p| p.port),
        }
    }
}

impl Policy {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Whether the policy's effective policyTypes include `dir`.
    pub fn isolates(&self, dir: Direction) -> bool {
        match dir {
            Direction::Ingress => self.isolates_ingress,
            Direction::Egress => self.isolates_egress,
        }
    }

    /// The rules of `dir` that allow traffic: none for a policy Palisade
    /// could not understand (it isolates and allows nothing), so the
    /// oracle and the compiler cannot read it differently.
    pub fn rules(&self, dir: Direction) -> &[Rule] {
        if self.unreadable.is_some() {
            return &[];
        }
        match dir {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    /// The directions the policy isolates, for messages.
    pub fn directions_text(&self) -> &'static str {
        match (self.isolates_ingress, self.isolates_egress) {
            (true, true) => "ingress and egress",
            (true, false) => "ingress",
            (false, true) => "egress",
            (false, false) => "no direction",
        }
    }

    /// What a policy not understood does instead of its rules: `its pods
    /// are isolated for ingress with nothing allowed`.
    pub fn unreadable_consequence(&self) -> String {
        let audit = if self.is_audit() {
            " (audit mode: reported as would deny, not dropped)"
        } else {
            ""
        };
        format!(
            "its pods are isolated for {} with nothing allowed{audit}",
            self.directions_text()
        )
    }

    /// For a policy not understood: what was wrong and what it does
    /// instead (`spec.x: ...; its pods are isolated for ingress with
    /// nothing allowed`).
    pub fn unreadable_note(&self) -> Option<String> {
        let issue = self.unreadable.as_ref()?;
        Some(format!("{issue}; {}", self.unreadable_consequence()))
    }

    pub fn is_audit(&self) -> bool {
        self.enforcement == Enforcement::Audit
    }

    /// Whether the policy applies to `pod`: same namespace, podSelector
    /// matches.
    pub fn selects(&self, pod: &Pod) -> bool {
        self.namespace == pod.namespace && self.pod_selector.matches(&pod.labels)
    }
}

impl Model {
    pub fn namespace(&self, name: &str) -> Option<&Namespace> {
        self.namespaces.get(name)
    }

    /// Labels of namespace `name`. A namespace missing from the model still
    /// has the label the API server sets on every namespace.
    pub fn namespace_labels(&self, name: &str) -> Cow<'_, Labels> {
        match self.namespaces.get(name) {
            Some(ns) => Cow::Borrowed(&ns.labels),
            None => Cow::Owned(Namespace::undeclared(name).labels),
        }
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<&Pod> {
        self.pods
            .iter()
            .find(|p| p.namespace == namespace && p.name == name)
    }

    pub fn service(&self, namespace: &str, name: &str) -> Option<&Service> {
        self.services
            .iter()
            .find(|s| s.namespace == namespace && s.name == name)
    }

    /// The Service whose ClusterIP is `ip`.
    pub fn service_by_ip(&self, ip: IpAddr) -> Option<&Service> {
        self.services.iter().find(|s| s.cluster_ips.contains(&ip))
    }

    /// The backends of one port of `service`: the pods it selects that
    /// serve (with an address and not Pending, so Ready in principle),
    /// each with the port the traffic reaches on it, sorted by
    /// pod. What kube-proxy DNATs a ClusterIP connection to; the traffic
    /// is then subject to policy as client -> backend.
    pub fn backends<'a>(&'a self, service: &Service, port: &ServicePort) -> Vec<Backend<'a>> {
        let mut out: Vec<Backend<'a>> = self
            .pods
            .iter()
            .filter(|pod| !pod.pending && service.selects(pod))
            .filter_map(|pod| port.target_on(pod).map(|port| Backend { pod, port }))
            .collect();
        out.sort_by(|a, b| (&a.pod.namespace, &a.pod.name).cmp(&(&b.pod.namespace, &b.pod.name)));
        out
    }

    /// The pod owning `ip`; `None` for addresses outside the cluster's pods.
    pub fn pod_by_ip(&self, ip: IpAddr) -> Option<&Pod> {
        self.pods.iter().find(|p| p.ips.contains(&ip))
    }

    /// Every policy that selects `pod`, whatever its policyTypes.
    pub fn policies_selecting<'a>(&'a self, pod: &'a Pod) -> impl Iterator<Item = &'a Policy> + 'a {
        self.policies.iter().filter(move |p| p.selects(pod))
    }

    /// Puts every policy in audit mode: what the agent's `--audit` does
    /// (nothing is dropped for policy reasons; denials become "would
    /// deny"). Call it on each model before compiling it.
    pub fn audit_all(&mut self) {
        for p in &mut self.policies {
            p.enforcement = Enforcement::Audit;
        }
    }

    /// The policies whose rules decide `pod`'s `dir` (see [`deciding`]).
    pub fn deciding_policies<'a>(&'a self, pod: &'a Pod, dir: Direction) -> Option<Deciding<'a>> {
        deciding(self.policies_selecting(pod), dir)
    }

    /// The policies isolating `pod` in `dir`, enforced or audit; empty
    /// when the pod is not isolated in that direction.
    pub fn isolating_policies<'a>(
        &'a self,
        pod: &'a Pod,
        dir: Direction,
    ) -> impl Iterator<Item = &'a Policy> + 'a {
        self.policies_selecting(pod)
            .filter(move |p| p.isolates(dir))
    }

    /// Whether a pod peer (`podSelector` and/or `namespaceSelector`) of a
    /// policy in `policy_namespace` selects `pod`. IP blocks are matched
    /// on addresses, never here: this returns false for them.
    pub fn peer_selects_pod(&self, peer: &Peer, policy_namespace: &str, pod: &Pod) -> bool {
        match peer {
            Peer::IpBlock { .. } => false,
            Peer::Pods { namespaces, pods } => {
                let namespace_ok = match namespaces {
                    // podSelector alone: the policy's own namespace.
                    None => pod.namespace == policy_namespace,
                    Some(sel) => sel.matches(&self.namespace_labels(&pod.namespace)),
                };
                let pod_ok = pods.as_ref().is_none_or(|sel| sel.matches(&pod.labels));
                namespace_ok && pod_ok
            }
        }
    }
}

impl Peer {
    /// Whether an ipBlock peer covers `addr` (inside `cidr`, outside every
    /// `except`). Pod peers never match by address alone.
    pub fn block_contains(&self, addr: IpAddr) -> bool {
        match self {
            Peer::IpBlock { cidr, except } => {
                cidr.contains(addr) && !except.iter().any(|e| e.contains(addr))
            }
            Peer::Pods { .. } => false,
        }
    }
}

/// The policies whose rules decide one pod direction, and whether that
/// direction is audit-only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deciding<'a> {
    /// Sorted by `namespace/name` when the input was.
    pub policies: Vec<&'a Policy>,
    /// Only audit policies isolate the direction: what no rule allows is
    /// "would deny", not denied.
    pub audit: bool,
}

/// Of the policies selecting one pod (`selecting`, in any order that the
/// result keeps), those that decide direction `dir`:
/// - the enforced ones isolating `dir`, when there is one: audit policies
///   could only widen what is allowed, and nothing they allow is enforced,
///   so they are left out;
/// - otherwise the audit ones isolating `dir` (`audit: true`);
/// - `None` when no policy isolates `dir`.
///
/// The oracle and the compiler both go through this, so the rule exists
/// once.
pub fn deciding<'a>(
    selecting: impl IntoIterator<Item = &'a Policy>,
    dir: Direction,
) -> Option<Deciding<'a>> {
    let (mut enforced, mut audit) = (Vec::new(), Vec::new());
    for p in selecting.into_iter().filter(|p| p.isolates(dir)) {
        if p.is_audit() {
            audit.push(p);
        } else {
            enforced.push(p);
        }
    }
    if !enforced.is_empty() {
        Some(Deciding {
            policies: enforced,
            audit: false,
        })
    } else if !audit.is_empty() {
        Some(Deciding {
            policies: audit,
            audit: true,
        })
    } else {
        None
    }
}

impl crate::cluster::PodSet {
    /// Whether the set holds `pod`: its namespace's labels match
    /// `namespaces` and its own labels match `pods`.
    pub fn selects(&self, model: &Model, pod: &Pod) -> bool {
        self.namespaces
            .matches(&model.namespace_labels(&pod.namespace))
            && self.pods.matches(&pod.labels)
    }
}

impl Model {
    /// The ClusterNetworkPolicies of `tier` whose subject holds `pod`, in
    /// evaluation order.
    pub fn cluster_policies_selecting<'a>(
        &'a self,
        tier: crate::cluster::Tier,
        pod: &'a Pod,
    ) -> impl Iterator<Item = &'a crate::cluster::ClusterPolicy> + 'a {
        self.cluster_policies
            .iter()
            .filter(move |p| p.tier == tier && p.subject.selects(self, pod))
    }
}
