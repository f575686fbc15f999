//! Probing from a lab's pods: single probes, batches, matrices.

use crate::lab::Lab;
use crate::netns::NetNs;
use crate::probe::{self, Outcome, SourcePorts};
use anyhow::{bail, Result};
use palisade_policy::{Family, MatrixEntry, ProbePort, Protocol};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Probe timeout of matrices: long enough for a first ARP/NDP exchange on
/// an idle veth, short enough that a denied flow costs little.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(400);

/// Probes in flight at once. Each is a thread mostly waiting on a socket.
pub const PROBE_PARALLELISM: usize = 64;

/// A probe to run: from a pod (`namespace/name`) to an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub from: String,
    pub to: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
}

impl Lab {
    /// One probe; true when the server answered.
    pub fn probe(
        &self,
        from: &str,
        to: IpAddr,
        port: u16,
        protocol: Protocol,
        timeout: Duration,
    ) -> Result<bool> {
        Ok(self
            .probe_outcome(from, to, port, protocol, timeout)?
            .reached())
    }

    /// One probe, with why it failed.
    pub fn probe_outcome(
        &self,
        from: &str,
        to: IpAddr,
        port: u16,
        protocol: Protocol,
        timeout: Duration,
    ) -> Result<Outcome> {
        let ports = &self.pod(from)?.source_ports;
        self.run_in_pod(from, || probe::probe(to, port, protocol, timeout, ports))
    }

    /// Many probes, `PROBE_PARALLELISM` at a time; results in input order.
    pub fn probe_many(&self, probes: &[Probe], timeout: Duration) -> Result<Vec<Outcome>> {
        let sources: Vec<(&Arc<NetNs>, &SourcePorts)> = probes
            .iter()
            .map(|p| self.pod(&p.from).map(|pod| (&pod.ns, &pod.source_ports)))
            .collect::<Result<_>>()?;
        let next = AtomicUsize::new(0);
        let results: Vec<Mutex<Option<Outcome>>> =
            probes.iter().map(|_| Mutex::new(None)).collect();
        let workers = PROBE_PARALLELISM.min(probes.len());
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    s.spawn(|| -> Result<()> {
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(p) = probes.get(i) else {
                                return Ok(());
                            };
                            // Worker threads belong to the lab: they may
                            // hop between pod namespaces freely.
                            let (ns, ports) = sources[i];
                            ns.enter()?;
                            let out = probe::probe(p.to, p.port, p.protocol, timeout, ports);
                            *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(out);
                        }
                    })
                })
                .collect();
            handles.into_iter().try_for_each(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("probe thread panicked"))?
            })
        })?;
        Ok(results
            .into_iter()
            .map(|m| {
                m.into_inner()
                    .unwrap_or_else(|e| e.into_inner())
                    .expect("every probe ran")
            })
            .collect())
    }

    /// The measured matrix: every ordered pair of distinct pods having an
    /// address of `family`, for each port, in the order (and JSON shape) of
    /// `palisade_policy::matrix`. A pod talking to itself never crosses its
    /// veth, so no plugin can enforce it: such pairs are not probed.
    pub fn measure_matrix(&self, ports: &[ProbePort], family: Family) -> Result<Vec<MatrixEntry>> {
        self.measure_matrix_with(ports, family, PROBE_TIMEOUT)
    }

    pub fn measure_matrix_with(
        &self,
        ports: &[ProbePort],
        family: Family,
        timeout: Duration,
    ) -> Result<Vec<MatrixEntry>> {
        let pods: Vec<(String, IpAddr)> = self
            .pods
            .iter()
            .filter_map(|p| p.spec.ip(family).map(|ip| (p.key(), ip)))
            .collect();
        matrix_of(pods, ports, |probes| self.probe_many(probes, timeout))
    }
}

/// The matrix over `pods` (`namespace/name`, address), probed by
/// `probe_many`: shared by a one-node lab and a cluster of them.
pub(crate) fn matrix_of(
    mut pods: Vec<(String, IpAddr)>,
    ports: &[ProbePort],
    probe_many: impl Fn(&[Probe]) -> Result<Vec<Outcome>>,
) -> Result<Vec<MatrixEntry>> {
    pods.sort();
    let mut cells = Vec::new();
    for pp in ports {
        for (from, _) in &pods {
            for (to, dst) in &pods {
                if from != to {
                    cells.push((from.clone(), to.clone(), *dst, *pp));
                }
            }
        }
    }
    let probes: Vec<Probe> = cells
        .iter()
        .map(|(from, _, dst, pp)| Probe {
            from: from.clone(),
            to: *dst,
            port: pp.port,
            protocol: pp.protocol,
        })
        .collect();
    let mut outcomes = probe_many(&probes)?;
    // A timeout is the only failure a busy host can fake (an answer
    // cannot be faked): probe those cells once more, so that a false
    // "denied" needs two stalls in a row.
    let again: Vec<usize> = (0..outcomes.len())
        .filter(|&i| outcomes[i] == Outcome::TimedOut)
        .collect();
    let second = probe_many(&again.iter().map(|&i| probes[i].clone()).collect::<Vec<_>>())?;
    for (i, out) in again.into_iter().zip(second) {
        outcomes[i] = out;
    }
    let mut entries = Vec::with_capacity(cells.len());
    for ((from, to, _, pp), out) in cells.into_iter().zip(outcomes) {
        if let Outcome::Error(e) = &out {
            bail!("probe {from} -> {to} {pp}: {e}");
        }
        entries.push(MatrixEntry {
            from,
            to,
            port: pp.port,
            protocol: pp.protocol,
            allowed: out.reached(),
        });
    }
    Ok(entries)
}
