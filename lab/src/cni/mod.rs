//! Pods wired by the reference CNI plugins (`ptp` or `bridge` with
//! `host-local`, from Debian's `containernetworking-plugins`), invoked the
//! way a container runtime runs a conflist: plugin by plugin in the node's
//! namespace, each later plugin getting the previous result as
//! `prevResult`; DEL in reverse order with the final ADD result.
//!
//! - `layout`: which wiring a lab uses (`CniLayout`).
//! - `ranges`: host-local's subnet and gateway per family for a node.
//! - `config`: the conflist and each plugin's request configuration.
//! - `exec`: running one plugin binary.
//! - here: one node's network (`CniNetwork`), a pod's attachment to it.

mod config;
mod exec;
mod layout;
mod ranges;

pub use config::{ChainedPlugin, BRIDGE, CNI_VERSION, NETWORK_NAME, PLUGIN_DIR};
pub use layout::CniLayout;
pub use ranges::IpamRange;
pub(crate) use ranges::{plan, range_in};

use crate::names;
use crate::netns::NETNS_RUN_DIR;
use crate::spec::PodSpec;
use anyhow::{anyhow, bail, Context, Result};
use exec::Env;
use palisade_policy::Family;
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// A node's CNI network: what its conflist is made of, and where the
/// plugins keep their state (under the lab's record, so teardown, or the
/// next lab finding a dead one, removes it with the record).
pub(crate) struct CniNetwork {
    layout: CniLayout,
    ranges: Vec<IpamRange>,
    chain: Vec<ChainedPlugin>,
    node_netns: String,
    dir: PathBuf,
}

/// One pod attached to the network: everything DEL needs.
pub(crate) struct Attachment {
    pod: String,
    env: Env,
    list: Value,
    runtime: Map<String, Value>,
    /// The final ADD result (the chain's last plugin's output).
    pub result: Value,
    /// The host side of the pod's veth, from the result.
    pub host_veth: String,
}

impl CniNetwork {
    /// `dir` is created; host-local's `dataDir` and the results go there.
    pub fn new(
        layout: CniLayout,
        ranges: Vec<IpamRange>,
        chain: Vec<ChainedPlugin>,
        node_netns: &str,
        dir: &Path,
    ) -> Result<CniNetwork> {
        let net = CniNetwork {
            layout,
            ranges,
            chain,
            node_netns: node_netns.to_string(),
            dir: dir.to_path_buf(),
        };
        let ipam = (
            config::IPAM.to_string(),
            Path::new(PLUGIN_DIR).join(config::IPAM),
        );
        for (ty, bin) in net.binaries()?.into_iter().chain([ipam]) {
            if !bin.is_file() {
                let hint = if bin.starts_with(PLUGIN_DIR) {
                    " (install Debian's containernetworking-plugins)"
                } else {
                    ""
                };
                bail!("CNI plugin {ty}: {} not found{hint}", bin.display());
            }
        }
        std::fs::create_dir_all(net.dir.join("results"))
            .with_context(|| format!("creating {}", net.dir.display()))?;
        Ok(net)
    }

    pub fn ranges(&self) -> &[IpamRange] {
        &self.ranges
    }

    /// host-local's state: `<dataDir>/<network name>/<address>` per lease.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("host-local")
    }

    /// (type, binary) of every plugin of the chain, in order.
    fn binaries(&self) -> Result<Vec<(String, PathBuf)>> {
        let main = self
            .layout
            .plugin()
            .ok_or_else(|| anyhow!("the {} layout runs no CNI plugin", self.layout))?;
        let mut out = vec![(main.to_string(), Path::new(PLUGIN_DIR).join(main))];
        out.extend(
            self.chain
                .iter()
                .map(|c| (c.plugin_type(), c.binary.clone())),
        );
        Ok(out)
    }

    /// `CNI_PATH`: the reference plugins, then the chained plugins' dirs.
    fn cni_path(&self) -> String {
        let mut dirs = vec![PLUGIN_DIR.to_string()];
        for c in &self.chain {
            if let Some(d) = c.binary.parent().map(|d| d.to_string_lossy().into_owned()) {
                if !d.is_empty() && !dirs.contains(&d) {
                    dirs.push(d);
                }
            }
        }
        dirs.join(":")
    }

    /// ADD: runs the chain for `pod` (namespace `netns`), asking host-local
    /// for the pod's own addresses. On failure the chain's DEL runs, as a
    /// runtime cleans up a sandbox whose network failed, and the error
    /// names the pod and the plugin.
    pub fn attach(&self, pod: &PodSpec, netns: &str) -> Result<Attachment> {
        let key = pod.key();
        let families: BTreeSet<Family> = pod.ips.iter().map(Family::of).collect();
        let ranges: Vec<IpamRange> = self
            .ranges
            .iter()
            .filter(|r| families.contains(&r.family()))
            .copied()
            .collect();
        let list = config::conflist(self.layout, &ranges, &self.data_dir(), &self.chain)
            .ok_or_else(|| anyhow!("pod {key}: the {} layout runs no CNI plugin", self.layout))?;
        let ips: Vec<Value> = pod
            .ips
            .iter()
            .map(|ip| {
                let len = ranges
                    .iter()
                    .find(|r| r.subnet.contains(ip))
                    .map_or(if ip.is_ipv4() { 32 } else { 128 }, |r| r.subnet.len);
                json!(format!("{ip}/{len}"))
            })
            .collect();
        let mut runtime = Map::new();
        runtime.insert("ips".into(), Value::Array(ips));
        let env = Env {
            container_id: netns.to_string(),
            netns: Path::new(NETNS_RUN_DIR)
                .join(netns)
                .to_string_lossy()
                .into_owned(),
            ifname: names::POD_IFACE.to_string(),
            // IgnoreUnknown=1 as kubelet's runtimes send it: plugins reject
            // CNI_ARGS keys they do not know otherwise.
            args: format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={netns}",
                pod.namespace, pod.name
            ),
            path: self.cni_path(),
        };
        let mut a = Attachment {
            pod: key.clone(),
            env,
            list,
            runtime,
            result: Value::Null,
            host_veth: String::new(),
        };
        let mut prev: Option<Value> = None;
        for (i, (ty, bin)) in self.binaries()?.iter().enumerate() {
            let req = config::request(&a.list, i, &a.runtime, prev.as_ref());
            let out = exec::run(&self.node_netns, bin, "ADD", &a.env, &req)
                .and_then(|r| r.ok_or_else(|| anyhow!("printed no result")));
            match out {
                Ok(r) => prev = Some(r),
                Err(e) => {
                    // Best effort: the ADD error is the one that matters.
                    let _ = self.run_del(&a, None);
                    return Err(e.context(format!("pod {key}: CNI ADD: plugin {ty}")));
                }
            }
        }
        a.result = prev.unwrap_or(Value::Null);
        let checked = check_addresses(pod, &a.result)
            .and_then(|()| host_veth(&a.result).context("no host-side interface in the result"));
        match checked {
            Ok(v) => a.host_veth = v,
            Err(e) => {
                let _ = self.run_del(&a, Some(&a.result));
                return Err(e.context(format!("pod {key}: CNI ADD result {}", a.result)));
            }
        }
        // Kept as a runtime keeps it (libcni's result cache): for CHECK,
        // DEL, and a human reading the record.
        let record = json!({"config": a.list, "cniArgs": a.env.args, "result": a.result});
        let file = self.dir.join("results").join(format!(
            "{}-{netns}-{}.json",
            config::NETWORK_NAME,
            a.env.ifname
        ));
        std::fs::write(&file, serde_json::to_vec_pretty(&record)?)
            .with_context(|| format!("writing {}", file.display()))?;
        Ok(a)
    }

    /// DEL: the chain in reverse order, each plugin given the final ADD
    /// result; stops at the first failure, as the spec says.
    pub fn detach(&self, a: &Attachment) -> Result<()> {
        self.run_del(a, Some(&a.result))
    }

    fn run_del(&self, a: &Attachment, prev: Option<&Value>) -> Result<()> {
        let prev = prev.filter(|p| !p.is_null());
        for (i, (ty, bin)) in self.binaries()?.iter().enumerate().rev() {
            let req = config::request(&a.list, i, &a.runtime, prev);
            exec::run(&self.node_netns, bin, "DEL", &a.env, &req)
                .with_context(|| format!("pod {}: CNI DEL: plugin {ty}", a.pod))?;
        }
        Ok(())
    }
}

/// The result must hold exactly the pod's addresses: anything else means
/// the ranges or the static request went wrong.
fn check_addresses(pod: &PodSpec, result: &Value) -> Result<()> {
    let got: BTreeSet<IpAddr> = result["ips"]
        .as_array()
        .map(|ips| {
            ips.iter()
                .filter_map(|i| i["address"].as_str())
                .filter_map(|a| a.split('/').next()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let want: BTreeSet<IpAddr> = pod.ips.iter().copied().collect();
    if got != want {
        bail!("addresses {got:?}, but the pod's are {want:?}");
    }
    Ok(())
}

/// The host side of the pod's veth: the first interface of the result
/// outside any sandbox that is not the bridge.
fn host_veth(result: &Value) -> Option<String> {
    result["interfaces"]
        .as_array()?
        .iter()
        .filter(|i| i["sandbox"].as_str().is_none_or(str::is_empty))
        .filter_map(|i| i["name"].as_str())
        .find(|n| *n != BRIDGE)
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_veth_skips_the_bridge_and_the_pod_side() {
        let bridge = json!({"interfaces": [
            {"name": "cni0", "mac": "aa:bb:cc:dd:ee:01"},
            {"name": "veth1a2b3c4d", "mac": "aa:bb:cc:dd:ee:02"},
            {"name": "eth0", "mac": "aa:bb:cc:dd:ee:03", "sandbox": "/run/netns/p"}
        ]});
        assert_eq!(host_veth(&bridge).as_deref(), Some("veth1a2b3c4d"));
        let ptp = json!({"interfaces": [
            {"name": "veth9f8e7d6c", "mac": "aa:bb:cc:dd:ee:02"},
            {"name": "eth0", "sandbox": "/run/netns/p"}
        ]});
        assert_eq!(host_veth(&ptp).as_deref(), Some("veth9f8e7d6c"));
        assert_eq!(host_veth(&json!({"interfaces": []})), None);
    }

    #[test]
    fn result_addresses_must_be_the_pods() {
        let pod = PodSpec {
            namespace: "x".into(),
            name: "a".into(),
            ips: vec!["10.0.0.10".parse().unwrap(), "fd00::10".parse().unwrap()],
            ports: vec![],
        };
        let ok = json!({"ips": [
            {"address": "10.0.0.10/29", "gateway": "10.0.0.9", "interface": 2},
            {"address": "fd00::10/123", "gateway": "fd00::1", "interface": 2}
        ]});
        check_addresses(&pod, &ok).unwrap();
        let other = json!({"ips": [{"address": "10.0.0.11/29"}]});
        assert!(check_addresses(&pod, &other).is_err());
    }
}
