//! Manifests the agent tests share.

/// Namespace `shop` with pods `web` (`<net>.0.2`) and `client`
/// (`<net>.0.3`) on node1 and `far` (`<net>.1.5`) on node2; `net` is the
/// first two octets of the test's own addresses.
pub fn shop_pods(net: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: shop}}
---
apiVersion: v1
kind: Pod
metadata: {{name: web, namespace: shop, labels: {{app: web}}}}
spec: {{nodeName: node1, containers: [{{name: c, image: x}}]}}
status: {{phase: Running, podIP: {net}.0.2}}
---
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: shop, labels: {{app: client}}}}
spec: {{nodeName: node1, containers: [{{name: c, image: x}}]}}
status: {{phase: Running, podIP: {net}.0.3}}
---
apiVersion: v1
kind: Pod
metadata: {{name: far, namespace: shop, labels: {{app: far}}}}
spec: {{nodeName: node2, containers: [{{name: c, image: x}}]}}
status: {{phase: Running, podIP: {net}.1.5}}
"#
    )
}

/// A Running pod `name` (label `app: <name>`) of namespace `shop` on node1
/// with address `ip`, as the API server serves it.
pub fn shop_pod(name: &str, ip: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": name}},
        "spec": {"nodeName": "node1", "containers": [{"name": "c", "image": "x"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    })
}

/// An in-process API server serving namespace `shop` and its pod `web` at
/// `web_ip`, with a kubeconfig for it in `dir`.
pub fn shop_api(
    dir: &std::path::Path,
    web_ip: &str,
) -> (palisade_fake_apiserver::FakeApiServer, std::path::PathBuf) {
    let api = palisade_fake_apiserver::FakeApiServer::start().expect("fake API server");
    let kubeconfig = api
        .write_kubeconfig(&dir.join("kubeconfig"))
        .expect("kubeconfig");
    api.apply(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}
    }))
    .unwrap();
    api.apply(shop_pod("web", web_ip)).unwrap();
    (api, kubeconfig)
}
