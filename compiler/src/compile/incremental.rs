//! The incremental compiler: applies one change at a time and recompiles
//! only the local pods it can affect.
//!
//! What a change can affect:
//! - a pod: the identity trie (its addresses); the pod itself when local;
//!   local pods with a pod peer selecting an identity the change created or
//!   freed; local pods with egress named-port rules whose peers cover the
//!   pod before or after (their CIDR entries list the pods naming a port).
//! - a policy: local pods of its namespace it selects before or after.
//! - a namespace's labels: any namespaceSelector anywhere; rare, so every
//!   local pod is recompiled.
//! - a Service: only the node's ClusterIP set (policies never name
//!   Services; ClusterIP traffic is judged by backend after DNAT).

use super::affected::PodView;
use super::cluster::{object_key, Cluster, Removed};
use super::pod::{compile_pod, PeerIndex};
use super::services::ServiceIps;
use crate::identity::{IdentityAllocator, IdentityKey};
use crate::types::CompiledNode;
use crate::types::Frontend;
use palisade_policy::{ClusterPeer, ClusterPolicy, Model, Namespace, Node, Pod, Policy, Service};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

/// One change to the cluster.
#[derive(Clone, Debug)]
pub enum Change {
    UpsertPod(Pod),
    DeletePod { namespace: String, name: String },
    UpsertPolicy(Policy),
    DeletePolicy { namespace: String, name: String },
    UpsertNamespace(Namespace),
    DeleteNamespace { name: String },
    UpsertService(Service),
    DeleteService { namespace: String, name: String },
    UpsertClusterPolicy(ClusterPolicy),
    DeleteClusterPolicy { name: String },
    UpsertNode(Node),
    DeleteNode { name: String },
}

/// What one change did to the compiled node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Local pods (`namespace/name`) recompiled, added or removed.
    pub pods: BTreeSet<String>,
    /// The node-wide identity trie changed.
    pub identities: bool,
    /// The node's ClusterIP set changed.
    pub services: bool,
}

pub struct Compiler {
    pub(super) node: String,
    pub(super) cluster: Cluster,
    /// Local pods, whole (the compile reads their labels and ports).
    pub(super) local: BTreeMap<String, Pod>,
    /// Which pod owns each address in the identity trie.
    pub(super) ip_owner: HashMap<IpAddr, Arc<str>>,
    pub(super) out: CompiledNode,
    pub(super) peer_index: HashMap<String, PeerIndex>,
    pub(super) services: ServiceIps,
    /// Addresses whose entry in the identity trie changed since the last
    /// [`Compiler::take_identity_changes`]; `None`: any may have (a cold
    /// build), so the writer compares them all.
    identity_changes: Option<BTreeSet<IpAddr>>,
}

impl Compiler {
    pub fn new(node: &str) -> Compiler {
        Compiler::with_allocator(node, IdentityAllocator::new())
    }

    pub fn with_allocator(node: &str, alloc: IdentityAllocator) -> Compiler {
        Compiler {
            node: node.to_string(),
            cluster: Cluster {
                alloc,
                ..Cluster::default()
            },
            local: BTreeMap::new(),
            ip_owner: HashMap::new(),
            out: CompiledNode::default(),
            peer_index: HashMap::new(),
            services: ServiceIps::default(),
            identity_changes: None,
        }
    }

    /// Loads a whole model and compiles every local pod once. Identities
    /// of `alloc` keep their numbers when their label set is in the model;
    /// the others (seeded or left from an earlier model) are freed.
    pub fn from_model(model: &Model, node: &str, mut alloc: IdentityAllocator) -> Compiler {
        alloc.reset_refs();
        let mut c = Compiler::with_allocator(node, alloc);
        for ns in model.namespaces.values() {
            c.cluster.namespaces.insert(ns.name.clone(), ns.clone());
        }
        for p in &model.policies {
            c.cluster
                .policies
                .entry(p.namespace.clone())
                .or_default()
                .insert(p.name.clone(), p.clone());
        }
        c.cluster.set_tiers(
            Some(model.cluster_policies.clone()),
            Some(model.nodes.clone()),
        );
        c.services.load(&model.services, &mut c.out.services);
        c.cluster.pods.reserve(model.pods.len());
        c.ip_owner.reserve(model.pods.len() * 2);
        // The identity trie is built in one go (sorted bulk build) rather
        // than entry by entry.
        let mut trie: Vec<(IpAddr, u32, Arc<str>)> = Vec::with_capacity(model.pods.len() * 2);
        let mut shared_addrs = false;
        for pod in &model.pods {
            let key: Arc<str> = Arc::from(object_key(&pod.namespace, &pod.name));
            if c.cluster.pods.contains_key(&key) {
                c.remove_pod_state(&key);
                trie.retain(|(_, _, k)| *k != key);
            }
            let id = c.cluster.add_pod(key.clone(), pod);
            for ip in &pod.ips {
                trie.push((*ip, id, key.clone()));
                shared_addrs |= c.ip_owner.insert(*ip, key.clone()).is_some();
            }
            if pod.node.as_deref() == Some(node) {
                c.local.insert(key.to_string(), pod.clone());
            }
        }
        // An address claimed by two pods goes to the last one, as with
        // one-by-one inserts.
        if shared_addrs {
            trie.retain(|(ip, _, k)| c.ip_owner.get(ip).is_some_and(|o| Arc::ptr_eq(o, k)));
        }
        c.out.identities = trie.into_iter().map(|(ip, id, _)| (ip, id)).collect();
        c.cluster.alloc.free_unreferenced();
        let keys: Vec<String> = c.local.keys().cloned().collect();
        for key in keys {
            c.recompile(&key);
        }
        c
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// The compiled state of every local pod and the identity trie.
    pub fn compiled(&self) -> &CompiledNode {
        &self.out
    }

    pub fn allocator(&self) -> &IdentityAllocator {
        &self.cluster.alloc
    }

    /// The addresses whose identity entry may have changed since the last
    /// call (`None`: any, after a cold build), so that writing the trie
    /// costs what changed. Starts a new journal.
    pub fn take_identity_changes(&mut self) -> Option<BTreeSet<IpAddr>> {
        self.identity_changes.replace(BTreeSet::new())
    }

    /// The pod (`namespace/name`) whose address `ip` is in the trie.
    pub fn pod_at(&self, ip: &IpAddr) -> Option<&Arc<str>> {
        self.ip_owner.get(ip)
    }

    /// Every address in the trie with its pod.
    pub fn pod_addresses(&self) -> impl Iterator<Item = (&IpAddr, &Arc<str>)> {
        self.ip_owner.iter()
    }

    fn identity_changed(&mut self, ip: IpAddr) {
        if let Some(s) = &mut self.identity_changes {
            s.insert(ip);
        }
    }

    pub fn into_parts(self) -> (CompiledNode, IdentityAllocator) {
        (self.out, self.cluster.alloc)
    }

    pub fn apply(&mut self, change: Change) -> Applied {
        match change {
            Change::UpsertPod(pod) => self.upsert_pod(Some(pod), None),
            Change::DeletePod { namespace, name } => {
                self.upsert_pod(None, Some(object_key(&namespace, &name)))
            }
            Change::UpsertPolicy(p) => {
                let (ns, name) = (p.namespace.clone(), p.name.clone());
                let old = self
                    .cluster
                    .policies
                    .entry(ns.clone())
                    .or_default()
                    .insert(name, p.clone());
                self.policy_changed(&ns, old.as_ref(), Some(&p))
            }
            Change::DeletePolicy { namespace, name } => {
                let old = self
                    .cluster
                    .policies
                    .get_mut(&namespace)
                    .and_then(|m| m.remove(&name));
                if self
                    .cluster
                    .policies
                    .get(&namespace)
                    .is_some_and(|m| m.is_empty())
                {
                    self.cluster.policies.remove(&namespace);
                }
                self.policy_changed(&namespace, old.as_ref(), None)
            }
            Change::UpsertNamespace(ns) => {
                let old = self.cluster.namespaces.insert(ns.name.clone(), ns.clone());
                if old.is_some_and(|o| o.labels == ns.labels) {
                    return Applied::default();
                }
                self.recompile_all()
            }
            Change::DeleteNamespace { name } => {
                if self.cluster.namespaces.remove(&name).is_none() {
                    return Applied::default();
                }
                self.recompile_all()
            }
            Change::UpsertService(s) => Applied {
                services: self.services.set(
                    &s.key(),
                    Some(&Frontend::of(&s)),
                    &mut self.out.services,
                ),
                ..Applied::default()
            },
            Change::DeleteService { namespace, name } => Applied {
                services: self.services.set(
                    &object_key(&namespace, &name),
                    None,
                    &mut self.out.services,
                ),
                ..Applied::default()
            },
            Change::UpsertClusterPolicy(p) => self.cluster_policy_changed(&p.name.clone(), Some(p)),
            Change::DeleteClusterPolicy { name } => self.cluster_policy_changed(&name, None),
            Change::UpsertNode(n) => self.node_changed(&n.name.clone(), Some(n)),
            Change::DeleteNode { name } => self.node_changed(&name, None),
        }
    }

    /// A cluster policy can select any pod of any namespace: every local
    /// pod is recompiled (rare next to pod changes).
    fn cluster_policy_changed(&mut self, name: &str, new: Option<ClusterPolicy>) -> Applied {
        let mut policies: Vec<ClusterPolicy> = self
            .cluster
            .tiers
            .drain(..)
            .map(|t| t.policy)
            .filter(|p| p.name != name)
            .collect();
        policies.extend(new);
        self.cluster.set_tiers(Some(policies), None);
        self.recompile_all()
    }

    /// A Node matters only to policies with `nodes` peers.
    fn node_changed(&mut self, name: &str, new: Option<Node>) -> Applied {
        let old = self.cluster.nodes.get(name);
        if old == new.as_ref() {
            return Applied::default();
        }
        let mut nodes: Vec<Node> = std::mem::take(&mut self.cluster.nodes)
            .into_values()
            .filter(|n| n.name != name)
            .collect();
        nodes.extend(new);
        self.cluster.set_tiers(None, Some(nodes));
        let uses_nodes = self.cluster.tiers.iter().any(|t| {
            let p = &t.policy;
            p.ingress
                .iter()
                .chain(&p.egress)
                .flat_map(|r| &r.peers)
                .any(|peer| matches!(peer, ClusterPeer::Nodes(_)))
        });
        if uses_nodes {
            self.recompile_all()
        } else {
            Applied::default()
        }
    }

    fn recompile_all(&mut self) -> Applied {
        self.cluster.peers.clear();
        let pods: BTreeSet<String> = self.local.keys().cloned().collect();
        for key in &pods {
            self.recompile(key);
        }
        Applied {
            pods,
            ..Applied::default()
        }
    }

    fn policy_changed(&mut self, ns: &str, old: Option<&Policy>, new: Option<&Policy>) -> Applied {
        if let Some(p) = old.or(new) {
            self.cluster.peers.policy_changed(&p.namespace, &p.name);
        }
        let mut applied = Applied::default();
        let prefix = format!("{ns}/");
        let affected: Vec<String> = self
            .local
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(_, pod)| {
                [old, new]
                    .into_iter()
                    .flatten()
                    .any(|p| p.pod_selector.matches(&pod.labels))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in affected {
            self.recompile(&key);
            applied.pods.insert(key);
        }
        applied
    }

    fn upsert_pod(&mut self, new: Option<Pod>, delete_key: Option<String>) -> Applied {
        let key = match (&new, delete_key) {
            (Some(p), _) => object_key(&p.namespace, &p.name),
            (None, Some(k)) => k,
            (None, None) => return Applied::default(),
        };
        let mut applied = Applied::default();
        let new_existed = new.as_ref().is_some_and(|p| {
            self.cluster.ids_by_ns.get(&p.namespace).is_some_and(|ids| {
                self.cluster
                    .alloc
                    .get_parts(&p.namespace, &p.labels)
                    .is_some_and(|id| ids.contains_key(&id))
            })
        });
        // Hold the new label set's identity while the old pod goes, so that
        // a pod keeping its labels keeps its number.
        let guard = new
            .as_ref()
            .map(|p| self.cluster.alloc.acquire_parts(&p.namespace, &p.labels));
        let old = self.remove_pod_state(&key).map(|r| PodView {
            key: r.identity,
            id: r.entry.identity,
            ips: r.entry.ips,
            ports: r.entry.ports,
            identity_changed: r.freed,
        });
        let new = new.map(|pod| {
            let id = self.add_pod_state(&pod);
            PodView {
                id,
                key: IdentityKey {
                    namespace: pod.namespace.clone(),
                    labels: pod.labels.clone(),
                },
                ips: pod.ips.clone(),
                ports: pod.ports.clone(),
                identity_changed: !new_existed,
            }
        });
        if let Some(id) = guard {
            self.cluster.alloc.release(id);
        }
        // A label set that went and came back in one change is unchanged
        // for everyone else.
        let same_identity = matches!((&old, &new), (Some(o), Some(n)) if o.key == n.key);
        let old_ips = old.as_ref().map(|v| v.ips.clone()).unwrap_or_default();
        let new_ips = new.as_ref().map(|v| v.ips.clone()).unwrap_or_default();
        applied.identities = old_ips != new_ips || !same_identity;

        if self.local.contains_key(&key) {
            self.recompile(&key);
            applied.pods.insert(key.clone());
        } else if self.out.pods.remove(&key).is_some() {
            self.peer_index.remove(&key);
            applied.pods.insert(key.clone());
        }

        let views: Vec<&PodView> = [&old, &new].into_iter().flatten().collect();
        let identity_views: Vec<&PodView> = if same_identity {
            Vec::new()
        } else {
            views
                .iter()
                .copied()
                .filter(|v| v.identity_changed)
                .collect()
        };
        let named_relevant = match (&old, &new) {
            (Some(o), Some(n)) => {
                (!o.ports.is_empty() || !n.ports.is_empty())
                    && (o.ports != n.ports || o.ips != n.ips || o.key != n.key)
            }
            _ => views.iter().any(|v| !v.ports.is_empty()),
        };
        if identity_views.is_empty() && !named_relevant {
            return applied;
        }
        let named_views: &[&PodView] = if named_relevant { &views } else { &[] };
        let freed: Vec<u32> = identity_views
            .iter()
            .filter(|v| old.as_ref().is_some_and(|o| o.id == v.id))
            .map(|v| v.id)
            .collect();
        let created: Vec<u32> = identity_views
            .iter()
            .filter(|v| new.as_ref().is_some_and(|n| n.id == v.id))
            .map(|v| v.id)
            .collect();
        let mut full = Vec::new();
        let mut patch = Vec::new();
        for (k, pod) in &self.local {
            if *k == key {
                continue;
            }
            if !named_views.is_empty() && self.affected_by(pod, &[], named_views) {
                full.push(k.clone());
            } else if !identity_views.is_empty() && self.affected_by(pod, &identity_views, &[]) {
                let patchable = self
                    .peer_index
                    .get(k)
                    .is_some_and(|i| i.dirs.iter().all(|d| d.patchable))
                    && self.out.pods.get(k).is_some_and(|p| p.error.is_none());
                if patchable {
                    patch.push(k.clone());
                } else {
                    full.push(k.clone());
                }
            }
        }
        for k in full {
            self.recompile(&k);
            applied.pods.insert(k);
        }
        for k in patch {
            if self.patch_identities(&k, &freed, &created) {
                applied.pods.insert(k);
            }
        }
        applied
    }

    /// Adds a pod to the indexes and the identity trie.
    fn add_pod_state(&mut self, pod: &Pod) -> u32 {
        let key: Arc<str> = Arc::from(object_key(&pod.namespace, &pod.name));
        let id = self.cluster.add_pod(key.clone(), pod);
        for ip in &pod.ips {
            self.out.identities.insert(*ip, id);
            self.ip_owner.insert(*ip, key.clone());
            self.identity_changed(*ip);
        }
        if pod.node.as_deref() == Some(self.node.as_str()) {
            self.local.insert(key.to_string(), pod.clone());
        }
        id
    }

    fn remove_pod_state(&mut self, key: &str) -> Option<Removed> {
        let removed = self.cluster.remove_pod(key)?;
        for ip in &removed.entry.ips {
            if self.ip_owner.get(ip).is_some_and(|o| &**o == key) {
                self.ip_owner.remove(ip);
                self.out.identities.remove(ip);
                self.identity_changed(*ip);
            }
        }
        self.local.remove(key);
        Some(removed)
    }

    fn recompile(&mut self, key: &str) {
        let Some(pod) = self.local.get(key) else {
            self.out.pods.remove(key);
            self.peer_index.remove(key);
            return;
        };
        let (compiled, index) = compile_pod(&self.cluster, pod);
        self.out.pods.insert(key.to_string(), compiled);
        self.peer_index.insert(key.to_string(), index);
    }
}
