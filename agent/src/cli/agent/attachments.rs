//! Pod interfaces recorded by the chained CNI plugin (`palisade-cni`): the
//! records in its state directory, as the datapath's [`Attachment`]s.

use crate::datapath::iface::Attachment;
use palisade_cni::record::{Record, RecordStore};
use std::collections::BTreeSet;
use std::path::Path;

/// The attachments recorded in `dir`, sorted by interface index. A missing
/// directory means no plugin is installed; unreadable records are logged
/// and skipped (their interfaces stay held pending by the plugin).
pub fn read(dir: &Path) -> Vec<Attachment> {
    let listing = match RecordStore::new(dir).list() {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(dir = %dir.display(), error = %format!("{e:#}"), "cannot list CNI attachment records");
            return Vec::new();
        }
    };
    for (path, why) in &listing.unreadable {
        tracing::warn!(record = %path.display(), error = %why, "unreadable CNI attachment record");
    }
    let mut out: Vec<Attachment> = listing.records.iter().map(attachment).collect();
    out.sort_by_key(|a| a.ifindex);
    out
}

/// The interface indexes recorded in `dir` right now.
pub fn ifindexes(dir: &Path) -> BTreeSet<u32> {
    read(dir).iter().map(|a| a.ifindex).collect()
}

/// Notices new and removed records without reading them: the plugin writes
/// each record by renaming it into the directory, which changes the
/// directory's modification time. Cheap enough to ask every few
/// milliseconds, so a new pod is programmed as soon as its record exists
/// rather than at the next poll.
pub struct Watch {
    dir: std::path::PathBuf,
    seen: Option<std::time::SystemTime>,
}

impl Watch {
    pub fn new(dir: &Path) -> Watch {
        let mut w = Watch {
            dir: dir.to_path_buf(),
            seen: None,
        };
        w.changed();
        w
    }

    /// Whether the directory changed since the last call.
    pub fn changed(&mut self) -> bool {
        let now = std::fs::metadata(&self.dir).and_then(|m| m.modified()).ok();
        let changed = now != self.seen;
        self.seen = now;
        changed
    }
}

fn attachment(r: &Record) -> Attachment {
    let pod = match (&r.pod_namespace, &r.pod_name) {
        (Some(ns), Some(name)) => Some(format!("{ns}/{name}")),
        _ => None,
    };
    Attachment {
        ifindex: r.host_ifindex,
        ifname: r.host_interface.clone(),
        pod,
        // "10.244.1.7/24": the address is what names the pod.
        ips: r
            .ips
            .iter()
            .filter_map(|s| s.split('/').next()?.parse().ok())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_become_attachments() {
        let dir = std::env::temp_dir().join(format!("palisade-att-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(read(&dir).is_empty(), "a missing directory is no plugin");
        let store = RecordStore::new(&dir);
        let mut rec = Record {
            version: 1,
            network: "cbr0".into(),
            container_id: "c1".into(),
            ifname: "eth0".into(),
            netns: "/run/netns/x".into(),
            pod_namespace: Some("shop".into()),
            pod_name: Some("web".into()),
            pod_uid: None,
            host_interface: "veth1".into(),
            host_ifindex: 9,
            ips: vec!["10.244.1.7/24".into(), "fd00::7/64".into()],
            created: "2026-01-01T00:00:00Z".into(),
        };
        store.write(&rec).unwrap();
        rec.container_id = "c0".into();
        rec.pod_namespace = None;
        rec.host_ifindex = 4;
        store.write(&rec).unwrap();
        std::fs::write(dir.join("junk.json"), "{").unwrap();
        let got = read(&dir);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].ifindex, 4);
        assert_eq!(got[0].pod, None);
        assert_eq!(got[1].pod.as_deref(), Some("shop/web"));
        assert_eq!(
            got[1].ips,
            vec![
                "10.244.1.7".parse::<std::net::IpAddr>().unwrap(),
                "fd00::7".parse().unwrap()
            ]
        );
        assert_eq!(ifindexes(&dir), [4, 9].into_iter().collect());
        let mut watch = Watch::new(&dir);
        assert!(!watch.changed());
        store.remove("c1", "eth0").unwrap();
        assert!(watch.changed(), "a removed record is noticed");
        assert!(!watch.changed());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
