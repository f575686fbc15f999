//! `palisade inspect` and `palisade explain` against maps the agent really
//! pinned: the pod's policy read back in policy terms, no drift while the
//! manifests are what was programmed, drift named once they change, and
//! `explain` answering from the pins as `palisade check` does.
//!
//! Runs the `palisade` binary (`$PALISADE_BIN`, else `target/debug/palisade`:
//! `cargo build -p palisade-agent` first) inside a network namespace of its
//! own with a private bpffs; guards remove both and kill the agent even when
//! an assertion fails.

use palisade_common::EP_DENY_ALL;
use palisade_tests::fixtures::shop_pods;
use palisade_tests::kernel::{add_pod_iface, Agent, NetNs, Scratch};
use palisade_tests::kernel::{pins, plant_cell, records};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

/// shop/web admits shop/client and 192.168.0.0/16 on TCP `port`.
fn policy(port: u16) -> String {
    format!(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: web-ingress, namespace: shop}}
spec:
  podSelector: {{matchLabels: {{app: web}}}}
  policyTypes: [Ingress]
  ingress:
  - from: [{{podSelector: {{matchLabels: {{app: client}}}}}}, {{ipBlock: {{cidr: 192.168.0.0/16}}}}]
    ports: [{{protocol: TCP, port: {port}}}]
"#
    )
}

/// A finished `palisade` command.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// `palisade <args>` in the test's namespace.
fn palisade(args: &[&str]) -> Run {
    let bin = palisade_lab::palisade_bin().unwrap_or_else(|e| panic!("{e:#}"));
    let out = Command::new(bin).args(args).output().expect("run palisade");
    Run {
        code: out.status.code().expect("palisade exited by a signal"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// `palisade <cmd> [pod] --manifests .. --node node1 --bpffs-root ..
/// <extra>`.
fn pinned_cmd(s: &Scratch, cmd: &str, extra: &[&str]) -> Run {
    let manifests = s.manifests().display().to_string();
    let bpffs = s.bpffs().display().to_string();
    let mut args = vec![cmd];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[
        "--manifests",
        &manifests,
        "--node",
        "node1",
        "--bpffs-root",
        &bpffs,
    ]);
    palisade(&args)
}

fn explain(s: &Scratch, from: &str, to: &str, port: &str) -> Run {
    pinned_cmd(s, "explain", &["--from", from, "--to", to, "--port", port])
}

/// The oracle's first word (ALLOW or DENY) for the flow.
fn check_word(s: &Scratch, from: &str, to: &str, port: &str) -> String {
    let manifests = s.manifests().display().to_string();
    let r = palisade(&[
        "check",
        "--manifests",
        &manifests,
        "--from",
        from,
        "--to",
        to,
        "--port",
        port,
    ]);
    assert_eq!(r.code, 0, "check failed: {}", r.stderr);
    r.stdout.split_whitespace().next().unwrap().to_string()
}

#[test]
fn inspect_reads_back_the_pinned_policy_and_reports_drift() {
    let _ns = NetNs::enter("insp");
    let s = Scratch::new("insp");
    std::fs::write(s.manifests().join("pods.yaml"), shop_pods("10.79")).unwrap();
    std::fs::write(s.manifests().join("policy.yaml"), policy(80)).unwrap();
    let web = add_pod_iface("web0", "10.79.0.2");
    add_pod_iface("cli0", "10.79.0.3");

    let manifests = s.manifests().display().to_string();
    let mut agent = Agent::start(
        &s,
        &["--manifests", &manifests, "--node", "node1", "--once"],
        &[],
    );
    let st = agent.wait(Duration::from_secs(30)).expect("--once exits");
    assert!(st.success(), "agent --once failed:\n{}", agent.log());

    // The pod's policy in policy terms, and no drift.
    let r = pinned_cmd(&s, "inspect", &["shop/web"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let text = &r.stdout;
    for want in [
        &format!("pod shop/web on node node1: interface web0 (ifindex {web})") as &str,
        "flags [isolated-ingress]",
        "addresses 10.79.0.2",
        "ingress: isolated",
        "bit 0: shop/web-ingress (ingress rule 0)",
        "shop {app=client}: groups [0]",
        "192.168.0.0/16: groups [0]",
        "TCP 80: groups [0]",
        "egress: not isolated",
        "; read from its cell",
        "drift: none",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }

    let r = pinned_cmd(&s, "inspect", &["shop/web", "--output", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let doc: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(doc["ifindex"].as_u64(), Some(u64::from(web)));
    let ingress = &doc["endpoint"]["ingress"];
    assert_eq!(
        ingress["groups"][0]["rules"][0]["policy"],
        "shop/web-ingress"
    );
    assert_eq!(ingress["identities"][0]["labels"]["app"], "client");
    assert_eq!(ingress["ports"][0]["port"], 80);
    assert_eq!(doc["drift"].as_array().map(Vec::len), Some(0));
    assert_eq!(doc["endpoint"]["read_from"], "cell");

    // A cell that says otherwise than ENDPOINTS (what the agent's order of
    // writes never leaves for long): the record shown is the cell's, the
    // one the classifiers read, and the difference is drift.
    let node_pins = pins(&s.bpffs(), "node1");
    let before = records(&node_pins)[&web];
    let mut closed = before;
    closed.flags |= EP_DENY_ALL;
    plant_cell(&node_pins, web, &closed);
    let r = pinned_cmd(&s, "inspect", &["shop/web", "--output", "json"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let doc: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(doc["endpoint"]["read_from"], "cell-differs", "{doc}");
    assert!(
        doc["endpoint"]["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f == "deny-all")),
        "{doc}"
    );
    assert!(
        doc["drift"].to_string().contains("differs from ENDPOINTS"),
        "{doc}"
    );
    plant_cell(&node_pins, web, &before);

    // The client is not isolated: its own policy shows as such.
    let r = pinned_cmd(&s, "inspect", &["shop/client"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("ingress: not isolated"), "{}", r.stdout);

    // Explain answers from the pins, as check does.
    for (from, to, port, word) in [
        ("shop/client", "shop/web", "80/TCP", "ALLOW"),
        ("shop/client", "shop/web", "81/TCP", "DENY"),
        ("shop/far", "shop/web", "80/TCP", "DENY"),
        ("192.168.3.4", "shop/web", "80/TCP", "ALLOW"),
        ("shop/web", "shop/client", "80/TCP", "ALLOW"),
    ] {
        let r = explain(&s, from, to, port);
        assert_eq!(
            r.code, 0,
            "{from} -> {to} {port}:\n{}{}",
            r.stdout, r.stderr
        );
        assert!(
            r.stdout
                .starts_with(&format!("kernel (pinned maps of node node1): {word} ")),
            "{from} -> {to} {port}:\n{}",
            r.stdout
        );
        assert!(r.stdout.contains("\nagree: "), "{}", r.stdout);
        assert_eq!(
            check_word(&s, from, to, port),
            word,
            "{from} -> {to} {port}"
        );
    }
    let r = explain(&s, "shop/client", "shop/web", "80/TCP");
    assert!(
        r.stdout.contains(
            "ingress of shop/web: allowed by rule group 0: shop/web-ingress (ingress rule 0)"
        ),
        "{}",
        r.stdout
    );

    // The manifests change, the agent does not run: drift, named. The
    // policy moves to another port, and the pod of the other node goes
    // (its address leaves the node's identity trie).
    std::fs::write(s.manifests().join("policy.yaml"), policy(8080)).unwrap();
    let without_far = shop_pods("10.79")
        .split("---")
        .filter(|d| !d.contains("name: far"))
        .collect::<Vec<_>>()
        .join("---");
    std::fs::write(s.manifests().join("pods.yaml"), without_far).unwrap();
    let r = pinned_cmd(&s, "inspect", &["shop/web"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    for want in [
        "drift: 3 difference(s)",
        "ingress port TCP 80: pinned groups [0], compiled absent",
        "ingress port TCP 8080: pinned absent, compiled groups [0]",
        "identity trie 10.79.1.5: pinned ",
    ] {
        assert!(
            r.stdout.contains(want),
            "missing {want:?} in:\n{}",
            r.stdout
        );
    }

    // The pins still allow 80 and deny 8080; the oracle now says the
    // opposite, and explain says they disagree.
    for (port, kernel, oracle) in [("80/TCP", "ALLOW", "DENY"), ("8080/TCP", "DENY", "ALLOW")] {
        let r = explain(&s, "shop/client", "shop/web", port);
        assert_eq!(r.code, 1, "{port}:\n{}{}", r.stdout, r.stderr);
        assert!(
            r.stdout
                .starts_with(&format!("kernel (pinned maps of node node1): {kernel} ")),
            "{}",
            r.stdout
        );
        assert!(
            r.stdout
                .contains(&format!("ingress: pinned maps {kernel}, oracle {oracle}")),
            "{}",
            r.stdout
        );
        assert_eq!(check_word(&s, "shop/client", "shop/web", port), oracle);
    }

    // A pod that is no longer in the manifests: a clear error.
    let r = pinned_cmd(&s, "inspect", &["shop/client"]);
    assert_eq!(r.code, 1, "the trie still drifts:\n{}", r.stdout);
    let r = pinned_cmd(&s, "inspect", &["shop/far"]);
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert!(
        r.stderr.contains("pod shop/far is not a running pod"),
        "{}",
        r.stderr
    );
}

/// An Admin policy on every pod: no far pod may reach shop/web (Deny, two
/// rules sharing one group), the client always may on 8080 (Accept), and
/// 169.254.169.254 is out of reach (Deny, egress).
const ADMIN: &str = r#"
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: guard}
spec:
  tier: Admin
  priority: 5
  subject: {namespaces: {}}
  ingress:
  - {name: no-far, action: Deny, from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: far}}}}]}
  - {name: client-8080, action: Accept, from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: client}}}}], protocols: [{tcp: {destinationPort: {number: 8080}}}]}
  egress:
  - {name: no-metadata, action: Deny, to: [{networks: [169.254.169.254/32]}]}
"#;

#[test]
fn explain_names_the_cluster_group_and_the_oracles_rule() {
    let _ns = NetNs::enter("inspcnp");
    let s = Scratch::new("inspcnp");
    std::fs::write(s.manifests().join("pods.yaml"), shop_pods("10.78")).unwrap();
    std::fs::write(s.manifests().join("policy.yaml"), policy(80)).unwrap();
    std::fs::write(s.manifests().join("admin.yaml"), ADMIN).unwrap();
    add_pod_iface("web0", "10.78.0.2");
    add_pod_iface("cli0", "10.78.0.3");
    let manifests = s.manifests().display().to_string();
    let mut agent = Agent::start(
        &s,
        &["--manifests", &manifests, "--node", "node1", "--once"],
        &[],
    );
    let st = agent.wait(Duration::from_secs(30)).expect("--once exits");
    assert!(st.success(), "agent --once failed:\n{}", agent.log());

    let guard = "ClusterNetworkPolicy guard (Admin tier, priority 5)";
    for (from, to, port, word, line) in [
        (
            "shop/far",
            "shop/web",
            "80/TCP",
            "DENY",
            format!(
                "ingress of shop/web: denied by rule group 0 (Admin tier, Deny): {guard}, \
                 ingress rule 0 (no-far): Deny; the oracle's rule: ingress rule 0 of guard"
            ),
        ),
        (
            "shop/client",
            "shop/web",
            "8080/TCP",
            "ALLOW",
            format!(
                "ingress of shop/web: allowed by rule group 1 (Admin tier, Accept): {guard}, \
                 ingress rule 1 (client-8080): Accept; the oracle's rule: ingress rule 1 of guard"
            ),
        ),
        (
            "shop/web",
            "169.254.169.254",
            "80/TCP",
            "DENY",
            format!(
                "egress of shop/web: denied by rule group 0 (Admin tier, Deny): {guard}, \
                 egress rule 0 (no-metadata): Deny; the oracle's rule: egress rule 0 of guard"
            ),
        ),
        (
            "shop/web",
            "shop/client",
            "80/TCP",
            "ALLOW",
            "egress of shop/web: no cluster rule group decides it and no NetworkPolicy \
             isolates it: allowed"
                .to_string(),
        ),
    ] {
        let r = explain(&s, from, to, port);
        assert_eq!(
            r.code, 0,
            "{from} -> {to} {port}:\n{}{}",
            r.stdout, r.stderr
        );
        assert!(
            r.stdout
                .starts_with(&format!("kernel (pinned maps of node node1): {word} ")),
            "{}",
            r.stdout
        );
        assert!(
            r.stdout.contains(&line),
            "missing {line:?} in:\n{}",
            r.stdout
        );
        assert!(r.stdout.contains("\nagree: "), "{}", r.stdout);
        assert_eq!(
            check_word(&s, from, to, port),
            word,
            "{from} -> {to} {port}"
        );
    }
}
