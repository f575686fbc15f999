//! Every command through `run_with`, with a recording holder and a table
//! of links instead of the kernel.

mod common;

use std::path::Path;

use common::{fixture_text, FakeLinks, Scratch, TestHolder, NETNS};
use palisade_cni::{run_with, Env, Outcome, RecordStore};
use serde_json::{json, Value};

const CID: &str = "4f1c2b3a9d8e7f60";

fn env(command: &str) -> Vec<(&'static str, String)> {
    vec![
        ("CNI_COMMAND", command.to_string()),
        ("CNI_CONTAINERID", CID.to_string()),
        ("CNI_NETNS", NETNS.to_string()),
        ("CNI_IFNAME", "eth0".to_string()),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=api-0;K8S_POD_UID=9e8d"
                .to_string(),
        ),
        ("CNI_PATH", "/opt/cni/bin".to_string()),
    ]
}

fn conf(state: &Path, prev: Option<&str>, version: &str) -> Vec<u8> {
    let mut c = json!({
        "cniVersion": version,
        "name": "kindnet",
        "type": "palisade-cni",
        "stateDir": state,
        "logLevel": "info",
    });
    if let Some(p) = prev {
        c["prevResult"] = serde_json::from_str(&fixture_text(p)).unwrap();
    }
    serde_json::to_vec(&c).unwrap()
}

fn invoke(
    vars: &[(&str, String)],
    stdin: &[u8],
    holder: &TestHolder,
    links: &FakeLinks,
) -> Outcome {
    run_with(&Env::from_pairs(vars.iter().cloned()), stdin, holder, links)
}

fn error_of(out: &Outcome) -> (u64, String) {
    assert_eq!(out.exit_code, 1, "expected failure, got {out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("error JSON on stdout");
    for key in ["cniVersion", "code", "msg", "details"] {
        assert!(v.get(key).is_some(), "error lacks {key}: {v}");
    }
    (
        v["code"].as_u64().unwrap(),
        format!("{} {}", v["msg"], v["details"]),
    )
}

struct Setup {
    state: Scratch,
    holder: TestHolder,
    links: FakeLinks,
}

fn setup() -> Setup {
    let state = Scratch::new("cmd");
    let holder = TestHolder {
        state_dir: Some(state.path().to_path_buf()),
        ..Default::default()
    };
    Setup {
        state,
        holder,
        links: FakeLinks::node("veth8c1e2f4a"),
    }
}

#[test]
fn add_records_then_holds_and_passes_prev_result_through() {
    let s = setup();
    let stdin = conf(s.state.path(), Some("prev/ptp.json"), "1.0.0");
    let out = invoke(&env("ADD"), &stdin, &s.holder, &s.links);
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stdout));

    // prevResult unchanged except for the version, key order kept.
    let mut want: Value = serde_json::from_str(&fixture_text("prev/ptp.json")).unwrap();
    want["cniVersion"] = json!("1.0.0");
    assert_eq!(out.stdout_json().unwrap(), want);
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    assert!(text.find("\"interfaces\"").unwrap() < text.find("\"ips\"").unwrap());

    assert_eq!(s.holder.calls(), vec!["hold veth8c1e2f4a"]);
    assert_eq!(
        *s.holder.record_seen_at_hold.borrow(),
        Some(true),
        "record must exist before hold"
    );
    let rec = RecordStore::new(s.state.path())
        .read(CID, "eth0")
        .unwrap()
        .unwrap();
    assert_eq!(rec.host_interface, "veth8c1e2f4a");
    assert_eq!(rec.host_ifindex, 7);
    assert_eq!(rec.ips, vec!["10.244.1.7/24"]);
    assert_eq!(rec.netns, NETNS);
    assert_eq!(rec.network, "kindnet");
    assert_eq!(rec.pod_namespace.as_deref(), Some("shop"));
    assert_eq!(rec.pod_name.as_deref(), Some("api-0"));
    assert_eq!(rec.pod_uid.as_deref(), Some("9e8d"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("holding veth8c1e2f4a"));
}

#[test]
fn add_without_prev_result_names_the_field() {
    let s = setup();
    let out = invoke(
        &env("ADD"),
        &conf(s.state.path(), None, "1.1.0"),
        &s.holder,
        &s.links,
    );
    let (code, text) = error_of(&out);
    assert_eq!(code, 7);
    assert!(
        text.contains("network config \\\"kindnet\\\": prevResult: missing"),
        "{text}"
    );
    assert!(s.holder.calls().is_empty());
}

#[test]
fn add_hold_failure_fails_closed_and_removes_the_record() {
    let mut s = setup();
    s.holder.fail_hold = true;
    let out = invoke(
        &env("ADD"),
        &conf(s.state.path(), Some("prev/ptp.json"), "1.0.0"),
        &s.holder,
        &s.links,
    );
    let (code, text) = error_of(&out);
    assert_eq!(code, 102);
    assert!(text.contains("attach failed on veth8c1e2f4a"), "{text}");
    assert_eq!(*s.holder.record_seen_at_hold.borrow(), Some(true));
    assert!(RecordStore::new(s.state.path())
        .read(CID, "eth0")
        .unwrap()
        .is_none());
}

#[test]
fn add_without_a_host_interface_fails_and_holds_nothing() {
    let s = setup();
    let links = FakeLinks::default();
    let out = invoke(
        &env("ADD"),
        &conf(s.state.path(), Some("prev/calico.json"), "0.3.1"),
        &s.holder,
        &links,
    );
    let (code, text) = error_of(&out);
    assert_eq!(code, 100);
    assert!(text.contains("container 4f1c2b3a9d8e7f60"), "{text}");
    assert!(s.holder.calls().is_empty());
    assert!(RecordStore::new(s.state.path())
        .list()
        .unwrap()
        .records
        .is_empty());
}

#[test]
fn add_rejects_a_bad_prev_result_with_its_path() {
    let s = setup();
    let stdin = serde_json::to_vec(&json!({
        "cniVersion": "1.0.0", "name": "kindnet", "type": "palisade-cni", "stateDir": s.state.path(),
        "prevResult": {"interfaces": [{"name": "veth1"}, {"mac": "aa"}]}
    }))
    .unwrap();
    let (code, text) = error_of(&invoke(&env("ADD"), &stdin, &s.holder, &s.links));
    assert_eq!(code, 7);
    assert!(
        text.contains("network config \\\"kindnet\\\": prevResult.interfaces[1].name: missing"),
        "{text}"
    );
}

#[test]
fn del_releases_removes_and_is_idempotent() {
    let s = setup();
    let add = invoke(
        &env("ADD"),
        &conf(s.state.path(), Some("prev/ptp.json"), "0.4.0"),
        &s.holder,
        &s.links,
    );
    assert_eq!(add.exit_code, 0);
    let del_conf = conf(s.state.path(), Some("prev/ptp.json"), "0.4.0");
    let out = invoke(&env("DEL"), &del_conf, &s.holder, &s.links);
    assert_eq!((out.exit_code, out.stdout.len()), (0, 0), "{out:?}");
    assert!(RecordStore::new(s.state.path())
        .read(CID, "eth0")
        .unwrap()
        .is_none());
    // Again, and without prevResult or netns: still fine, nothing to release.
    let mut vars = env("DEL");
    vars.retain(|(k, _)| *k != "CNI_NETNS");
    let out = invoke(
        &vars,
        &conf(s.state.path(), None, "1.1.0"),
        &s.holder,
        &s.links,
    );
    assert_eq!((out.exit_code, out.stdout.len()), (0, 0), "{out:?}");
    assert_eq!(
        s.holder.calls(),
        vec!["hold veth8c1e2f4a", "release veth8c1e2f4a"]
    );
}

#[test]
fn del_release_failure_keeps_the_record_for_the_retry() {
    let mut s = setup();
    assert_eq!(
        invoke(
            &env("ADD"),
            &conf(s.state.path(), Some("prev/ptp.json"), "1.0.0"),
            &s.holder,
            &s.links
        )
        .exit_code,
        0
    );
    s.holder.fail_release = true;
    let (code, _) = error_of(&invoke(
        &env("DEL"),
        &conf(s.state.path(), None, "1.0.0"),
        &s.holder,
        &s.links,
    ));
    assert_eq!(code, 103);
    assert!(RecordStore::new(s.state.path())
        .read(CID, "eth0")
        .unwrap()
        .is_some());
    s.holder.fail_release = false;
    assert_eq!(
        invoke(
            &env("DEL"),
            &conf(s.state.path(), None, "1.0.0"),
            &s.holder,
            &s.links
        )
        .exit_code,
        0
    );
    assert!(RecordStore::new(s.state.path())
        .read(CID, "eth0")
        .unwrap()
        .is_none());
}

#[test]
fn del_drops_an_unreadable_record() {
    let s = setup();
    std::fs::write(
        s.state.path().join(format!("{CID}-eth0.json")),
        b"{truncated",
    )
    .unwrap();
    let out = invoke(
        &env("DEL"),
        &conf(s.state.path(), None, "1.0.0"),
        &s.holder,
        &s.links,
    );
    assert_eq!(out.exit_code, 0, "{out:?}");
    assert!(!s.state.path().join(format!("{CID}-eth0.json")).exists());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unreadable record"));
}

#[test]
fn check_verifies_record_and_holder() {
    let mut s = setup();
    let stdin = conf(s.state.path(), Some("prev/ptp.json"), "1.0.0");
    // Before ADD: no record.
    let (code, text) = error_of(&invoke(&env("CHECK"), &stdin, &s.holder, &s.links));
    assert_eq!(code, 104);
    assert!(text.contains("no record"), "{text}");

    assert_eq!(
        invoke(&env("ADD"), &stdin, &s.holder, &s.links).exit_code,
        0
    );
    let out = invoke(&env("CHECK"), &stdin, &s.holder, &s.links);
    assert_eq!((out.exit_code, out.stdout.len()), (0, 0), "{out:?}");
    assert_eq!(s.holder.calls().last().unwrap(), "check veth8c1e2f4a");

    // prevResult with another address: mismatch.
    let mut other: Value = serde_json::from_slice(&stdin).unwrap();
    other["prevResult"]["ips"][0]["address"] = json!("10.244.1.8/24");
    let (code, text) = error_of(&invoke(
        &env("CHECK"),
        &serde_json::to_vec(&other).unwrap(),
        &s.holder,
        &s.links,
    ));
    assert_eq!(code, 104);
    assert!(text.contains("10.244.1.8/24"), "{text}");

    s.holder.fail_check = true;
    let (code, text) = error_of(&invoke(&env("CHECK"), &stdin, &s.holder, &s.links));
    assert_eq!(code, 104);
    assert!(text.contains("is not held"), "{text}");
}

#[test]
fn gc_removes_stale_attachments_of_this_network_only() {
    let s = setup();
    let add = |cid: &str, ifname: &str| {
        let mut vars = env("ADD");
        for (k, v) in vars.iter_mut() {
            match *k {
                "CNI_CONTAINERID" => *v = cid.into(),
                "CNI_IFNAME" => *v = ifname.into(),
                _ => {}
            }
        }
        let mut prev: Value = serde_json::from_str(&fixture_text("prev/ptp.json")).unwrap();
        prev["interfaces"][1]["name"] = json!(ifname);
        let stdin = json!({"cniVersion": "1.1.0", "name": "kindnet", "type": "palisade-cni",
                           "stateDir": s.state.path(), "prevResult": prev});
        let links = FakeLinks::node("veth8c1e2f4a");
        let out = invoke(
            &vars,
            &serde_json::to_vec(&stdin).unwrap(),
            &s.holder,
            &links,
        );
        assert_eq!(out.exit_code, 0, "{out:?}");
    };
    add("live", "eth0");
    add("stale", "eth0");
    add("live", "net1");
    let store = RecordStore::new(s.state.path());
    // A record of another network must survive.
    let mut foreign = store.read("stale", "eth0").unwrap().unwrap();
    foreign.network = "other".into();
    foreign.container_id = "foreign".into();
    store.write(&foreign).unwrap();

    let gc = json!({"cniVersion": "1.1.0", "name": "kindnet", "type": "palisade-cni",
                    "stateDir": s.state.path(),
                    "cni.dev/valid-attachments": [{"containerID": "live", "ifname": "eth0"}]});
    let out = invoke(
        &[
            ("CNI_COMMAND", "GC".into()),
            ("CNI_PATH", "/opt/cni/bin".into()),
        ],
        &serde_json::to_vec(&gc).unwrap(),
        &s.holder,
        &s.links,
    );
    assert_eq!((out.exit_code, out.stdout.len()), (0, 0), "{out:?}");
    let mut left: Vec<String> = store
        .list()
        .unwrap()
        .records
        .iter()
        .map(|r| format!("{}/{}", r.container_id, r.ifname))
        .collect();
    left.sort();
    assert_eq!(left, vec!["foreign/eth0", "live/eth0"]);
    assert_eq!(
        s.holder
            .calls()
            .iter()
            .filter(|c| c.starts_with("release"))
            .count(),
        2
    );

    // Without the list, GC refuses rather than treat everything as stale.
    let mut bad = gc.clone();
    bad.as_object_mut()
        .unwrap()
        .remove("cni.dev/valid-attachments");
    let (code, text) = error_of(&invoke(
        &[("CNI_COMMAND", "GC".into())],
        &serde_json::to_vec(&bad).unwrap(),
        &s.holder,
        &s.links,
    ));
    assert_eq!(code, 7);
    assert!(text.contains("cni.dev/valid-attachments"), "{text}");
    assert_eq!(store.list().unwrap().records.len(), 2);
}

#[test]
fn gc_carries_on_past_release_errors() {
    let mut s = setup();
    assert_eq!(
        invoke(
            &env("ADD"),
            &conf(s.state.path(), Some("prev/ptp.json"), "1.1.0"),
            &s.holder,
            &s.links
        )
        .exit_code,
        0
    );
    s.holder.fail_release = true;
    let gc = json!({"cniVersion": "1.1.0", "name": "kindnet", "type": "palisade-cni",
                    "stateDir": s.state.path(), "cni.dev/valid-attachments": []});
    let (code, text) = error_of(&invoke(
        &[("CNI_COMMAND", "GC".into())],
        &serde_json::to_vec(&gc).unwrap(),
        &s.holder,
        &s.links,
    ));
    assert_eq!(code, 105);
    assert!(text.contains(CID), "{text}");
}

#[test]
fn status_succeeds_and_creates_the_state_dir() {
    let s = setup();
    let dir = s.state.path().join("nested/state");
    let stdin = serde_json::to_vec(
        &json!({"cniVersion": "1.1.0", "name": "kindnet", "type": "palisade-cni", "stateDir": dir}),
    )
    .unwrap();
    let out = invoke(
        &[("CNI_COMMAND", "STATUS".into())],
        &stdin,
        &s.holder,
        &s.links,
    );
    assert_eq!((out.exit_code, out.stdout.len()), (0, 0), "{out:?}");
    assert!(dir.is_dir());
    // A state dir that cannot be created: not available.
    std::fs::write(s.state.path().join("file"), b"").unwrap();
    let stdin = serde_json::to_vec(
        &json!({"cniVersion": "1.1.0", "name": "kindnet", "type": "palisade-cni",
                                           "stateDir": s.state.path().join("file/sub")}),
    )
    .unwrap();
    let (code, _) = error_of(&invoke(
        &[("CNI_COMMAND", "STATUS".into())],
        &stdin,
        &s.holder,
        &s.links,
    ));
    assert_eq!(code, 50);
}

#[test]
fn version_lists_supported_versions() {
    let s = setup();
    let out = invoke(
        &[("CNI_COMMAND", "VERSION".into())],
        br#"{"cniVersion":"1.0.0"}"#,
        &s.holder,
        &s.links,
    );
    assert_eq!(out.exit_code, 0);
    assert_eq!(
        out.stdout_json().unwrap(),
        json!({"cniVersion": "1.0.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
    );
    let out = invoke(
        &[("CNI_COMMAND", "VERSION".into())],
        b"",
        &s.holder,
        &s.links,
    );
    assert_eq!(out.stdout_json().unwrap()["cniVersion"], "1.1.0");
}

#[test]
fn bad_inputs_get_the_well_known_codes() {
    let s = setup();
    let good = conf(s.state.path(), Some("prev/ptp.json"), "1.0.0");
    // Invalid JSON.
    let (code, _) = error_of(&invoke(
        &env("ADD"),
        b"{\"cniVersion\":",
        &s.holder,
        &s.links,
    ));
    assert_eq!(code, 6);
    // Unsupported version: refused, answered in a version the runtime reads.
    let out = invoke(
        &env("ADD"),
        &conf(s.state.path(), Some("prev/ptp.json"), "0.2.0"),
        &s.holder,
        &s.links,
    );
    let (code, text) = error_of(&out);
    assert_eq!(code, 1);
    assert!(text.contains("0.2.0"), "{text}");
    // Missing CNI_CONTAINERID.
    let mut vars = env("ADD");
    vars.retain(|(k, _)| *k != "CNI_CONTAINERID");
    let (code, text) = error_of(&invoke(&vars, &good, &s.holder, &s.links));
    assert_eq!(code, 4);
    assert!(text.contains("CNI_CONTAINERID"), "{text}");
    // Missing CNI_COMMAND.
    let (code, text) = error_of(&invoke(&[], &good, &s.holder, &s.links));
    assert_eq!(code, 4);
    assert!(text.contains("CNI_COMMAND"), "{text}");
    // The error keeps the request's version.
    let v: Value =
        serde_json::from_slice(&invoke(&vars, &good, &s.holder, &s.links).stdout).unwrap();
    assert_eq!(v["cniVersion"], "1.0.0");
    assert!(s.holder.calls().is_empty());
}
