//! One programming round of the node: [`Datapath::program`].
//!
//! Order matters, for the two invariants:
//! 1. attach first: every interface the round wants gets its classifiers
//!    before anything node-wide is written. With no endpoint record yet a
//!    classifier drops everything, so a new interface is held pending
//!    whatever fails after (a full `SERVICES`, an identity write, the
//!    commit), never left unfiltered;
//! 2. node-wide tables (identities, `LOCAL_ADDRS`, `SERVICES`) are added
//!    before the records that rely on them and pruned after; each step's
//!    error is reported and the round goes on: what a step could not write
//!    fails closed (see `ProgramReport::node_errors`);
//! 3. records and inner maps per interface, then the generation flips
//!    (`Writer::commit`);
//! 4. while pins of an older layout version are there, after a clean round
//!    their links move to this layout's programs (`migrate.rs`);
//! 5. interfaces no longer wanted are detached, then their state deleted.

use super::load::PinLayout;
use super::writer::Desired;
use super::{
    attach, encode, iface::Interfaces, migrate, node_addrs, sys, versions, Datapath, ProgramReport,
};
use anyhow::Result;
use palisade_common::{IpKey, ServiceKey};
use palisade_compiler::CompiledNode;
use std::collections::{BTreeMap, BTreeSet};

impl Datapath {
    /// Makes the kernel match `node` for the interfaces in `ifaces`:
    /// attachments, identities, address tables, endpoint records and inner
    /// maps. Pods with no interface are skipped; interfaces that are
    /// neither a pod's nor `ifaces.unknown` are detached and their state
    /// deleted. Errors of one interface or one node-wide step are in the
    /// report; `Err` only when the pin directory cannot be read.
    pub fn program(&mut self, node: &CompiledNode, ifaces: &Interfaces) -> Result<ProgramReport> {
        let mut report = ProgramReport::default();
        if !std::mem::take(&mut self.identity_noted) {
            self.identity_scope = None;
        }
        let desired = desired(node, ifaces, &mut report);
        // Pins of an older layout version: they enforce until every pod is
        // programmed here, then their links move (`migrate.rs`).
        let older = versions::older(&self.layout)?;
        self.attach_all(&desired, &older, &mut report);
        if report.attached > 0 {
            report.attached_at = Some(std::time::Instant::now());
        }

        let local = local_addrs(node, ifaces);
        let services: BTreeMap<ServiceKey, u32> = node
            .services
            .iter()
            .map(|f| (encode::service_key(f), 1))
            .collect();
        self.add_node_tables(node, &local, &services, &mut report);
        for (ifindex, want) in &desired {
            // One interface's kernel error must not stop the others: with
            // no record its classifier drops.
            if let Err(e) = self.writer.program(*ifindex, want, &mut report.write) {
                let msg = format!("{e:#}");
                tracing::error!(ifindex, error = %msg, "cannot program interface");
                report
                    .write
                    .failed
                    .push((format!("ifindex {ifindex}"), msg));
            }
        }
        if let Err(e) = self.writer.commit(&mut report.write) {
            node_error(&mut report, "commit", e);
        }
        let migrated = match (older.is_empty(), report.clean()) {
            (true, _) => true,
            (false, true) => {
                let done = self.migrate(&older, &mut report);
                if done {
                    // What the old classifiers tracked until their links moved.
                    self.writer.absorb_conntrack();
                }
                done
            }
            (false, false) => {
                tracing::warn!("older pins keep enforcing until a round programs every pod");
                false
            }
        };
        self.detach_gone(&desired, &mut report)?;
        self.prune_node_tables(node, &local, &services, &mut report);
        match self.writer.collect_garbage() {
            Ok(n) => report.garbage = n,
            Err(e) => node_error(&mut report, "garbage", e),
        }
        // The old `node_egress` links keep deciding until they move.
        if migrated {
            self.program_uplinks(&mut report);
        }
        Ok(report)
    }

    /// Attaches both classifiers to every wanted interface not attached yet.
    /// Interfaces an older layout's links hold are left to them.
    fn attach_all(
        &mut self,
        desired: &BTreeMap<u32, Desired>,
        older: &[PinLayout],
        report: &mut ProgramReport,
    ) {
        // An interface deleted and made again under the same index (a pod
        // sandbox re-created between two looks at the routes) has lost its
        // links with the old device: attached again below.
        for ifindex in self.defunct_links() {
            tracing::warn!(
                ifindex,
                ifname = sys::ifname(ifindex).unwrap_or_default(),
                "interface re-created under the same index lost its classifiers; attaching them again"
            );
            self.attached.remove(&ifindex);
        }
        for ifindex in desired.keys() {
            if self.attached.contains(ifindex) || migrate::held_by(older, *ifindex) {
                continue;
            }
            match attach::attach(&mut self.ebpf, &self.layout, *ifindex) {
                Ok(()) => {
                    self.attached.insert(*ifindex);
                    report.attached += 1;
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    tracing::error!(ifindex, error = %msg, "cannot attach classifiers");
                    report.attach_errors.push((*ifindex, msg));
                }
            }
        }
    }

    /// Identities (the node's own addresses as `IDENTITY_HOST`),
    /// `LOCAL_ADDRS` and `SERVICES`: additions and updates.
    fn add_node_tables(
        &mut self,
        node: &CompiledNode,
        local: &BTreeMap<IpKey, u32>,
        services: &BTreeMap<ServiceKey, u32>,
        report: &mut ProgramReport,
    ) {
        match node_addrs::read() {
            Ok(addrs) => self.node_addrs = addrs,
            Err(e) => node_error(report, "node addresses", e),
        }
        let scope = self.identity_scope.as_ref();
        let r = self.writer.add_identities(
            &node.identities,
            &self.node_addrs,
            scope,
            &mut report.write,
        );
        if let Err(e) = r {
            // Compared whole next round: what this one missed is not known.
            self.identity_scope = None;
            node_error(report, "IDENTITIES", e);
        }
        // Before the records: a client whose record is live is always
        // found again after DNAT.
        if let Err(e) = self.local_addrs.add(local) {
            node_error(report, "LOCAL_ADDRS", e);
        }
        if let Err(e) = self.services.add(services) {
            node_error(report, "SERVICES", e);
        }
    }

    /// Removes what the node-wide tables hold and the round does not want.
    fn prune_node_tables(
        &mut self,
        node: &CompiledNode,
        local: &BTreeMap<IpKey, u32>,
        services: &BTreeMap<ServiceKey, u32>,
        report: &mut ProgramReport,
    ) {
        let failed = report.node_errors.iter().any(|(s, _)| *s == "IDENTITIES");
        let r = self.writer.remove_stale_identities(
            &node.identities,
            &self.node_addrs,
            self.identity_scope.as_ref(),
            &mut report.write,
        );
        match r {
            Err(e) => {
                self.identity_scope = None;
                node_error(report, "IDENTITIES", e);
            }
            // Written: the next round compares only what changes by then.
            Ok(()) if !failed => self.identity_scope = Some(BTreeSet::new()),
            Ok(()) => {}
        }
        if let Err(e) = self.local_addrs.remove_stale(local) {
            node_error(report, "LOCAL_ADDRS", e);
        }
        if let Err(e) = self.services.remove_stale(services) {
            node_error(report, "SERVICES", e);
        }
    }

    /// Detaches and forgets interfaces attached, recorded or pinned that
    /// the round does not want, except those the CNI plugin holds.
    fn detach_gone(
        &mut self,
        desired: &BTreeMap<u32, Desired>,
        report: &mut ProgramReport,
    ) -> Result<()> {
        let gone: BTreeSet<u32> = self
            .attached
            .iter()
            .chain(self.writer.interfaces().iter())
            .chain(attach::pinned_ifindexes(&self.layout)?.iter())
            .filter(|i| !desired.contains_key(i))
            .copied()
            .collect();
        let recorded = match (&self.recorded, gone.is_empty()) {
            (Some(f), false) => f(),
            _ => BTreeSet::new(),
        };
        for ifindex in gone {
            if recorded.contains(&ifindex) && sys::ifname(ifindex).is_some() {
                continue;
            }
            // Detach first: once no classifier runs for the interface, its
            // record and maps can go without a window of missing policy.
            attach::detach(&self.layout, ifindex);
            self.attached.remove(&ifindex);
            if let Err(e) = self.writer.remove(ifindex, &mut report.write) {
                let msg = format!("{e:#}");
                tracing::error!(ifindex, error = %msg, "cannot delete the state of a removed interface");
                report
                    .write
                    .failed
                    .push((format!("ifindex {ifindex}"), msg));
                continue;
            }
            report.detached += 1;
        }
        Ok(())
    }
}

/// What each interface of the round should hold: a pod's compiled policy,
/// or pending (a pod not compiled yet, an interface of no known pod).
fn desired(
    node: &CompiledNode,
    ifaces: &Interfaces,
    report: &mut ProgramReport,
) -> BTreeMap<u32, Desired> {
    let mut desired: BTreeMap<u32, Desired> = BTreeMap::new();
    for (key, ifindex) in &ifaces.pods {
        let Some(pod) = node.pods.get(key) else {
            desired.insert(*ifindex, Desired::Pending { label: key.clone() });
            continue;
        };
        if let Some(err) = &pod.error {
            tracing::error!(pod = key, error = %err, "pod policy exceeds the datapath's capacity; denying all its traffic");
        }
        let (endpoint, maps) = encode::encode_pod(pod);
        desired.insert(
            *ifindex,
            Desired::Pod {
                label: key.clone(),
                endpoint,
                maps,
            },
        );
        report.pods += 1;
    }
    for (ifindex, ifname) in &ifaces.unknown {
        desired.entry(*ifindex).or_insert_with(|| Desired::Pending {
            label: format!("interface {ifname}"),
        });
    }
    desired
}

/// Each local pod address with an interface -> that interface.
fn local_addrs(node: &CompiledNode, ifaces: &Interfaces) -> BTreeMap<IpKey, u32> {
    let mut out = BTreeMap::new();
    for (key, ifindex) in &ifaces.pods {
        if let Some(pod) = node.pods.get(key) {
            for ip in &pod.ips {
                out.insert(encode::ip_key(*ip), *ifindex);
            }
        }
    }
    out
}

fn node_error(report: &mut ProgramReport, step: &'static str, e: anyhow::Error) {
    let msg = format!("{e:#}");
    tracing::error!(step, error = %msg, "node-wide programming step failed; what it could not write fails closed");
    report.node_errors.push((step, msg));
}
