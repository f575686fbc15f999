//! What the event decoder and the counter metrics need to know about the
//! node, as of the last programming round: which pod owns each interface
//! and counter slot, which generation of its policy is live, which rules
//! each rule bit stands for, and the names of every pod address.
//!
//! The agent publishes a new view after each round; readers take an `Arc`
//! of the current one and never block the round.

use crate::datapath::iface::Interfaces;
use palisade_common::{
    Endpoint, EP_AUDIT_EGRESS, EP_AUDIT_INGRESS, EP_ISOLATED_EGRESS, EP_ISOLATED_INGRESS,
};
use palisade_compiler::{CompiledDirection, CompiledNode};
use palisade_policy::{ClusterRuleRef, Direction, RuleRef};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

/// One direction of a local pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirView {
    pub isolated: bool,
    /// The isolation is audit-only (would-deny, not drop).
    pub audit: bool,
    /// Group `i` (bit `i` below `RULE_BITS`, spilled beyond): its rules.
    pub groups: Vec<Vec<RuleRef>>,
    /// Group `i`'s ClusterNetworkPolicy rules (one tier and action), empty
    /// for a NetworkPolicy group; as long as `groups` (or empty when no
    /// cluster rule applies to the direction).
    pub cluster: Vec<Vec<ClusterRuleRef>>,
    /// Policies (`namespace/name`, sorted) deciding the direction: the
    /// enforced ones isolating it, else the audit ones (the compiler's).
    pub isolating: Vec<String>,
}

impl DirView {
    /// The cluster rules of group `i`, when it is a cluster group.
    pub fn cluster_group(&self, i: usize) -> Option<&[ClusterRuleRef]> {
        self.cluster
            .get(i)
            .filter(|rules| !rules.is_empty())
            .map(Vec::as_slice)
    }

    /// The distinct policies of the groups from `first` on (sorted).
    pub fn policies_of_groups(&self, range: std::ops::Range<usize>) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .groups
            .get(range.start.min(self.groups.len())..range.end.min(self.groups.len()))
            .unwrap_or_default()
            .iter()
            .flatten()
            .map(|r| r.policy.as_str())
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// What one interface with an endpoint record stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodView {
    pub namespace: String,
    pub name: String,
    /// Counter slot of the endpoint record.
    pub slot: u32,
    /// Live generation of the pod's inner maps: events decided under
    /// another one cannot be attributed with this view.
    pub generation: u32,
    pub ingress: DirView,
    pub egress: DirView,
}

impl PodView {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    pub fn dir(&self, dir: Direction) -> &DirView {
        match dir {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

/// The node as the readers see it.
#[derive(Clone, Debug, Default)]
pub struct NodeView {
    /// Local pods by the ifindex of their host-side interface.
    pub pods: BTreeMap<u32, PodView>,
    /// Interfaces held pending (no pod known yet), with a label for them.
    pub pending: BTreeMap<u32, String>,
    /// Every pod address of the cluster -> `namespace/name`.
    pub peers: PeerNames,
    /// The node's own addresses: the peer `node`, over any pod's name.
    pub node: BTreeSet<IpAddr>,
}

/// Every pod address of the cluster -> `namespace/name`: one map shared
/// by every view and patched by the agent as addresses change hands
/// (rebuilt whole for each view, it cost a string per pod of the cluster
/// every round). A view may so name a peer by a newer owner than its
/// round knew: names are for reading, never for deciding.
#[derive(Clone, Debug, Default)]
pub struct PeerNames(Arc<RwLock<HashMap<IpAddr, Arc<str>>>>);

impl PeerNames {
    pub fn get(&self, ip: &IpAddr) -> Option<Arc<str>> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(ip)
            .cloned()
    }

    /// Names `ip` (or forgets it).
    pub fn set(&self, ip: IpAddr, name: Option<Arc<str>>) {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        match name {
            Some(n) => map.insert(ip, n),
            None => map.remove(&ip),
        };
    }

    /// Replaces every name.
    pub fn replace(&self, names: HashMap<IpAddr, Arc<str>>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = names;
    }
}

fn dir_view(c: &CompiledDirection, flags: u32, isolated_bit: u32, audit_bit: u32) -> DirView {
    DirView {
        isolated: c.isolated || flags & isolated_bit != 0,
        audit: c.audit || flags & audit_bit != 0,
        groups: c.groups.iter().map(|g| g.rules.clone()).collect(),
        cluster: if c.groups.iter().any(|g| !g.cluster.is_empty()) {
            c.groups.iter().map(|g| g.cluster.clone()).collect()
        } else {
            Vec::new()
        },
        isolating: c.isolating.clone(),
    }
}

impl NodeView {
    /// The view after a round that programmed `compiled` on `ifaces`;
    /// `endpoint` reads the record the writer left for an interface.
    pub fn build(
        compiled: &CompiledNode,
        peers: PeerNames,
        ifaces: &Interfaces,
        endpoint: impl Fn(u32) -> Option<Endpoint>,
    ) -> NodeView {
        let mut view = NodeView {
            peers,
            ..NodeView::default()
        };
        for (key, ifindex) in &ifaces.pods {
            let Some(pod) = compiled.pods.get(key) else {
                view.pending
                    .insert(*ifindex, format!("{key} (not programmed yet)"));
                continue;
            };
            let Some(ep) = endpoint(*ifindex) else {
                continue;
            };
            let ingress = dir_view(
                &pod.ingress,
                ep.flags,
                EP_ISOLATED_INGRESS,
                EP_AUDIT_INGRESS,
            );
            let egress = dir_view(&pod.egress, ep.flags, EP_ISOLATED_EGRESS, EP_AUDIT_EGRESS);
            view.pods.insert(
                *ifindex,
                PodView {
                    namespace: pod.namespace.clone(),
                    name: pod.name.clone(),
                    slot: u32::from(ep.slot),
                    generation: ep.generation,
                    ingress,
                    egress,
                },
            );
        }
        for (ifindex, ifname) in &ifaces.unknown {
            view.pending
                .entry(*ifindex)
                .or_insert_with(|| format!("interface {ifname} (no pod)"));
        }
        view
    }

    /// The name of a peer address: `node` for the node's own, else the
    /// pod's `namespace/name`.
    pub fn peer(&self, ip: &IpAddr) -> Option<String> {
        if self.node.contains(ip) {
            return Some(NODE_PEER.to_string());
        }
        self.peers.get(ip).map(|n| n.to_string())
    }

    /// Names the node's own addresses as the peer `node` (over any pod
    /// claiming one: the datapath treats them as the node too).
    pub fn name_node(&mut self, addrs: &BTreeSet<IpAddr>) {
        self.node = addrs.clone();
    }
}

/// How events name a peer that is one of the node's own addresses.
pub const NODE_PEER: &str = "node";

/// The current view, shared between the agent (writer) and the readers.
#[derive(Clone, Default)]
pub struct SharedView(Arc<RwLock<Arc<NodeView>>>);

impl SharedView {
    pub fn get(&self) -> Arc<NodeView> {
        Arc::clone(&self.0.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn set(&self, view: NodeView) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(view);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_policy::Model;

    /// The names of a model's pods, as the agent patches them in.
    fn names(model: &Model) -> PeerNames {
        let names = PeerNames::default();
        for p in &model.pods {
            let name: Arc<str> = Arc::from(format!("{}/{}", p.namespace, p.name));
            for ip in &p.ips {
                names.set(*ip, Some(Arc::clone(&name)));
            }
        }
        names
    }

    const MODEL: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: obs, labels: {app: web}}
spec: {nodeName: n1, containers: [{name: c, image: x}]}
status: {phase: Running, podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: far, namespace: obs, labels: {app: far}}
spec: {nodeName: n2, containers: [{name: c, image: x}]}
status: {phase: Running, podIP: 10.0.1.2}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: obs}
spec: {podSelector: {}, policyTypes: [Ingress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: obs}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{ports: [{port: 80}]}]
"#;

    #[test]
    fn the_view_names_interfaces_rule_groups_and_peers() {
        let model = palisade_policy::load_str(MODEL, "m.yaml");
        assert!(model.errors.is_empty(), "{:?}", model.errors);
        let mut alloc = palisade_compiler::IdentityAllocator::new();
        let compiled = palisade_compiler::compile(&model, "n1", &mut alloc);
        let mut ifaces = Interfaces::default();
        ifaces.pods.insert("obs/web".into(), 5);
        ifaces.unknown.insert(9, "cali9".into());
        let view = NodeView::build(&compiled, names(&model), &ifaces, |i| {
            (i == 5).then(|| Endpoint {
                flags: EP_ISOLATED_INGRESS,
                generation: 1,
                slot: 4,
                ..Endpoint::default()
            })
        });
        let web = &view.pods[&5];
        assert_eq!(
            (web.key(), web.slot, web.generation),
            ("obs/web".into(), 4, 1)
        );
        assert!(web.ingress.isolated && !web.ingress.audit);
        assert!(!web.egress.isolated);
        // The default-deny policy isolates without a rule of its own.
        assert_eq!(web.ingress.isolating, ["obs/deny", "obs/web"]);
        assert_eq!(web.ingress.groups.len(), 1);
        assert_eq!(web.ingress.groups[0][0].policy, "obs/web");
        assert_eq!(web.ingress.policies_of_groups(0..1), ["obs/web"]);
        assert!(web.ingress.policies_of_groups(64..usize::MAX).is_empty());
        assert_eq!(view.pending[&9], "interface cali9 (no pod)");
        assert_eq!(view.peer(&"10.0.1.2".parse().unwrap()).unwrap(), "obs/far");
        // Without cluster policies no group is a cluster group.
        assert!(web.ingress.cluster.is_empty());
        assert!(web.ingress.cluster_group(0).is_none());
    }

    #[test]
    fn cluster_groups_keep_their_rules_beside_the_bits() {
        let text = format!(
            "{MODEL}---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {{name: guard}}
spec:
  tier: Admin
  priority: 3
  subject: {{namespaces: {{}}}}
  ingress:
  - {{name: no-far, action: Deny, from: [{{pods: {{namespaceSelector: {{}}, podSelector: {{matchLabels: {{app: far}}}}}}}}]}}
"
        );
        let model = palisade_policy::load_str(&text, "m.yaml");
        assert!(model.errors.is_empty(), "{:?}", model.errors);
        let mut alloc = palisade_compiler::IdentityAllocator::new();
        let compiled = palisade_compiler::compile(&model, "n1", &mut alloc);
        let mut ifaces = Interfaces::default();
        ifaces.pods.insert("obs/web".into(), 5);
        let view = NodeView::build(&compiled, names(&model), &ifaces, |_| {
            Some(Endpoint::default())
        });
        let d = &view.pods[&5].ingress;
        assert_eq!(d.cluster.len(), d.groups.len());
        let first = d.cluster_group(0).expect("the Admin group comes first");
        assert_eq!(
            (first[0].policy.as_str(), first[0].name.as_deref()),
            ("guard", Some("no-far"))
        );
        assert!(d.groups[0].is_empty());
        // The NetworkPolicy group follows, with its rules and no cluster ones.
        assert!(d.cluster_group(1).is_none());
        assert_eq!(d.groups[1][0].policy, "obs/web");
    }
}
