//! The state file of a lab that stays up: what a human (or a test) needs
//! to reach into it, and what `lab down` needs to end it.

use crate::running::Running;
use anyhow::{Context, Result};
use palisade_policy::{Model, TargetPort};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct LabState {
    pub nodes: Vec<NodeState>,
    pub pods: Vec<PodState>,
    pub services: Vec<ServiceState>,
    /// The manifests the agents follow: edit these.
    pub manifests: PathBuf,
    /// The fake API server's (several nodes only), reachable from inside
    /// the node namespaces: `ip netns exec <first node's netns> kubectl
    /// --kubeconfig ... apply|get|delete` changes what the agents enforce,
    /// as editing `manifests` does.
    pub kubeconfig: Option<PathBuf>,
    pub supervisor_pid: u32,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct NodeState {
    pub name: String,
    pub netns: String,
    pub addresses: Vec<IpAddr>,
    pub agent_pid: u32,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PodState {
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub netns: String,
    pub ips: Vec<IpAddr>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ServiceState {
    pub namespace: String,
    pub name: String,
    pub cluster_ips: Vec<IpAddr>,
    /// `PORT/PROTO`, with `->TARGET` when the target port differs.
    pub ports: Vec<String>,
}

impl LabState {
    pub fn of(running: &Running, model: &Model) -> LabState {
        let mut nodes = Vec::new();
        let mut pods = Vec::new();
        for n in running.nodes() {
            nodes.push(NodeState {
                name: n.name.to_string(),
                netns: n.lab.node_netns(),
                addresses: n.addresses.clone(),
                agent_pid: n.agent.map_or(0, |a| a.process.pid),
            });
            pods.extend(n.lab.pods().iter().map(|p| PodState {
                namespace: p.spec.namespace.clone(),
                name: p.spec.name.clone(),
                node: n.name.to_string(),
                netns: p.netns.clone(),
                ips: p.spec.ips.clone(),
            }));
        }
        let services = model
            .services
            .iter()
            .map(|s| ServiceState {
                namespace: s.namespace.clone(),
                name: s.name.clone(),
                cluster_ips: s.cluster_ips.clone(),
                ports: s
                    .ports
                    .iter()
                    .map(|p| {
                        let base = palisade_lab::ProbePort {
                            port: p.port,
                            protocol: p.protocol,
                        }
                        .to_string();
                        match &p.target {
                            TargetPort::Number(t) if *t == p.port => base,
                            TargetPort::Number(t) => format!("{base}->{t}"),
                            TargetPort::Name(n) => format!("{base}->{n}"),
                        }
                    })
                    .collect(),
            })
            .collect();
        LabState {
            nodes,
            pods,
            services,
            manifests: running.manifests().to_path_buf(),
            kubeconfig: running.kubeconfig().map(Path::to_path_buf),
            supervisor_pid: std::process::id(),
        }
    }

    /// Written aside, then renamed: a reader sees all of it or nothing.
    pub fn write(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("tmp~");
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(&tmp, text + "\n").with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
    }

    pub fn read(path: &Path) -> Result<LabState> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading lab state {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing lab state {}", path.display()))
    }
}

/// The supervisor's log, beside the state file.
pub fn log_path(state: &Path) -> PathBuf {
    let mut s = state.as_os_str().to_owned();
    s.push(".log");
    PathBuf::from(s)
}

/// `path` made absolute without requiring it to exist (its directory must).
pub fn absolute(path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .with_context(|| format!("state file {} has no file name", path.display()))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let dir = std::fs::canonicalize(&dir)
        .with_context(|| format!("state file directory {}", dir.display()))?;
    Ok(dir.join(name))
}

/// Whether `pid` runs `lab serve` for this state file: a pid alone may
/// have been recycled since the file was written.
pub fn is_supervisor(pid: u32, state: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let has = |s: &[u8]| args.contains(&s);
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(") ").next().map(|r| r.starts_with('Z')))
        .unwrap_or(true);
    !zombie && has(b"serve") && has(state.as_os_str().as_encoded_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_with_the_documented_fields() {
        let s = LabState {
            nodes: vec![NodeState {
                name: "node-1".into(),
                netns: "pl-abcdef-n".into(),
                addresses: vec!["192.0.2.1".parse().unwrap()],
                agent_pid: 42,
            }],
            pods: vec![PodState {
                namespace: "x".into(),
                name: "a".into(),
                node: "node-1".into(),
                netns: "pl-abcdef-p0".into(),
                ips: vec!["10.0.0.1".parse().unwrap()],
            }],
            services: vec![],
            manifests: "/m".into(),
            kubeconfig: None,
            supervisor_pid: 7,
        };
        let v = serde_json::to_value(&s).unwrap();
        for key in [
            "nodes",
            "pods",
            "services",
            "manifests",
            "kubeconfig",
            "supervisor_pid",
        ] {
            assert!(v.get(key).is_some(), "{key} missing in {v}");
        }
        assert!(v["kubeconfig"].is_null());
        assert_eq!(v["nodes"][0]["agent_pid"], 42);
        let again: LabState = serde_json::from_value(v).unwrap();
        assert_eq!(again, s);
    }

    #[test]
    fn this_process_is_no_supervisor() {
        assert!(!is_supervisor(std::process::id(), Path::new("/x")));
        assert_eq!(
            log_path(Path::new("/a/lab.json")),
            Path::new("/a/lab.json.log")
        );
    }
}
