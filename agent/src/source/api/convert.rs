//! What the stores keep of each kind: the object converted into the
//! model's own form when its watch event arrives (`palisade_policy::convert`),
//! never the API object. At 150k pods a k8s-openapi `Pod`, even with only
//! the fields the model reads, is several times the model's pod; and
//! converting once per event instead of once per object per round takes
//! validation out of every round.
//!
//! A converted object that fails validation is kept as its error, so the
//! round still reports it (and it gets its Event). Objects are watched
//! through [`Lenient`]: one whose JSON does not have the shape of its
//! k8s-openapi type (a number where a selector belongs) would otherwise
//! fail the whole list, and the agent would never sync. Such an object is
//! an error too (a Pod, Namespace or Service: left out), except a
//! NetworkPolicy, which is read as far as it goes and enforced as not
//! understood (isolating with nothing allowed).

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::networking::v1 as net;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use palisade_policy::crd::ClusterNetworkPolicy;
use palisade_policy::{
    convert, ClusterPolicy, FieldIssue, InputError, Namespace, Node, Pod, Policy, Service,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use std::borrow::Cow;

/// A kind the API source watches (the k8s-openapi type), and its stored
/// form. Entries are compared to tell a change from an update of fields
/// the model does not read (pod conditions, annotations, a Service's load
/// balancer status): those cost no round.
pub trait Kind:
    Resource<DynamicType = ()> + DeserializeOwned + Clone + std::fmt::Debug + Send + Sync + 'static
{
    type Entry: PartialEq + Send + Sync;
    /// Whether an object that does not deserialize keeps its JSON, for
    /// [`Kind::broken`] to read what it can of it.
    const KEEP_JSON: bool = false;
    fn convert(&self) -> Self::Entry;
    /// The entry of an object whose JSON does not have the shape of `Self`.
    fn broken(b: &Broken) -> Self::Entry;
}

/// An object the agent skips, and what its Event is about: kind, name and
/// uid (`kubectl describe` matches Events on the uid).
#[derive(Clone, Debug, PartialEq)]
pub struct Rejected {
    pub error: InputError,
    pub regarding: ObjectReference,
}

impl Rejected {
    /// Boxed: entries of valid objects, nearly all of them, stay small.
    fn new<K: Kind>(error: InputError, meta: &ObjectMeta) -> Box<Self> {
        Box::new(Rejected {
            error,
            regarding: ObjectReference {
                api_version: Some(K::api_version(&()).into_owned()),
                kind: Some(K::kind(&()).into_owned()),
                namespace: meta.namespace.clone(),
                name: meta.name.clone(),
                uid: meta.uid.clone(),
                ..ObjectReference::default()
            },
        })
    }
}

/// An object whose JSON does not have the shape of its type.
#[derive(Clone, Debug)]
pub struct Broken {
    /// Name, namespace, uid and resourceVersion, read loosely.
    meta: ObjectMeta,
    issue: FieldIssue,
    /// The JSON, for kinds that read what they can of it.
    json: Option<Value>,
}

impl Broken {
    fn rejected<K: Kind>(&self) -> Box<Rejected> {
        let kind = K::kind(&());
        let error = convert::undeserializable(&kind, &self.meta, self.issue.clone());
        Rejected::new::<K>(error, &self.meta)
    }
}

/// An object as listed or watched: the typed object, or what could be read
/// of one that does not deserialize. What the watchers ask for, so that a
/// single malformed object never fails a list or a watch.
#[derive(Clone, Debug)]
pub struct Lenient<K>(Result<K, Box<Broken>>);

impl<K> From<K> for Lenient<K> {
    fn from(k: K) -> Self {
        Lenient(Ok(k))
    }
}

impl<K: Kind> Lenient<K> {
    /// The stored form.
    pub fn entry(&self) -> K::Entry {
        match &self.0 {
            Ok(k) => k.convert(),
            Err(b) => K::broken(b),
        }
    }
}

impl<'de, K: Kind> Deserialize<'de> for Lenient<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Only input that is not JSON at all fails here (and fails the
        // response, as before).
        let value = Value::deserialize(d)?;
        let meta = convert::rough_meta(&value);
        let json = K::KEEP_JSON.then(|| value.clone());
        let object = convert::deserialize::<_, K>(value);
        Ok(Lenient(
            object.map_err(|issue| Box::new(Broken { meta, issue, json })),
        ))
    }
}

impl<K: Kind> Resource for Lenient<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }

    fn api_version(dt: &()) -> Cow<'_, str> {
        K::api_version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        match &self.0 {
            Ok(k) => k.meta(),
            Err(b) => &b.meta,
        }
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match &mut self.0 {
            Ok(k) => k.meta_mut(),
            Err(b) => &mut b.meta,
        }
    }
}

/// A validation error, with what its Event is about.
fn rejected<K: Kind, T>(meta: &ObjectMeta, r: Result<T, InputError>) -> Result<T, Box<Rejected>> {
    r.map_err(|error| Rejected::new::<K>(error, meta))
}

impl Kind for core::Namespace {
    type Entry = Result<Namespace, Box<Rejected>>;
    fn convert(&self) -> Self::Entry {
        rejected::<Self, _>(&self.metadata, convert::namespace(self))
    }
    fn broken(b: &Broken) -> Self::Entry {
        Err(b.rejected::<Self>())
    }
}

impl Kind for core::Pod {
    /// `Ok(None)`: a pod taking no part in traffic (pending, finished,
    /// host network), kept so that the object counts stay the cluster's.
    type Entry = Result<Option<Pod>, Box<Rejected>>;
    fn convert(&self) -> Self::Entry {
        rejected::<Self, _>(&self.metadata, convert::pod(self))
    }
    fn broken(b: &Broken) -> Self::Entry {
        Err(b.rejected::<Self>())
    }
}

impl Kind for core::Service {
    type Entry = Result<Service, Box<Rejected>>;
    fn convert(&self) -> Self::Entry {
        rejected::<Self, _>(&self.metadata, convert::service(self))
    }
    fn broken(b: &Broken) -> Self::Entry {
        Err(b.rejected::<Self>())
    }
}

/// A NetworkPolicy and its uid: Events about a policy not understood name
/// it by uid too. A uid changes only when the policy is deleted and
/// created again, so keeping it costs no round.
#[derive(Debug, PartialEq)]
pub struct PolicyEntry {
    pub uid: Option<String>,
    pub policy: Result<Policy, InputError>,
}

impl Kind for net::NetworkPolicy {
    type Entry = PolicyEntry;
    const KEEP_JSON: bool = true;
    fn convert(&self) -> Self::Entry {
        PolicyEntry {
            uid: self.metadata.uid.clone(),
            policy: convert::policy(self),
        }
    }
    fn broken(b: &Broken) -> Self::Entry {
        let json = b.json.as_ref().unwrap_or(&Value::Null);
        PolicyEntry {
            uid: b.meta.uid.clone(),
            policy: convert::unreadable_policy(json, b.issue.clone()),
        }
    }
}

/// A Node: only its name, labels and IP addresses are kept (for
/// ClusterNetworkPolicy `nodes` peers); its status heartbeats, images and
/// conditions never reach the store, and updates of them cost no round.
impl Kind for core::Node {
    type Entry = Result<Node, Box<Rejected>>;
    fn convert(&self) -> Self::Entry {
        rejected::<Self, _>(&self.metadata, convert::node(self))
    }
    fn broken(b: &Broken) -> Self::Entry {
        Err(b.rejected::<Self>())
    }
}

/// A ClusterNetworkPolicy, its rules read fail closed where they cannot be
/// understood. One that does not deserialize keeps its JSON: a rule that
/// does not is set aside on its own (`convert::cluster_policy_json`); an
/// object whose tier, priority or subject cannot be read is left out.
impl Kind for ClusterNetworkPolicy {
    type Entry = Result<ClusterPolicy, Box<Rejected>>;
    const KEEP_JSON: bool = true;
    fn convert(&self) -> Self::Entry {
        rejected::<Self, _>(&self.metadata, convert::cluster_policy(self))
    }
    fn broken(b: &Broken) -> Self::Entry {
        let json = b.json.as_ref().unwrap_or(&Value::Null);
        rejected::<Self, _>(&b.meta, convert::cluster_policy_json(json))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_policy::{Enforcement, ENFORCEMENT_ANNOTATION};

    fn full_pod(conditions: &str) -> core::Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "web", "namespace": "shop", "uid": "u-1",
                "resourceVersion": "42",
                "labels": {"app": "web"},
                "annotations": {"big": "x".repeat(1000)},
                "managedFields": [{"manager": "kubelet", "operation": "Update"}]
            },
            "spec": {
                "nodeName": "n1",
                "containers": [{
                    "name": "c", "image": "nginx", "env": [{"name": "A", "value": "b"}],
                    "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP", "hostPort": 8080}]
                }],
                "volumes": [{"name": "v", "emptyDir": {}}]
            },
            "status": {
                "phase": "Running", "podIP": "10.0.0.2", "podIPs": [{"ip": "10.0.0.2"}],
                "hostIP": "192.168.1.1",
                "conditions": [{"type": conditions, "status": "True"}]
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_converted_pod_is_the_pod_build_gives() {
        let full = full_pod("Ready");
        let m = palisade_policy::build(vec![], vec![full.clone()], vec![], vec![]);
        let converted = full.convert().unwrap().unwrap();
        assert_eq!(m.pods, std::slice::from_ref(&converted));
        assert_eq!(converted.ports.len(), 1);
        // Fields the model does not read make no difference.
        assert_eq!(full_pod("ContainersReady").convert(), Ok(Some(converted)));
    }

    #[test]
    fn a_pending_pod_with_an_address_takes_part_and_a_finished_one_does_not() {
        let mut p = full_pod("Ready");
        p.status.as_mut().unwrap().phase = Some("Pending".into());
        let pending = p
            .convert()
            .unwrap()
            .expect("a Pending pod with an IP is enforced");
        assert!(pending.pending);
        p.status.as_mut().unwrap().phase = Some("Failed".into());
        assert_eq!(p.convert(), Ok(None));
    }

    #[test]
    fn an_invalid_object_is_kept_as_its_error() {
        let mut p = full_pod("Ready");
        p.status.as_mut().unwrap().pod_ip = Some("10.0.0.300".into());
        let e = p.convert().unwrap_err();
        assert_eq!(e.error.object, "Pod shop/web");
        assert_eq!(e.error.field, "status.podIP");
        assert_eq!(e.regarding.uid.as_deref(), Some("u-1"));
        assert_eq!(e.regarding.kind.as_deref(), Some("Pod"));
        let m = palisade_policy::build(vec![], vec![p], vec![], vec![]);
        assert_eq!(m.errors, [e.error]);
    }

    /// Deserializes as the watcher does.
    fn lenient<K: Kind>(json: serde_json::Value) -> Lenient<K> {
        serde_json::from_value(json).expect("any JSON object deserializes")
    }

    #[test]
    fn an_object_that_does_not_deserialize_is_an_entry_too() {
        let mut json = serde_json::to_value(full_pod("Ready")).unwrap();
        json["spec"]["containers"][0]["ports"][0]["containerPort"] = "eighty".into();
        let broken: Lenient<core::Pod> = lenient(json);
        // The watcher keeps its place with the resource version.
        assert_eq!(broken.meta().resource_version.as_deref(), Some("42"));
        assert_eq!(broken.meta().name.as_deref(), Some("web"));
        let e = broken.entry().unwrap_err();
        assert_eq!(e.error.object, "Pod shop/web");
        assert_eq!(e.error.field, "spec.containers[0].ports[0].containerPort");
        assert_eq!(e.regarding.uid.as_deref(), Some("u-1"));
        // A well-formed object is the typed one.
        let good: Lenient<core::Pod> = lenient(serde_json::to_value(full_pod("Ready")).unwrap());
        assert_eq!(good.entry(), full_pod("Ready").convert());
    }

    #[test]
    fn a_policy_that_does_not_deserialize_is_not_understood() {
        let broken: Lenient<net::NetworkPolicy> = lenient(serde_json::json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "p", "namespace": "shop", "uid": "u-9", "resourceVersion": "7"},
            "spec": {"podSelector": 5, "policyTypes": ["Ingress"],
                     "ingress": [{"ports": [{"port": {"number": 80}}]}]}
        }));
        let entry = broken.entry();
        assert_eq!(entry.uid.as_deref(), Some("u-9"));
        let policy = entry.policy.unwrap();
        // The first field that does not read is named (in key order).
        assert_eq!(
            policy.unreadable.as_ref().map(|i| i.field.as_str()),
            Some("spec.ingress[0].ports[0].port")
        );
        // The selector does not read either: its whole namespace, in the
        // direction that could be read.
        assert_eq!(policy.pod_selector, Default::default());
        assert!(policy.isolates_ingress && !policy.isolates_egress);
    }

    #[test]
    fn a_policy_keeps_its_uid_and_enforcement() {
        let np: net::NetworkPolicy = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "p", "namespace": "shop", "uid": "u-7",
                "annotations": {
                    ENFORCEMENT_ANNOTATION: "audit",
                    "kubectl.kubernetes.io/last-applied-configuration": "x".repeat(1000)
                }
            },
            "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"],
                     "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]}
        }))
        .unwrap();
        let entry = np.convert();
        assert_eq!(entry.uid.as_deref(), Some("u-7"));
        let policy = entry.policy.unwrap();
        assert_eq!(policy.enforcement, Enforcement::Audit);
        let m = palisade_policy::build(vec![], vec![], vec![np.clone()], vec![]);
        assert_eq!(m.policies, [policy]);

        // An unknown value is enforced, with a warning that stays with
        // the policy.
        let mut bad = np;
        bad.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(ENFORCEMENT_ANNOTATION.into(), "sometimes".into());
        let policy = bad.convert().policy.unwrap();
        assert_eq!(policy.enforcement, Enforcement::Enforce);
        assert_eq!(
            policy.warnings[0].field,
            r#"metadata.annotations["palisade.dev/enforcement"]"#
        );
    }

    #[test]
    fn a_converted_service_is_the_service_build_gives() {
        let full: core::Service = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "web", "namespace": "shop", "labels": {"app": "web"},
                "annotations": {"big": "x".repeat(1000)}, "resourceVersion": "7"
            },
            "spec": {
                "type": "NodePort", "clusterIP": "10.96.0.10",
                "clusterIPs": ["10.96.0.10", "fd00::10"],
                "ipFamilies": ["IPv4", "IPv6"], "sessionAffinity": "None",
                "selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "protocol": "TCP",
                           "targetPort": "web", "nodePort": 30080, "appProtocol": "http"}]
            },
            "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}]}}
        }))
        .unwrap();
        let svc = full.convert().unwrap();
        assert_eq!(svc.cluster_ips.len(), 2);
        let m = palisade_policy::build(vec![], vec![], vec![], vec![full]);
        assert!(m.errors.is_empty(), "{:?}", m.errors);
        assert_eq!(m.services, [svc]);
    }

    #[test]
    fn a_converted_namespace_keeps_its_labels() {
        let ns: core::Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "shop", "labels": {"team": "a"}, "annotations": {"a": "b"}},
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"}
        }))
        .unwrap();
        let converted = ns.convert().unwrap();
        assert_eq!(converted.labels["team"], "a");
        assert_eq!(converted.labels["kubernetes.io/metadata.name"], "shop");
    }
}
