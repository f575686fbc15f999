//! The network configuration a node's runtime would read from
//! `/etc/cni/net.d` (a conflist), and the request configuration each
//! plugin gets on stdin, derived from it the way the CNI spec (and libcni)
//! does: the plugin's own object plus `cniVersion` and `name` of the list,
//! `runtimeConfig` holding the capability arguments the plugin declared,
//! `prevResult` when there is one, and no `capabilities`.

use super::layout::CniLayout;
use super::ranges::IpamRange;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

/// Spec version of every request: the newest the Debian plugins (1.1.x) know.
pub const CNI_VERSION: &str = "1.0.0";
/// The network's name (host-local keeps its state in `<dataDir>/<name>/`).
pub const NETWORK_NAME: &str = "palisade-lab";
/// Where Debian's `containernetworking-plugins` installs the plugins.
pub const PLUGIN_DIR: &str = "/usr/lib/cni";
/// The bridge of the `Bridge` layout, one per node namespace.
pub const BRIDGE: &str = "cni0";
/// The IPAM plugin of both plugin layouts.
pub const IPAM: &str = "host-local";

/// A plugin appended to the chain after the main one (as `portmap` or a
/// policy plugin is in a real conflist): the binary to run and the keys
/// of its configuration object. `type` defaults to the binary's file name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainedPlugin {
    pub binary: PathBuf,
    pub config: Map<String, Value>,
}

impl ChainedPlugin {
    pub fn new(binary: impl Into<PathBuf>) -> ChainedPlugin {
        ChainedPlugin {
            binary: binary.into(),
            config: Map::new(),
        }
    }

    /// Adds one key to the plugin's configuration object.
    pub fn with(mut self, key: &str, value: Value) -> ChainedPlugin {
        self.config.insert(key.to_string(), value);
        self
    }

    /// The plugin's `type`: the configured one, else the binary's name.
    pub fn plugin_type(&self) -> String {
        match self.config.get("type").and_then(Value::as_str) {
            Some(t) => t.to_string(),
            None => self
                .binary
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        }
    }

    fn object(&self) -> Value {
        let mut o = self.config.clone();
        o.insert("type".into(), Value::String(self.plugin_type()));
        Value::Object(o)
    }
}

/// host-local's section: static ranges (one range set per family), a
/// default route per family, state under `data_dir`.
fn ipam(ranges: &[IpamRange], data_dir: &Path) -> Value {
    let sets: Vec<Value> = ranges
        .iter()
        .map(|r| json!([{"subnet": r.subnet.to_string(), "gateway": r.gateway.to_string()}]))
        .collect();
    let routes: Vec<Value> = ranges
        .iter()
        .map(|r| {
            let dst = if r.subnet.addr.is_ipv4() {
                "0.0.0.0/0"
            } else {
                "::/0"
            };
            json!({ "dst": dst })
        })
        .collect();
    json!({
        "type": IPAM,
        "ranges": sets,
        "routes": routes,
        "dataDir": data_dir.to_string_lossy(),
    })
}

/// The main plugin's object. `ips` is declared as a capability so the
/// runtime passes each pod's addresses in `runtimeConfig.ips`, which
/// host-local (reading the main plugin's whole request) honours.
fn main_plugin(layout: CniLayout, ranges: &[IpamRange], data_dir: &Path) -> Option<Value> {
    let mut o = match layout {
        CniLayout::Routed => return None,
        // What kindnet configures.
        CniLayout::Ptp => json!({"type": "ptp", "ipMasq": false}),
        // What flannel (its delegate), kubenet and minikube configure;
        // the default routes come from the IPAM section, as with kubenet.
        CniLayout::Bridge => json!({
            "type": "bridge",
            "bridge": BRIDGE,
            "isGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
        }),
    };
    o["capabilities"] = json!({"ips": true});
    o["ipam"] = ipam(ranges, data_dir);
    Some(o)
}

/// The conflist of a node for one pod's families (a pod without an IPv6
/// address must not get an IPv6 range: host-local would allocate from it).
pub fn conflist(
    layout: CniLayout,
    ranges: &[IpamRange],
    data_dir: &Path,
    chain: &[ChainedPlugin],
) -> Option<Value> {
    let mut plugins = vec![main_plugin(layout, ranges, data_dir)?];
    plugins.extend(chain.iter().map(ChainedPlugin::object));
    Some(json!({
        "cniVersion": CNI_VERSION,
        "name": NETWORK_NAME,
        "plugins": plugins,
    }))
}

/// The request configuration of plugin `index` of `list`: see the module
/// comment. `runtime` holds the capability arguments (`{"ips": [...]}`).
pub fn request(
    list: &Value,
    index: usize,
    runtime: &Map<String, Value>,
    prev_result: Option<&Value>,
) -> Value {
    let mut o = list["plugins"][index]
        .as_object()
        .cloned()
        .unwrap_or_default();
    o.insert("cniVersion".into(), list["cniVersion"].clone());
    o.insert("name".into(), list["name"].clone());
    let wanted: Map<String, Value> = match o.remove("capabilities") {
        Some(Value::Object(caps)) => runtime
            .iter()
            .filter(|(k, _)| caps.get(*k) == Some(&Value::Bool(true)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        _ => Map::new(),
    };
    if !wanted.is_empty() {
        o.insert("runtimeConfig".into(), Value::Object(wanted));
    }
    if let Some(prev) = prev_result {
        o.insert("prevResult".into(), prev.clone());
    }
    Value::Object(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster_spec::Cidr;

    fn ranges() -> Vec<IpamRange> {
        vec![
            IpamRange {
                subnet: Cidr::new("10.0.0.8".parse().unwrap(), 29),
                gateway: "10.0.0.9".parse().unwrap(),
            },
            IpamRange {
                subnet: Cidr::new("fd00::".parse().unwrap(), 123),
                gateway: "fd00::1".parse().unwrap(),
            },
        ]
    }

    #[test]
    fn bridge_conflist() {
        let list = conflist(CniLayout::Bridge, &ranges(), Path::new("/lab/cni"), &[]).unwrap();
        assert_eq!(
            list,
            json!({
                "cniVersion": "1.0.0",
                "name": "palisade-lab",
                "plugins": [{
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": true,
                    "ipMasq": false,
                    "hairpinMode": true,
                    "capabilities": {"ips": true},
                    "ipam": {
                        "type": "host-local",
                        "ranges": [
                            [{"subnet": "10.0.0.8/29", "gateway": "10.0.0.9"}],
                            [{"subnet": "fd00::/123", "gateway": "fd00::1"}]
                        ],
                        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
                        "dataDir": "/lab/cni"
                    }
                }]
            })
        );
    }

    #[test]
    fn ptp_conflist_for_a_single_family_with_a_chained_plugin() {
        let chained = ChainedPlugin::new("/opt/bin/palisade-cni").with("logLevel", json!("debug"));
        let list = conflist(CniLayout::Ptp, &ranges()[1..], Path::new("/d"), &[chained]).unwrap();
        let plugins = list["plugins"].as_array().unwrap();
        assert_eq!(plugins.len(), 2);
        assert_eq!(plugins[0]["type"], "ptp");
        assert_eq!(plugins[0]["ipMasq"], false);
        assert_eq!(plugins[0]["ipam"]["ranges"].as_array().unwrap().len(), 1);
        assert_eq!(plugins[0]["ipam"]["routes"], json!([{"dst": "::/0"}]));
        assert_eq!(
            plugins[1],
            json!({"type": "palisade-cni", "logLevel": "debug"})
        );
        assert!(conflist(CniLayout::Routed, &ranges(), Path::new("/d"), &[]).is_none());
    }

    #[test]
    fn requests_derive_runtime_config_and_prev_result() {
        let chained = ChainedPlugin::new("/x/policy")
            .with("type", json!("policy"))
            .with("capabilities", json!({"portMappings": true}));
        let list = conflist(CniLayout::Bridge, &ranges(), Path::new("/d"), &[chained]).unwrap();
        let mut runtime = Map::new();
        runtime.insert("ips".into(), json!(["10.0.0.10/29", "fd00::10/123"]));

        let first = request(&list, 0, &runtime, None);
        assert_eq!(first["name"], "palisade-lab");
        assert_eq!(first["cniVersion"], "1.0.0");
        assert_eq!(
            first["runtimeConfig"],
            json!({"ips": ["10.0.0.10/29", "fd00::10/123"]})
        );
        assert!(first.get("capabilities").is_none());
        assert!(first.get("prevResult").is_none());

        let prev = json!({"cniVersion": "1.0.0", "ips": []});
        let second = request(&list, 1, &runtime, Some(&prev));
        assert_eq!(second["type"], "policy");
        assert_eq!(second["prevResult"], prev);
        // It declared no `ips` capability, so it gets no runtimeConfig.
        assert!(second.get("runtimeConfig").is_none());
        assert!(second.get("capabilities").is_none());
    }
}
