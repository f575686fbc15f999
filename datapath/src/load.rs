//! Loading the classifiers and pinning (or re-adopting) their maps.
//!
//! Every map of the object is pinned at `<bpffs-root>/<node>/v<N>/<MAP>`,
//! `N` being this binary's layout version (`palisade_common::layout`). aya's
//! `EbpfLoader::map_pin_path` opens a map that is already pinned there instead
//! of creating a new one, so a restarted agent (or a new binary) keeps the
//! live endpoint records, policy maps and conntrack entries: no packet ever
//! sees missing policy. aya does not check that a pinned map matches the
//! object's declaration, so we do it first and refuse, with a clear error,
//! pins of the same version that do not match (a build that changed the
//! layout without bumping the version). Pins of an older version are left
//! enforcing beside the new ones until `migrate` moves the links; pins of
//! a newer version make the load fail before anything is created.

use super::{migrate, sys, versions};
use anyhow::{bail, Context, Result};
use aya::maps::{MapInfo, MapType};
use aya::programs::ProgramError;
use aya::Ebpf;
use aya::EbpfLoader;
use aya_obj::EbpfSectionKind;
use palisade_common::{layout, names};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Default bpffs root; the node's directory goes below it.
pub const DEFAULT_BPFFS_ROOT: &str = "/sys/fs/bpf/palisade";

/// The parameters of a map as the kernel knows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapShape {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
}

impl MapShape {
    fn of_obj(m: &aya_obj::Map) -> Self {
        MapShape {
            map_type: m.map_type(),
            key_size: m.key_size(),
            value_size: m.value_size(),
            max_entries: m.max_entries(),
            flags: m.map_flags(),
        }
    }

    pub fn of_info(info: &MapInfo) -> Result<Self> {
        let map_type = info
            .map_type()
            .context("pinned map has an unknown map type")?;
        Ok(MapShape {
            map_type: map_type_number(map_type),
            key_size: info.key_size(),
            value_size: info.value_size(),
            max_entries: info.max_entries(),
            flags: info.map_flags(),
        })
    }

    /// The parameters to create a map with this shape (inner maps).
    pub fn obj(&self) -> aya_obj::Map {
        aya_obj::Map::new_from_params(
            self.map_type,
            self.key_size,
            self.value_size,
            self.max_entries,
            self.flags,
        )
    }
}

impl std::fmt::Display for MapShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "type {} key {}B value {}B max_entries {} flags {:#x}",
            self.map_type, self.key_size, self.value_size, self.max_entries, self.flags
        )
    }
}

/// `MapType` is a C-like enum over `bpf_map_type`.
fn map_type_number(t: MapType) -> u32 {
    t as u32
}

/// The inner-map templates of the four policy outer maps, as the object
/// declares them: the writer creates every inner map with exactly these
/// parameters, which the kernel requires to insert it into the outer map.
#[derive(Clone, Debug)]
pub struct InnerShapes {
    pub identity: MapShape,
    pub cidr: MapShape,
    pub port: MapShape,
    pub spill: MapShape,
    /// Each pod's own conntrack table (`CONNTRACK_POD`).
    pub conntrack: MapShape,
    /// Each pod's own fragment records (`FRAGMENTS_POD`).
    pub fragments: MapShape,
}

/// Where the pins of one layout version of one node are.
#[derive(Clone, Debug)]
pub struct PinLayout {
    /// `<bpffs-root>/<node>`: holds the agents' lock and one directory per
    /// layout version present.
    pub node_dir: PathBuf,
    /// This version's pins: `<node_dir>/v<version>`, or `node_dir` itself
    /// for the unversioned pins of [`layout::LEGACY`].
    pub dir: PathBuf,
    pub version: u32,
}

impl PinLayout {
    /// The layout of this binary's version ([`layout::VERSION`]).
    pub fn new(bpffs_root: &Path, node: &str) -> Result<Self> {
        Self::at(bpffs_root, node, layout::VERSION)
    }

    /// The layout of `version` (pins another binary may have made).
    pub fn at(bpffs_root: &Path, node: &str, version: u32) -> Result<Self> {
        if node.is_empty() || node.contains('/') || node == "." || node == ".." {
            bail!("--node {node:?}: not usable as a directory name");
        }
        Ok(Self::in_node_dir(&bpffs_root.join(node), version))
    }

    /// The layout of `version` in this layout's node directory.
    pub fn sibling(&self, version: u32) -> Self {
        Self::in_node_dir(&self.node_dir, version)
    }

    fn in_node_dir(node_dir: &Path, version: u32) -> Self {
        let dir = match version {
            layout::LEGACY => node_dir.to_path_buf(),
            v => node_dir.join(format!("v{v}")),
        };
        PinLayout {
            node_dir: node_dir.to_path_buf(),
            dir,
            version,
        }
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Directory of the TCX link pins.
    pub fn links_dir(&self) -> PathBuf {
        self.dir.join("links")
    }

    pub fn link(&self, ifindex: u32, prog: &str) -> PathBuf {
        self.links_dir().join(format!("{ifindex}-{prog}"))
    }

    /// Directory of the pod programs' pins (for the CNI plugin's holds).
    pub fn progs_dir(&self) -> PathBuf {
        self.dir.join("progs")
    }

    pub fn prog(&self, name: &str) -> PathBuf {
        self.progs_dir().join(name)
    }

    /// Directory of the uplinks' TCX link pins.
    pub fn uplinks_dir(&self) -> PathBuf {
        self.dir.join("uplinks")
    }

    pub fn uplink(&self, ifindex: u32) -> PathBuf {
        self.uplinks_dir()
            .join(format!("{ifindex}-{}", names::PROG_NODE_EGRESS))
    }
}

/// How long to wait for another agent of the same node to let go (a rolling
/// update may briefly overlap the old and the new agent).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The conventional bpffs mount point.
const SYS_FS_BPF: &str = "/sys/fs/bpf";

/// Makes sure `root` exists on a bpf filesystem. When `/sys/fs/bpf` is not
/// mounted (a bare sysfs directory, where nothing can be created), a bpffs
/// is mounted there; for any other root that is not on bpffs, one is
/// mounted on the root itself. For the CNI plugin, which the container
/// runtime runs in the node's own mount namespace, where a mount stays;
/// the agent never mounts (see [`require_bpffs`]).
pub fn ensure_bpffs(root: &Path) -> Result<()> {
    let sys_fs_bpf = Path::new(SYS_FS_BPF);
    if root.starts_with(sys_fs_bpf) && sys_fs_bpf.is_dir() && !sys::is_bpffs(sys_fs_bpf)? {
        sys::mount_bpffs(sys_fs_bpf)?;
        tracing::info!(dir = SYS_FS_BPF, "mounted a bpf filesystem");
    }
    std::fs::create_dir_all(root)
        .with_context(|| format!("create bpffs root {}", root.display()))?;
    if !sys::is_bpffs(root)? {
        sys::mount_bpffs(root)?;
        tracing::info!(root = %root.display(), "mounted a bpf filesystem");
    }
    Ok(())
}

/// Fails, before anything is created, unless `root` (or, while it does
/// not exist yet, its nearest existing ancestor) lies on a bpf filesystem.
/// The agent never mounts one itself: a mount made from its own mount
/// namespace (a container's, `ip netns exec`'s) goes away with the
/// process, and with it every pin: the links it attached would detach and
/// the pods lose their policy, the next agent would find nothing to adopt,
/// and the CNI plugin would never see its programs.
pub fn require_bpffs(root: &Path) -> Result<()> {
    let mut at = root;
    while !at.exists() {
        match at.parent() {
            Some(p) => at = p,
            None => break,
        }
    }
    if !sys::is_bpffs(at)? {
        bail!(
            "--bpffs-root {}: {} is not on a bpf filesystem, so the pins would not outlive this \
             agent; refusing to start. Mount one first (`mount -t bpf bpf {SYS_FS_BPF}`, systemd's \
             sys-fs-bpf.mount) and give a directory on it (a DaemonSet: the node's \
             {SYS_FS_BPF}/palisade as a hostPath)",
            root.display(),
            at.display()
        );
    }
    Ok(())
}

/// The loaded classifiers with their maps opened at the pins.
pub struct Loaded {
    pub ebpf: Ebpf,
    pub layout: PinLayout,
    pub inner: InnerShapes,
    /// True when the policy state was already pinned (agent restart).
    pub adopted: bool,
    /// Layouts of older versions present on the node, oldest first: still
    /// enforcing until `migrate` moves their links to this version.
    pub older: Vec<PinLayout>,
    /// Exclusive lock on the node directory, held while this is alive.
    pub lock: sys::DirLock,
}

/// Loads `object`, pinning its maps under the node directory or re-adopting
/// the maps already pinned there.
pub fn load(object: &[u8], bpffs_root: &Path, node: &str) -> Result<Loaded> {
    require_bpffs(bpffs_root)?;
    std::fs::create_dir_all(bpffs_root)
        .with_context(|| format!("create bpffs root {}", bpffs_root.display()))?;
    let layout = PinLayout::new(bpffs_root, node)?;
    std::fs::create_dir_all(&layout.node_dir)
        .with_context(|| format!("create pin directory {}", layout.node_dir.display()))?;
    // Two writers of one node's maps would undo each other's flips; the
    // lock covers every layout version of the node.
    let lock = sys::DirLock::acquire(&layout.node_dir, LOCK_WAIT)?;
    // Before anything is created: a newer release's pins stay as they are,
    // and another node name's running agent keeps this node's pods.
    versions::refuse_newer(&layout.node_dir)?;
    super::others::refuse_running(bpffs_root, node)?;
    let older = versions::older(&layout)?;
    for dir in [layout.links_dir(), layout.uplinks_dir()] {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("create pin directory {}", dir.display()))?;
    }

    let parsed = aya_obj::Object::parse(object).context("parse the embedded eBPF object")?;
    let pinnable: BTreeMap<String, &aya_obj::Map> = parsed
        .maps
        .iter()
        .filter(|(_, m)| {
            matches!(
                m.section_kind(),
                EbpfSectionKind::BtfMaps | EbpfSectionKind::Maps
            )
        })
        .map(|(n, m)| (n.clone(), m))
        .collect();
    for required in
        POLICY_STATE
            .iter()
            .chain(&[names::CONNTRACK, names::CONNTRACK_POD, names::FRAGMENTS_POD])
    {
        if !pinnable.contains_key(*required) {
            bail!("the eBPF object declares no map {required}");
        }
    }
    let inner_of = |name: &str| -> Result<MapShape> {
        let inner = pinnable[name]
            .inner()
            .with_context(|| format!("map {name} of the eBPF object has no inner map template"))?;
        Ok(MapShape::of_obj(&inner))
    };
    let inner = InnerShapes {
        identity: inner_of(names::POLICY_IDENTITY)?,
        cidr: inner_of(names::POLICY_CIDR)?,
        port: inner_of(names::POLICY_PORT)?,
        spill: inner_of(names::POLICY_SPILL)?,
        conntrack: inner_of(names::CONNTRACK_POD)?,
        fragments: inner_of(names::FRAGMENTS_POD)?,
    };

    if let Some(from) = older.last() {
        migrate::carry_conntrack(from, &layout, MapShape::of_obj(pinnable[names::CONNTRACK]))?;
    }
    let mut adopted = false;
    for (name, m) in &pinnable {
        let path = layout.map(name);
        if !path.exists() {
            continue;
        }
        let want = MapShape::of_obj(m);
        if POLICY_STATE.contains(&name.as_str()) {
            adopted = true;
            check_pinned(&path, name, want)?;
        } else if !same_layout(&path, want) {
            // Conntrack, events, counters and scratch space are not policy:
            // a new version may change them, at the cost of their contents.
            tracing::warn!(map = %name, pin = %path.display(), "pinned map has another layout; replacing it");
            std::fs::remove_file(&path)
                .with_context(|| format!("remove stale pin {}", path.display()))?;
        }
    }
    if adopted {
        check_pinned_inner(&layout, &inner)?;
    }

    let mut loader = EbpfLoader::new();
    for name in pinnable.keys() {
        loader.map_pin_path(name.as_str(), layout.map(name));
    }
    let ebpf = loader.load(object).context("load the eBPF object")?;
    let mut loaded = Loaded {
        ebpf,
        layout,
        inner,
        adopted,
        older,
        lock,
    };
    for prog in [
        names::PROG_INGRESS,
        names::PROG_EGRESS,
        names::PROG_NODE_EGRESS,
    ] {
        let p: &mut aya::programs::SchedClassifier = loaded
            .ebpf
            .program_mut(prog)
            .with_context(|| format!("the eBPF object has no program {prog}"))?
            .try_into()
            .with_context(|| format!("program {prog} is not a TC classifier"))?;
        load_program(p).with_context(|| format!("load program {prog} (verifier)"))?;
    }
    if loaded.adopted {
        tracing::info!(dir = %loaded.layout.dir.display(), "re-adopted pinned maps");
    } else {
        tracing::info!(dir = %loaded.layout.dir.display(), "pinned new maps");
    }
    Ok(loaded)
}

/// Loads `p`, again when the verifier gave up because a signal arrived
/// for this process meanwhile (`EAGAIN`), as libbpf does: verifying takes
/// long enough that a child's exit or a timer lands in it.
pub fn load_program(p: &mut aya::programs::SchedClassifier) -> Result<(), ProgramError> {
    const ATTEMPTS: usize = 5;
    let mut attempt = 1;
    loop {
        match p.load() {
            Err(ProgramError::LoadError { io_error, .. })
                if io_error.raw_os_error() == Some(libc::EAGAIN) && attempt < ATTEMPTS =>
            {
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// The maps that hold enforced policy: their pins are never replaced.
const POLICY_STATE: [&str; 6] = [
    names::ENDPOINTS,
    names::IDENTITIES,
    names::POLICY_IDENTITY,
    names::POLICY_CIDR,
    names::POLICY_PORT,
    names::POLICY_SPILL,
];

pub(crate) fn same_layout(path: &Path, want: MapShape) -> bool {
    let Ok(info) = MapInfo::from_pin(path) else {
        return false;
    };
    let Ok(have) = MapShape::of_info(&info) else {
        return false;
    };
    have.map_type == want.map_type
        && have.key_size == want.key_size
        && have.value_size == want.value_size
}

/// A pinned map that does not match must not be silently reused (the
/// classifier would read garbage) nor replaced (policy would vanish).
fn check_pinned(path: &Path, name: &str, want: MapShape) -> Result<()> {
    let info =
        MapInfo::from_pin(path).with_context(|| format!("open pinned map {}", path.display()))?;
    let have =
        MapShape::of_info(&info).with_context(|| format!("pinned map {}", path.display()))?;
    // The kernel reports ring buffer and perf sizes rounded; compare what
    // the layout depends on.
    if have.map_type != want.map_type
        || have.key_size != want.key_size
        || have.value_size != want.value_size
    {
        bail!(
            "pinned map {name} at {} has layout ({have}); this agent of the same layout version {} \
             expects ({want}). The release that made the pins changed a pinned map without bumping \
             palisade_common::layout::VERSION: remove {} to start over (this drops enforcement \
             until the agent reprograms)",
            path.display(),
            palisade_common::layout::VERSION,
            path.parent().map(|p| p.display().to_string()).unwrap_or_default()
        );
    }
    if have.max_entries != want.max_entries || have.flags != want.flags {
        tracing::warn!(
            map = name,
            pinned = %have,
            object = %want,
            "pinned map differs in capacity or flags; keeping the pinned one"
        );
    }
    Ok(())
}

/// Inner maps already live in the pinned outer maps must match the templates
/// this agent will create new inner maps from, or every update would fail.
fn check_pinned_inner(layout: &PinLayout, inner: &InnerShapes) -> Result<()> {
    for (name, want) in [
        (names::POLICY_IDENTITY, inner.identity),
        (names::POLICY_CIDR, inner.cidr),
        (names::POLICY_PORT, inner.port),
        (names::POLICY_SPILL, inner.spill),
    ] {
        let path = layout.map(name);
        if !path.exists() {
            continue;
        }
        let outer = aya::maps::MapData::from_pin(&path)
            .with_context(|| format!("open pinned map {}", path.display()))?;
        let outer: aya::maps::HashOfMaps<_, palisade_common::PolicyKey, aya::maps::MapData> =
            aya::maps::HashOfMaps::try_from(aya::maps::Map::HashOfMaps(outer)).with_context(
                || {
                    format!(
                        "pinned map {} is not a hash of maps keyed by PolicyKey",
                        path.display()
                    )
                },
            )?;
        let Some(Ok(key)) = outer.keys().next() else {
            continue;
        };
        let Ok(inner_map) = outer.get(&key, 0) else {
            continue;
        };
        let have = MapShape::of_info(&inner_map.info()?)?;
        // Inner maps are sized to their contents (`maps::stage_dir`): only
        // the layout must match the template.
        let layout_of = |m: &MapShape| (m.map_type, m.key_size, m.value_size, m.flags);
        if layout_of(&have) != layout_of(&want) || have.max_entries > want.max_entries {
            bail!(
                "inner maps of pinned map {name} have layout ({have}); this agent of the same layout \
                 version creates ({want}). The release that made the pins changed a pinned map without \
                 bumping palisade_common::layout::VERSION: remove {} to start over",
                layout.dir.display()
            );
        }
    }
    Ok(())
}
