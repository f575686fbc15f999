//! `palisade agent` as a process against the real kernel: `--once`, the
//! watch loop (manifest edits, new interfaces, a policy not understood), SIGTERM
//! leaving enforcement in place, and a restart that rewrites nothing.
//!
//! Runs the `palisade` binary (`$PALISADE_BIN`, else `target/debug/palisade`:
//! `cargo build -p palisade-agent` first) inside a network namespace of its
//! own with a private bpffs; guards remove both and kill the agent even when
//! an assertion fails.

use palisade_common::{EP_ISOLATED_EGRESS, EP_ISOLATED_INGRESS, EP_PENDING};
use palisade_tests::fixtures::shop_pods;
use palisade_tests::kernel::{
    add_pod_iface, dump, pins, rounds, tcx_progs, wait_round_after, Agent, NetNs, Scratch,
};
use serde_json::Value;
use std::time::Duration;

/// The agent for node1 reading the scratch directory's manifests, with
/// `extra` arguments.
fn start_agent(s: &Scratch, extra: &[&str]) -> Agent {
    let manifests = s.manifests().display().to_string();
    let mut args = vec!["--manifests", manifests.as_str(), "--node", "node1"];
    args.extend_from_slice(extra);
    Agent::start(s, &args, &[])
}

/// Endpoint records by ifindex, as bpftool prints them with BTF names.
fn endpoints(s: &Scratch) -> std::collections::BTreeMap<u64, Value> {
    dump(&pins(&s.bpffs(), "node1").join("ENDPOINTS"))
        .into_iter()
        .map(|e| (e["key"].as_u64().unwrap(), e["value"].clone()))
        .collect()
}

/// The pod identities in the pinned trie (the node's own addresses, as
/// `IDENTITY_HOST`, left out).
fn identities(s: &Scratch) -> Vec<u64> {
    let mut ids: Vec<u64> = dump(&pins(&s.bpffs(), "node1").join("IDENTITIES"))
        .iter()
        .map(|e| e["value"].as_u64().unwrap())
        .filter(|id| *id != u64::from(palisade_common::IDENTITY_HOST))
        .collect();
    ids.sort();
    ids
}

fn policy(cidr: &str, egress: bool) -> String {
    let types = if egress {
        "[Ingress, Egress]"
    } else {
        "[Ingress]"
    };
    format!(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: web, namespace: shop}}
spec:
  podSelector: {{matchLabels: {{app: web}}}}
  policyTypes: {types}
  ingress:
  - from: [{{podSelector: {{matchLabels: {{app: client}}}}}}, {{ipBlock: {{cidr: "{cidr}"}}}}]
    ports: [{{protocol: TCP, port: 80}}]
"#
    )
}

#[test]
fn datapath_agent_once_watch_sigterm_and_restart() {
    let _ns = NetNs::enter("dpa");
    let s = Scratch::new("dpa");
    std::fs::write(s.manifests().join("pods.yaml"), shop_pods("10.78")).unwrap();
    std::fs::write(
        s.manifests().join("policy.yaml"),
        policy("192.168.0.0/16", false),
    )
    .unwrap();
    let web = add_pod_iface("web0", "10.78.0.2");
    let client = add_pod_iface("cli0", "10.78.0.3");

    // --once programs and exits 0, leaving the pins.
    let mut once = start_agent(&s, &["--once"]);
    let st = once.wait(Duration::from_secs(30)).expect("--once exits");
    assert!(st.success(), "agent --once failed:\n{}", once.log());
    assert!(
        once.log().contains("programmed generation=1 pods=2"),
        "{}",
        once.log()
    );
    assert_eq!(rounds(&s), 1);
    let eps = endpoints(&s);
    assert_eq!(
        eps[&u64::from(web)]["flags"].as_u64(),
        Some(u64::from(EP_ISOLATED_INGRESS))
    );
    assert_eq!(eps[&u64::from(client)]["flags"].as_u64(), Some(0));
    let ids_before = identities(&s);
    assert_eq!(
        ids_before.len(),
        3,
        "every pod IP of the cluster has an identity"
    );

    // The watch loop: an edit is programmed (generation flips).
    let mut agent = start_agent(&s, &[]);
    let r = wait_round_after(&s, &agent, 1);
    let gen_before = endpoints(&s)[&u64::from(web)]["generation"]
        .as_u64()
        .unwrap();
    std::fs::write(
        s.manifests().join("policy.yaml"),
        policy("192.168.0.0/16", true),
    )
    .unwrap();
    let r = wait_round_after(&s, &agent, r);
    let ep = endpoints(&s)[&u64::from(web)].clone();
    assert_eq!(
        ep["flags"].as_u64(),
        Some(u64::from(EP_ISOLATED_INGRESS | EP_ISOLATED_EGRESS)),
        "{}",
        agent.log()
    );
    assert_eq!(ep["generation"].as_u64(), Some(gen_before ^ 1));

    // A new interface whose pod is unknown is held pending.
    let stray = add_pod_iface("new0", "10.78.0.9");
    let r = wait_round_after(&s, &agent, r);
    assert_eq!(
        endpoints(&s)[&u64::from(stray)]["flags"].as_u64(),
        Some(u64::from(EP_PENDING))
    );

    // A policy that fails validation is reported and never opens: as
    // written now (ingress only), it isolates web with nothing allowed,
    // not as its last good version, which a restart would not know.
    let gen_before = ep["generation"].as_u64().unwrap();
    std::fs::write(
        s.manifests().join("policy.yaml"),
        policy("192.168.0.0/99", false),
    )
    .unwrap();
    let _ = wait_round_after(&s, &agent, r);
    let ep = endpoints(&s)[&u64::from(web)].clone();
    assert_eq!(ep["flags"].as_u64(), Some(u64::from(EP_ISOLATED_INGRESS)));
    assert_eq!(ep["generation"].as_u64(), Some(gen_before ^ 1));
    assert_eq!(ep["ingress"]["any_peer"].as_u64(), Some(0), "{ep}");
    assert_eq!(ep["ingress"]["any_port"].as_u64(), Some(0), "{ep}");
    assert!(
        agent.log().contains("NetworkPolicy shop/web")
            && agent.log().contains("policy not understood"),
        "{}",
        agent.log()
    );

    // SIGTERM: clean exit, enforcement stays.
    agent.terminate();
    let st = agent
        .wait(Duration::from_secs(10))
        .expect("agent exits on SIGTERM");
    assert!(st.success(), "{}", agent.log());
    let pinned = endpoints(&s);
    assert_eq!(pinned.len(), 3);
    for prog in ["pod_ingress", "pod_egress"] {
        assert!(pins(&s.bpffs(), "node1")
            .join(format!("links/{web}-{prog}"))
            .exists());
    }

    // A restart with the same input rewrites nothing: same identities, same
    // generations. The input still holds the policy not understood, and
    // the new agent reads it as the old one did.
    let mut again = start_agent(&s, &["--once"]);
    assert!(
        again
            .wait(Duration::from_secs(30))
            .expect("--once exits")
            .success(),
        "{}",
        again.log()
    );
    assert!(again.log().contains("flipped=0"), "{}", again.log());
    assert_eq!(identities(&s), ids_before);
    assert_eq!(endpoints(&s), pinned);

    // kill -9 leaves the classifiers attached through their pinned links.
    let r = rounds(&s);
    let mut last = start_agent(&s, &[]);
    wait_round_after(&s, &last, r);
    last.kill();
    assert_eq!(tcx_progs("web0"), (1, 1), "web0 after kill -9");
}

/// With polling all but off, a new pod interface still gets its classifiers
/// at once: the agent wakes on the route event.
#[test]
fn datapath_agent_wakes_on_route_events() {
    let _ns = NetNs::enter("dpe");
    let s = Scratch::new("dpe");
    std::fs::write(s.manifests().join("pods.yaml"), shop_pods("10.78")).unwrap();
    let web = add_pod_iface("web0", "10.78.0.2");
    let agent = start_agent(&s, &["--poll-ms", "600000"]);
    let r = wait_round_after(&s, &agent, 0);
    assert!(endpoints(&s).contains_key(&u64::from(web)));
    let stray = add_pod_iface("new0", "10.78.0.9");
    wait_round_after(&s, &agent, r);
    assert_eq!(
        endpoints(&s)[&u64::from(stray)]["flags"].as_u64(),
        Some(u64::from(EP_PENDING))
    );
    assert_eq!(tcx_progs("new0"), (1, 1), "new0");
}
