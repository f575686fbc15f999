//! The kernel half as seen from userspace: loading the classifiers, pinning,
//! attaching to pod interfaces, and writing compiled map contents. Used by
//! the agent (`palisade`) and the CNI plugin (`palisade-cni`).
//!
//! [`Datapath::open`] loads (or re-adopts) everything pinned for a node;
//! [`Datapath::program`] takes a [`CompiledNode`] plus the pod interfaces and
//! makes the kernel match it. See `docs/datapath.md`.

pub mod addrs;
pub mod attach;
mod batch;
pub mod cells;
pub mod command;
pub mod crash;
pub mod encode;
pub mod hold;
pub mod iface;
pub mod load;
pub mod maps;
mod migrate;
pub mod node_addrs;
pub mod others;
pub mod pod_tables;
mod program;
pub mod readback;
mod route_dump;
pub mod sys;
pub mod telemetry;
pub mod uplink;
pub mod versions;
pub mod watch;
pub mod writer;

use anyhow::Result;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use writer::{WriteReport, Writer};

/// The classifiers' object, embedded at build time (empty when the agent was
/// built before `cargo xtask build-ebpf`).
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/palisade-ebpf.o"));

/// The embedded object, or a clear error when it is missing.
pub fn ebpf_object() -> anyhow::Result<&'static [u8]> {
    if EBPF_OBJECT.is_empty() {
        anyhow::bail!("this palisade binary was built without its eBPF object: run `cargo xtask build-ebpf`, then rebuild");
    }
    Ok(EBPF_OBJECT)
}

/// The loaded classifiers, the pinned maps and the attached interfaces of
/// one node.
pub struct Datapath {
    ebpf: aya::Ebpf,
    layout: load::PinLayout,
    writer: Writer,
    /// Interfaces with both classifiers attached (pinned links).
    attached: BTreeSet<u32>,
    /// `SERVICES` and `LOCAL_ADDRS`.
    services: addrs::AddrTable<palisade_common::ServiceKey>,
    local_addrs: addrs::AddrTable<palisade_common::IpKey>,
    uplink_spec: uplink::UplinkSpec,
    /// Uplinks with `node_egress` attached (pinned links).
    uplinks: BTreeSet<u32>,
    /// The node's own addresses as last read (`node_addrs`), kept when a
    /// read fails.
    node_addrs: BTreeSet<std::net::IpAddr>,
    /// The addresses whose identity may have changed since the trie was
    /// last written whole or in part (`note_identity_changes`); `None`:
    /// any, so the next round compares them all.
    identity_scope: Option<BTreeSet<std::net::IpAddr>>,
    /// The devices of the default routes, when the caller read the routes
    /// for this round (`note_routes`); taken by the round.
    default_devs: Option<BTreeSet<String>>,
    /// Whether the caller told this round's changes: one that does not
    /// gets every address compared.
    identity_noted: bool,
    /// The interfaces the CNI plugin holds right now (its records).
    recorded: Option<RecordedFn>,
    adopted: bool,
    /// Held for the life of this value: one writer per node.
    _lock: sys::DirLock,
}

/// Reads the interface indexes the CNI plugin holds (see
/// [`Datapath::set_recorded`]).
pub type RecordedFn = Box<dyn Fn() -> BTreeSet<u32> + Send + Sync>;

/// Outcome of one [`Datapath::program`] call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProgramReport {
    pub write: WriteReport,
    /// Interfaces newly attached.
    pub attached: usize,
    /// When the round had attached them (the first step of a round).
    pub attached_at: Option<std::time::Instant>,
    /// Links of an older layout version moved to this one (`migrate.rs`).
    pub migrated: usize,
    /// Interfaces detached and forgotten.
    pub detached: usize,
    /// Outer entries of no live generation that were deleted.
    pub garbage: usize,
    /// Local pods programmed (with an interface).
    pub pods: usize,
    /// Interfaces that could not be attached: (ifindex, error).
    pub attach_errors: Vec<(u32, String)>,
    /// Node-wide steps that failed: (step, error). Each is retried by the
    /// next round; meanwhile what it could not write fails closed (an
    /// identity missing reads as WORLD, a Service frontend missing is
    /// refused at the client's hook), and no step keeps an interface from
    /// being attached.
    pub node_errors: Vec<(&'static str, String)>,
}

impl ProgramReport {
    /// Nothing is left to retry.
    pub fn clean(&self) -> bool {
        self.attach_errors.is_empty() && self.write.failed.is_empty() && self.node_errors.is_empty()
    }
}

impl Datapath {
    /// Loads `object` and pins (or re-adopts) its maps and links under
    /// `<bpffs_root>/<node>/v<N>/` (this binary's layout version). Pins of
    /// an older version keep enforcing until [`Datapath::program`] has
    /// programmed every pod and moves their links; pins of a newer version
    /// make this fail with [`versions::NewerLayout`], untouched.
    pub fn open(object: &[u8], bpffs_root: &Path, node: &str) -> Result<Self> {
        let mut loaded = load::load(object, bpffs_root, node)?;
        let attached = attach::adopt(&mut loaded.ebpf, &loaded.layout)?;
        // From here on the CNI plugin holds new interfaces with these.
        hold::pin_programs(&mut loaded.ebpf, &loaded.layout)?;
        let uplinks = uplink::adopt(&mut loaded.ebpf, &loaded.layout)?;
        let services = addrs::AddrTable::take(&mut loaded, palisade_common::names::SERVICES)?;
        let local_addrs = addrs::AddrTable::take(&mut loaded, palisade_common::names::LOCAL_ADDRS)?;
        let conntrack = pod_tables::PodTables::take(&mut loaded)?;
        let mut writer = Writer::new(maps::NodeMaps::take(&mut loaded)?, conntrack)?;
        // Denied packets are reported from the start; allowed flows only
        // while someone asks (`set_events`).
        writer.set_events(palisade_common::CONFIG_EVENTS_DENIED)?;
        Ok(Datapath {
            ebpf: loaded.ebpf,
            layout: loaded.layout,
            writer,
            attached,
            services,
            local_addrs,
            uplink_spec: uplink::UplinkSpec::Auto,
            uplinks,
            node_addrs: BTreeSet::new(),
            identity_scope: None,
            identity_noted: false,
            default_devs: None,
            recorded: None,
            adopted: loaded.adopted,
            _lock: loaded.lock,
        })
    }

    /// Chooses the uplinks `node_egress` goes on (default: the devices of
    /// the default routes); applied by the next `program`.
    pub fn set_uplinks(&mut self, spec: uplink::UplinkSpec) {
        self.uplink_spec = spec;
    }

    /// Tells how to read the interfaces the CNI plugin holds. A pinned link
    /// on one of them that a round does not know (its record came after the
    /// round read the records) is left attached, not taken for a leftover.
    pub fn set_recorded(&mut self, f: RecordedFn) {
        self.recorded = Some(f);
    }

    /// Sets which events the classifiers emit (`CONFIG_EVENTS_*` bits).
    pub fn set_events(&mut self, events: u32) -> Result<()> {
        self.writer.set_events(events)
    }

    /// Entries of each pod's own conntrack table, for tables created from
    /// now on (default `CONNTRACK_POD_DEFAULT`); 0: pods share the
    /// node-wide table.
    pub fn set_conntrack_per_pod(&mut self, entries: u32) {
        self.writer.set_conntrack_per_pod(entries);
    }

    /// The counter slot of each interface with an endpoint record.
    pub fn slots(&self) -> &BTreeMap<u32, u16> {
        self.writer.slots()
    }

    /// The older layout versions still pinned on the node (being
    /// migrated: see `migrate.rs`).
    pub fn older_layouts(&self) -> Result<Vec<u32>> {
        Ok(versions::older(&self.layout)?
            .iter()
            .map(|l| l.version)
            .collect())
    }

    /// Whether the maps were already pinned when this instance opened them.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    pub fn layout(&self) -> &load::PinLayout {
        &self.layout
    }

    /// Interfaces with both classifiers attached.
    pub fn attached(&self) -> &BTreeSet<u32> {
        &self.attached
    }

    /// Interfaces this agent attached whose links no longer hold them: the
    /// device went away, and may be back under the same index without
    /// classifiers. Their routes can read exactly as before, so the agent
    /// asks this on every look for changes; the next `program` attaches
    /// them again.
    pub fn defunct_links(&self) -> Vec<u32> {
        self.attached
            .iter()
            .filter(|i| {
                !attach::HOOKS
                    .iter()
                    .all(|(prog, _)| attach::is_attached(&self.layout, **i, prog))
            })
            .copied()
            .collect()
    }

    /// Pinned identities of host addresses (what the last agent programmed).
    pub fn identities(&self) -> BTreeMap<std::net::IpAddr, u32> {
        self.writer.identities()
    }

    /// The live endpoint record of an interface.
    pub fn endpoint(&self, ifindex: u32) -> Option<palisade_common::Endpoint> {
        self.writer.endpoint(ifindex)
    }

    /// Interfaces with an endpoint record.
    pub fn endpoints(&self) -> BTreeSet<u32> {
        self.writer.interfaces()
    }

    /// Attaches `node_egress` to the uplinks the spec names now, and
    /// detaches it from those it no longer names.
    pub(crate) fn program_uplinks(&mut self, report: &mut ProgramReport) {
        let defaults = self.default_devs.take();
        let want = match uplink::resolve(&self.uplink_spec, defaults.as_ref()) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot find the uplinks");
                return;
            }
        };
        for ifindex in want.difference(&self.uplinks.clone()) {
            match uplink::attach(&mut self.ebpf, &self.layout, *ifindex) {
                Ok(()) => {
                    self.uplinks.insert(*ifindex);
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    tracing::error!(ifindex, error = %msg, "cannot attach node_egress");
                    report.attach_errors.push((*ifindex, msg));
                }
            }
        }
        for ifindex in self.uplinks.clone().difference(&want) {
            uplink::detach(&self.layout, *ifindex);
            self.uplinks.remove(ifindex);
        }
    }

    /// Hands the next [`Datapath::program`] the routes the caller read for
    /// it, so that finding the uplinks reads them no second time.
    pub fn note_routes(&mut self, routes: &iface::Routes) {
        self.default_devs = Some(routes.default_devs.clone());
    }

    /// Tells the next [`Datapath::program`] which addresses' identities
    /// may have changed since the last one (the compiler's journal), so
    /// that it compares only those with the kernel's trie; `None` (a cold
    /// build) has it compare every address. Journals add up until a round
    /// writes them all.
    pub fn note_identity_changes(&mut self, changed: Option<BTreeSet<std::net::IpAddr>>) {
        match (&mut self.identity_scope, changed) {
            (Some(scope), Some(c)) => scope.extend(c),
            (scope, _) => *scope = None,
        }
        self.identity_noted = true;
    }

    /// The node's own addresses, programmed as `IDENTITY_HOST`.
    pub fn node_addrs(&self) -> &BTreeSet<std::net::IpAddr> {
        &self.node_addrs
    }

    /// Uplinks with `node_egress` attached.
    pub fn uplinks(&self) -> &BTreeSet<u32> {
        &self.uplinks
    }
}
