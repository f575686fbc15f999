//! `cargo xtask lab up` leaves a lab running with its agent; the agent
//! follows edits of the manifests the state file names; `lab down` removes
//! everything. Needs root and the built binaries.

mod common;

use common::{lab_lock, pod, xtask, Scratch, NAMESPACE};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(120);

const DENY: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
    metadata: {name: deny-all, namespace: x}\nspec: {podSelector: {}, policyTypes: [Ingress]}\n";

/// Takes the lab down if the test ends with it still up.
struct Down(PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = xtask(&["lab", "down", "--state", self.0.to_str().unwrap()], LIMIT);
        }
    }
}

/// A TCP connection from inside `netns` to `ip:80`, bounded to 2 s.
fn connects(netns: &str, ip: &str) -> bool {
    Command::new("timeout")
        .args(["2", "ip", "netns", "exec", netns, "bash", "-c"])
        .arg(format!("exec 3<>/dev/tcp/{ip}/80"))
        .status()
        .expect("running ip netns exec")
        .success()
}

fn netns_present(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

#[test]
fn lab_up_follows_policy_edits_and_lab_down_removes_it() {
    let _one_at_a_time = lab_lock();
    let scratch = Scratch::new("lab-up");
    let src = scratch.path().join("manifests");
    std::fs::create_dir(&src).unwrap();
    let pods = [
        pod("a", "client", None, "10.3.0.10"),
        pod("b", "server", None, "10.3.0.11"),
    ];
    std::fs::write(
        src.join("pods.yaml"),
        format!("{NAMESPACE}---\n{}", pods.join("---\n")),
    )
    .unwrap();
    let state = scratch.path().join("lab.json");
    let state_arg = state.to_str().unwrap();
    let started = Instant::now();
    let _down = Down(state.clone());
    let up = xtask(
        &[
            "lab",
            "up",
            "--manifests",
            src.to_str().unwrap(),
            "--state",
            state_arg,
        ],
        LIMIT,
    );
    assert!(up.ok, "lab up failed; stderr:\n{}", up.stderr);
    eprintln!("lab up took {:?}", started.elapsed());

    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(s["nodes"].as_array().unwrap().len(), 1, "{s:#}");
    assert_eq!(s["nodes"][0]["name"], "node-1");
    assert!(s["nodes"][0]["agent_pid"].as_u64().unwrap() > 0);
    assert!(s["kubeconfig"].is_null());
    assert!(s["supervisor_pid"].as_u64().unwrap() > 0);
    let pods = s["pods"].as_array().unwrap();
    assert_eq!(pods.len(), 2);
    let netns_of = |name: &str| {
        let p = pods.iter().find(|p| p["name"] == name).unwrap();
        assert_eq!(p["node"], "node-1");
        p["netns"].as_str().unwrap().to_string()
    };
    let (a, b) = (netns_of("a"), netns_of("b"));
    let mut all_netns = vec![
        a.clone(),
        b.clone(),
        s["nodes"][0]["netns"].as_str().unwrap().into(),
    ];
    assert!(all_netns.iter().all(|n| netns_present(n)), "{all_netns:?}");
    assert!(connects(&a, "10.3.0.11"), "a -> b before any policy");

    // The command returned, yet the lab (servers, agent) is still there.
    let manifests = PathBuf::from(s["manifests"].as_str().unwrap());
    let tmp = manifests.join(".deny.tmp");
    std::fs::write(&tmp, DENY).unwrap();
    std::fs::rename(&tmp, manifests.join("deny.yaml")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while connects(&a, "10.3.0.11") {
        assert!(
            Instant::now() < deadline,
            "a -> b still connects 20 s after the deny policy"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let down = xtask(&["lab", "down", "--state", state_arg], LIMIT);
    assert!(down.ok, "lab down failed; stderr:\n{}", down.stderr);
    assert!(!state.exists(), "lab down left the state file");
    all_netns.retain(|n| netns_present(n));
    assert!(all_netns.is_empty(), "namespaces left: {all_netns:?}");
    eprintln!("lab up to down took {:?}", started.elapsed());
}
