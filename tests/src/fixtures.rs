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
