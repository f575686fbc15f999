//! Running `palisade agent` inside the lab's node namespace, and knowing
//! when it has enforced a change.
//!
//! The agent rewrites its `--ready-file` with its round count after every
//! programming round (at start, and after each change it sees in its
//! manifests or the node's routes). "Enforced" therefore means: the count
//! went past the value read before the change, then stayed put for a few
//! polling periods (a round that began just before the change was made
//! reads the old manifests, and the next poll starts another).

use crate::lab::Lab;
use crate::node::NodeProcess;
use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Environment variable naming the `palisade` binary for tests and tools.
pub const BIN_ENV: &str = "PALISADE_BIN";

/// The `palisade` binary: `$PALISADE_BIN`, else `target/debug/palisade`
/// of this workspace. Fails with a message saying how to get one.
pub fn palisade_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(BIN_ENV) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("{BIN_ENV}={} does not name a file", p.display());
        }
        return Ok(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the lab crate sits in the workspace");
    let p = root.join("target/debug/palisade");
    if !p.is_file() {
        bail!(
            "no palisade binary at {}: run `cargo xtask build` (or set {BIN_ENV})",
            p.display()
        );
    }
    Ok(p)
}

/// Overrides where [`palisade_cni_bin`] looks.
pub const CNI_BIN_ENV: &str = "PALISADE_CNI_BIN";

/// The `palisade-cni` plugin binary: `$PALISADE_CNI_BIN`, else the one
/// beside [`palisade_bin`] (both are built together).
pub fn palisade_cni_bin() -> Result<PathBuf> {
    let p = match std::env::var_os(CNI_BIN_ENV) {
        Some(p) => PathBuf::from(p),
        None => palisade_bin()?.with_file_name("palisade-cni"),
    };
    if !p.is_file() {
        bail!(
            "no palisade-cni binary at {}: run `cargo xtask build` (or set {CNI_BIN_ENV})",
            p.display()
        );
    }
    Ok(p)
}

/// How to start an agent.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    pub bin: PathBuf,
    /// Manifest files or directories (`--manifests`).
    pub manifests: Vec<PathBuf>,
    /// `--kubeconfig`: read the model from this API server instead of
    /// manifests (then `manifests` stays empty).
    pub kubeconfig: Option<PathBuf>,
    /// `--metrics-addr`: serve /healthz, /readyz and /metrics there
    /// (an address of the node namespace).
    pub metrics_addr: Option<SocketAddr>,
    /// `--node`: pods with this `spec.nodeName` are the agent's.
    pub node: String,
    /// `--bpffs-root`: a bpffs the lab mounted (`Lab::mount_bpffs`).
    pub bpffs_root: PathBuf,
    /// `--poll-ms`: how often the agent looks for changes.
    pub poll: Duration,
    /// Extra environment (e.g. `RUST_LOG`).
    pub env: Vec<(String, String)>,
    /// Extra command-line arguments (e.g. `--audit`, `--uplink DEV`).
    pub args: Vec<String>,
}

impl AgentOptions {
    pub fn new(
        bin: PathBuf,
        manifests: Vec<PathBuf>,
        node: &str,
        bpffs_root: PathBuf,
    ) -> AgentOptions {
        AgentOptions {
            bin,
            manifests,
            kubeconfig: None,
            metrics_addr: None,
            node: node.to_string(),
            bpffs_root,
            poll: Duration::from_millis(50),
            env: Vec::new(),
            args: Vec::new(),
        }
    }

    /// An agent fed by the API server of `kubeconfig`.
    pub fn kube(
        bin: PathBuf,
        kubeconfig: PathBuf,
        node: &str,
        bpffs_root: PathBuf,
    ) -> AgentOptions {
        AgentOptions {
            kubeconfig: Some(kubeconfig),
            ..AgentOptions::new(bin, Vec::new(), node, bpffs_root)
        }
    }
}

/// A running agent.
#[derive(Clone, Debug)]
pub struct AgentProcess {
    pub process: NodeProcess,
    pub node: String,
    pub ready_file: PathBuf,
    poll: Duration,
}

impl AgentProcess {
    /// Rounds completed so far (0 before the first).
    pub fn rounds(&self) -> u64 {
        std::fs::read_to_string(&self.ready_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Lab {
    /// Starts `palisade agent` in the node namespace. Returns at once; use
    /// `wait_agent` before probing.
    pub fn start_agent(&self, opts: &AgentOptions) -> Result<AgentProcess> {
        let k = self.next_index();
        let ready_file = self.dir().join(format!("agent-{k}-{}.ready", opts.node));
        let mut args: Vec<std::ffi::OsString> =
            vec!["agent".into(), "--node".into(), opts.node.clone().into()];
        match &opts.kubeconfig {
            Some(k) if !opts.manifests.is_empty() => bail!(
                "agent for node {}: both manifests and kubeconfig {} given",
                opts.node,
                k.display()
            ),
            Some(k) => args.extend(["--kubeconfig".into(), k.clone().into_os_string()]),
            None => {
                args.push("--manifests".into());
                args.extend(opts.manifests.iter().map(|m| m.clone().into_os_string()));
            }
        }
        if let Some(addr) = opts.metrics_addr {
            args.extend(["--metrics-addr".into(), addr.to_string().into()]);
        }
        // Each agent its own verdict socket: the default path is per host.
        if !opts.args.iter().any(|a| a == "--monitor-socket") {
            let socket = self.dir().join(format!("agent-{k}-{}.sock", opts.node));
            args.extend(["--monitor-socket".into(), socket.into_os_string()]);
        }
        args.extend(opts.args.iter().map(Into::into));
        args.extend([
            "--bpffs-root".into(),
            opts.bpffs_root.clone().into_os_string(),
            "--ready-file".into(),
            ready_file.clone().into_os_string(),
            "--poll-ms".into(),
            opts.poll.as_millis().max(1).to_string().into(),
        ]);
        let process = self.spawn_in_node_env(&opts.bin, args, &opts.env)?;
        Ok(AgentProcess {
            process,
            node: opts.node.clone(),
            ready_file,
            poll: opts.poll,
        })
    }

    /// Waits until the agent has completed a round after round `after` and
    /// then done nothing for a few polling periods: the state it saw last
    /// is enforced. Fails, with the agent's log, if it exits or times out.
    pub fn wait_agent(&self, agent: &AgentProcess, after: u64, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        let quiet = (agent.poll * 4).max(Duration::from_millis(200));
        let mut seen = agent.rounds();
        let mut since = Instant::now();
        loop {
            if let Some(status) = self.exit_status(&agent.process)? {
                bail!(
                    "agent for node {} exited ({status}) before enforcing; its log:\n{}",
                    agent.node,
                    self.log(&agent.process)
                );
            }
            let now = agent.rounds();
            if now != seen {
                seen = now;
                since = Instant::now();
            }
            if seen > after && since.elapsed() >= quiet {
                return Ok(seen);
            }
            if Instant::now() >= deadline {
                bail!(
                    "agent for node {} did not settle after round {after} within {timeout:?} (at round {seen}); its log:\n{}",
                    agent.node,
                    self.log(&agent.process)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Replaces the content of a manifest file atomically (write aside, then
/// rename), so an agent polling its manifests never reads half a file.
pub fn write_manifest(path: &Path, content: &str) -> Result<()> {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, content).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}
