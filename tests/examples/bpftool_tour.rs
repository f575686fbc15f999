//! A tour of the pinned maps of a live lab node, as `bpftool` prints them:
//! the example manifests (`deploy/examples`) enforced by the agent, one
//! round of probes so conntrack and the counters have something to show,
//! then `bpftool map dump pinned` of every node map (the first entries of
//! each) and of one pod's inner maps. The README's "Debugging with bpftool"
//! section is made from this output. Run as root after `cargo xtask build`:
//! `cargo run -p palisade-tests --example bpftool_tour`.

use anyhow::{Context, Result};
use palisade_common::names;
use palisade_lab::{palisade_bin, AgentOptions, Family, Lab, LabSpec, ProbePort};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Entries shown per map.
const SHOWN: usize = 2;
const NODE_MAPS: [&str; 13] = [
    names::ENDPOINTS,
    names::ENDPOINT_CELLS,
    names::IDENTITIES,
    names::SERVICES,
    names::LOCAL_ADDRS,
    names::POLICY_IDENTITY,
    names::POLICY_CIDR,
    names::POLICY_PORT,
    names::CONNTRACK,
    names::COUNTERS,
    names::RULE_COUNTERS,
    names::EVENTS_LOST,
    names::CONFIG,
];

fn bpftool(args: &[&str]) -> Result<serde_json::Value> {
    let out = Command::new("bpftool")
        .arg("-j")
        .args(args)
        .output()
        .context("run bpftool")?;
    anyhow::ensure!(
        out.status.success(),
        "bpftool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Prints the first entries of a dump that are not all zero (counter
/// arrays hold one entry per slot, most of them unused) the way
/// `bpftool map lookup` prints them: with BTF field names where the map has
/// BTF, as bytes otherwise.
fn show(title: &str, target: &[&str], dump: &serde_json::Value) -> Result<()> {
    let entries = dump.as_array().cloned().unwrap_or_default();
    let used: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|e| !all_zero(&e["value"]) && !all_zero(&e["values"]))
        .collect();
    println!(
        "## {title}: {} entries ({} not zero)",
        entries.len(),
        used.len()
    );
    println!("$ bpftool map lookup {} key hex ...", target.join(" "));
    for e in used.iter().take(SHOWN) {
        let key: Vec<String> = e["key"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| b.as_str())
            .map(|b| b.trim_start_matches("0x").to_string())
            .collect();
        let mut args = vec!["map", "lookup"];
        args.extend_from_slice(target);
        args.push("key");
        args.push("hex");
        args.extend(key.iter().map(String::as_str));
        let out = Command::new("bpftool").args(&args).output()?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
    println!();
    Ok(())
}

fn all_zero(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null => false,
        serde_json::Value::Number(n) => n.as_u64() == Some(0),
        serde_json::Value::String(s) => s.trim_start_matches("0x").chars().all(|c| c == '0'),
        serde_json::Value::Array(a) => a.iter().all(all_zero),
        serde_json::Value::Object(o) => o
            .iter()
            .filter(|(k, _)| *k != "cpu")
            .all(|(_, v)| all_zero(v)),
        serde_json::Value::Bool(b) => !b,
    }
}

/// The inner map ids an outer map points at: its values, little-endian
/// `u32` map ids (outer maps carry no BTF).
fn inner_ids(dump: &serde_json::Value) -> BTreeSet<u64> {
    let mut out = BTreeSet::new();
    for e in dump.as_array().into_iter().flatten() {
        let bytes: Vec<u64> = e["value"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| u64::from_str_radix(b.as_str()?.trim_start_matches("0x"), 16).ok())
            .collect();
        out.insert(bytes.iter().rev().fold(0, |acc, b| acc << 8 | b));
    }
    out
}

fn main() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let manifests = std::fs::canonicalize(root.join("deploy/examples"))?;
    let model = palisade_policy::load_paths(std::slice::from_ref(&manifests));
    let pods: Vec<_> = model
        .pods
        .iter()
        .filter(|p| p.ip(Family::V4).is_some())
        .cloned()
        .collect();
    let ports: Vec<ProbePort> = model
        .pods
        .iter()
        .flat_map(|p| p.ports.iter())
        .map(|np| ProbePort {
            port: np.port,
            protocol: np.protocol,
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let lab = Lab::up(&LabSpec::from_pods("tour", &pods, &ports))?;
    let bpffs = lab.mount_bpffs()?;
    let node = pods
        .iter()
        .find_map(|p| p.node.clone())
        .context("no pod has a node")?;
    let opts = AgentOptions::new(palisade_bin()?, vec![manifests], &node, bpffs.clone());
    let agent = lab.start_agent(&opts)?;
    lab.wait_agent(&agent, 0, Duration::from_secs(60))?;
    lab.measure_matrix(&ports, Family::V4)?;

    let dir = palisade_tests::kernel::pins(&bpffs, &node);
    println!("# pinned under {}\n", dir.display());
    for map in NODE_MAPS {
        let pin = dir.join(map);
        let pin = pin.to_string_lossy();
        let dump = bpftool(&["map", "dump", "pinned", &pin])?;
        show(map, &["pinned", &pin], &dump)?;
        if map == names::POLICY_IDENTITY || map == names::POLICY_PORT {
            if let Some(id) = inner_ids(&dump).into_iter().next() {
                let id = id.to_string();
                let inner = bpftool(&["map", "dump", "id", &id])?;
                show(&format!("{map} inner map"), &["id", &id], &inner)?;
            }
        }
    }
    lab.teardown()
}
