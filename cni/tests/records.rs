//! The record store: round trip, listing, removal, modes.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::Scratch;
use palisade_cni::record::{Record, RecordStore, RECORD_VERSION};

fn record(cid: &str, ifname: &str) -> Record {
    Record {
        version: RECORD_VERSION,
        network: "cbr0".into(),
        container_id: cid.into(),
        ifname: ifname.into(),
        netns: "/var/run/netns/cni-1".into(),
        pod_namespace: Some("shop".into()),
        pod_name: Some("api-0".into()),
        pod_uid: None,
        host_interface: "veth1234".into(),
        host_ifindex: 12,
        ips: vec!["10.244.1.7/24".into(), "fd00::7/64".into()],
        created: "2025-06-01T12:00:00Z".into(),
    }
}

#[test]
fn round_trip_with_modes() {
    let scratch = Scratch::new("rec");
    let dir = scratch.path().join("state");
    let store = RecordStore::new(&dir);
    let rec = record("c1", "eth0");
    let path = store.write(&rec).unwrap();
    assert_eq!(path, dir.join("c1-eth0.json"));
    assert_eq!(store.read("c1", "eth0").unwrap(), Some(rec.clone()));
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o644
    );
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o755
    );
    // The wire names the agent reads; absent pod fields are left out.
    let text = std::fs::read_to_string(&path).unwrap();
    for key in [
        "\"containerId\"",
        "\"hostInterface\"",
        "\"hostIfindex\"",
        "\"podNamespace\"",
        "\"created\"",
    ] {
        assert!(text.contains(key), "{key} missing in {text}");
    }
    assert!(!text.contains("podUid"), "{text}");
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    // Overwrite in place.
    let mut newer = rec.clone();
    newer.host_ifindex = 13;
    store.write(&newer).unwrap();
    assert_eq!(store.read("c1", "eth0").unwrap().unwrap().host_ifindex, 13);
}

#[test]
fn list_reports_unreadable_files_by_path() {
    let scratch = Scratch::new("rec");
    let store = RecordStore::new(scratch.path());
    store.write(&record("b", "eth0")).unwrap();
    store.write(&record("a", "eth0")).unwrap();
    std::fs::write(scratch.path().join("broken-eth0.json"), b"{\"version\":1").unwrap();
    std::fs::write(scratch.path().join("future-eth0.json"), br#"{"version":2}"#).unwrap();
    std::fs::write(scratch.path().join(".tmp-x-eth0.42"), b"partial").unwrap();
    std::fs::write(scratch.path().join("notes.txt"), b"ignored").unwrap();
    let listing = store.list().unwrap();
    let ids: Vec<&str> = listing
        .records
        .iter()
        .map(|r| r.container_id.as_str())
        .collect();
    assert_eq!(ids, vec!["a", "b"]);
    let bad: Vec<String> = listing
        .unreadable
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(bad, vec!["broken-eth0.json", "future-eth0.json"]);
    assert!(
        listing.unreadable[1].1.contains("version 2"),
        "{:?}",
        listing.unreadable
    );
}

#[test]
fn missing_dir_lists_empty_and_remove_is_idempotent() {
    let scratch = Scratch::new("rec");
    let store = RecordStore::new(scratch.path().join("absent"));
    assert!(store.list().unwrap().records.is_empty());
    assert_eq!(store.read("c", "eth0").unwrap(), None);
    assert!(!store.remove("c", "eth0").unwrap());
    store.write(&record("c", "eth0")).unwrap();
    assert!(store.remove("c", "eth0").unwrap());
    assert!(!store.remove("c", "eth0").unwrap());
}

#[test]
fn unreadable_record_is_an_error_naming_the_file() {
    let scratch = Scratch::new("rec");
    let store = RecordStore::new(scratch.path());
    std::fs::write(scratch.path().join("c-eth0.json"), b"[]").unwrap();
    let err = store.read("c", "eth0").unwrap_err();
    assert!(format!("{err:#}").contains("c-eth0.json"), "{err:#}");
}
