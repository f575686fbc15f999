//! What a lab is made of: pods with addresses and the ports they serve.

use crate::cni::{ChainedPlugin, CniLayout, IpamRange};
use palisade_policy::{Family, Pod, ProbePort};
use std::collections::BTreeSet;
use std::net::IpAddr;

/// A port a pod serves (`80/TCP`).
pub type ServedPort = ProbePort;

/// One pod of the lab.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSpec {
    pub namespace: String,
    pub name: String,
    /// At most one address per family (as Kubernetes assigns them).
    pub ips: Vec<IpAddr>,
    /// Ports the pod's servers listen on (every protocol: TCP, UDP, SCTP).
    pub ports: Vec<ServedPort>,
}

impl PodSpec {
    /// `namespace/name`: how pods are named in probes and matrices.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    pub fn ip(&self, family: Family) -> Option<IpAddr> {
        self.ips.iter().copied().find(|ip| Family::of(ip) == family)
    }
}

/// A whole lab: a label for its records (the test or command that made it),
/// its pods, and how they are wired. The lab picks its own unique id; the
/// label only helps a human find which run left something behind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabSpec {
    pub label: String,
    pub pods: Vec<PodSpec>,
    /// Who wires the pods: the lab, Calico-style (the default), or the
    /// reference `ptp` or `bridge` CNI plugin.
    pub cni: CniLayout,
    /// Plugins run after the main one (plugin layouts only).
    pub chain: Vec<ChainedPlugin>,
    /// host-local's ranges, at most one per family (plugin layouts only);
    /// a family without one gets the smallest range covering its pods.
    pub ipam_ranges: Vec<IpamRange>,
}

impl LabSpec {
    pub fn new(label: impl Into<String>) -> LabSpec {
        LabSpec {
            label: label.into(),
            ..LabSpec::default()
        }
    }

    /// Wires the pods with `layout` instead of the lab's own routed wiring.
    pub fn cni(mut self, layout: CniLayout) -> LabSpec {
        self.cni = layout;
        self
    }

    /// Plugins appended to the conflist after the main plugin, in order.
    pub fn chain(mut self, plugins: Vec<ChainedPlugin>) -> LabSpec {
        self.chain = plugins;
        self
    }

    /// host-local's range for the family of `range.subnet`.
    pub fn ipam_range(mut self, range: IpamRange) -> LabSpec {
        self.ipam_ranges.push(range);
        self
    }

    /// Adds a pod; `ports` are served on every address of the pod.
    pub fn pod(
        mut self,
        namespace: &str,
        name: &str,
        ips: &[IpAddr],
        ports: &[ServedPort],
    ) -> LabSpec {
        self.pods.push(PodSpec {
            namespace: namespace.to_string(),
            name: name.to_string(),
            ips: ips.to_vec(),
            ports: ports.to_vec(),
        });
        self
    }

    /// A lab holding the model's pods. Each pod serves its declared
    /// container ports plus `extra_ports`: a matrix probes the same ports
    /// on every pod, and a port nobody listens on would read as "denied"
    /// when the policy allows it.
    pub fn from_pods(label: &str, pods: &[Pod], extra_ports: &[ServedPort]) -> LabSpec {
        let pods = pods
            .iter()
            .map(|p| {
                let mut ports: BTreeSet<ServedPort> = p
                    .ports
                    .iter()
                    .map(|np| ProbePort {
                        port: np.port,
                        protocol: np.protocol,
                    })
                    .collect();
                ports.extend(extra_ports.iter().copied());
                PodSpec {
                    namespace: p.namespace.clone(),
                    name: p.name.clone(),
                    ips: p.ips.clone(),
                    ports: ports.into_iter().collect(),
                }
            })
            .collect();
        LabSpec {
            label: label.to_string(),
            pods,
            ..LabSpec::default()
        }
    }

    /// Rejects what the kernel would reject later with a less helpful
    /// message: duplicate pods or addresses, two addresses of one family,
    /// pods without addresses, port 0; for the plugin layouts, pods that
    /// host-local's ranges cannot hold (naming the pod).
    pub fn validate(&self) -> anyhow::Result<()> {
        let mut keys = BTreeSet::new();
        let mut ips = BTreeSet::new();
        for p in &self.pods {
            let key = p.key();
            if !keys.insert(key.clone()) {
                anyhow::bail!("lab spec: pod {key} is listed twice");
            }
            if p.ips.is_empty() {
                anyhow::bail!("lab spec: pod {key}: ips: no address");
            }
            for fam in [Family::V4, Family::V6] {
                if p.ips.iter().filter(|ip| Family::of(ip) == fam).count() > 1 {
                    anyhow::bail!("lab spec: pod {key}: ips: more than one {fam:?} address");
                }
            }
            for ip in &p.ips {
                if ip.is_unspecified()
                    || ip.is_loopback()
                    || ip.is_multicast()
                    || crate::topology::reserved(ip)
                {
                    anyhow::bail!("lab spec: pod {key}: ips: {ip} cannot be a pod address");
                }
                if !ips.insert(*ip) {
                    anyhow::bail!("lab spec: pod {key}: ips: {ip} is used by another pod");
                }
            }
            if let Some(bad) = p.ports.iter().find(|pp| pp.port == 0) {
                anyhow::bail!("lab spec: pod {key}: ports: {bad} is not a valid port");
            }
        }
        self.validate_cni()
    }

    fn validate_cni(&self) -> anyhow::Result<()> {
        if self.cni == CniLayout::Routed {
            if !self.chain.is_empty() || !self.ipam_ranges.is_empty() {
                anyhow::bail!(
                    "lab spec: chain and ipam_ranges need a plugin layout (ptp or bridge), not routed"
                );
            }
            return Ok(());
        }
        if let Some(c) = self.chain.iter().find(|c| c.plugin_type().is_empty()) {
            anyhow::bail!("lab spec: chain: {} has no plugin type", c.binary.display());
        }
        crate::cni::plan(&self.pods, &self.ipam_ranges, &BTreeSet::new())
            .map(|_| ())
            .map_err(|e| e.context(format!("lab spec: {} layout", self.cni)))
    }
}
