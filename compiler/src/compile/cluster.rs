//! The compiler's view of the cluster, indexed for the questions a compile
//! asks: which policies live in a namespace, which identities exist in a
//! namespace, which pods declare a named port, what a peer selects.
//!
//! Remote pods are kept compact (their labels live once, in their
//! identity): a large cluster has far more of them than local ones.

use super::peers::PeerCache;
use super::tiers::TierPolicy;
use crate::identity::{IdentityAllocator, IdentityKey};
use ipnetwork::IpNetwork;
use palisade_policy::{
    ClusterPolicy, Labels, NamedPort, Namespace, Node, Peer, Pod, Policy, Selector,
};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

/// `namespace/name`, the key of pods and policies.
pub fn object_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// What the compiler keeps of any pod.
#[derive(Clone, Debug)]
pub struct PodEntry {
    pub namespace: Arc<str>,
    pub identity: u32,
    pub ips: Vec<IpAddr>,
    pub ports: Vec<NamedPort>,
}

/// A removed pod: its entry and label set, and whether that was the last
/// pod of its identity.
pub struct Removed {
    pub entry: PodEntry,
    pub identity: IdentityKey,
    pub freed: bool,
}

#[derive(Debug, Default)]
pub struct Cluster {
    pub namespaces: BTreeMap<String, Namespace>,
    pub pods: HashMap<Arc<str>, PodEntry>,
    /// Namespace -> policy name -> policy (sorted: group order follows it).
    pub policies: HashMap<String, BTreeMap<String, Policy>>,
    pub alloc: IdentityAllocator,
    /// Namespace -> identity -> number of pods having it.
    pub ids_by_ns: HashMap<String, BTreeMap<u32, usize>>,
    /// Container port name -> namespace -> pods declaring it.
    pub named: HashMap<String, BTreeMap<Arc<str>, HashSet<Arc<str>>>>,
    /// Identities each pod peer selects, kept up to date as identities come
    /// and go.
    pub peers: PeerCache,
    pub ns_names: HashSet<Arc<str>>,
    /// ClusterNetworkPolicies in evaluation order, read against `nodes`.
    pub tiers: Vec<TierPolicy>,
    /// Nodes by name, for `nodes` peers.
    pub nodes: BTreeMap<String, Node>,
}

impl Cluster {
    /// Labels of namespace `ns`; one missing from the model still has the
    /// label the API server puts on every namespace (as the oracle says).
    pub fn ns_labels(&self, ns: &str) -> Cow<'_, Labels> {
        match self.namespaces.get(ns) {
            Some(n) => Cow::Borrowed(&n.labels),
            None => Cow::Owned(Namespace::undeclared(ns).labels),
        }
    }

    fn intern_ns(&mut self, ns: &str) -> Arc<str> {
        if let Some(n) = self.ns_names.get(ns) {
            return n.clone();
        }
        let n: Arc<str> = Arc::from(ns);
        self.ns_names.insert(n.clone());
        n
    }

    /// Replaces the cluster policies and Nodes (either may be `None`: kept),
    /// reading every policy again against the Nodes.
    pub fn set_tiers(&mut self, policies: Option<Vec<ClusterPolicy>>, nodes: Option<Vec<Node>>) {
        if let Some(nodes) = nodes {
            self.nodes = nodes.into_iter().map(|n| (n.name.clone(), n)).collect();
        }
        let mut policies =
            policies.unwrap_or_else(|| self.tiers.drain(..).map(|t| t.policy).collect());
        policies.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
        self.tiers = policies
            .into_iter()
            .map(|p| TierPolicy::new(p, &self.nodes))
            .collect();
    }

    /// Labels of a pod entry (those of its identity).
    pub fn labels_of(&self, entry: &PodEntry) -> &Labels {
        static NONE: std::sync::LazyLock<Labels> = std::sync::LazyLock::new(Labels::new);
        self.alloc.key(entry.identity).map_or(&NONE, |k| &k.labels)
    }

    /// Adds a pod (the caller removes any previous version first). Returns
    /// its key and identity.
    pub fn add_pod(&mut self, key: Arc<str>, pod: &Pod) -> u32 {
        let id = self.alloc.acquire_parts(&pod.namespace, &pod.labels);
        let ids = match self.ids_by_ns.get_mut(&pod.namespace) {
            Some(ids) => ids,
            None => self.ids_by_ns.entry(pod.namespace.clone()).or_default(),
        };
        let count = ids.entry(id).or_insert(0);
        *count += 1;
        if *count == 1 {
            let ns_labels = self.ns_labels(&pod.namespace).into_owned();
            self.peers
                .identity_created(id, &pod.namespace, &ns_labels, &pod.labels);
        }
        let namespace = self.intern_ns(&pod.namespace);
        for p in &pod.ports {
            let by_ns = match self.named.get_mut(&p.name) {
                Some(by_ns) => by_ns,
                None => self.named.entry(p.name.clone()).or_default(),
            };
            by_ns
                .entry(namespace.clone())
                .or_default()
                .insert(key.clone());
        }
        self.pods.insert(
            key,
            PodEntry {
                namespace,
                identity: id,
                ips: pod.ips.clone(),
                ports: pod.ports.clone(),
            },
        );
        id
    }

    pub fn remove_pod(&mut self, key: &str) -> Option<Removed> {
        let (key, entry) = self.pods.remove_entry(key)?;
        let identity = self
            .alloc
            .key(entry.identity)
            .cloned()
            .unwrap_or_else(|| IdentityKey {
                namespace: entry.namespace.to_string(),
                labels: Labels::new(),
            });
        let ns: &str = &entry.namespace;
        let mut freed = false;
        if let Some(ids) = self.ids_by_ns.get_mut(ns) {
            if let Some(count) = ids.get_mut(&entry.identity) {
                *count -= 1;
                if *count == 0 {
                    ids.remove(&entry.identity);
                    freed = true;
                }
            }
            if ids.is_empty() {
                self.ids_by_ns.remove(ns);
            }
        }
        if freed {
            self.peers.identity_freed(entry.identity);
        }
        self.alloc.release(entry.identity);
        for p in &entry.ports {
            if let Some(by_ns) = self.named.get_mut(&p.name) {
                if let Some(set) = by_ns.get_mut(&entry.namespace) {
                    set.remove(&key);
                    if set.is_empty() {
                        by_ns.remove(&entry.namespace);
                    }
                }
                if by_ns.is_empty() {
                    self.named.remove(&p.name);
                }
            }
        }
        Some(Removed {
            entry,
            identity,
            freed,
        })
    }

    /// The pods declaring port `name` that a rule's peers may cover: only
    /// the namespaces its pod peers can select, unless an ipBlock (or no
    /// peer list) can reach any pod.
    pub fn named_candidates<'a>(
        &'a self,
        name: &str,
        policy_ns: &str,
        peers: Option<&[Peer]>,
    ) -> Vec<&'a Arc<str>> {
        let Some(by_ns) = self.named.get(name) else {
            return Vec::new();
        };
        let all = || by_ns.values().flatten().collect();
        let Some(peers) = peers else { return all() };
        if peers.iter().any(|p| matches!(p, Peer::IpBlock { .. })) {
            return all();
        }
        by_ns
            .iter()
            .filter(|(ns, _)| {
                peers.iter().any(|p| match p {
                    Peer::Pods {
                        namespaces: None, ..
                    } => &***ns == policy_ns,
                    Peer::Pods {
                        namespaces: Some(sel),
                        ..
                    } => sel.matches(&self.ns_labels(ns)),
                    Peer::IpBlock { .. } => true,
                })
            })
            .flat_map(|(_, pods)| pods)
            .collect()
    }

    /// Policies of `ns` that select a pod with `labels`, in name order.
    pub fn selecting<'a>(
        &'a self,
        ns: &str,
        labels: &'a Labels,
    ) -> impl Iterator<Item = &'a Policy> + 'a {
        self.policies
            .get(ns)
            .into_iter()
            .flat_map(|m| m.values())
            .filter(move |p| p.pod_selector.matches(labels))
    }

    /// Every identity a pod peer of a policy in `policy_ns` selects,
    /// computed from the indexes (the cache calls this on a miss).
    pub fn resolve_peer(
        &self,
        policy_ns: &str,
        namespaces: Option<&Selector>,
        pods: Option<&Selector>,
    ) -> BTreeSet<u32> {
        let mut out = BTreeSet::new();
        let mut visit = |ids: &BTreeMap<u32, usize>| match pods {
            Some(sel) if !sel.is_empty() => {
                for id in ids.keys() {
                    if let Some(key) = self.alloc.key(*id) {
                        if sel.matches(&key.labels) {
                            out.insert(*id);
                        }
                    }
                }
            }
            _ => out.extend(ids.keys().copied()),
        };
        match namespaces {
            None => {
                if let Some(ids) = self.ids_by_ns.get(policy_ns) {
                    visit(ids);
                }
            }
            Some(sel) => {
                for (ns, ids) in &self.ids_by_ns {
                    if sel.matches(&self.ns_labels(ns)) {
                        visit(ids);
                    }
                }
            }
        }
        out
    }

    /// Whether a pod peer of a policy in `policy_ns` selects pods of
    /// namespace `ns` with `labels`.
    pub fn peer_selects(
        &self,
        policy_ns: &str,
        namespaces: Option<&Selector>,
        pods: Option<&Selector>,
        ns: &str,
        labels: &Labels,
    ) -> bool {
        super::peers::selects(policy_ns, namespaces, pods, ns, &self.ns_labels(ns), labels)
    }

    /// The addresses of a pod that a peer list covers (`None`: every peer).
    pub fn covered_addrs(
        &self,
        policy_ns: &str,
        peers: Option<&[Peer]>,
        ns: &str,
        labels: &Labels,
        ips: &[IpAddr],
    ) -> Vec<IpAddr> {
        let Some(peers) = peers else {
            return ips.to_vec();
        };
        let mut out: Vec<IpAddr> = Vec::new();
        for peer in peers {
            match peer {
                Peer::Pods { namespaces, pods } => {
                    if self.peer_selects(policy_ns, namespaces.as_ref(), pods.as_ref(), ns, labels)
                    {
                        return ips.to_vec();
                    }
                }
                Peer::IpBlock { cidr, except } => {
                    for ip in ips {
                        if block_contains(cidr, except, *ip) && !out.contains(ip) {
                            out.push(*ip);
                        }
                    }
                }
            }
        }
        out
    }
}

/// `ip` is in `cidr` and in none of the `except` holes.
pub fn block_contains(cidr: &IpNetwork, except: &[IpNetwork], ip: IpAddr) -> bool {
    cidr.contains(ip) && !except.iter().any(|e| e.contains(ip))
}
