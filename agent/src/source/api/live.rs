//! The model patched key by key from the stores' change journals, so that
//! a round costs what changed, not the cluster: at 150,000 pods building
//! the model whole (a copy of every pod, then a diff of every pod) took
//! most of a second per round.
//!
//! What it keeps equal to [`palisade_policy::assemble`] followed by the
//! last-good rule ([`input::reconcile`]), which `live_model_equals_a_cold_build`
//! checks over random event sequences:
//! - pods: two valid pods claiming one address, the first in key order
//!   wins; the loser is an error and keeps its last accepted version, as
//!   any invalid pod does. A change re-judges only the pods linked to it
//!   by shared addresses (its component), which decides them exactly as a
//!   whole-cluster pass in key order would;
//! - NetworkPolicies are patched key by key too (they claim nothing; a
//!   policy in a namespace nobody declared falls back to the whole pass
//!   below, which makes up the namespace);
//! - every other kind (namespaces, Services, cluster policies, Nodes:
//!   thousands where pods are a hundred thousand) is assembled whole from
//!   its store when one of its objects changed, then diffed.
//!
//! As in the cold build, a namespace nobody declared is made up for the
//! accepted pods living in it, not for a pod kept only by the last-good
//! rule (the compiler reads a missing namespace as one with only its name
//! label, which is what a made-up one has).

use super::convert::Rejected;
use super::store::{Changed, Key, Store};
use super::Stores;
use crate::source::delta;
use crate::source::input::{self, ErrorObject, Verdict};
use k8s_openapi::api::core::v1::Pod as PodObject;
use palisade_compiler::Change;
use palisade_policy::{InputError, Model, Namespace, Pod};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

type PodEntry = Result<Option<Pod>, Box<Rejected>>;

/// The valid pods claiming one address, in key order, each with whether
/// it owns the address.
#[derive(Default)]
struct Claim(Vec<(Key, bool)>);

/// The indexes that patch a model in place; valid for the model its
/// [`Live::load`] or [`Live::update`] last produced.
#[derive(Default)]
pub struct Live {
    claims: HashMap<IpAddr, Claim>,
    /// Accepted pods per namespace (a pod in the model with no error).
    pod_namespaces: HashMap<String, usize>,
    /// Errors of pods: invalid, or an address another pod owns.
    pod_errors: BTreeMap<Key, InputError>,
    /// Errors of namespaces, of policies, then of the other kinds (model
    /// order).
    ns_errors: Vec<InputError>,
    policy_errors: BTreeMap<Key, InputError>,
    other_errors: Vec<InputError>,
    /// Warnings of policies, then of cluster policies (model order).
    policy_warnings: BTreeMap<Key, Vec<InputError>>,
    cluster_warnings: Vec<InputError>,
    /// Every policy in audit mode (`palisade agent --audit`).
    pub audit: bool,
}

/// A stored entry as the assembler takes it.
fn ok<T: Clone>(e: &Arc<Result<T, Box<Rejected>>>) -> Result<T, InputError> {
    (**e).clone().map_err(|r| r.error)
}

/// The addresses a pod entry claims: a valid pod's.
fn claimed(entry: Option<&Arc<PodEntry>>) -> &[IpAddr] {
    match entry.map(|e| &**e) {
        Some(Ok(Some(pod))) => &pod.ips,
        _ => &[],
    }
}

fn pod_key(p: &Pod) -> (&str, &str) {
    (p.namespace.as_str(), p.name.as_str())
}

/// What a pod key is in the model after a change.
enum Judged<'a> {
    Accepted(&'a Pod),
    /// Not taking part in traffic, or deleted.
    Gone,
    /// Keeps its last accepted version.
    Invalid(InputError),
}

impl Live {
    /// Builds the model from every store (and the indexes with it),
    /// forgetting the journals.
    pub fn load(&mut self, stores: &mut Stores) -> Model {
        let audit = self.audit;
        *self = Live {
            audit,
            ..Live::default()
        };
        let mut model = Model::default();
        let pods: Vec<Changed<PodEntry>> = stores
            .pods
            .iter_shared()
            .map(|(k, e)| (k.clone(), None, Some(Arc::clone(e))))
            .collect();
        stores.clear_changes();
        let (mut up, mut down) = (Vec::new(), Vec::new());
        self.patch_pods(pods, &stores.pods, &mut model, &mut up, &mut down);
        self.patch_sections(stores, &mut model, &mut up, &mut down);
        model
    }

    /// Brings `model` to the stores' current contents from their journals
    /// and returns the changes, in the order the compiler takes them:
    /// upserts (namespaces, Nodes and policies before pods), then
    /// deletions (pods first).
    pub fn update(&mut self, stores: &mut Stores, model: &mut Model) -> Vec<Change> {
        let (mut up, mut down) = (Vec::new(), Vec::new());
        let pods = stores.pods.take_changes();
        let crossed = self.patch_pods(pods, &stores.pods, model, &mut up, &mut down);
        let others = stores.namespaces.take_changes().len()
            + stores.services.take_changes().len()
            + stores.cluster_policies.take_changes().len()
            + stores.nodes.take_changes().len();
        let policies = stores.policies.take_changes();
        let whole = others > 0 || crossed || !self.patchable(&policies, stores, model);
        // Namespaces, Nodes and policies are upserted before pods meet
        // them, and deleted after the pods.
        let (mut first, mut last) = (Vec::new(), Vec::new());
        if whole {
            self.patch_sections(stores, model, &mut first, &mut last);
        } else {
            self.patch_policies(policies, model, &mut first, &mut last);
            self.set_errors(model);
        }
        first.append(&mut up);
        first.append(&mut down);
        first.append(&mut last);
        first
    }

    /// Whether policy changes can be patched key by key: every policy
    /// they add or remove lives in a declared namespace (else the whole
    /// pass makes up or drops the namespace).
    fn patchable(
        &self,
        changes: &[Changed<super::convert::PolicyEntry>],
        stores: &Stores,
        model: &Model,
    ) -> bool {
        changes.iter().all(|(k, _, _)| {
            let declared = stores.namespaces.get(&(String::new(), k.0.clone()));
            declared.is_some_and(|e| e.is_ok()) && model.namespaces.contains_key(&k.0)
        })
    }

    /// Puts changed policies in the model: no claims, no last-good rule
    /// (a policy that cannot be understood is in the model as it is).
    fn patch_policies(
        &mut self,
        changes: Vec<Changed<super::convert::PolicyEntry>>,
        model: &mut Model,
        up: &mut Vec<Change>,
        down: &mut Vec<Change>,
    ) {
        for (k, _, now) in changes {
            let at = model
                .policies
                .binary_search_by(|p| (p.namespace.as_str(), p.name.as_str()).cmp(&(&k.0, &k.1)));
            self.policy_errors.remove(&k);
            self.policy_warnings.remove(&k);
            let policy = match now.map(|e| e.policy.clone()) {
                Some(Ok(p)) => Some(p),
                Some(Err(e)) => {
                    self.policy_errors.insert(k.clone(), e);
                    None
                }
                None => None,
            };
            match (policy, at) {
                (Some(mut p), at) => {
                    if self.audit {
                        p.enforcement = palisade_policy::Enforcement::Audit;
                    }
                    let warnings = palisade_policy::warnings_of(&p);
                    if !warnings.is_empty() {
                        self.policy_warnings.insert(k.clone(), warnings);
                    }
                    match at {
                        Ok(i) if model.policies[i] == p => continue,
                        Ok(i) => model.policies[i] = p.clone(),
                        Err(i) => model.policies.insert(i, p.clone()),
                    }
                    up.push(Change::UpsertPolicy(p));
                }
                (None, Ok(i)) => {
                    model.policies.remove(i);
                    down.push(Change::DeletePolicy {
                        namespace: k.0.clone(),
                        name: k.1.clone(),
                    });
                }
                (None, Err(_)) => {}
            }
        }
    }

    /// The rejected pods, for their Events.
    pub fn rejected_pods<'a>(&'a self, pods: &'a Store<PodObject>) -> Vec<Arc<PodEntry>> {
        self.pod_errors
            .keys()
            .filter_map(|k| pods.get(k).cloned())
            .filter(|e| e.is_err())
            .collect()
    }

    /// Patches the pods of `changes` and of their components. True when a
    /// namespace gained its first pod or lost its last one.
    fn patch_pods(
        &mut self,
        changes: Vec<Changed<PodEntry>>,
        store: &Store<PodObject>,
        model: &mut Model,
        up: &mut Vec<Change>,
        down: &mut Vec<Change>,
    ) -> bool {
        let mut keys: BTreeSet<Key> = BTreeSet::new();
        let mut queue: Vec<IpAddr> = Vec::new();
        for (k, was, now) in changes {
            for ip in claimed(was.as_ref()) {
                self.unclaim(*ip, &k);
                queue.push(*ip);
            }
            for ip in claimed(now.as_ref()) {
                self.claim(*ip, &k);
                queue.push(*ip);
            }
            keys.insert(k);
        }
        // Every pod linked to a change by shared addresses is judged again,
        // in key order, owners cleared first.
        let mut seen: HashSet<IpAddr> = HashSet::new();
        while let Some(ip) = queue.pop() {
            if !seen.insert(ip) {
                continue;
            }
            let Some(claim) = self.claims.get_mut(&ip) else {
                continue;
            };
            for (k, owns) in &mut claim.0 {
                *owns = false;
                if keys.insert(k.clone()) {
                    queue.extend_from_slice(claimed(store.get(k)));
                }
            }
        }
        let mut crossed = false;
        for k in &keys {
            let judged = self.judge(k, store.get(k));
            crossed |= self.set_pod(k, judged, model, up, down);
        }
        crossed
    }

    fn claim(&mut self, ip: IpAddr, k: &Key) {
        let c = &mut self.claims.entry(ip).or_default().0;
        if let Err(at) = c.binary_search_by(|(o, _)| o.cmp(k)) {
            c.insert(at, (k.clone(), false));
        }
    }

    fn unclaim(&mut self, ip: IpAddr, k: &Key) {
        if let Some(c) = self.claims.get_mut(&ip) {
            c.0.retain(|(o, _)| o != k);
            if c.0.is_empty() {
                self.claims.remove(&ip);
            }
        }
    }

    /// Accepts a valid pod none of whose addresses an earlier pod owns.
    fn judge<'a>(&mut self, k: &Key, entry: Option<&'a Arc<PodEntry>>) -> Judged<'a> {
        let pod = match entry.map(|e| &**e) {
            None | Some(Ok(None)) => return Judged::Gone,
            Some(Err(r)) => return Judged::Invalid(r.error.clone()),
            Some(Ok(Some(pod))) => pod,
        };
        for ip in &pod.ips {
            let owner = self
                .claims
                .get(ip)
                .and_then(|c| c.0.iter().find(|(_, o)| *o));
            if let Some(((ns, name), _)) = owner {
                return Judged::Invalid(InputError {
                    source: None,
                    object: format!("Pod {}/{}", k.0, k.1),
                    field: "status.podIPs".into(),
                    message: format!(
                        "address {ip} is already the address of running pod {ns}/{name}"
                    ),
                });
            }
        }
        for ip in &pod.ips {
            if let Some(c) = self.claims.get_mut(ip) {
                for (o, owns) in &mut c.0 {
                    *owns = o == k;
                }
            }
        }
        Judged::Accepted(pod)
    }

    /// Puts one pod key's judgement in the model. True when its namespace
    /// gained its first accepted pod or lost its last one.
    fn set_pod(
        &mut self,
        k: &Key,
        judged: Judged,
        model: &mut Model,
        up: &mut Vec<Change>,
        down: &mut Vec<Change>,
    ) -> bool {
        let at = model
            .pods
            .binary_search_by(|p| pod_key(p).cmp(&(k.0.as_str(), k.1.as_str())));
        let was_accepted = at.is_ok() && !self.pod_errors.contains_key(k);
        let accepted = matches!(judged, Judged::Accepted(_));
        match (judged, at) {
            (Judged::Invalid(e), _) => {
                self.pod_errors.insert(k.clone(), e);
            }
            (Judged::Accepted(pod), Ok(i)) => {
                self.pod_errors.remove(k);
                if model.pods[i] != *pod {
                    model.pods[i] = pod.clone();
                    up.push(Change::UpsertPod(pod.clone()));
                }
            }
            (Judged::Accepted(pod), Err(i)) => {
                self.pod_errors.remove(k);
                model.pods.insert(i, pod.clone());
                up.push(Change::UpsertPod(pod.clone()));
            }
            (Judged::Gone, Ok(i)) => {
                self.pod_errors.remove(k);
                model.pods.remove(i);
                down.push(Change::DeletePod {
                    namespace: k.0.clone(),
                    name: k.1.clone(),
                });
            }
            (Judged::Gone, Err(_)) => {
                self.pod_errors.remove(k);
            }
        }
        was_accepted != accepted && self.count(&k.0, accepted)
    }

    /// Counts a pod in or out of its namespace; true when the namespace
    /// gained its first pod or lost its last one.
    fn count(&mut self, ns: &str, added: bool) -> bool {
        if added {
            let n = self.pod_namespaces.entry(ns.to_string()).or_default();
            *n += 1;
            return *n == 1;
        }
        match self.pod_namespaces.get_mut(ns) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                self.pod_namespaces.remove(ns);
                true
            }
            None => false,
        }
    }

    /// Assembles every kind but pods whole from the stores, applies the
    /// last-good rule against the model's current sections, and diffs.
    fn patch_sections(
        &mut self,
        stores: &Stores,
        model: &mut Model,
        up: &mut Vec<Change>,
        down: &mut Vec<Change>,
    ) {
        let mut part = palisade_policy::assemble(
            stores.namespaces.iter_shared().map(|(_, e)| ok(e)),
            std::iter::empty(),
            stores.policies.iter().map(|(_, e)| e.policy.clone()),
            stores.services.iter_shared().map(|(_, e)| ok(e)),
        );
        palisade_policy::assemble_cluster(
            &mut part,
            stores.cluster_policies.iter_shared().map(|(_, e)| ok(e)),
            stores.nodes.iter_shared().map(|(_, e)| ok(e)),
        );
        if self.audit {
            part.audit_all();
        }
        for ns in self.pod_namespaces.keys() {
            if !part.namespaces.contains_key(ns) {
                part.namespaces
                    .insert(ns.clone(), Namespace::undeclared(ns));
            }
        }
        let prev = take_sections(model);
        let mut next = match input::reconcile(part, Some(&prev)) {
            Verdict::Use(next) => next,
            // Every error of the API source names its object, so this is
            // not reached; were it, the enforced sections stay, errors
            // and all.
            Verdict::Hold(..) => return put_sections(model, prev),
        };
        let (u, d) = delta::split(&prev, &next);
        up.extend(u);
        down.extend(d);
        self.ns_errors.clear();
        self.policy_errors.clear();
        self.other_errors.clear();
        for e in std::mem::take(&mut next.errors) {
            match input::error_object(&e) {
                Some(ErrorObject::Namespace(_)) => self.ns_errors.push(e),
                Some(ErrorObject::Policy(ns, name)) => {
                    self.policy_errors.insert((ns, name), e);
                }
                _ => self.other_errors.push(e),
            }
        }
        self.policy_warnings.clear();
        self.cluster_warnings.clear();
        for w in std::mem::take(&mut next.warnings) {
            match input::error_object(&w) {
                Some(ErrorObject::Policy(ns, name)) => {
                    self.policy_warnings.entry((ns, name)).or_default().push(w)
                }
                _ => self.cluster_warnings.push(w),
            }
        }
        put_sections(model, next);
        self.set_errors(model);
    }

    /// The model's errors and warnings in the order a cold build gives
    /// them.
    fn set_errors(&self, model: &mut Model) {
        model.errors = self
            .ns_errors
            .iter()
            .chain(self.pod_errors.values())
            .chain(self.policy_errors.values())
            .chain(&self.other_errors)
            .cloned()
            .collect();
        model.warnings = self
            .policy_warnings
            .values()
            .flatten()
            .chain(&self.cluster_warnings)
            .cloned()
            .collect();
    }
}

/// The sections of `model` other than pods (and errors), taken out.
fn take_sections(model: &mut Model) -> Model {
    Model {
        namespaces: std::mem::take(&mut model.namespaces),
        policies: std::mem::take(&mut model.policies),
        services: std::mem::take(&mut model.services),
        cluster_policies: std::mem::take(&mut model.cluster_policies),
        nodes: std::mem::take(&mut model.nodes),
        ..Model::default()
    }
}

/// Puts the sections [`take_sections`] takes into `model`.
fn put_sections(model: &mut Model, from: Model) {
    model.namespaces = from.namespaces;
    model.policies = from.policies;
    model.services = from.services;
    model.cluster_policies = from.cluster_policies;
    model.nodes = from.nodes;
}

#[cfg(test)]
mod tests;
