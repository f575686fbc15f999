//! What the stores keep of each kind: the object converted into the
//! model's own form when its watch event arrives (`palisade_policy::convert`),
//! never the API object. At 150k pods a k8s-openapi `Pod`, even with only
//! the fields the model reads, is several times the model's pod; and
//! converting once per event instead of once per object per round takes
//! validation out of every round.
//!
//! A converted object that fails validation is kept as its error, so the
//! round still reports it (and a NetworkPolicy still gets its Event).

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::networking::v1 as net;
use kube::Resource;
use palisade_policy::{convert, InputError, Namespace, Pod, Policy, Service};

/// A kind the API source watches, and its stored form. Entries are
/// compared to tell a change from an update of fields the model does not
/// read (pod conditions, annotations, a Service's load balancer status):
/// those cost no round.
pub trait Kind: Resource + Clone + std::fmt::Debug + Send + 'static {
    type Entry: PartialEq + Send + Sync;
    fn convert(&self) -> Self::Entry;
}

impl Kind for core::Namespace {
    type Entry = Result<Namespace, InputError>;
    fn convert(&self) -> Self::Entry {
        convert::namespace(self)
    }
}

impl Kind for core::Pod {
    /// `Ok(None)`: a pod taking no part in traffic (pending, finished,
    /// host network), kept so that the object counts stay the cluster's.
    type Entry = Result<Option<Pod>, InputError>;
    fn convert(&self) -> Self::Entry {
        convert::pod(self)
    }
}

impl Kind for core::Service {
    type Entry = Result<Service, InputError>;
    fn convert(&self) -> Self::Entry {
        convert::service(self)
    }
}

/// A NetworkPolicy and its uid: Events about an invalid policy name it by
/// uid too (`kubectl describe` matches on it). A uid changes only when the
/// policy is deleted and created again, so keeping it costs no round.
#[derive(Debug, PartialEq)]
pub struct PolicyEntry {
    pub uid: Option<String>,
    pub policy: Result<Policy, InputError>,
}

impl Kind for net::NetworkPolicy {
    type Entry = PolicyEntry;
    fn convert(&self) -> Self::Entry {
        PolicyEntry {
            uid: self.metadata.uid.clone(),
            policy: convert::policy(self),
        }
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
        assert_eq!(e.object, "Pod shop/web");
        assert_eq!(e.field, "status.podIP");
        let m = palisade_policy::build(vec![], vec![p], vec![], vec![]);
        assert_eq!(m.errors, [e]);
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

        // An invalid value is reported (and the policy skipped), never
        // silently enforced.
        let mut bad = np;
        bad.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(ENFORCEMENT_ANNOTATION.into(), "sometimes".into());
        let e = bad.convert().policy.unwrap_err();
        assert_eq!(e.object, "NetworkPolicy shop/p");
        assert_eq!(
            e.field,
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
