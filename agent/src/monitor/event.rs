//! Decoding a classifier's `Event` into names: the pod whose hook decided,
//! the peer pod, the 5-tuple, and which policy rule allowed the flow or
//! which policies isolate the pod. This is also the wire form of the
//! monitor socket (one JSON object per line).

use super::view::NodeView;
use palisade_common::{
    Event, IpKey, DIR_EGRESS, FAMILY_V4, FAMILY_V6, PROTO_ICMP, PROTO_ICMPV6, PROTO_SCTP,
    PROTO_TCP, PROTO_UDP, REASON_ENCAP, REASON_FRAGMENT, REASON_MALFORMED, REASON_PENDING,
    REASON_POLICY, REASON_SPOOF, RULE_BITS, RULE_DENY_FLAG, RULE_NODE, RULE_NOT_ISOLATED,
    RULE_SERVICE, RULE_SPILLED, RULE_WOULD_DENY, VERDICT_ALLOWED, VERDICT_DENIED,
    VERDICT_WOULD_DENY,
};
use palisade_policy::{ClusterRuleRef, Direction, RuleRef};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Denied,
    Allowed,
    /// Passed because the isolation is audit-only; enforcement would drop it.
    WouldDeny,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Denied => "denied",
            Verdict::Allowed => "allowed",
            Verdict::WouldDeny => "would_deny",
        }
    }
}

/// Why an allowed flow was allowed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AllowedBy {
    /// A rule group (one rule bit): the rules that share its port set,
    /// any of which allows the flow.
    Rules { group: u32, rules: Vec<RuleName> },
    /// The direction is not isolated: no policy applies.
    NotIsolated,
    /// A ClusterNetworkPolicy Accept group (one rule bit).
    ClusterRules(ClusterGroup),
    /// A rule group beyond the rule bits (the datapath does not say which).
    SpilledGroup { policies: Vec<String> },
    /// Traffic between the pod and its own node: always allowed.
    Node,
    /// A flow to a Service ClusterIP, passed at the client's egress hook:
    /// its egress policy is decided after DNAT, against the backend.
    Service,
}

/// A rule: its policy (`namespace/name`) and its index in the policy's
/// `ingress` or `egress` list (the event's direction).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleName {
    pub policy: String,
    pub rule: usize,
}

impl From<&RuleRef> for RuleName {
    fn from(r: &RuleRef) -> Self {
        RuleName {
            policy: r.policy.clone(),
            rule: r.rule,
        }
    }
}

/// A ClusterNetworkPolicy rule group: one rule bit, the rules of one
/// tier and action that share it, any of which decided the packet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterGroup {
    pub group: u32,
    /// `Admin` or `Baseline`.
    pub tier: String,
    /// `Accept` or `Deny` (`Pass` never decides a packet).
    pub action: String,
    pub rules: Vec<ClusterRuleName>,
}

/// A ClusterNetworkPolicy rule: the policy, its priority, the rule's
/// index in the policy's `ingress` or `egress` list (the event's
/// direction) and its name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRuleName {
    pub policy: String,
    pub priority: u32,
    pub rule: usize,
    pub name: Option<String>,
}

impl ClusterGroup {
    /// Group `bit` of `rules` (non-empty, one tier and action).
    pub fn of(bit: u32, rules: &[ClusterRuleRef]) -> ClusterGroup {
        let first = &rules[0];
        ClusterGroup {
            group: bit,
            tier: first.tier.name().into(),
            action: first.action.name().into(),
            rules: rules
                .iter()
                .map(|r| ClusterRuleName {
                    policy: r.policy.clone(),
                    priority: r.priority,
                    rule: r.rule,
                    name: r.name.clone(),
                })
                .collect(),
        }
    }
}

/// One decided packet, with names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecodedEvent {
    /// When the agent read the event (RFC 3339, UTC).
    pub time: String,
    pub verdict: Verdict,
    /// Direction of the check, as seen from `pod`.
    pub direction: String,
    /// The local pod (`namespace/name`) whose hook decided; for an
    /// interface with no pod, a label for the interface.
    pub pod: String,
    pub ifindex: u32,
    /// The other end, when it is a known pod of the cluster.
    pub peer: Option<String>,
    /// Protocol name (TCP, UDP, SCTP, ICMP, ICMPv6) or number.
    pub protocol: String,
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
    /// Why a denied or would-deny packet was refused: policy, spoofed
    /// source, pending interface, malformed headers, fragment.
    pub reason: Option<String>,
    /// For an allowed flow: the rule (group) that allowed it.
    pub allowed_by: Option<AllowedBy>,
    /// For a denied or would-deny packet refused by policy: the policies
    /// (`namespace/name`) isolating the pod in this direction.
    pub isolated_by: Vec<String>,
    /// For a packet a ClusterNetworkPolicy Deny refused: its rule group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denied_by: Option<ClusterGroup>,
    /// Generation of the pod's policy the packet was decided with.
    pub generation: u32,
    /// The pod's policy changed between the decision and the decoding:
    /// the rule and isolating policies are left out rather than guessed.
    pub stale: bool,
}

pub fn protocol_name(proto: u8) -> String {
    match proto {
        PROTO_TCP => "TCP".into(),
        PROTO_UDP => "UDP".into(),
        PROTO_SCTP => "SCTP".into(),
        PROTO_ICMP => "ICMP".into(),
        PROTO_ICMPV6 => "ICMPv6".into(),
        n => n.to_string(),
    }
}

fn reason_name(reason: u32) -> Option<String> {
    let name = match reason {
        0 => return None,
        REASON_POLICY => "policy",
        REASON_SPOOF => "spoofed source",
        REASON_PENDING => "pending interface",
        REASON_MALFORMED => "malformed headers",
        REASON_FRAGMENT => "fragment",
        REASON_ENCAP => "tunnel packet to the node",
        _ => return Some(format!("reason {reason}")),
    };
    Some(name.into())
}

pub fn ip_of(k: &IpKey) -> Option<IpAddr> {
    match k.family {
        FAMILY_V4 => Some(IpAddr::from([k.addr[0], k.addr[1], k.addr[2], k.addr[3]])),
        FAMILY_V6 => Some(IpAddr::from(k.addr)),
        _ => None,
    }
}

/// Current time in RFC 3339 with milliseconds, UTC.
pub fn now_rfc3339() -> String {
    k8s_openapi::chrono::Utc::now()
        .to_rfc3339_opts(k8s_openapi::chrono::SecondsFormat::Millis, true)
}

/// Decodes `e` against `view`; `None` for a record that is not an event
/// (unknown verdict or address family: a classifier of another version).
pub fn decode(e: &Event, view: &NodeView, time: String) -> Option<DecodedEvent> {
    let verdict = match e.verdict {
        VERDICT_DENIED => Verdict::Denied,
        VERDICT_ALLOWED => Verdict::Allowed,
        VERDICT_WOULD_DENY => Verdict::WouldDeny,
        _ => return None,
    };
    let (src, dst) = (ip_of(&e.src)?, ip_of(&e.dst)?);
    let dir = if e.direction == DIR_EGRESS {
        Direction::Egress
    } else {
        Direction::Ingress
    };
    // The peer is the far end: the source of what the pod receives, the
    // destination of what it sends.
    let peer_ip = match dir {
        Direction::Ingress => src,
        Direction::Egress => dst,
    };
    let mut out = DecodedEvent {
        time,
        verdict,
        direction: dir.name().into(),
        pod: String::new(),
        ifindex: e.ifindex,
        peer: view.peer(&peer_ip),
        protocol: protocol_name(e.proto),
        src,
        sport: e.sport,
        dst,
        dport: e.dport,
        reason: reason_name(e.reason),
        allowed_by: None,
        isolated_by: Vec::new(),
        denied_by: None,
        generation: e.generation,
        stale: false,
    };
    let Some(pod) = view.pods.get(&e.ifindex) else {
        out.pod = view
            .pending
            .get(&e.ifindex)
            .cloned()
            .unwrap_or_else(|| format!("ifindex {} (unknown)", e.ifindex));
        return Some(out);
    };
    out.pod = pod.key();
    if pod.generation != e.generation {
        out.stale = true;
        return Some(out);
    }
    let d = pod.dir(dir);
    match verdict {
        Verdict::Allowed => {
            out.allowed_by = Some(match e.rule {
                RULE_NOT_ISOLATED => AllowedBy::NotIsolated,
                RULE_NODE => AllowedBy::Node,
                RULE_SERVICE => AllowedBy::Service,
                RULE_SPILLED => AllowedBy::SpilledGroup {
                    policies: d
                        .policies_of_groups(RULE_BITS as usize..usize::MAX)
                        .into_iter()
                        .map(String::from)
                        .collect(),
                },
                bit => match d.groups.get(bit as usize) {
                    Some(_) if bit < RULE_BITS && d.cluster_group(bit as usize).is_some() => {
                        let rules = d.cluster_group(bit as usize).unwrap_or_default();
                        AllowedBy::ClusterRules(ClusterGroup::of(bit, rules))
                    }
                    Some(rules) if bit < RULE_BITS => AllowedBy::Rules {
                        group: bit,
                        rules: rules.iter().map(RuleName::from).collect(),
                    },
                    // A bit the live generation has no group for: the
                    // view and the kernel disagree; say so, do not guess.
                    _ => {
                        out.stale = true;
                        return Some(out);
                    }
                },
            });
        }
        // A cluster Deny names its rule bit, resolved like an allowed
        // flow's: with the groups of the generation it was decided under.
        Verdict::Denied if e.rule & !0xff == RULE_DENY_FLAG => {
            let bit = e.rule & 0xff;
            match d.cluster_group(bit as usize) {
                Some(rules) if bit < RULE_BITS => {
                    out.denied_by = Some(ClusterGroup::of(bit, rules));
                }
                // A Deny group beyond the rule bits: the datapath does
                // not say which.
                _ if bit == RULE_BITS => {}
                _ => out.stale = true,
            }
        }
        Verdict::Denied | Verdict::WouldDeny => {
            if e.reason == REASON_POLICY || e.rule == RULE_WOULD_DENY {
                out.isolated_by = d.isolating.clone();
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::view::{DirView, PodView};
    use palisade_common::{DIR_INGRESS, RULE_NONE};
    use palisade_policy::{Action, Tier};

    fn key(ip: [u8; 4]) -> IpKey {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&ip);
        IpKey {
            family: FAMILY_V4,
            addr,
        }
    }

    fn rule(policy: &str, i: usize) -> RuleRef {
        RuleRef {
            policy: policy.into(),
            direction: Direction::Ingress,
            rule: i,
        }
    }

    fn view() -> NodeView {
        let mut v = NodeView::default();
        v.pods.insert(
            7,
            PodView {
                namespace: "shop".into(),
                name: "web".into(),
                slot: 3,
                generation: 1,
                ingress: DirView {
                    isolated: true,
                    audit: false,
                    groups: vec![
                        vec![rule("shop/a", 0)],
                        vec![rule("shop/b", 1), rule("shop/c", 0)],
                    ],
                    isolating: vec!["shop/a".into(), "shop/b".into(), "shop/c".into()],
                    cluster: Vec::new(),
                },
                egress: DirView::default(),
            },
        );
        v.pending.insert(9, "interface x (no pod)".into());
        v.peers
            .set("10.0.0.3".parse().unwrap(), Some("shop/client".into()));
        v
    }

    fn event(verdict: u8, rule: u32, generation: u32, ifindex: u32) -> Event {
        Event {
            ifindex,
            direction: DIR_INGRESS,
            reason: if verdict == VERDICT_ALLOWED {
                0
            } else {
                REASON_POLICY
            },
            rule,
            generation,
            sport: 40000,
            dport: 80,
            proto: PROTO_TCP,
            verdict,
            src: key([10, 0, 0, 3]),
            dst: key([10, 0, 0, 2]),
            _pad: [0; 4],
        }
    }

    fn cluster_rule(policy: &str, tier: Tier, action: Action, i: usize) -> ClusterRuleRef {
        ClusterRuleRef {
            tier,
            priority: 10,
            policy: policy.into(),
            direction: Direction::Ingress,
            rule: i,
            name: Some(format!("r{i}")),
            action,
        }
    }

    /// shop/web's ingress under cluster rules: group 0 an Admin Deny,
    /// group 1 a NetworkPolicy group, group 2 an Admin Accept of two
    /// rules, group 3 a Baseline Deny.
    fn cluster_view() -> NodeView {
        let mut v = view();
        let d = &mut v.pods.get_mut(&7).unwrap().ingress;
        d.groups = vec![vec![], vec![rule("shop/a", 0)], vec![], vec![]];
        d.cluster = vec![
            vec![cluster_rule("guard", Tier::Admin, Action::Deny, 0)],
            vec![],
            vec![
                cluster_rule("guard", Tier::Admin, Action::Accept, 1),
                cluster_rule("scrape", Tier::Admin, Action::Accept, 0),
            ],
            vec![cluster_rule("base", Tier::Baseline, Action::Deny, 2)],
        ];
        v
    }

    #[test]
    fn a_cluster_deny_names_its_group_of_that_generation() {
        let v = cluster_view();
        let d = decode(&event(VERDICT_DENIED, RULE_DENY_FLAG, 1, 7), &v, "t".into()).unwrap();
        let g = d.denied_by.clone().expect("a cluster group");
        assert_eq!(
            (g.group, g.tier.as_str(), g.action.as_str()),
            (0, "Admin", "Deny")
        );
        assert_eq!(
            g.rules,
            [ClusterRuleName {
                policy: "guard".into(),
                priority: 10,
                rule: 0,
                name: Some("r0".into())
            }]
        );
        assert!(d.isolated_by.is_empty() && !d.stale, "{d:?}");
        let b = decode(
            &event(VERDICT_DENIED, 3 | RULE_DENY_FLAG, 1, 7),
            &v,
            "t".into(),
        )
        .unwrap();
        assert_eq!(b.denied_by.unwrap().tier, "Baseline");
        // Another generation, or a bit that is no cluster group of the live
        // one: not guessed.
        for e in [
            event(VERDICT_DENIED, RULE_DENY_FLAG, 0, 7),
            event(VERDICT_DENIED, 1 | RULE_DENY_FLAG, 1, 7),
            event(VERDICT_DENIED, 9 | RULE_DENY_FLAG, 1, 7),
        ] {
            let d = decode(&e, &v, "t".into()).unwrap();
            assert!(d.stale && d.denied_by.is_none(), "{d:?}");
        }
        // The isolation's own refusal still names the isolating policies.
        let d = decode(&event(VERDICT_DENIED, RULE_NONE, 1, 7), &v, "t".into()).unwrap();
        assert!(d.denied_by.is_none());
        assert_eq!(d.isolated_by, ["shop/a", "shop/b", "shop/c"]);
    }

    #[test]
    fn a_cluster_accept_names_its_group() {
        let v = cluster_view();
        let d = decode(&event(VERDICT_ALLOWED, 2, 1, 7), &v, "t".into()).unwrap();
        let Some(AllowedBy::ClusterRules(g)) = &d.allowed_by else {
            panic!("{d:?}")
        };
        assert_eq!(
            (g.group, g.tier.as_str(), g.action.as_str()),
            (2, "Admin", "Accept")
        );
        let names: Vec<(&str, usize)> = g
            .rules
            .iter()
            .map(|r| (r.policy.as_str(), r.rule))
            .collect();
        assert_eq!(names, [("guard", 1), ("scrape", 0)]);
        // A NetworkPolicy group beside them is named as before.
        let n = decode(&event(VERDICT_ALLOWED, 1, 1, 7), &v, "t".into()).unwrap();
        assert!(
            matches!(n.allowed_by, Some(AllowedBy::Rules { group: 1, .. })),
            "{n:?}"
        );
        let line = serde_json::to_string(&d).unwrap();
        assert!(
            line.contains(r#""kind":"cluster_rules","group":2,"tier":"Admin","action":"Accept""#),
            "{line}"
        );
        assert_eq!(serde_json::from_str::<DecodedEvent>(&line).unwrap(), d);
        // Events without a cluster Deny keep their wire form.
        assert!(!line.contains("denied_by"), "{line}");
    }

    #[test]
    fn an_allowed_flow_names_its_rule_group() {
        let d = decode(&event(VERDICT_ALLOWED, 1, 1, 7), &view(), "t".into()).unwrap();
        assert_eq!(d.pod, "shop/web");
        assert_eq!(d.peer.as_deref(), Some("shop/client"));
        assert_eq!(d.protocol, "TCP");
        assert_eq!((d.sport, d.dport), (40000, 80));
        assert_eq!(
            d.allowed_by,
            Some(AllowedBy::Rules {
                group: 1,
                rules: vec![(&rule("shop/b", 1)).into(), (&rule("shop/c", 0)).into()]
            })
        );
        assert!(!d.stale);
        let n = decode(
            &event(VERDICT_ALLOWED, RULE_NOT_ISOLATED, 1, 7),
            &view(),
            "t".into(),
        )
        .unwrap();
        assert_eq!(n.allowed_by, Some(AllowedBy::NotIsolated));
    }

    #[test]
    fn node_traffic_and_service_flows_are_named_not_taken_for_stale() {
        let mut v = view();
        v.name_node(&["10.0.0.3".parse().unwrap()].into_iter().collect());
        let d = decode(&event(VERDICT_ALLOWED, RULE_NODE, 1, 7), &v, "t".into()).unwrap();
        assert_eq!(d.allowed_by, Some(AllowedBy::Node));
        assert_eq!(d.peer.as_deref(), Some(crate::monitor::view::NODE_PEER));
        assert!(!d.stale);
        let d = decode(&event(VERDICT_ALLOWED, RULE_SERVICE, 1, 7), &v, "t".into()).unwrap();
        assert_eq!(d.allowed_by, Some(AllowedBy::Service));
        assert!(!d.stale);
    }

    #[test]
    fn a_denied_packet_names_the_isolating_policies() {
        let d = decode(&event(VERDICT_DENIED, RULE_NONE, 1, 7), &view(), "t".into()).unwrap();
        assert_eq!(d.verdict, Verdict::Denied);
        assert_eq!(d.reason.as_deref(), Some("policy"));
        assert_eq!(d.isolated_by, ["shop/a", "shop/b", "shop/c"]);
        assert_eq!(d.allowed_by, None);
    }

    #[test]
    fn another_generation_is_reported_stale_not_guessed() {
        let d = decode(&event(VERDICT_ALLOWED, 0, 0, 7), &view(), "t".into()).unwrap();
        assert!(d.stale);
        assert_eq!(d.allowed_by, None);
        // A bit the live generation has no group for is just as unknown.
        let d = decode(&event(VERDICT_ALLOWED, 5, 1, 7), &view(), "t".into()).unwrap();
        assert!(d.stale);
        assert_eq!(d.allowed_by, None);
    }

    #[test]
    fn pending_and_unknown_interfaces_are_labelled() {
        let mut e = event(VERDICT_DENIED, RULE_NONE, 0, 9);
        e.reason = REASON_PENDING;
        let d = decode(&e, &view(), "t".into()).unwrap();
        assert_eq!(d.pod, "interface x (no pod)");
        assert_eq!(d.reason.as_deref(), Some("pending interface"));
        let d = decode(
            &event(VERDICT_DENIED, RULE_NONE, 0, 11),
            &view(),
            "t".into(),
        )
        .unwrap();
        assert_eq!(d.pod, "ifindex 11 (unknown)");
    }

    #[test]
    fn the_wire_form_round_trips() {
        let d = decode(&event(VERDICT_ALLOWED, 0, 1, 7), &view(), now_rfc3339()).unwrap();
        let line = serde_json::to_string(&d).unwrap();
        assert!(line.contains(r#""verdict":"allowed""#), "{line}");
        assert!(line.contains(r#""kind":"rules""#), "{line}");
        let back: DecodedEvent = serde_json::from_str(&line).unwrap();
        assert_eq!(back, d);
    }
}
