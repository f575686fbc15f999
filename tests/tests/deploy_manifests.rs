//! The deployment manifests in deploy/*.yaml: every document is the
//! Kubernetes object it claims to be (no misspelt field slips through), and
//! the facts that matter for security hold: the exact capabilities, nothing
//! privileged, a plain ClusterRole bound to the agent only (whether it grants
//! exactly what the agent requests: `deploy_rbac.rs`).
//! (deploy/examples holds policy manifests; the offline CLI tests load them.)

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{
    Container, HostPathVolumeSource, PodSpec, ServiceAccount, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// deploy/*.yaml, sorted (not the examples directory).
fn manifest_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy_dir())
        .expect("read deploy/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// One YAML document of a manifest file, as generic JSON.
struct Document {
    file: String,
    value: serde_json::Value,
}

impl Document {
    fn kind(&self) -> (&str, &str) {
        let s = |k: &str| self.value.get(k).and_then(|v| v.as_str()).unwrap_or("");
        (s("apiVersion"), s("kind"))
    }

    /// The typed object. Deserializing ignores fields the type does not
    /// have, so the object is serialized again and must give back the
    /// document: a misspelt or misplaced field shows up as a difference.
    fn typed<T: DeserializeOwned + serde::Serialize>(&self) -> T {
        let object: T = serde_json::from_value(self.value.clone())
            .unwrap_or_else(|e| panic!("{}: {:?}: {e}", self.file, self.kind()));
        let back = serde_json::to_value(&object).unwrap();
        let mut unknown = Vec::new();
        differences(&self.value, &back, "", &mut unknown);
        assert!(
            unknown.is_empty(),
            "{}: {:?}: fields its type does not read: {unknown:?}",
            self.file,
            self.kind()
        );
        object
    }
}

/// Paths where `typed` (the document read into its type and written
/// again) differs from `original`.
fn differences(
    original: &serde_json::Value,
    typed: &serde_json::Value,
    path: &str,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    match (original, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = format!("{path}.{k}");
                match b.get(k) {
                    Some(w) => differences(v, w, &p, out),
                    None => out.push(p),
                }
            }
            out.extend(
                b.keys()
                    .filter(|k| !a.contains_key(*k))
                    .map(|k| format!("{path}.{k} (added)")),
            );
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                differences(v, w, &format!("{path}[{i}]"), out);
            }
        }
        (a, b) if a != b => out.push(format!("{path}: {a} became {b}")),
        _ => {}
    }
}

/// Every non-empty document of deploy/*.yaml except the kustomization.
fn documents() -> Vec<Document> {
    let mut docs = Vec::new();
    for path in manifest_files() {
        if file_name(&path) == "kustomization.yaml" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (i, de) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let yaml = serde_yaml::Value::deserialize(de)
                .unwrap_or_else(|e| panic!("{}: document {}: {e}", path.display(), i + 1));
            if yaml.is_null() {
                continue;
            }
            docs.push(Document {
                file: file_name(&path),
                value: serde_json::to_value(yaml).unwrap(),
            });
        }
    }
    docs
}

/// The one object of a kind (the deployment has exactly one of each).
fn the<T: DeserializeOwned + serde::Serialize>(api_version: &str, kind: &str) -> T {
    let docs = documents();
    let matching: Vec<&Document> = docs
        .iter()
        .filter(|d| d.kind() == (api_version, kind))
        .collect();
    assert_eq!(matching.len(), 1, "exactly one {api_version} {kind}");
    matching[0].typed()
}

#[test]
fn every_document_is_the_object_it_claims_to_be() {
    let docs = documents();
    let mut kinds = Vec::new();
    for d in &docs {
        match d.kind() {
            ("apps/v1", "DaemonSet") => drop(d.typed::<DaemonSet>()),
            ("v1", "ServiceAccount") => drop(d.typed::<ServiceAccount>()),
            ("rbac.authorization.k8s.io/v1", "ClusterRole") => drop(d.typed::<ClusterRole>()),
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                drop(d.typed::<ClusterRoleBinding>())
            }
            other => panic!("{}: unexpected object {other:?}", d.file),
        }
        kinds.push(d.kind().1.to_string());
    }
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "DaemonSet",
            "ServiceAccount"
        ]
    );
}

#[test]
fn kustomization_lists_every_manifest() {
    let text = std::fs::read_to_string(deploy_dir().join("kustomization.yaml")).unwrap();
    let k: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(
        k["apiVersion"].as_str(),
        Some("kustomize.config.k8s.io/v1beta1")
    );
    assert_eq!(k["kind"].as_str(), Some("Kustomization"));
    let resources: Vec<String> = k["resources"]
        .as_sequence()
        .expect("resources is a list")
        .iter()
        .map(|r| r.as_str().expect("resource is a path").to_string())
        .collect();
    let listed: BTreeSet<String> = resources.iter().cloned().collect();
    assert_eq!(listed.len(), resources.len(), "no resource listed twice");
    let present: BTreeSet<String> = manifest_files()
        .iter()
        .map(|p| file_name(p))
        .filter(|n| n != "kustomization.yaml")
        .collect();
    assert_eq!(listed, present, "kustomization resources vs deploy/*.yaml");
}

fn pod_spec(ds: &DaemonSet) -> &PodSpec {
    ds.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .expect("pod template spec")
}

fn all_containers(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
}

fn agent_container(spec: &PodSpec) -> &Container {
    assert_eq!(spec.containers.len(), 1, "one container: the agent");
    &spec.containers[0]
}

#[test]
fn daemonset_runs_unprivileged_with_exact_capabilities() {
    let ds: DaemonSet = the("apps/v1", "DaemonSet");
    let spec = pod_spec(&ds);
    assert_eq!(
        spec.host_network,
        Some(true),
        "pod veths live in the node's netns"
    );
    assert_ne!(spec.host_pid, Some(true), "hostPID is not needed");
    assert_ne!(spec.host_ipc, Some(true), "hostIPC is not needed");
    if let Some(sc) = &spec.security_context {
        assert!(sc.sysctls.is_none(), "no sysctls");
    }

    for c in all_containers(spec) {
        let sc = c
            .security_context
            .as_ref()
            .unwrap_or_else(|| panic!("container {} has a securityContext", c.name));
        assert_ne!(
            sc.privileged,
            Some(true),
            "container {} is privileged",
            c.name
        );
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
        let caps = sc.capabilities.as_ref().expect("capabilities");
        assert_eq!(
            caps.drop.as_deref(),
            Some(&["ALL".to_string()][..]),
            "{}",
            c.name
        );
        let mut add = caps.add.clone().unwrap_or_default();
        add.sort();
        // The agent loads and attaches programs; the CNI installer only
        // writes files its user (root) owns: no capability at all.
        let expected: &[&str] = match c.name.as_str() {
            "install-cni" => &[],
            _ => &["BPF", "NET_ADMIN", "PERFMON"],
        };
        assert_eq!(add, expected, "{}", c.name);
        // Kubernetes rejects Bidirectional propagation outside privileged
        // containers; catching it here beats a failed apply.
        for m in c.volume_mounts.iter().flatten() {
            assert_ne!(
                m.mount_propagation.as_deref(),
                Some("Bidirectional"),
                "{}: {} needs a privileged container",
                c.name,
                m.name
            );
        }
    }
}

/// The agent container's mount at `path` and the hostPath volume behind it.
fn host_mount<'a>(spec: &'a PodSpec, path: &str) -> (&'a VolumeMount, &'a HostPathVolumeSource) {
    let mount = agent_container(spec)
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == path)
        .unwrap_or_else(|| panic!("{path} is mounted"));
    let volume = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .expect("the mounted volume exists");
    let host = volume.host_path.as_ref().expect("a hostPath volume");
    (mount, host)
}

/// The value of `flag` in `args`.
fn flag<'a>(args: &'a [String], flag: &str) -> &'a str {
    let i = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("{flag} in {args:?}"));
    &args[i + 1]
}

#[test]
fn daemonset_mounts_only_the_agents_bpffs_directory() {
    let ds: DaemonSet = the("apps/v1", "DaemonSet");
    let spec = pod_spec(&ds);
    let c = agent_container(spec);
    let args = c.args.clone().unwrap_or_default();
    // The agent's --bpffs-root is the mount of the node's
    // /sys/fs/bpf/palisade, where the CNI plugin (on the node) reads the
    // pinned programs: the installer's --bpffs-root, the default root.
    let (mount, host) = host_mount(spec, flag(&args, "--bpffs-root"));
    assert_ne!(mount.read_only, Some(true), "pins are created there");
    assert_eq!(host.path, palisade::datapath::load::DEFAULT_BPFFS_ROOT);
    assert_eq!(host.type_.as_deref(), Some("DirectoryOrCreate"));
    let installer = init_container(spec, "install-cni").args.clone().unwrap();
    assert_eq!(flag(&installer, "--bpffs-root"), host.path);
    // Nothing else of the node's bpffs comes in.
    for v in spec.volumes.iter().flatten() {
        if let Some(h) = &v.host_path {
            assert!(
                !h.path.starts_with("/sys/fs/bpf") || h.path == host.path,
                "{}: {}",
                v.name,
                h.path
            );
        }
    }
    // Every mount names a declared volume.
    for m in c.volume_mounts.iter().flatten() {
        assert!(
            spec.volumes.iter().flatten().any(|v| v.name == m.name),
            "{}",
            m.name
        );
    }
}

#[test]
fn daemonset_shares_the_monitor_socket_with_the_node() {
    let ds: DaemonSet = the("apps/v1", "DaemonSet");
    let spec = pod_spec(&ds);
    let c = agent_container(spec);
    let (mount, host) = host_mount(spec, "/run/palisade");
    assert_ne!(mount.read_only, Some(true), "the socket is created there");
    assert_eq!(host.path, "/run/palisade");
    // The agent's default socket lives there.
    let socket = std::path::Path::new(palisade::monitor::protocol::DEFAULT_SOCKET);
    assert!(socket.starts_with(&host.path), "{}", socket.display());
    let args = c.args.clone().unwrap_or_default();
    assert!(
        !args.iter().any(|a| a == "--monitor-socket"),
        "the default socket path is under the mount: {args:?}"
    );
}

#[test]
fn daemonset_runs_the_agent_for_its_node() {
    let ds: DaemonSet = the("apps/v1", "DaemonSet");
    let ds_spec = ds.spec.as_ref().unwrap();
    let template_labels = ds_spec.template.metadata.as_ref().unwrap().labels.clone();
    let selector = ds_spec.selector.match_labels.clone().expect("matchLabels");
    let template_labels = template_labels.expect("template labels");
    for (k, v) in &selector {
        assert_eq!(
            template_labels.get(k),
            Some(v),
            "selector {k} matches the template"
        );
    }

    let spec = pod_spec(&ds);
    let c = agent_container(spec);
    assert_eq!(
        c.args.as_deref(),
        Some(
            &[
                "agent",
                "--node",
                "$(NODE_NAME)",
                "--bpffs-root",
                "/host/sys/fs/bpf/palisade",
                "--metrics-addr",
                "0.0.0.0:9090",
                "--monitor-group",
                "2023",
            ]
            .map(String::from)[..]
        )
    );
    assert!(c.command.is_none(), "the image's entrypoint is palisade");
    let node = c
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "NODE_NAME")
        .expect("NODE_NAME is set");
    let field = node
        .value_from
        .as_ref()
        .and_then(|v| v.field_ref.as_ref())
        .expect("NODE_NAME comes from the downward API");
    assert_eq!(field.field_path, "spec.nodeName");

    // Probes on the named port, which is 9090.
    let port = c
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("health"))
        .expect("a port named health");
    assert_eq!(port.container_port, 9090);
    for (probe, path) in [
        (&c.liveness_probe, "/healthz"),
        (&c.readiness_probe, "/readyz"),
    ] {
        let get = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .unwrap_or_else(|| panic!("an HTTP probe on {path}"));
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(get.port, IntOrString::String("health".into()));
    }

    let res = c.resources.as_ref().expect("resources");
    let requests = res.requests.as_ref().expect("requests");
    assert!(requests.contains_key("cpu") && requests.contains_key("memory"));
    // The memory limit sized by deploy/README.md's rule, above the request.
    let limit = &res.limits.as_ref().expect("limits")["memory"].0;
    let mib = |q: &str| q.strip_suffix("Mi").and_then(|n| n.parse::<u64>().ok());
    let (request, limit) = (mib(&requests["memory"].0), mib(limit));
    assert!(
        request.is_some() && limit.is_some() && request <= limit,
        "memory request {request:?} MiB, limit {limit:?} MiB"
    );
    assert!(
        res.limits.as_ref().is_none_or(|l| !l.contains_key("cpu")),
        "no CPU limit: policy updates are never throttled"
    );

    assert_eq!(
        spec.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    // One toleration that matches every taint: operator Exists with no key
    // and no effect.
    let tolerates_all =
        spec.tolerations.iter().flatten().any(|t| {
            t.operator.as_deref() == Some("Exists") && t.key.is_none() && t.effect.is_none()
        });
    assert!(tolerates_all, "runs on every node, whatever its taints");
}

/// The DaemonSet's init container named `name`.
fn init_container<'a>(spec: &'a PodSpec, name: &str) -> &'a Container {
    spec.init_containers
        .iter()
        .flatten()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("an init container {name}"))
}

/// The init container's command line with its hostPath mounts moved under
/// `root` (what the node's directories look like to it) and NODE_NAME set.
fn install_command(spec: &PodSpec, root: &Path, node: &str) -> (PathBuf, Vec<String>) {
    let c = init_container(spec, "install-cni");
    let mut host_paths: Vec<(String, PathBuf)> = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let v = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == m.name)
            .and_then(|v| v.host_path.as_ref())
            .unwrap_or_else(|| panic!("{} is a hostPath volume", m.name));
        let dir = root.join(v.path.trim_start_matches('/'));
        std::fs::create_dir_all(&dir).unwrap();
        host_paths.push((m.mount_path.clone(), dir));
    }
    let args = c
        .args
        .iter()
        .flatten()
        .map(|a| {
            let a = a.replace("$(NODE_NAME)", node);
            match host_paths.iter().find(|(m, _)| *m == a) {
                Some((_, dir)) => dir.to_string_lossy().into_owned(),
                None => a,
            }
        })
        .collect();
    let cmd = c.command.as_ref().expect("a command")[0].clone();
    assert_eq!(cmd, "/usr/local/bin/palisade-cni");
    (
        palisade_lab::palisade_cni_bin().expect("palisade-cni (cargo xtask build)"),
        args,
    )
}

fn run_cni(bin: &Path, args: &[String]) -> String {
    let out = std::process::Command::new(bin).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "palisade-cni {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn daemonset_installs_the_cni_plugin_last_where_the_agent_reads_it() {
    let ds: DaemonSet = the("apps/v1", "DaemonSet");
    let spec = pod_spec(&ds);
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cni/tests/fixtures/conf");
    for fixture in [
        "10-flannel.conflist",
        "10-calico.conflist",
        "10-kindnet.conflist",
    ] {
        let root = std::env::temp_dir().join(format!("pl-ds-cni-{}-{fixture}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (bin, args) = install_command(spec, &root, "node-7");
        let conf_dir = root.join("etc/cni/net.d");
        let original = std::fs::read(fixtures.join(fixture)).unwrap();
        std::fs::write(conf_dir.join(fixture), &original).unwrap();

        run_cni(&bin, &args);
        let installed = std::fs::read(conf_dir.join(fixture)).unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&installed).unwrap();
        let last = doc["plugins"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["type"], "palisade-cni", "{fixture}: {doc}");
        assert_eq!(last["nodeName"], "node-7", "{fixture}");
        // The plugin pins where the agent does, and records where it reads.
        assert_eq!(
            last["bpffsRoot"],
            palisade::datapath::load::DEFAULT_BPFFS_ROOT,
            "{fixture}"
        );
        assert_eq!(
            last["stateDir"],
            palisade_cni::config::DEFAULT_STATE_DIR,
            "{fixture}"
        );
        assert!(root.join("opt/cni/bin/palisade-cni").is_file(), "{fixture}");
        // A restarted DaemonSet pod changes nothing.
        run_cni(&bin, &args);
        assert_eq!(std::fs::read(conf_dir.join(fixture)).unwrap(), installed);
        // Uninstalling gives the runtime its original list back.
        let mut un = args.clone();
        un[0] = "uninstall".into();
        run_cni(&bin, &un);
        assert_eq!(
            std::fs::read(conf_dir.join(fixture)).unwrap(),
            original,
            "{fixture}"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}

#[test]
fn daemonset_image_is_the_one_the_containerfile_builds() {
    let ds: DaemonSet = the("apps/v1", "DaemonSet");
    let image = agent_container(pod_spec(&ds)).image.clone().expect("image");
    let containerfile = std::fs::read_to_string(deploy_dir().join("Containerfile")).unwrap();
    assert!(
        containerfile.contains(&format!("-t {image} ")),
        "deploy/Containerfile documents building {image}"
    );
    assert!(containerfile.contains("ENTRYPOINT [\"/usr/local/bin/palisade\"]"));
    // The init container runs the plugin from the same image.
    let init = init_container(pod_spec(&ds), "install-cni");
    assert_eq!(init.image.as_ref(), Some(&image));
    assert!(containerfile.contains("/usr/local/bin/palisade-cni"));
}

/// What the role grants is compared with what the agent requests in
/// `deploy_rbac.rs`; here: no wildcards or aggregation, and bound to the
/// agent's ServiceAccount only.
#[test]
fn rbac_role_is_plain_and_bound_to_the_agent_only() {
    let sa: ServiceAccount = the("v1", "ServiceAccount");
    let role: ClusterRole = the("rbac.authorization.k8s.io/v1", "ClusterRole");
    let binding: ClusterRoleBinding = the("rbac.authorization.k8s.io/v1", "ClusterRoleBinding");
    let ds: DaemonSet = the("apps/v1", "DaemonSet");
    // Panics on wildcards, per-name rules and non-resource URLs.
    assert!(!palisade_tests::rbac::granted(&role).is_empty());
    assert!(role.aggregation_rule.is_none());

    let sa_name = sa.metadata.name.clone().unwrap();
    let sa_ns = sa.metadata.namespace.clone().unwrap();
    assert_eq!(binding.role_ref.api_group, "rbac.authorization.k8s.io");
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(Some(&binding.role_ref.name), role.metadata.name.as_ref());
    let subjects = binding.subjects.clone().unwrap_or_default();
    assert_eq!(subjects.len(), 1, "bound to the agent only");
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(subjects[0].name, sa_name);
    assert_eq!(subjects[0].namespace.as_deref(), Some(sa_ns.as_str()));

    // The DaemonSet runs as that ServiceAccount, in its namespace.
    assert_eq!(ds.metadata.namespace.as_deref(), Some(sa_ns.as_str()));
    assert_eq!(
        pod_spec(&ds).service_account_name.as_deref(),
        Some(sa_name.as_str())
    );
    assert_ne!(pod_spec(&ds).automount_service_account_token, Some(false));
}
