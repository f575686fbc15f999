//! The policies the attacks run under, over the pods of `Arena`: `a` the
//! attacker, `p` the peer, `v` the victim (namespace `x`, label `pod`).
//! Each isolates one pod in one direction; `join` combines them.

/// Several policies as one manifest file.
pub fn join(policies: &[&str]) -> String {
    policies.join("---\n")
}

/// The attacker's egress allows a DNS-like flow to the peer, nothing else.
pub const A_DNS_ONLY: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-dns-only, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
    - to: [{podSelector: {matchLabels: {pod: p}}}]
      ports: [{port: 53, protocol: UDP}]
";

/// The attacker's egress also allows everything to the victim.
pub const A_TO_V: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-to-v, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress: [{to: [{podSelector: {matchLabels: {pod: v}}}]}]
";

/// The attacker's egress also allows every protocol to the node's
/// addresses (the lab's `192.0.2.1` and `2001:db8::1`), explicitly.
pub const A_TO_NODE: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-to-node, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
    - to: [{ipBlock: {cidr: 192.0.2.1/32}}, {ipBlock: {cidr: '2001:db8::1/128'}}]
";

/// The peer admits the attacker's DNS-like flow, nothing else.
pub const P_DNS_FROM_A: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p-dns-from-a, namespace: x}
spec:
  podSelector: {matchLabels: {pod: p}}
  policyTypes: [Ingress]
  ingress:
    - from: [{podSelector: {matchLabels: {pod: a}}}]
      ports: [{port: 53, protocol: UDP}]
";

/// The victim's egress allows a DNS-like flow to the peer, nothing else
/// (in particular nothing to the attacker).
pub const V_DNS_ONLY: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: v-dns-only, namespace: x}
spec:
  podSelector: {matchLabels: {pod: v}}
  policyTypes: [Egress]
  egress:
    - to: [{podSelector: {matchLabels: {pod: p}}}]
      ports: [{port: 53, protocol: UDP}]
";

/// The victim's egress also allows everything to the attacker.
pub const V_TO_A: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: v-to-a, namespace: x}
spec:
  podSelector: {matchLabels: {pod: v}}
  policyTypes: [Egress]
  egress: [{to: [{podSelector: {matchLabels: {pod: a}}}]}]
";

/// The victim admits nothing.
pub const V_DENY_INGRESS: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: v-deny-ingress, namespace: x}
spec:
  podSelector: {matchLabels: {pod: v}}
  policyTypes: [Ingress]
";

/// The victim admits everything from the attacker.
pub const V_FROM_A: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: v-from-a, namespace: x}
spec:
  podSelector: {matchLabels: {pod: v}}
  policyTypes: [Ingress]
  ingress: [{from: [{podSelector: {matchLabels: {pod: a}}}]}]
";

/// The victim admits everything from the peer, and only from it.
pub const V_FROM_P: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: v-from-p, namespace: x}
spec:
  podSelector: {matchLabels: {pod: v}}
  policyTypes: [Ingress]
  ingress: [{from: [{podSelector: {matchLabels: {pod: p}}}]}]
";
