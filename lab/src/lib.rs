//! Network-namespace lab: a Kubernetes node with pods, for end-to-end
//! tests, `cargo xtask demo` and benchmarks.
//!
//! `Lab::up` builds a node namespace and one namespace per pod, wired the
//! way Calico wires pods (see `topology`) or by the reference CNI plugins
//! `ptp` and `bridge` run as a runtime runs them (see `cni`), starts TCP/UDP/SCTP servers in
//! every pod, and gives probes, reachability matrices, a private bpffs and
//! processes inside the node namespace (the agent). Everything is removed
//! on drop, on panic, on Ctrl-C/SIGTERM, and, for a run that crashed, by
//! the next lab that comes up. `Cluster::up` joins several such nodes by
//! an underlay (`cluster`, `underlay`). `kube_proxy` DNATs Service
//! ClusterIPs in a node as kube-proxy would. See `docs/lab.md`.

mod agent;
mod cleanup;
mod cluster;
mod cluster_spec;
mod cmd;
mod cni;
mod kube_proxy;
mod lab;
mod matrix;
mod measure;
mod names;
mod netns;
mod node;
mod outside;
mod probe;
mod rand;
mod replug;
mod sctp;
mod server;
mod signals;
mod sock;
mod spec;
mod topology;
mod underlay;

pub use agent::{
    palisade_bin, palisade_cni_bin, write_manifest, AgentOptions, AgentProcess, BIN_ENV,
    CNI_BIN_ENV,
};
pub use cleanup::{clean_leftovers, RECORD_ROOT};
pub use cluster::{Cluster, ClusterNode};
pub use cluster_spec::{underlay_addrs, Cidr, ClusterSpec, NodeSpec, UNDERLAY_V4, UNDERLAY_V6};
pub use cmd::{run_bounded, Bounded};
pub use cni::{ChainedPlugin, CniLayout, IpamRange, BRIDGE, CNI_VERSION, NETWORK_NAME, PLUGIN_DIR};
pub use kube_proxy::{
    service_rules, DnatTarget, Masquerade, ServiceRule, KUBE_PROXY_TABLE, MASQUERADE_MARK,
};
pub use lab::{Lab, LabPod};
pub use matrix::{diff, Difference};
pub use measure::{Probe, PROBE_PARALLELISM, PROBE_TIMEOUT};
pub use names::NETNS_PREFIX;
pub use node::{mount_bpf, NodeProcess};
pub use outside::OUTSIDE_IFACE;
pub use palisade_policy::{Family, MatrixEntry, ProbePort, Protocol};
pub use probe::Outcome;
pub use server::PodServer;
pub use spec::{LabSpec, PodSpec, ServedPort};
pub use topology::{GATEWAY_V4, GATEWAY_V6, NODE_V4, NODE_V6, UPLINK, UPLINK_GATEWAY_V4};
pub use underlay::{
    Overlay, Vtep, UNDERLAY, UNDERLAY_MTU, VXLAN_DEV, VXLAN_MTU, VXLAN_PORT, VXLAN_V6_DEV,
    VXLAN_VNI,
};

/// Names of the lab namespaces currently present on the host (any run).
pub fn lab_netns_present() -> Vec<String> {
    std::fs::read_dir(netns::NETNS_RUN_DIR)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| names::lab_id_of_netns(n).is_some())
                .collect()
        })
        .unwrap_or_default()
}
