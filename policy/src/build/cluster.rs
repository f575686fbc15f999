//! ClusterNetworkPolicy objects: validation into [`ClusterPolicy`], and
//! the fail-closed readings of what cannot be understood.
//!
//! Without a readable name, tier, priority or subject nothing says where
//! or to whom the policy applies: such an object is an error (skipped).
//! Everything below a rule is read fail closed instead, so that a policy
//! the API server accepted never loses what it closes:
//!
//! - a peer or protocol entry that cannot be read (no field this version
//!   knows, several fields, a value that fails validation) matches
//!   nothing in an Accept rule (dropped), and makes a Deny or Pass rule
//!   match every peer (`ClusterPeer::All`) or every port (`ports: None`);
//! - a Pass rule read that way becomes a Deny rule: a Pass matching more
//!   than written would skip the rest of its tier for traffic the admin
//!   never passed (an Admin Deny below it, or the Baseline's), which
//!   opens; the upstream API asks for "Deny all" here;
//! - a rule that cannot be read as a whole (an unknown action, an empty
//!   `from`/`to` or `protocols`, named ports with non-pod peers, a rule
//!   that does not deserialize) matches nothing when it is an Accept rule
//!   and denies every peer and port otherwise (an unknown action too);
//! - limits on counts and on the rule name (25 rules, peers, protocols,
//!   networks; 100 characters) are reported and the content used as
//!   written: there is nothing ambiguous in it.
//!
//! Each reading is a warning on the policy naming the field.

use super::meta::checked_labels;
use super::policy::cidr;
use super::{selector, FieldError, FieldResult};
use crate::cluster::{Action, ClusterPeer, ClusterPolicy, ClusterRule, PodSet, Tier};
use crate::crd;
use crate::model::{FieldIssue, PortMatch, PortSpec, Protocol, Selector};
use crate::names;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use std::collections::BTreeMap;

/// Most rules per direction, peers per rule, protocols per rule and
/// networks per peer the API allows.
const MAX_ITEMS: usize = 25;
/// Longest rule name the API allows.
const MAX_NAME: usize = 100;

/// Rules that did not deserialize, by (`ingress`|`egress`, index): the
/// action when it could be read, and where it failed.
pub(crate) type BrokenRules = BTreeMap<(&'static str, usize), (Option<Action>, FieldIssue)>;

/// A cluster-scoped object's name: a DNS subdomain.
pub(super) fn checked_name(meta: &ObjectMeta) -> FieldResult<String> {
    let name = meta
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| FieldError::new("metadata.name", "missing"))?;
    names::check_dns_subdomain(&name).map_err(|m| FieldError::new("metadata.name", m))?;
    Ok(name)
}

pub fn convert(
    cnp: &crd::ClusterNetworkPolicy,
    broken: &BrokenRules,
) -> FieldResult<ClusterPolicy> {
    let name = checked_name(&cnp.metadata)?;
    // Labels are not read, but a malformed one is still worth saying.
    checked_labels(&cnp.metadata)?;
    let spec = &cnp.spec;
    let tier = match spec.tier {
        crd::Tier::Admin => Tier::Admin,
        crd::Tier::Baseline => Tier::Baseline,
    };
    let priority = u32::try_from(spec.priority)
        .ok()
        .filter(|p| *p <= 1000)
        .ok_or_else(|| {
            FieldError::new(
                "spec.priority",
                format!("{} is out of range 0-1000", spec.priority),
            )
        })?;
    let subject = subject(&spec.subject)?;
    let mut warnings = Vec::new();
    let mut read = Reader {
        warnings: &mut warnings,
        broken,
    };
    let ingress = read.rules(
        "ingress",
        spec.ingress.as_deref().unwrap_or_default(),
        |r| RuleView {
            name: r.name.as_deref(),
            action: r.action,
            peers: r.from.iter().map(PeerView::ingress).collect(),
            protocols: r.protocols.as_deref(),
        },
    );
    let egress = read.rules("egress", spec.egress.as_deref().unwrap_or_default(), |r| {
        RuleView {
            name: r.name.as_deref(),
            action: r.action,
            peers: r.to.iter().map(PeerView::egress).collect(),
            protocols: r.protocols.as_deref(),
        }
    });
    Ok(ClusterPolicy {
        name,
        tier,
        priority,
        subject,
        ingress,
        egress,
        warnings,
    })
}

fn subject(s: &crd::Subject) -> FieldResult<PodSet> {
    match (&s.namespaces, &s.pods) {
        (Some(ns), None) => Ok(PodSet {
            namespaces: selector::convert(ns, "spec.subject.namespaces")?,
            pods: Selector::default(),
        }),
        (None, Some(p)) => pod_set(p, "spec.subject.pods"),
        _ => Err(FieldError::new(
            "spec.subject",
            "must specify exactly one of namespaces, pods",
        )),
    }
}

fn pod_set(p: &crd::NamespacedPod, field: &str) -> FieldResult<PodSet> {
    Ok(PodSet {
        namespaces: selector::convert(
            &p.namespace_selector,
            &format!("{field}.namespaceSelector"),
        )?,
        pods: selector::convert(&p.pod_selector, &format!("{field}.podSelector"))?,
    })
}

/// A rule of either direction, as far as conversion cares.
struct RuleView<'a> {
    name: Option<&'a str>,
    action: crd::Action,
    peers: Vec<PeerView<'a>>,
    protocols: Option<&'a [crd::Protocol]>,
}

/// A peer of either direction: ingress peers have no `nodes`,
/// `networks` or `domainNames`.
struct PeerView<'a> {
    namespaces: Option<&'a LabelSelector>,
    pods: Option<&'a crd::NamespacedPod>,
    nodes: Option<&'a LabelSelector>,
    networks: Option<&'a [crd::Cidr]>,
    domain_names: Option<&'a [crd::DomainName]>,
}

impl<'a> PeerView<'a> {
    fn ingress(p: &'a crd::IngressPeer) -> Self {
        PeerView {
            namespaces: p.namespaces.as_ref(),
            pods: p.pods.as_ref(),
            nodes: None,
            networks: None,
            domain_names: None,
        }
    }

    fn egress(p: &'a crd::EgressPeer) -> Self {
        PeerView {
            namespaces: p.namespaces.as_ref(),
            pods: p.pods.as_ref(),
            nodes: p.nodes.as_ref(),
            networks: p.networks.as_deref(),
            domain_names: p.domain_names.as_deref(),
        }
    }

    fn set_fields(&self) -> usize {
        [
            self.namespaces.is_some(),
            self.pods.is_some(),
            self.nodes.is_some(),
            self.networks.is_some(),
            self.domain_names.is_some(),
        ]
        .into_iter()
        .filter(|s| *s)
        .count()
    }

    /// A peer without a pod's container ports (named ports never match).
    fn is_address(&self) -> bool {
        self.nodes.is_some() || self.networks.is_some() || self.domain_names.is_some()
    }
}

/// What a peer entry reads as.
enum PeerRead {
    Peer(ClusterPeer),
    /// `domainNames`: not supported.
    DomainNames,
}

struct Reader<'w> {
    warnings: &'w mut Vec<FieldIssue>,
    broken: &'w BrokenRules,
}

impl Reader<'_> {
    fn warn(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(FieldIssue {
            field: field.into(),
            message: message.into(),
        });
    }

    fn rules<R>(
        &mut self,
        dir: &'static str,
        rules: &[R],
        view: impl Fn(&R) -> RuleView<'_>,
    ) -> Vec<ClusterRule> {
        if rules.len() > MAX_ITEMS {
            self.warn(
                format!("spec.{dir}"),
                format!(
                    "{} rules, at most {MAX_ITEMS} allowed: all are used",
                    rules.len()
                ),
            );
        }
        let peers_key = if dir == "ingress" { "from" } else { "to" };
        rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let field = format!("spec.{dir}[{i}]");
                match self.broken.get(&(dir, i)) {
                    Some((action, issue)) => {
                        let action = *action;
                        let issue = issue.clone();
                        self.whole_rule(action, None, &issue.field, &issue.message)
                    }
                    None => self.rule(&view(r), &field, peers_key),
                }
            })
            .collect()
    }

    /// A rule that cannot be read as a whole: an Accept rule matches
    /// nothing; any other (or an unknown action) denies everything.
    fn whole_rule(
        &mut self,
        action: Option<Action>,
        name: Option<String>,
        field: &str,
        problem: &str,
    ) -> ClusterRule {
        if action == Some(Action::Accept) {
            self.warn(
                field,
                format!("{problem}; this Accept rule matches nothing"),
            );
            ClusterRule {
                name,
                action: Action::Accept,
                peers: Vec::new(),
                ports: Some(Vec::new()),
            }
        } else {
            self.warn(
                field,
                format!("{problem}; this rule denies every peer and port"),
            );
            ClusterRule {
                name,
                action: Action::Deny,
                peers: vec![ClusterPeer::All],
                ports: None,
            }
        }
    }

    fn rule(&mut self, r: &RuleView, field: &str, peers_key: &str) -> ClusterRule {
        let action = match r.action {
            crd::Action::Accept => Action::Accept,
            crd::Action::Deny => Action::Deny,
            crd::Action::Pass => Action::Pass,
        };
        let name = r.name.map(str::to_string);
        if let Some(n) = r.name.filter(|n| n.chars().count() > MAX_NAME) {
            self.warn(
                format!("{field}.name"),
                format!(
                    "{} characters, at most {MAX_NAME} allowed: kept",
                    n.chars().count()
                ),
            );
        }
        if r.peers.is_empty() {
            let f = format!("{field}.{peers_key}");
            return self.whole_rule(Some(action), name, &f, "must have at least one peer");
        }
        if r.protocols.is_some_and(<[_]>::is_empty) {
            let f = format!("{field}.protocols");
            return self.whole_rule(Some(action), name, &f, "must not be empty when present");
        }
        let named = r
            .protocols
            .unwrap_or_default()
            .iter()
            .any(|p| p.destination_named_port.is_some());
        if named && r.peers.iter().any(PeerView::is_address) {
            return self.whole_rule(
                Some(action),
                name,
                field,
                "networks, nodes and domainNames peers cannot be combined with destinationNamedPort",
            );
        }
        self.count(r.peers.len(), &format!("{field}.{peers_key}"), "peers");
        if let Some(p) = r.protocols {
            self.count(p.len(), &format!("{field}.protocols"), "protocols");
        }

        let mut rule = ClusterRule {
            name,
            action,
            peers: Vec::new(),
            ports: None,
        };
        // Whether something had to be read as "everything": a Pass rule
        // then denies (see the module's comment).
        let mut widened = false;
        for (j, p) in r.peers.iter().enumerate() {
            let f = format!("{field}.{peers_key}[{j}]");
            match self.peer(p, &f) {
                Ok(PeerRead::Peer(peer)) => rule.peers.push(peer),
                Ok(PeerRead::DomainNames) if action == Action::Accept => self.warn(
                    format!("{f}.domainNames"),
                    "domainNames peers are not supported; this peer matches nothing",
                ),
                Ok(PeerRead::DomainNames) => {
                    let m = "domainNames peers are not supported (and are for Accept rules only)";
                    self.unreadable_peer(&mut rule, &mut widened, &format!("{f}.domainNames"), m)
                }
                Err(e) => self.unreadable_peer(&mut rule, &mut widened, &e.field, &e.message),
            }
        }
        if let Some(protocols) = r.protocols {
            let mut ports = Vec::new();
            let mut every_port = false;
            for (k, p) in protocols.iter().enumerate() {
                match protocol(p, &format!("{field}.protocols[{k}]")) {
                    Ok(specs) => ports.extend(specs),
                    Err(e) if action == Action::Accept => self.warn(
                        e.field,
                        format!("{}; this protocol entry matches nothing", e.message),
                    ),
                    Err(e) => {
                        self.warn(e.field, format!("{}; {}", e.message, widen(action, "port")));
                        every_port = true;
                    }
                }
            }
            rule.ports = (!every_port).then_some(ports);
            widened |= every_port;
        }
        if widened && action == Action::Pass {
            rule.action = Action::Deny;
        }
        rule
    }

    fn unreadable_peer(&mut self, rule: &mut ClusterRule, widened: &mut bool, f: &str, m: &str) {
        if rule.action == Action::Accept {
            self.warn(f, format!("{m}; this peer matches nothing"));
        } else {
            self.warn(f, format!("{m}; {}", widen(rule.action, "peer")));
            if !rule.peers.contains(&ClusterPeer::All) {
                rule.peers.push(ClusterPeer::All);
            }
            *widened = true;
        }
    }

    fn count(&mut self, n: usize, field: &str, what: &str) {
        if n > MAX_ITEMS {
            self.warn(
                field,
                format!("{n} {what}, at most {MAX_ITEMS} allowed: all are used"),
            );
        }
    }

    fn peer(&mut self, p: &PeerView, field: &str) -> FieldResult<PeerRead> {
        match p.set_fields() {
            0 => return Err(FieldError::new(
                field,
                "no peer field this version knows (namespaces, pods, nodes, networks, domainNames)",
            )),
            1 => {}
            _ => return Err(FieldError::new(field, "must specify exactly one field")),
        }
        if let Some(ns) = p.namespaces {
            let namespaces = selector::convert(ns, &format!("{field}.namespaces"))?;
            return Ok(PeerRead::Peer(ClusterPeer::Pods(PodSet {
                namespaces,
                pods: Selector::default(),
            })));
        }
        if let Some(pods) = p.pods {
            return Ok(PeerRead::Peer(ClusterPeer::Pods(pod_set(
                pods,
                &format!("{field}.pods"),
            )?)));
        }
        if let Some(nodes) = p.nodes {
            let sel = selector::convert(nodes, &format!("{field}.nodes"))?;
            return Ok(PeerRead::Peer(ClusterPeer::Nodes(sel)));
        }
        if let Some(networks) = p.networks {
            let f = format!("{field}.networks");
            if networks.is_empty() {
                return Err(FieldError::new(f, "must not be empty"));
            }
            self.count(networks.len(), &f, "networks");
            let nets = networks
                .iter()
                .enumerate()
                .map(|(i, c)| cidr(&c.0, &format!("{f}[{i}]")))
                .collect::<FieldResult<Vec<_>>>()?;
            return Ok(PeerRead::Peer(ClusterPeer::Networks(nets)));
        }
        Ok(PeerRead::DomainNames)
    }
}

/// What a Deny or Pass rule becomes when an entry of `what` cannot be read.
fn widen(action: Action, what: &str) -> String {
    match action {
        Action::Pass => format!("this Pass rule denies instead, every {what}"),
        _ => format!("this rule matches every {what}"),
    }
}

/// One `protocols` entry: a numbered or ranged port of one protocol, or
/// a named port (one [`PortSpec`] per protocol: a container port of that
/// name matches with its own protocol).
fn protocol(p: &crd::Protocol, field: &str) -> FieldResult<Vec<PortSpec>> {
    let set = [
        p.tcp.is_some(),
        p.udp.is_some(),
        p.sctp.is_some(),
        p.destination_named_port.is_some(),
    ];
    match set.iter().filter(|s| **s).count() {
        0 => {
            return Err(FieldError::new(
                field,
                "no protocol field this version knows (tcp, udp, sctp, destinationNamedPort)",
            ))
        }
        1 => {}
        _ => return Err(FieldError::new(field, "must specify exactly one field")),
    }
    if let Some(name) = &p.destination_named_port {
        let f = format!("{field}.destinationNamedPort");
        names::check_port_name(name).map_err(|m| FieldError::new(f, m))?;
        return Ok([Protocol::Tcp, Protocol::Udp, Protocol::Sctp]
            .into_iter()
            .map(|protocol| PortSpec {
                protocol,
                port: PortMatch::Named(name.clone()),
            })
            .collect());
    }
    let (protocol, key, pp) = match (&p.tcp, &p.udp, &p.sctp) {
        (Some(pp), _, _) => (Protocol::Tcp, "tcp", pp),
        (_, Some(pp), _) => (Protocol::Udp, "udp", pp),
        (_, _, Some(pp)) => (Protocol::Sctp, "sctp", pp),
        _ => unreachable!("one field is set"),
    };
    let f = format!("{field}.{key}");
    let port = pp
        .destination_port
        .as_ref()
        .ok_or_else(|| FieldError::new(&f, "no field this version knows (destinationPort)"))?;
    let f = format!("{f}.destinationPort");
    let in_range = |n: i32, f: &str| {
        u16::try_from(n)
            .ok()
            .filter(|&n| n != 0)
            .ok_or_else(|| FieldError::new(f, format!("{n} is out of range 1-65535")))
    };
    let port = match (port.number, &port.range) {
        (Some(n), None) => {
            let n = in_range(n, &format!("{f}.number"))?;
            PortMatch::Range { port: n, end: n }
        }
        (None, Some(r)) => {
            let start = in_range(r.start, &format!("{f}.range.start"))?;
            let end = in_range(r.end, &format!("{f}.range.end"))?;
            if end < start {
                return Err(FieldError::new(
                    format!("{f}.range.end"),
                    format!("{end} is less than start {start}"),
                ));
            }
            PortMatch::Range { port: start, end }
        }
        (None, None) => {
            return Err(FieldError::new(
                f,
                "no field this version knows (number, range)",
            ))
        }
        (Some(_), Some(_)) => {
            return Err(FieldError::new(
                f,
                "must specify exactly one of number, range",
            ))
        }
    };
    Ok(vec![PortSpec { protocol, port }])
}
