//! The figures only an installed engine gives: the run statistics of its
//! programs over the load measurement, then (after the load, before its
//! removal) Palisade's classifier cost per packet over the maps its agent
//! programmed, and the kernel memory of the engine's policy state.

use crate::bpfstats::{self, Counters};
use crate::engines::{self, Installed, Setup};
use crate::figures::Memory;
use crate::workload::{CLIENT, OUTSIDER, SERVER};
use crate::{classifier, iptables, load, memory};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::time::Duration;

/// The load measurement, with the counters of the engine's programs over
/// it (statistics are on only for that time, and only for engines that
/// have programs).
pub fn measure(
    s: &Setup,
    installed: &Installed,
    server: std::net::Ipv4Addr,
    duration: Duration,
) -> Result<(load::Sample, BTreeMap<String, Counters>)> {
    let programs = installed.programs(s)?;
    if programs.is_empty() {
        return Ok((
            load::measure(s.lab, CLIENT, server, duration)?,
            BTreeMap::new(),
        ));
    }
    let ids: Vec<u32> = programs.values().copied().collect();
    let on = bpfstats::enable()?;
    let before = bpfstats::read(&ids)?;
    let sample = load::measure(s.lab, CLIENT, server, duration)?;
    let after = bpfstats::read(&ids)?;
    drop(on);
    let stats = programs
        .iter()
        .map(|(name, id)| (name.clone(), before[id].delta(after[id])))
        .collect();
    Ok((sample, stats))
}

/// Palisade's classifier cost per packet over the maps its agent programmed.
pub fn classifier_cost(
    s: &Setup,
    installed: &Installed,
    server: std::net::Ipv4Addr,
) -> Result<Option<classifier::Sample>> {
    let Installed::Palisade(_) = installed else {
        return Ok(None);
    };
    // The floor is the object's noop program: without it there is no
    // figure to compare with (the run said so when it started).
    if !engines::object_has_noop(s.ebpf_object)? {
        return Ok(None);
    }
    let ip = |key: &str| {
        s.workload
            .pod(key)
            .map(|p| p.ip)
            .with_context(|| format!("no pod {key}"))
    };
    let flows = classifier::Flows {
        client: ip(CLIENT)?,
        outsider: ip(OUTSIDER)?,
        server,
        server_port: crate::workload::PORT_RR,
        ifindex: s.lab.host_ifindex(SERVER)?,
        isolated: s.workload.rules > 0,
    };
    let pins = engines::pins(s);
    let object = s.ebpf_object;
    let sample = s
        .lab
        .run_in_node(|| classifier::measure(object, &pins, &flows))?
        .context("classifier cost (BPF_PROG_TEST_RUN)")?;
    Ok(Some(sample))
}

/// The kernel memory of an engine's policy state, where it can be read.
pub fn memory_of(s: &Setup, installed: &Installed) -> Result<Option<Memory>> {
    match installed {
        Installed::Palisade(_) => {
            let m = memory::palisade(&engines::pins(s)).context("palisade's map memory")?;
            Ok(Some(Memory {
                bytes: m.policy_bytes(),
                fixed_bytes: Some(m.fixed_bytes),
                objects: m.pod_maps,
                pod_maps_bytes: Some(m.pod_maps_bytes),
            }))
        }
        Installed::Iptables(r) => {
            let text = engines::in_node(&s.lab.node_netns(), "ipset", &["list", "-t"], None)?;
            let sets: Vec<memory::IpsetSize> = memory::parse_ipset_list(&text)?
                .into_iter()
                .filter(|set| set.name.starts_with(iptables::SET_PREFIX))
                .collect();
            if sets.len() != r.set_names.len() {
                bail!(
                    "ipset list shows {} of the {} ipsets installed",
                    sets.len(),
                    r.set_names.len()
                );
            }
            Ok(Some(Memory {
                bytes: sets.iter().map(|set| set.bytes).sum(),
                fixed_bytes: None,
                objects: sets.len() as u64,
                pod_maps_bytes: None,
            }))
        }
        _ => Ok(None),
    }
}
