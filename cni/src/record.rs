//! Attachment records: one JSON file per `(container id, ifname)` in the
//! state directory, which the node agent lists to learn pod interfaces.
//!
//! Records are world-readable (files 0644, directory 0755): they hold
//! what `ip link` and the Kubernetes API already show to anyone on the
//! node (interface names, pod addresses and names), no secrets, and the
//! agent or a debugging operator may read them without privileges. Only
//! root writes them.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The record format version, bumped on incompatible changes.
pub const RECORD_VERSION: u32 = 1;

/// One attachment, as ADD saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub version: u32,
    /// The network (`name` of the network config).
    pub network: String,
    pub container_id: String,
    /// The interface name inside the container (`CNI_IFNAME`).
    pub ifname: String,
    pub netns: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// The host-side interface held pending.
    pub host_interface: String,
    pub host_ifindex: u32,
    /// The pod's addresses with their prefix length, as the CNI gave them.
    pub ips: Vec<String>,
    /// When ADD wrote the record (RFC 3339, UTC).
    pub created: String,
}

/// The outcome of listing a state directory.
#[derive(Debug, Default)]
pub struct Listing {
    pub records: Vec<Record>,
    /// Files that could not be read or parsed, with the reason.
    pub unreadable: Vec<(PathBuf, String)>,
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct RecordStore {
    dir: PathBuf,
}

const TMP_PREFIX: &str = ".tmp-";

impl RecordStore {
    pub fn new(dir: impl Into<PathBuf>) -> RecordStore {
        RecordStore { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<dir>/<containerId>-<ifname>.json`. Both parts are validated
    /// before they get here (no '/', no leading '.').
    pub fn path_for(&self, container_id: &str, ifname: &str) -> PathBuf {
        self.dir.join(format!("{container_id}-{ifname}.json"))
    }

    /// Creates the directory (0755) if needed.
    pub fn ensure_dir(&self) -> anyhow::Result<()> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&self.dir)
            .with_context(|| format!("creating state directory {}", self.dir.display()))
    }

    /// Writes `rec` atomically: a reader sees the old file or the new one,
    /// never a partial one.
    pub fn write(&self, rec: &Record) -> anyhow::Result<PathBuf> {
        self.ensure_dir()?;
        let path = self.path_for(&rec.container_id, &rec.ifname);
        let tmp = self.dir.join(format!(
            "{TMP_PREFIX}{}-{}.{}",
            rec.container_id,
            rec.ifname,
            std::process::id()
        ));
        let mut body = serde_json::to_vec_pretty(rec).context("serializing record")?;
        body.push(b'\n');
        let written = (|| -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o644)
                .open(&tmp)?;
            // Set explicitly: the umask must not decide who can read it.
            f.set_permissions(fs::Permissions::from_mode(0o644))?;
            f.write_all(&body)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            // Make the rename itself durable.
            File::open(&self.dir)?.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("writing record {}", path.display()));
        }
        Ok(path)
    }

    /// The record of `(container_id, ifname)`, if there is one.
    pub fn read(&self, container_id: &str, ifname: &str) -> anyhow::Result<Option<Record>> {
        let path = self.path_for(container_id, ifname);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading record {}", path.display())),
        };
        let rec = parse(&bytes).with_context(|| format!("record {}", path.display()))?;
        Ok(Some(rec))
    }

    /// Every record; unreadable files are reported, not fatal, so that
    /// one bad file cannot hide the others.
    pub fn list(&self) -> anyhow::Result<Listing> {
        let mut listing = Listing::default();
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(listing),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("listing state directory {}", self.dir.display()))
            }
        };
        let mut paths = Vec::new();
        for entry in entries {
            let entry =
                entry.with_context(|| format!("listing state directory {}", self.dir.display()))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            paths.push(entry.path());
        }
        paths.sort();
        for path in paths {
            match fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|b| parse(&b))
            {
                Ok(rec) => listing.records.push(rec),
                Err(e) => listing.unreadable.push((path, format!("{e:#}"))),
            }
        }
        Ok(listing)
    }

    /// Removes the record; `Ok(false)` when there was none.
    pub fn remove(&self, container_id: &str, ifname: &str) -> anyhow::Result<bool> {
        let path = self.path_for(container_id, ifname);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_context(|| format!("removing record {}", path.display())),
        }
    }
}

fn parse(bytes: &[u8]) -> anyhow::Result<Record> {
    // The version first, so that a record from a newer plugin is reported
    // as such rather than as a missing field.
    #[derive(Deserialize)]
    struct Versioned {
        version: Option<u32>,
    }
    let v: Versioned = serde_json::from_slice(bytes).context("not a valid record")?;
    match v.version {
        Some(RECORD_VERSION) => {}
        Some(other) => anyhow::bail!("record version {other} is not {RECORD_VERSION}"),
        None => anyhow::bail!("not a valid record: version: missing"),
    }
    serde_json::from_slice(bytes).context("not a valid record")
}
