//! The demo's ClusterNetworkPolicy part: a cloud metadata server behind
//! every node (`169.254.169.254`, a host outside the cluster), probed from
//! every pod before and after enforcement and held to the oracle, and the
//! first cell of the matrix an Admin Accept allows although a
//! NetworkPolicy isolates its destination, with `palisade check` naming
//! the rules of both.

use crate::running::Running;
use anyhow::{bail, Context, Result};
use palisade_lab::{Outcome, PodServer, ProbePort, Protocol, ServedPort, PROBE_TIMEOUT};
use palisade_policy::{
    evaluate, matrix_cells, Action, DirVerdict, Direction, Family, Flow, MatrixCell, Model, Tier,
};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

/// Where clouds serve instance metadata (and credentials).
pub const METADATA: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
pub const METADATA_PORT: ProbePort = ProbePort {
    port: 80,
    protocol: Protocol::Tcp,
};

/// One metadata server per node, until dropped.
pub fn serve_metadata(lab: &Running) -> Result<Vec<PodServer>> {
    let served = [ServedPort {
        port: METADATA_PORT.port,
        protocol: METADATA_PORT.protocol,
    }];
    lab.nodes()
        .iter()
        .map(|n| {
            n.lab
                .add_outside_host(METADATA, &served)
                .with_context(|| format!("metadata server behind {}", n.name))
        })
        .collect()
}

/// `(pod, reached)` for a probe from every lab pod to the metadata server.
pub fn probe_metadata(lab: &Running) -> Result<Vec<(String, bool)>> {
    let mut out = Vec::new();
    for n in lab.nodes() {
        for pod in n.lab.pods() {
            let key = pod.key();
            let outcome = n.lab.probe_outcome(
                &key,
                METADATA.into(),
                METADATA_PORT.port,
                METADATA_PORT.protocol,
                PROBE_TIMEOUT,
            )?;
            if let Outcome::Error(e) = &outcome {
                bail!("probe {key} -> {METADATA}:{METADATA_PORT}: {e}");
            }
            out.push((key, outcome.reached()));
        }
    }
    out.sort();
    Ok(out)
}

fn metadata_flow(model: &Model, key: &str) -> Option<Flow> {
    let (ns, name) = key.split_once('/')?;
    Some(Flow {
        src: model.pod(ns, name)?.ip(Family::V4)?,
        dst: METADATA.into(),
        proto: METADATA_PORT.protocol.number(),
        dport: METADATA_PORT.port,
    })
}

/// The probes the oracle answers differently, as lines.
pub fn metadata_differences(model: &Model, measured: &[(String, bool)]) -> Vec<String> {
    measured
        .iter()
        .filter_map(|(key, reached)| {
            let expected = evaluate(model, &metadata_flow(model, key)?).allowed();
            (expected != *reached).then(|| {
                format!(
                    "{key} -> {METADATA} {METADATA_PORT}: measured {}, expected {}",
                    word(*reached),
                    word(expected)
                )
            })
        })
        .collect()
}

fn word(allowed: bool) -> &'static str {
    if allowed {
        "allowed"
    } else {
        "denied"
    }
}

/// `reached from N of M pods`.
pub fn reached_text(measured: &[(String, bool)]) -> String {
    let reached = measured.iter().filter(|(_, r)| *r).count();
    format!("reached from {reached} of {} pods", measured.len())
}

/// A pod whose metadata probe an Admin Deny refuses, preferring one no
/// NetworkPolicy isolates for egress (there the cluster rule is the only
/// thing in the way).
pub fn metadata_denied_pod(model: &Model, pods: &[String]) -> Option<String> {
    let admin_deny = |key: &String| {
        let flow = metadata_flow(model, key)?;
        match evaluate(model, &flow).egress {
            DirVerdict::Cluster(r) if r.tier == Tier::Admin && r.action == Action::Deny => {
                let (ns, name) = key.split_once('/')?;
                let pod = model.pod(ns, name)?;
                Some(model.deciding_policies(pod, Direction::Egress).is_none())
            }
            _ => None,
        }
    };
    let candidates: Vec<(&String, bool)> = pods
        .iter()
        .filter_map(|k| admin_deny(k).map(|open| (k, open)))
        .collect();
    candidates
        .iter()
        .find(|(_, open)| *open)
        .or(candidates.first())
        .map(|(k, _)| (*k).clone())
}

/// The first cell an Admin Accept allows at a destination some
/// NetworkPolicy isolates for ingress: allowed despite that policy.
pub fn accept_over_network_policy(
    model: &Model,
    ports: &[ProbePort],
    family: Family,
) -> Option<MatrixCell> {
    matrix_cells(model, ports, family).into_iter().find(|c| {
        let Some(v) = &c.verdict else {
            return false;
        };
        let DirVerdict::Cluster(r) = &v.ingress else {
            return false;
        };
        let isolated = c
            .entry
            .to
            .split_once('/')
            .and_then(|(ns, name)| model.pod(ns, name))
            .is_some_and(|p| model.deciding_policies(p, Direction::Ingress).is_some());
        c.entry.allowed && r.tier == Tier::Admin && r.action == Action::Accept && isolated
    })
}

/// `palisade check` on the demo's manifests, as a command line and its
/// output.
pub fn check(bin: &Path, manifests: &[PathBuf], from: &str, to: &str, port: &str) -> String {
    let mut cmd = std::process::Command::new(bin);
    cmd.arg("check");
    let mut shown = vec!["palisade check".to_string()];
    let root = crate::build::workspace_root();
    for m in manifests {
        cmd.arg("--manifests").arg(m);
        let rel = m.strip_prefix(&root).unwrap_or(m);
        shown.push(format!("--manifests {}", rel.display()));
    }
    cmd.args(["--from", from, "--to", to, "--port", port]);
    shown.push(format!("--from {from} --to {to} --port {port}"));
    let out = match cmd.output() {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(e) => format!("(could not run {}: {e})\n", bin.display()),
    };
    format!("$ {}\n{out}", shown.join(" "))
}

/// The probed address as `check` takes it.
pub fn metadata_addr() -> IpAddr {
    METADATA.into()
}
