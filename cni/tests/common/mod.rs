//! Shared test helpers: a holder that records calls, link lookups from a
//! table, and scratch directories.

#![allow(dead_code)]

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use palisade_cni::hostif::{LinkInfo, Links};
use palisade_cni::{Holder, Record};

pub const NETNS: &str = "/var/run/netns/cni-7b2d4c1e-5f60-4a88-9c1b-2e3f4a5b6c7d";

pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

pub fn fixture_text(rel: &str) -> String {
    std::fs::read_to_string(fixture(rel)).unwrap()
}

/// A directory under the target dir, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "cni-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Records every call; fails the ones it is told to.
#[derive(Default)]
pub struct TestHolder {
    pub calls: RefCell<Vec<String>>,
    pub fail_hold: bool,
    pub fail_release: bool,
    pub fail_check: bool,
    /// The state dir, to observe whether the record exists at hold time.
    pub state_dir: Option<PathBuf>,
    pub record_seen_at_hold: RefCell<Option<bool>>,
}

impl TestHolder {
    pub fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }
}

impl Holder for TestHolder {
    fn hold(&self, rec: &Record) -> anyhow::Result<()> {
        self.calls
            .borrow_mut()
            .push(format!("hold {}", rec.host_interface));
        if let Some(dir) = &self.state_dir {
            let path = dir.join(format!("{}-{}.json", rec.container_id, rec.ifname));
            *self.record_seen_at_hold.borrow_mut() = Some(path.exists());
        }
        anyhow::ensure!(!self.fail_hold, "attach failed on {}", rec.host_interface);
        Ok(())
    }

    fn release(&self, rec: &Record) -> anyhow::Result<()> {
        self.calls
            .borrow_mut()
            .push(format!("release {}", rec.host_interface));
        anyhow::ensure!(
            !self.fail_release,
            "detach failed on {}",
            rec.host_interface
        );
        Ok(())
    }

    fn check(&self, rec: &Record) -> anyhow::Result<()> {
        self.calls
            .borrow_mut()
            .push(format!("check {}", rec.host_interface));
        anyhow::ensure!(!self.fail_check, "{} is not held", rec.host_interface);
        Ok(())
    }
}

/// Links from a table: the host's, and those inside namespaces.
#[derive(Default)]
pub struct FakeLinks {
    pub host: Vec<LinkInfo>,
    pub netns: Vec<(String, LinkInfo)>,
    pub netns_lookups: RefCell<u32>,
}

pub fn link(name: &str, ifindex: u32, kind: Option<&str>, peer: Option<u32>) -> LinkInfo {
    LinkInfo {
        name: name.into(),
        ifindex,
        kind: kind.map(str::to_string),
        peer_ifindex: peer,
    }
}

impl FakeLinks {
    /// A node whose host veth `veth` (index 7) pairs with `eth0` (index 2)
    /// in [`NETNS`], plus the host's uplink and a bridge.
    pub fn node(veth: &str) -> FakeLinks {
        FakeLinks {
            host: vec![
                link("ens3", 2, None, None),
                link("cni0", 5, Some("bridge"), None),
                link(veth, 7, Some("veth"), Some(2)),
            ],
            netns: vec![(NETNS.into(), link("eth0", 2, Some("veth"), Some(7)))],
            ..Default::default()
        }
    }
}

impl Links for FakeLinks {
    fn host_link(&self, name: &str) -> anyhow::Result<Option<LinkInfo>> {
        Ok(self.host.iter().find(|l| l.name == name).cloned())
    }

    fn host_link_by_index(&self, ifindex: u32) -> anyhow::Result<Option<LinkInfo>> {
        Ok(self.host.iter().find(|l| l.ifindex == ifindex).cloned())
    }

    fn netns_link(&self, netns: &str, name: &str) -> anyhow::Result<Option<LinkInfo>> {
        *self.netns_lookups.borrow_mut() += 1;
        anyhow::ensure!(
            self.netns.iter().any(|(n, _)| n == netns),
            "no namespace {netns}"
        );
        Ok(self
            .netns
            .iter()
            .find(|(n, l)| n == netns && l.name == name)
            .map(|(_, l)| l.clone()))
    }
}
