//! Trimming API objects down to what `palisade_policy::build` reads before
//! they are stored: at 150k pods, managed fields, annotations, images,
//! environment and probes would be most of the agent's memory.
//!
//! Kept: name, namespace and labels of every object (and a policy's uid,
//! which Events about it refer to, and its `palisade.dev/enforcement`
//! annotation, which puts it in audit mode); of a pod the node, host
//! networking, container ports, phase and addresses; a policy's whole spec;
//! of a Service its type, ClusterIPs, ports and selector (no labels).

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, Namespace, Pod, PodIP, PodSpec, PodStatus, Service, ServicePort,
    ServiceSpec,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use palisade_policy::ENFORCEMENT_ANNOTATION;
use std::collections::BTreeMap;

fn meta(m: &mut ObjectMeta, keep_labels: bool) {
    *m = ObjectMeta {
        name: m.name.take(),
        namespace: m.namespace.take(),
        labels: if keep_labels { m.labels.take() } else { None },
        ..ObjectMeta::default()
    };
}

pub fn namespace(ns: &mut Namespace) {
    meta(&mut ns.metadata, true);
    ns.spec = None;
    ns.status = None;
}

pub fn pod(p: &mut Pod) {
    meta(&mut p.metadata, true);
    p.spec = p.spec.take().map(|s| PodSpec {
        node_name: s.node_name,
        host_network: s.host_network,
        containers: s.containers.into_iter().map(container).collect(),
        ..PodSpec::default()
    });
    p.status = p.status.take().map(|s| PodStatus {
        phase: s.phase,
        pod_ip: s.pod_ip,
        pod_ips: s
            .pod_ips
            .map(|ips| ips.into_iter().map(|i| PodIP { ip: i.ip }).collect()),
        ..PodStatus::default()
    });
}

/// Every declared port is kept (named ones are what policies refer to;
/// all are validated), nothing else of the container.
fn container(c: Container) -> Container {
    Container {
        name: c.name,
        ports: c.ports.map(|ports| {
            ports
                .into_iter()
                .map(|p| ContainerPort {
                    name: p.name,
                    container_port: p.container_port,
                    protocol: p.protocol,
                    ..ContainerPort::default()
                })
                .collect()
        }),
        ..Container::default()
    }
}

pub fn policy(np: &mut NetworkPolicy) {
    // Events on an invalid policy name it by uid too (`kubectl describe`
    // matches on it); a uid never changes, so it costs no round.
    let uid = np.metadata.uid.take();
    // The one annotation the model reads; the others (last-applied
    // configuration above all, a copy of the whole object) are dropped.
    let enforcement = np
        .metadata
        .annotations
        .as_mut()
        .and_then(|a| a.remove_entry(ENFORCEMENT_ANNOTATION));
    meta(&mut np.metadata, false);
    np.metadata.uid = uid;
    np.metadata.annotations = enforcement.map(|(k, v)| BTreeMap::from([(k, v)]));
}

/// What the model reads of a Service: which addresses are ClusterIPs and
/// where their ports lead. Status (load balancer ingress), annotations and
/// labels change often and matter not: dropping them saves rounds too.
pub fn service(s: &mut Service) {
    meta(&mut s.metadata, false);
    s.spec = s.spec.take().map(|spec| ServiceSpec {
        type_: spec.type_,
        cluster_ip: spec.cluster_ip,
        cluster_ips: spec.cluster_ips,
        selector: spec.selector,
        ports: spec.ports.map(|ports| {
            ports
                .into_iter()
                .map(|p| ServicePort {
                    name: p.name,
                    port: p.port,
                    protocol: p.protocol,
                    target_port: p.target_port,
                    ..ServicePort::default()
                })
                .collect()
        }),
        ..ServiceSpec::default()
    });
    s.status = None;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_pod() -> Pod {
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
                "conditions": [{"type": "Ready", "status": "True"}]
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_stripped_pod_builds_the_same_model() {
        let full = full_pod();
        let mut slim = full.clone();
        pod(&mut slim);
        assert!(slim.metadata.annotations.is_none());
        assert!(slim.metadata.managed_fields.is_none());
        let spec = slim.spec.as_ref().unwrap();
        assert!(spec.volumes.is_none());
        assert!(spec.containers[0].image.is_none());
        assert!(spec.containers[0].env.is_none());
        assert!(slim.status.as_ref().unwrap().conditions.is_none());
        let a = palisade_policy::build(vec![], vec![full], vec![], vec![]);
        let b = palisade_policy::build(vec![], vec![slim], vec![], vec![]);
        assert_eq!(a.pods, b.pods);
        assert_eq!(b.pods.len(), 1);
        assert_eq!(b.pods[0].ports.len(), 1);
    }

    #[test]
    fn a_stripped_policy_keeps_its_spec() {
        let full: NetworkPolicy = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "shop", "annotations": {"a": "b"}},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"],
                     "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]}
        }))
        .unwrap();
        let mut slim = full.clone();
        policy(&mut slim);
        assert_eq!(slim.spec, full.spec);
        assert!(slim.metadata.annotations.is_none());
        let a = palisade_policy::build(vec![], vec![], vec![full], vec![]);
        let b = palisade_policy::build(vec![], vec![], vec![slim], vec![]);
        assert_eq!(a.policies, b.policies);
    }

    #[test]
    fn a_stripped_policy_keeps_its_enforcement_annotation() {
        let full: NetworkPolicy = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "p", "namespace": "shop",
                "annotations": {
                    "palisade.dev/enforcement": "audit",
                    "kubectl.kubernetes.io/last-applied-configuration": "x".repeat(1000),
                    "other": "y"
                }
            },
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}
        }))
        .unwrap();
        let mut slim = full.clone();
        policy(&mut slim);
        let kept = slim.metadata.annotations.as_ref().unwrap();
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert_eq!(kept[ENFORCEMENT_ANNOTATION], "audit");
        let a = palisade_policy::build(vec![], vec![], vec![full.clone()], vec![]);
        let b = palisade_policy::build(vec![], vec![], vec![slim], vec![]);
        assert_eq!(a.policies, b.policies);
        assert_eq!(
            b.policies[0].enforcement,
            palisade_policy::Enforcement::Audit
        );

        // An invalid value survives stripping too, so the policy is still
        // reported (and skipped) rather than silently enforced.
        let mut bad = full.clone();
        bad.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(ENFORCEMENT_ANNOTATION.into(), "sometimes".into());
        policy(&mut bad);
        let m = palisade_policy::build(vec![], vec![], vec![bad], vec![]);
        assert!(m.policies.is_empty());
        assert_eq!(
            m.errors[0].field,
            r#"metadata.annotations["palisade.dev/enforcement"]"#
        );
    }

    #[test]
    fn a_stripped_service_builds_the_same_model() {
        let full: Service = serde_json::from_value(serde_json::json!({
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
        let mut slim = full.clone();
        service(&mut slim);
        assert!(slim.metadata.annotations.is_none() && slim.metadata.labels.is_none());
        assert!(slim.status.is_none());
        let spec = slim.spec.as_ref().unwrap();
        assert!(spec.ip_families.is_none() && spec.session_affinity.is_none());
        assert_eq!(spec.ports.as_ref().unwrap()[0].node_port, None);
        let a = palisade_policy::build(vec![], vec![], vec![], vec![full]);
        let b = palisade_policy::build(vec![], vec![], vec![], vec![slim]);
        assert!(b.errors.is_empty(), "{:?}", b.errors);
        assert_eq!(a.services, b.services);
        assert_eq!(b.services[0].cluster_ips.len(), 2);
    }

    #[test]
    fn a_stripped_namespace_keeps_its_labels() {
        let mut ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "shop", "labels": {"team": "a"}, "annotations": {"a": "b"}},
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"}
        }))
        .unwrap();
        namespace(&mut ns);
        assert_eq!(ns.metadata.labels.as_ref().unwrap()["team"], "a");
        assert!(ns.spec.is_none() && ns.status.is_none());
        assert!(ns.metadata.annotations.is_none());
    }
}
