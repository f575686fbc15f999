//! `Lab`: a node namespace with pod namespaces and servers in every pod;
//! its making, its accessors and its teardown. Probing is in `measure`,
//! processes and mounts of the node in `node`, the agent in `agent`.

use crate::cleanup;
use crate::cni::{self, CniLayout, CniNetwork, IpamRange};
use crate::names;
use crate::netns::NetNs;
use crate::probe::SourcePorts;
use crate::server::PodServer;
use crate::spec::{LabSpec, PodSpec, ServedPort};
use crate::topology;
use anyhow::{bail, Context, Result};
use palisade_policy::Family;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One pod of a running lab.
pub struct LabPod {
    pub spec: PodSpec,
    /// The pod's network namespace (`ip netns exec <netns> ...` works).
    pub netns: String,
    /// The host side of the pod's veth, in the node namespace (`cali...`
    /// for the routed layout, the plugin's `veth...` otherwise).
    pub host_veth: String,
    pub(crate) ns: Arc<NetNs>,
    /// The pod's CNI attachment (plugin layouts), for DEL at teardown.
    pub(crate) cni: Option<cni::Attachment>,
    pub(crate) source_ports: SourcePorts,
    server: Option<PodServer>,
}

impl LabPod {
    pub fn key(&self) -> String {
        self.spec.key()
    }

    /// The final result of the pod's CNI ADD (plugin layouts only).
    pub fn cni_result(&self) -> Option<&serde_json::Value> {
        self.cni.as_ref().map(|a| &a.result)
    }
}

/// A running lab. Everything it made is removed on drop, including when a
/// test panics; Ctrl-C and SIGTERM tear it down too (see `cleanup`).
pub struct Lab {
    pub(crate) id: String,
    pub(crate) dir: PathBuf,
    pub(crate) node: Option<Arc<NetNs>>,
    pub(crate) pods: Vec<LabPod>,
    pub(crate) layout: CniLayout,
    pub(crate) cni: Option<CniNetwork>,
    pub(crate) children: Mutex<Vec<Option<Child>>>,
    pub(crate) mounts: Mutex<Vec<PathBuf>>,
    pub(crate) counter: AtomicUsize,
    torn_down: bool,
}

impl Lab {
    /// Builds the lab: cleans leftovers of dead runs, creates the node and
    /// the pods, and starts every pod's servers. On error, whatever was
    /// already made is removed before returning.
    pub fn up(spec: &LabSpec) -> Result<Lab> {
        spec.validate()?;
        require_capabilities()?;
        // Leftovers that cannot be removed do not stop a new lab: its names
        // are fresh. They are reported, and retried by the next lab.
        match cleanup::clean_leftovers() {
            Ok(gone) => {
                for id in gone {
                    eprintln!("palisade-lab: removed leftovers of dead lab {id}");
                }
            }
            Err(e) => eprintln!("palisade-lab: leftovers of an earlier lab remain: {e:#}"),
        }
        let mut host_veths = std::collections::BTreeMap::new();
        // Only the routed layout names host veths itself.
        let routed = spec.cni == CniLayout::Routed;
        for p in spec.pods.iter().filter(|_| routed) {
            let v = names::host_veth(&p.namespace, &p.name);
            if let Some(other) = host_veths.insert(v.clone(), p.key()) {
                bail!(
                    "lab spec: pods {other} and {} hash to the same interface name {v}",
                    p.key()
                );
            }
        }

        let (id, dir) = new_record(&spec.label)?;
        crate::signals::register(&id);
        // From here on, dropping `lab` undoes everything.
        let mut lab = Lab {
            id,
            dir,
            node: None,
            pods: Vec::new(),
            layout: spec.cni,
            cni: None,
            children: Mutex::new(Vec::new()),
            mounts: Mutex::new(Vec::new()),
            counter: AtomicUsize::new(0),
            torn_down: false,
        };
        lab.build(spec)?;
        Ok(lab)
    }

    fn build(&mut self, spec: &LabSpec) -> Result<()> {
        let node_name = names::node_netns(&self.id);
        let pod_names: Vec<String> = (0..spec.pods.len())
            .map(|k| names::pod_netns(&self.id, k))
            .collect();
        let all: Vec<String> = std::iter::once(node_name.clone())
            .chain(pod_names.iter().cloned())
            .collect();
        topology::create_netns(&all)?;

        let node = Arc::new(NetNs::open(&node_name)?);
        topology::setup_node(&node)?;
        self.node = Some(node.clone());
        if spec.cni != CniLayout::Routed {
            let ranges = cni::plan(&spec.pods, &spec.ipam_ranges, &Default::default())?;
            self.cni = Some(CniNetwork::new(
                spec.cni,
                ranges,
                spec.chain.clone(),
                &node_name,
                &self.dir.join("cni"),
            )?);
        }

        for (pod, ns_name) in spec.pods.iter().zip(pod_names) {
            self.wire_pod(pod, ns_name)?;
        }
        Ok(())
    }

    /// Adds a pod to the running lab, wired like the others (through the
    /// lab's CNI chain on the plugin layouts): what a runtime does for a
    /// pod scheduled after the rest. On the plugin layouts its addresses
    /// must lie in the lab's IPAM ranges (`LabSpec::ipam_range`).
    pub fn add_pod(&mut self, pod: &PodSpec) -> Result<()> {
        let taken = self
            .pods
            .iter()
            .any(|p| p.key() == pod.key() || p.spec.ips.iter().any(|ip| pod.ips.contains(ip)));
        if taken || pod.ips.iter().any(topology::reserved) {
            bail!(
                "lab {}: pod {} clashes with a pod or an address of the lab",
                self.id,
                pod.key()
            );
        }
        let ns_name = names::pod_netns(&self.id, self.pods.len());
        topology::create_netns(std::slice::from_ref(&ns_name))?;
        let before = self.pods.len();
        let wired = self.wire_pod(pod, ns_name.clone());
        if wired.is_err() && self.pods.len() == before {
            // Not wired (an ADD that failed, after which a runtime removes
            // the sandbox): the namespace goes, so the pod can come again.
            let _ = crate::cmd::ip_batch(None, &[format!("netns del {ns_name}")], false);
        }
        wired
    }

    /// Wires one pod into its (new) namespace and starts its servers.
    fn wire_pod(&mut self, pod: &PodSpec, ns_name: String) -> Result<()> {
        let node = self.node.clone().context("lab has no node namespace")?;
        let ns = Arc::new(NetNs::open(&ns_name)?);
        let (host_veth, attachment) = match &self.cni {
            None => {
                let host_veth = names::host_veth(&pod.namespace, &pod.name);
                topology::setup_pod(&node, &ns, pod, &host_veth)?;
                (host_veth, None)
            }
            Some(net) => {
                topology::prepare_cni_pod(&ns, pod)?;
                let a = net.attach(pod, &ns_name)?;
                (a.host_veth.clone(), Some(a))
            }
        };
        // Recorded before the server starts: a failure from here on still
        // gets the pod's DEL at teardown.
        self.pods.push(LabPod {
            spec: pod.clone(),
            netns: ns_name,
            host_veth,
            ns: ns.clone(),
            cni: attachment,
            source_ports: SourcePorts::new(pod.ports.iter().map(|p| p.port)),
            server: None,
        });
        let server = PodServer::start(ns, &pod.key(), &pod.ports)?;
        self.pods.last_mut().expect("just pushed").server = Some(server);
        Ok(())
    }

    /// How the pods are wired.
    pub fn cni_layout(&self) -> CniLayout {
        self.layout
    }

    /// host-local's ranges of this node (empty for the routed layout).
    pub fn ipam_ranges(&self) -> &[IpamRange] {
        self.cni.as_ref().map_or(&[], |c| c.ranges())
    }

    /// Where host-local keeps this node's leases (plugin layouts only).
    pub fn ipam_data_dir(&self) -> Option<PathBuf> {
        self.cni.as_ref().map(|c| c.data_dir())
    }

    /// The six-hex-digit id in every name this lab made.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The node's network namespace (where an agent runs).
    pub fn node_netns(&self) -> String {
        names::node_netns(&self.id)
    }

    pub fn pods(&self) -> &[LabPod] {
        &self.pods
    }

    /// A pod by `namespace/name`.
    pub fn pod(&self, key: &str) -> Result<&LabPod> {
        self.pods
            .iter()
            .find(|p| p.key() == key)
            .with_context(|| format!("lab {}: no pod {key}", self.id))
    }

    /// A pod's address of `family`.
    pub fn ip(&self, key: &str, family: Family) -> Result<IpAddr> {
        self.pod(key)?
            .spec
            .ip(family)
            .with_context(|| format!("pod {key} has no {family:?} address"))
    }

    /// Runs `f` on a thread inside the pod's namespace: sockets it creates
    /// belong to the pod (and keep working when used from other threads).
    pub fn run_in_pod<R: Send>(&self, key: &str, f: impl FnOnce() -> R + Send) -> Result<R> {
        self.pod(key)?.ns.run(f)
    }

    /// Runs `f` on a thread inside the node namespace.
    pub fn run_in_node<R: Send>(&self, f: impl FnOnce() -> R + Send) -> Result<R> {
        self.node
            .as_ref()
            .context("lab has no node namespace")?
            .run(f)
    }

    /// Starts servers in the node namespace on `addrs`, as a hostNetwork
    /// pod serves on the node's addresses; they stop when the returned
    /// server drops.
    pub fn serve_in_node(&self, ports: &[ServedPort], addrs: &[IpAddr]) -> Result<PodServer> {
        let ns = self.node.clone().context("lab has no node namespace")?;
        PodServer::start_on(ns, &format!("node {}", self.id), ports, addrs)
    }

    /// The ifindex of a pod's host-side veth in the node namespace (the key
    /// of its `ENDPOINTS` entry).
    pub fn host_ifindex(&self, key: &str) -> Result<u32> {
        let name = std::ffi::CString::new(self.pod(key)?.host_veth.clone())?;
        // SAFETY: `name` is a valid C string.
        let idx = self.run_in_node(|| unsafe { libc::if_nametoindex(name.as_ptr()) })?;
        if idx == 0 {
            bail!(
                "pod {key}: host veth {} not found in the node namespace",
                self.pod(key)?.host_veth
            );
        }
        Ok(idx)
    }

    /// A number unique within this lab, for file names.
    pub(crate) fn next_index(&self) -> usize {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }

    /// The record directory (process logs, bpffs mounts live there).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Tears the lab down now, reporting problems (drop does the same but
    /// can only print them).
    pub fn teardown(mut self) -> Result<()> {
        self.teardown_inner()
    }

    fn teardown_inner(&mut self) -> Result<()> {
        if self.torn_down {
            return Ok(());
        }
        self.torn_down = true;
        // Processes first: an agent may still hold the namespaces or pins.
        let mut children =
            std::mem::take(&mut *self.children.lock().unwrap_or_else(|e| e.into_inner()));
        for c in children.iter_mut().flatten() {
            if let Ok(None) = c.try_wait() {
                // SAFETY: signalling our own, unreaped child.
                unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        for c in children.iter_mut().flatten() {
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
        // Servers hold sockets, which hold the pod namespaces alive.
        for p in &mut self.pods {
            if let Some(mut s) = p.server.take() {
                s.stop();
            }
        }
        // CNI DEL while the namespaces still exist, as a runtime does
        // before it removes a sandbox; a failing DEL does not stop the
        // rest (deleting the namespaces removes what the plugins made).
        // Without the node namespace (removed as a dead lab's leftovers)
        // there is no node left to run DEL in, nor anything to delete.
        let mut errors = Vec::new();
        let node_alive = Path::new(crate::netns::NETNS_RUN_DIR)
            .join(names::node_netns(&self.id))
            .exists();
        if let Some(net) = self.cni.as_ref().filter(|_| node_alive) {
            for p in &self.pods {
                if let Some(a) = &p.cni {
                    if let Err(e) = net.detach(a) {
                        errors.push(format!("{e:#}"));
                    }
                }
            }
        }
        self.pods.clear();
        self.node = None;
        self.cni = None;
        if let Err(e) = cleanup::teardown(&self.id) {
            errors.push(format!("{e:#}"));
        }
        crate::signals::unregister(&self.id);
        if errors.is_empty() {
            Ok(())
        } else {
            bail!("{}", errors.join("; "))
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(e) = self.teardown_inner() {
            eprintln!("palisade-lab: {e:#}");
        }
    }
}

/// Picks a fresh id and creates its record (retrying on the rare clash).
fn new_record(label: &str) -> Result<(String, PathBuf)> {
    let mut last = None;
    for _ in 0..16 {
        let id = names::random_id();
        if Path::new(crate::netns::NETNS_RUN_DIR)
            .join(names::node_netns(&id))
            .exists()
        {
            continue;
        }
        match cleanup::create_record(&id, label) {
            Ok(dir) => return Ok((id, dir)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no free lab id")))
        .context("creating the lab record")
}

/// Namespaces, veths and mounts need CAP_SYS_ADMIN and CAP_NET_ADMIN, the
/// SCTP raw sockets CAP_NET_RAW: say so up front rather than through the
/// first `ip` command's "Operation not permitted".
fn require_capabilities() -> Result<()> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let missing = missing_capabilities(&status)?;
    if !missing.is_empty() {
        bail!("the lab needs root: missing {}", missing.join(", "));
    }
    Ok(())
}

fn missing_capabilities(proc_status: &str) -> Result<Vec<&'static str>> {
    const NEEDED: [(u32, &str); 3] = [
        (21, "CAP_SYS_ADMIN"),
        (12, "CAP_NET_ADMIN"),
        (13, "CAP_NET_RAW"),
    ];
    let eff = proc_status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .context("no CapEff in /proc/self/status")?;
    Ok(NEEDED
        .iter()
        .filter(|(bit, _)| eff & (1 << bit) == 0)
        .map(|(_, name)| *name)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::missing_capabilities;

    #[test]
    fn capabilities_are_read_from_capeff() {
        let root = "Name:\tx\nCapEff:\t000001ffffffffff\n";
        assert!(missing_capabilities(root).unwrap().is_empty());
        let net_only = "CapEff:\t0000000000003000\n";
        assert_eq!(
            missing_capabilities(net_only).unwrap(),
            vec!["CAP_SYS_ADMIN"]
        );
        assert_eq!(
            missing_capabilities("CapEff:\t0\n").unwrap(),
            vec!["CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_NET_RAW"]
        );
        assert!(missing_capabilities("Name: x\n").is_err());
    }
}
