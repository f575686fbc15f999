//! The validated ClusterNetworkPolicy model (`policy.networking.k8s.io`
//! v1alpha2): cluster-wide policies in two tiers around NetworkPolicy.
//!
//! For one pod and direction a packet is decided by, in order: the Admin
//! tier (policies by priority, then name; rules in order; the first rule
//! matching decides: Accept and Deny are final, Pass skips the rest of the
//! tier), NetworkPolicy (when one isolates the pod in that direction, it
//! decides), the Baseline tier (the same way; Pass ends the tier), and
//! else the packet is allowed. A ClusterNetworkPolicy isolates nothing by
//! itself.
//!
//! Fail closed is settled when an object is built, so the oracle and the
//! compiler never see a field Palisade could not read: an unknown peer or
//! protocol entry matches nothing in an Accept rule and everything in a
//! Deny or Pass rule (what the upstream API asks).

use crate::model::{FieldIssue, Labels, PortSpec, Selector};
use ipnetwork::IpNetwork;
use std::net::IpAddr;

/// `spec.tier`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Tier {
    /// Before NetworkPolicy: what namespace owners cannot undo.
    Admin,
    /// After NetworkPolicy: defaults for pods no NetworkPolicy isolates.
    Baseline,
}

impl Tier {
    pub fn name(self) -> &'static str {
        match self {
            Tier::Admin => "Admin",
            Tier::Baseline => "Baseline",
        }
    }
}

/// A rule's `action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Action {
    /// Allowed, replies included; for egress, the destination's ingress
    /// still decides its side.
    Accept,
    /// Dropped; nothing later is consulted.
    Deny,
    /// The rest of this tier is skipped; the next tier decides.
    Pass,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Accept => "Accept",
            Action::Deny => "Deny",
            Action::Pass => "Pass",
        }
    }
}

/// `spec.subject`, or a pod peer: pods of the namespaces `namespaces`
/// selects whose labels `pods` selects (`subject.namespaces` and the
/// `namespaces` peer have the empty `pods` selector, which selects all).
/// hostNetwork pods are never selected (they are not in the model).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodSet {
    pub namespaces: Selector,
    pub pods: Selector,
}

/// One `from` / `to` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterPeer {
    /// `namespaces` or `pods`.
    Pods(PodSet),
    /// `networks` (egress): matched on the address, pod IPs included.
    Networks(Vec<IpNetwork>),
    /// `nodes` (egress): the `status.addresses` IPs of the Nodes the
    /// selector picks.
    Nodes(Selector),
    /// Every address: what a Deny or Pass rule's unreadable peer becomes.
    All,
}

/// One ingress or egress rule. `ports: None` matches every protocol and
/// port (ICMP included); `Some(vec![])` matches nothing (an Accept rule
/// whose protocol entries could not be read). `peers` is never empty in
/// a rule that can match (an Accept rule with no readable peer keeps an
/// empty list and matches nothing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterRule {
    /// `name`, for explanations and metrics.
    pub name: Option<String>,
    pub action: Action,
    pub peers: Vec<ClusterPeer>,
    /// `protocols`: `destinationPort` numbers and ranges, and
    /// `destinationNamedPort` as one named [`PortSpec`] per protocol (a
    /// container port of that name matches with its own protocol).
    pub ports: Option<Vec<PortSpec>>,
}

/// A validated ClusterNetworkPolicy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterPolicy {
    pub name: String,
    pub tier: Tier,
    /// 0..=1000, lower first.
    pub priority: u32,
    pub subject: PodSet,
    pub ingress: Vec<ClusterRule>,
    pub egress: Vec<ClusterRule>,
    /// Fields read past or made to fail closed (an unknown peer, a
    /// `domainNames` peer): the policy is used, and they are reported.
    pub warnings: Vec<FieldIssue>,
}

/// A Node, for `nodes` peers: its labels and `status.addresses` IPs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub labels: Labels,
    pub addresses: Vec<IpAddr>,
}

/// Which cluster rule decided a direction: the policy, its tier and
/// priority, the rule's index in its direction's list, its name and action.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct ClusterRuleRef {
    pub tier: Tier,
    pub priority: u32,
    pub policy: String,
    pub direction: crate::model::Direction,
    pub rule: usize,
    pub name: Option<String>,
    pub action: Action,
}

impl ClusterPolicy {
    /// The rules of direction `dir`, in order.
    pub fn rules(&self, dir: crate::model::Direction) -> &[ClusterRule] {
        match dir {
            crate::model::Direction::Ingress => &self.ingress,
            crate::model::Direction::Egress => &self.egress,
        }
    }

    /// Evaluation order: tier, priority, then name (ties in priority break
    /// by name, so every node decides alike).
    pub fn order_key(&self) -> (Tier, u32, &str) {
        (self.tier, self.priority, &self.name)
    }
}
