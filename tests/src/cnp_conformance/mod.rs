//! The upstream ClusterNetworkPolicy conformance suite, as data
//! (`tests/cnp-conformance/`, format in its README): loaded into typed
//! tests, steps and probes, with the objects in force at every step.
//!
//! The runners (`cnp_conformance_offline.rs`, `cnp_conformance_lab.rs`)
//! only walk [`ConformanceTest::walk`]; what a probe means (which address
//! is dialled, what the expectation is) is decided here once.

pub mod lab;
mod objects;
pub mod schema;

pub use objects::{host_network, node_addresses, node_name, pod_ip, ObjectKey, Objects};

use anyhow::{bail, ensure, Context, Result};
use palisade_policy::Protocol;
use serde::Deserialize;
use serde_json::Value;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// `tests/cnp-conformance`.
pub fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("cnp-conformance")
}

/// `suite.yaml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SuiteMeta {
    pub upstream: Upstream,
    pub host_network_ports: Vec<u16>,
    pub serves: Serves,
    /// Test names in upstream's order (one file each under `tests/`).
    pub tests: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Upstream {
    pub repository: String,
    pub release: String,
    pub commit: String,
    pub api_version: String,
}

/// What the servers listen on: every workload pod, and hostNetwork pods
/// on their node's addresses.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Serves {
    pub pod: Vec<Served>,
    pub host_network: Vec<Served>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Served {
    pub port: u16,
    pub protocol: Proto,
}

/// A probe's protocol as the data spells it.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "SCTP")]
    Sctp,
}

impl Proto {
    pub fn protocol(self) -> Protocol {
        match self {
            Proto::Tcp => Protocol::Tcp,
            Proto::Udp => Protocol::Udp,
            Proto::Sctp => Protocol::Sctp,
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    Standard,
    Experimental,
}

/// One upstream test (`tests/<name>.yaml`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConformanceTest {
    /// Upstream `ShortName`.
    pub name: String,
    pub description: String,
    pub profile: Profile,
    /// Upstream `SupportedFeatures` (`ClusterNetworkPolicy`,
    /// `ClusterNetworkPolicyNamedPorts`, ...).
    pub features: Vec<String>,
    /// The upstream test's file and manifest, relative to upstream's root.
    pub source: String,
    pub manifests: String,
    /// Created before the first step.
    pub objects: Vec<Value>,
    pub steps: Vec<Step>,
    #[serde(default)]
    pub notes: Option<String>,
}

/// Changes, then the probes upstream asserts after them.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Upstream `t.Run` name.
    pub subtest: String,
    /// Set when upstream added the step after its release.
    #[serde(default)]
    pub since: Option<String>,
    /// Upstream's change in words.
    #[serde(default)]
    pub changes: Vec<String>,
    /// Whole objects, created or replaced.
    #[serde(default)]
    pub apply: Vec<Value>,
    #[serde(default)]
    pub delete: Vec<ObjectRef>,
    pub probes: Vec<Probe>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ObjectRef {
    pub kind: String,
    #[serde(default)]
    pub namespace: Option<String>,
    pub name: String,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    /// The server answers.
    Allow,
    /// No answer: upstream requires a timeout (a drop).
    Deny,
}

/// One connection upstream asserts.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    /// Client pod, `namespace/name`.
    pub from: String,
    /// Server pod, `namespace/name`: its `status.podIP` is dialled.
    pub to: String,
    pub protocol: Proto,
    pub port: u16,
    pub expect: Expect,
    /// Why the lab cannot express this expectation, when it cannot.
    #[serde(default)]
    pub lab: Option<String>,
}

/// A probe with its addresses resolved against the objects of its step.
#[derive(Clone, Debug)]
pub struct Resolved<'a> {
    /// `Test / subtest (step k) #n`, for messages and reports.
    pub label: String,
    pub probe: &'a Probe,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Nodes of the client and of the server pod.
    pub src_node: String,
    pub dst_node: String,
    /// The server is a hostNetwork pod (its address is its node's).
    pub dst_host_network: bool,
}

impl Resolved<'_> {
    pub fn expect_allowed(&self) -> bool {
        self.probe.expect == Expect::Allow
    }

    pub fn flow(&self) -> palisade_policy::Flow {
        palisade_policy::Flow {
            src: self.src,
            dst: self.dst,
            proto: self.probe.protocol.protocol().number(),
            dport: self.probe.port,
        }
    }
}

impl std::fmt::Display for Resolved<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = self.probe;
        write!(
            f,
            "{}: {} ({}) -> {} ({}) {}/{:?} expect {:?}",
            self.label, p.from, self.src, p.to, self.dst, p.port, p.protocol, p.expect
        )
    }
}

/// One step as a runner sees it: the objects in force (topology, the
/// test's objects, every change so far) and its probes resolved.
pub struct StepState<'a> {
    pub index: usize,
    pub step: &'a Step,
    pub objects: Objects,
    pub probes: Vec<Resolved<'a>>,
}

/// The whole suite.
#[derive(Clone, Debug)]
pub struct Suite {
    pub meta: SuiteMeta,
    pub topology: Vec<Value>,
    pub tests: Vec<ConformanceTest>,
}

impl Suite {
    /// Loads `tests/cnp-conformance`.
    pub fn load() -> Result<Suite> {
        Suite::load_from(&suite_dir())
    }

    pub fn load_from(dir: &Path) -> Result<Suite> {
        let meta: SuiteMeta = read_yaml(&dir.join("suite.yaml"))?;
        let topology = documents(&read(&dir.join("topology.yaml"))?)
            .with_context(|| format!("{}", dir.join("topology.yaml").display()))?;
        let mut tests = Vec::new();
        for name in &meta.tests {
            let path = dir.join("tests").join(format!("{name}.yaml"));
            let test: ConformanceTest = read_yaml(&path)?;
            ensure!(
                &test.name == name,
                "{}: name {} differs from the file name",
                path.display(),
                test.name
            );
            tests.push(test);
        }
        // Every file is listed: a test left out of suite.yaml would never run.
        let mut files: Vec<String> = std::fs::read_dir(dir.join("tests"))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".yaml"))
                    .map(String::from)
            })
            .collect();
        files.sort();
        let mut listed = meta.tests.clone();
        listed.sort();
        ensure!(
            files == listed,
            "tests/ holds {files:?} but suite.yaml lists {listed:?}"
        );
        Ok(Suite {
            meta,
            topology,
            tests,
        })
    }

    pub fn test(&self, name: &str) -> Result<&ConformanceTest> {
        self.tests
            .iter()
            .find(|t| t.name == name)
            .with_context(|| format!("no test {name} in the suite"))
    }
}

impl ConformanceTest {
    /// Every step with the objects in force for its probes, in order.
    pub fn walk(&self, topology: &[Value]) -> Result<Vec<StepState<'_>>> {
        let mut objects = Objects::new(topology.iter().cloned())?;
        for o in &self.objects {
            objects.apply(o.clone())?;
        }
        let mut out = Vec::new();
        for (index, step) in self.steps.iter().enumerate() {
            for d in &step.delete {
                objects
                    .delete(&ObjectKey::of_ref(d))
                    .with_context(|| format!("{} step {index}", self.name))?;
            }
            for o in &step.apply {
                objects.apply(o.clone())?;
            }
            let mut probes = Vec::new();
            for (n, probe) in step.probes.iter().enumerate() {
                let label = format!("{} / {} (step {index}) #{n}", self.name, step.subtest);
                let resolved = resolve(&objects, probe, label)
                    .with_context(|| format!("{} step {index} probe {n}", self.name))?;
                probes.push(resolved);
            }
            out.push(StepState {
                index,
                step,
                objects: objects.clone(),
                probes,
            });
        }
        Ok(out)
    }

    /// The number of probes (upstream assertions).
    pub fn probe_count(&self) -> usize {
        self.steps.iter().map(|s| s.probes.len()).sum()
    }
}

fn resolve<'a>(objects: &Objects, probe: &'a Probe, label: String) -> Result<Resolved<'a>> {
    let from = objects.pod(&probe.from)?;
    let to = objects.pod(&probe.to)?;
    if host_network(from) {
        bail!("client {} is a hostNetwork pod", probe.from);
    }
    Ok(Resolved {
        label,
        probe,
        src: pod_ip(from)?,
        dst: pod_ip(to)?,
        src_node: node_name(from)?,
        dst_node: node_name(to)?,
        dst_host_network: host_network(to),
    })
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn read_yaml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    serde_yaml::from_str(&read(path)?).with_context(|| format!("{}", path.display()))
}

/// The non-empty documents of a multi-document YAML text.
pub fn documents(text: &str) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for d in serde_yaml::Deserializer::from_str(text) {
        let v = Value::deserialize(d)?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}
