//! The engines compared: each is installed on the lab node with the same
//! workload, measured, then removed completely before the next one (so no
//! engine pays for another's leftovers, conntrack hooks included).

use crate::workload::{Workload, CLIENT, NODE, OUTSIDER, SERVER};
use crate::{iptables, nft};
use anyhow::{bail, Context, Result};
use palisade_lab::{AgentOptions, AgentProcess, Lab};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long the agent gets to program the node (a large workload is
/// compiled by a debug build on a busy machine).
const AGENT_READY: Duration = Duration::from_secs(180);
/// The agent's own default polling period (the lab's default is shorter,
/// for tests): a process waking up more often than a deployed agent would
/// keep CPUs out of idle states and flatter the round-trip times.
const AGENT_POLL: Duration = Duration::from_millis(500);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Engine {
    /// Nothing on the datapath: the baseline.
    None,
    /// A TC program that returns at once, on the hooks Palisade uses.
    Noop,
    Palisade,
    Iptables,
    Nftables,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::None => "none",
            Engine::Noop => "noop",
            Engine::Palisade => "palisade",
            Engine::Iptables => "iptables",
            Engine::Nftables => "nftables",
        }
    }

    /// Whether the engine enforces policy (an outsider is refused when the
    /// server is isolated).
    pub fn enforces(self) -> bool {
        matches!(self, Engine::Palisade | Engine::Iptables | Engine::Nftables)
    }
}

/// What installing needs, for one workload.
pub struct Setup<'a> {
    pub lab: &'a Lab,
    pub workload: &'a Workload,
    /// Directory holding the workload's manifests.
    pub manifests: PathBuf,
    pub palisade_bin: &'a Path,
    /// The classifiers' object (for `noop`).
    pub ebpf_object: &'a [u8],
    /// The lab's bpffs; the agent's pins are removed after each run.
    pub bpffs: &'a Path,
}

/// An installed engine; `remove` undoes it.
pub enum Installed {
    None,
    Noop(Box<aya::Ebpf>),
    Palisade(Box<AgentProcess>),
    Iptables(iptables::Rendered),
    Nftables,
}

/// Installs `engine`; returns it with the time it took to enforce (for
/// the agent: until its first programming round completed, not counting
/// the quiet period `wait_agent` then waits to be sure it settled).
pub fn install(engine: Engine, s: &Setup) -> Result<(Installed, Duration)> {
    let start = Instant::now();
    let node = s.lab.node_netns();
    let veth = |key: &str| {
        s.lab
            .pod(key)
            .map(|p| p.host_veth.clone())
            .unwrap_or_else(|_| format!("unknown-{key}"))
    };
    let mut ready = None;
    let installed = match engine {
        Engine::None => Installed::None,
        Engine::Noop => {
            let ifaces: Vec<String> = [SERVER, CLIENT, OUTSIDER].iter().map(|k| veth(k)).collect();
            let object = s.ebpf_object;
            let ebpf = s.lab.run_in_node(move || attach_noop(object, &ifaces))??;
            Installed::Noop(Box::new(ebpf))
        }
        Engine::Palisade => {
            let mut opts = AgentOptions::new(
                s.palisade_bin.to_path_buf(),
                vec![s.manifests.clone()],
                NODE,
                s.bpffs.to_path_buf(),
            );
            opts.poll = AGENT_POLL;
            let agent = s.lab.start_agent(&opts)?;
            let deadline = start + AGENT_READY;
            while agent.rounds() == 0
                && Instant::now() < deadline
                && s.lab.exit_status(&agent.process)?.is_none()
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            ready = Some(start.elapsed());
            // Fails with the agent's log if it exited or never got there.
            s.lab.wait_agent(&agent, 0, AGENT_READY)?;
            Installed::Palisade(Box::new(agent))
        }
        Engine::Iptables => {
            let r = iptables::render(s.workload, &veth);
            if !r.ipsets.is_empty() {
                in_node(&node, "ipset", &["restore"], Some(&r.ipsets))?;
            }
            in_node(&node, "iptables-restore", &["--noflush"], Some(&r.rules))?;
            Installed::Iptables(r)
        }
        Engine::Nftables => {
            let r = nft::render(s.workload, &veth);
            in_node(&node, "nft", &["-f", "-"], Some(&r.script))?;
            Installed::Nftables
        }
    };
    Ok((installed, ready.unwrap_or_else(|| start.elapsed())))
}

impl Installed {
    /// The engine's attached programs, name to program id (none for the
    /// netfilter engines): whose run statistics are read.
    pub fn programs(&self, s: &Setup) -> Result<std::collections::BTreeMap<String, u32>> {
        match self {
            Installed::Noop(ebpf) => {
                let prog: &aya::programs::SchedClassifier = ebpf
                    .program("noop")
                    .context("the eBPF object has no noop program")?
                    .try_into()
                    .context("noop is not a TC classifier")?;
                let id = prog.info().context("program info of noop")?.id();
                Ok([("noop".to_string(), id)].into())
            }
            Installed::Palisade(_) => crate::bpfstats::pinned_programs(&pins(s).join("links")),
            _ => Ok(Default::default()),
        }
    }

    pub fn remove(self, s: &Setup) -> Result<()> {
        let node = s.lab.node_netns();
        match self {
            Installed::None => Ok(()),
            // Dropping the object detaches its links.
            Installed::Noop(ebpf) => {
                drop(ebpf);
                Ok(())
            }
            Installed::Palisade(agent) => {
                s.lab.signal(&agent.process, libc::SIGTERM)?;
                if s.lab
                    .wait_exit(&agent.process, Duration::from_secs(5))?
                    .is_none()
                {
                    s.lab.signal(&agent.process, libc::SIGKILL)?;
                    s.lab.wait_exit(&agent.process, Duration::from_secs(5))?;
                }
                // The links are pinned (enforcement outlives the agent by
                // design): unpinning them is what detaches the classifiers.
                let dir = pins(s);
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("removing the agent's pins {}", dir.display()))
            }
            Installed::Iptables(r) => {
                let mut script = format!("*filter\n-D FORWARD -j {}\n", iptables::CHAIN_FORWARD);
                for c in &r.chains {
                    script.push_str(&format!("-F {c}\n"));
                }
                for c in &r.chains {
                    script.push_str(&format!("-X {c}\n"));
                }
                script.push_str("COMMIT\n");
                in_node(&node, "iptables-restore", &["--noflush"], Some(&script))?;
                // The empty base chains iptables-nft leaves would still be
                // hooked and walked by every packet of the next engine.
                in_node(&node, "nft", &["delete", "table", "ip", "filter"], None)?;
                if !r.set_names.is_empty() {
                    let destroy: String = r
                        .set_names
                        .iter()
                        .map(|n| format!("destroy {n}\n"))
                        .collect();
                    in_node(&node, "ipset", &["restore"], Some(&destroy))?;
                }
                Ok(())
            }
            Installed::Nftables => {
                in_node(&node, "nft", &["delete", "table", "ip", nft::TABLE], None).map(|_| ())
            }
        }
    }
}

/// The agent's pin directory: it pins everything under
/// `<bpffs>/<node>/v<layout version>`.
pub fn pins(s: &Setup) -> PathBuf {
    s.bpffs
        .join(NODE)
        .join(format!("v{}", palisade_common::layout::VERSION))
}

/// Loads the object and attaches its `noop` classifier to both hooks of
/// each interface. Runs inside the node namespace (TCX resolves the
/// interface index in the caller's namespace).
fn attach_noop(object: &[u8], ifaces: &[String]) -> Result<aya::Ebpf> {
    use aya::programs::{SchedClassifier, TcAttachType};
    let mut ebpf = aya::EbpfLoader::new()
        .load(object)
        .context("loading the eBPF object")?;
    let prog: &mut SchedClassifier = ebpf
        .program_mut("noop")
        .context("the eBPF object has no noop program")?
        .try_into()
        .context("noop is not a TC classifier")?;
    prog.load().context("loading noop")?;
    for iface in ifaces {
        for hook in [TcAttachType::Ingress, TcAttachType::Egress] {
            prog.attach(iface, hook)
                .with_context(|| format!("attaching noop to {iface} {hook:?}"))?;
        }
    }
    Ok(ebpf)
}

/// Whether the eBPF object has a `noop` program: the `noop` engine needs it.
pub fn object_has_noop(object: &[u8]) -> Result<bool> {
    let parsed = aya_obj::Object::parse(object).context("parsing the eBPF object")?;
    Ok(parsed.programs.contains_key("noop"))
}

/// Runs a command inside the node namespace, feeding `stdin`; fails with
/// its output when it fails.
pub fn in_node(netns: &str, program: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns, program])
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let what = format!("{program} {}", args.join(" "));
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting `{what}` in {netns}"))?;
    if let Some(text) = stdin {
        // Written from another thread: a big input could otherwise fill
        // the pipe while the child fills its stdout.
        let mut pipe = child.stdin.take().context("no stdin pipe")?;
        let text = text.to_string();
        let writer = std::thread::spawn(move || pipe.write_all(text.as_bytes()));
        let out = child.wait_with_output()?;
        let _ = writer.join();
        return check(out, &what, netns);
    }
    check(child.wait_with_output()?, &what, netns)
}

fn check(out: std::process::Output, what: &str, netns: &str) -> Result<String> {
    if !out.status.success() {
        bail!(
            "`{what}` in {netns} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
