//! The real [`Holder`]: attaches Palisade's classifiers to the pod's host
//! interface through the node's pins (`palisade_datapath::hold`).
//!
//! Where the pins are comes from the plugin's entry in the conflist, which
//! the installer writes from the agent's own flags: `bpffsRoot` (default
//! the agent's default) and `nodeName` (default this host's name, which is
//! kubelet's default node name).

use crate::holder::Holder;
use crate::record::Record;
use anyhow::{anyhow, Context, Result};
use palisade_datapath::{hold, load::DEFAULT_BPFFS_ROOT};
use std::path::PathBuf;

/// Where one node's pins live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub bpffs_root: PathBuf,
    pub node: String,
}

impl Target {
    /// Reads `bpffsRoot` and `nodeName` from the network config on stdin.
    /// Other keys (and the config's validity) are the protocol's concern.
    pub fn from_config(stdin: &[u8]) -> Result<Target> {
        let v: serde_json::Value =
            serde_json::from_slice(stdin).context("the network config is not JSON")?;
        let text = |key: &str| -> Result<Option<String>> {
            match v.get(key) {
                None => Ok(None),
                Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
                Some(other) => Err(anyhow!("{key}: {other} is not a non-empty string")),
            }
        };
        let bpffs_root = PathBuf::from(text("bpffsRoot")?.unwrap_or(DEFAULT_BPFFS_ROOT.into()));
        if !bpffs_root.is_absolute() {
            return Err(anyhow!(
                "bpffsRoot: {} is not an absolute path",
                bpffs_root.display()
            ));
        }
        let node = match text("nodeName")? {
            Some(n) => n,
            None => hostname()?,
        };
        Ok(Target { bpffs_root, node })
    }
}

/// This host's name, lowercased as kubelet does for its default node name.
fn hostname() -> Result<String> {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("nodeName is not set and the host name cannot be read")?;
    Ok(h.trim().to_lowercase())
}

/// Holds interfaces with the classifiers embedded in this binary.
pub struct KernelHolder {
    /// An unusable config fails every hold, with this reason.
    target: Result<Target, String>,
}

impl KernelHolder {
    pub fn new(target: Result<Target>) -> KernelHolder {
        KernelHolder {
            target: target.map_err(|e| format!("{e:#}")),
        }
    }

    fn target(&self) -> Result<&Target> {
        self.target.as_ref().map_err(|e| anyhow!("{e}"))
    }
}

impl Holder for KernelHolder {
    fn hold(&self, rec: &Record) -> Result<()> {
        let t = self.target()?;
        let object = palisade_datapath::ebpf_object()?;
        hold::hold(
            object,
            &t.bpffs_root,
            &t.node,
            &rec.host_interface,
            rec.host_ifindex,
        )
    }

    fn release(&self, rec: &Record) -> Result<()> {
        let t = self.target()?;
        // Only links of this exact interface: its index may be another
        // interface's by now, whose links are not ours to remove.
        if palisade_datapath::sys::ifname(rec.host_ifindex).as_deref()
            != Some(rec.host_interface.as_str())
        {
            return Ok(());
        }
        hold::release(&t.bpffs_root, &t.node, rec.host_ifindex)
    }

    fn check(&self, rec: &Record) -> Result<()> {
        let t = self.target()?;
        let layout = hold::live_layout(&t.bpffs_root, &t.node)?;
        if hold::held(&layout, rec.host_ifindex) {
            Ok(())
        } else {
            Err(anyhow!(
                "{} (index {}) has no Palisade classifiers attached",
                rec.host_interface,
                rec.host_ifindex
            ))
        }
    }

    fn status(&self) -> Result<()> {
        self.target().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_from_config() {
        let t = Target::from_config(br#"{"bpffsRoot":"/sys/fs/bpf/x","nodeName":"n1"}"#).unwrap();
        assert_eq!(t.bpffs_root, PathBuf::from("/sys/fs/bpf/x"));
        assert_eq!(t.node, "n1");
        let d = Target::from_config(b"{}").unwrap();
        assert_eq!(d.bpffs_root, PathBuf::from(DEFAULT_BPFFS_ROOT));
        assert!(!d.node.is_empty());
        let e = Target::from_config(br#"{"nodeName":3}"#).unwrap_err();
        assert!(format!("{e:#}").contains("nodeName"), "{e:#}");
        let e = Target::from_config(br#"{"bpffsRoot":"rel"}"#).unwrap_err();
        assert!(format!("{e:#}").contains("bpffsRoot"), "{e:#}");
        let held = KernelHolder::new(Target::from_config(b"[")).hold(&record());
        assert!(format!("{:#}", held.unwrap_err()).contains("not JSON"));
    }

    fn record() -> Record {
        Record {
            version: 1,
            network: "n".into(),
            container_id: "c".into(),
            ifname: "eth0".into(),
            netns: "/run/netns/x".into(),
            pod_namespace: None,
            pod_name: None,
            pod_uid: None,
            host_interface: "nonexistent0".into(),
            host_ifindex: 4242,
            ips: vec![],
            created: String::new(),
        }
    }
}
