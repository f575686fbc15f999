//! Installing into and uninstalling from realistic CNI configuration
//! directories.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{fixture, Scratch};
use palisade_cni::install::{install, uninstall, InstallOptions};
use palisade_cni::json::Json;

struct Node {
    scratch: Scratch,
}

impl Node {
    fn with(files: &[&str]) -> Node {
        let scratch = Scratch::new("inst");
        for dir in ["net.d", "bin"] {
            std::fs::create_dir(scratch.path().join(dir)).unwrap();
        }
        for f in files {
            std::fs::copy(
                fixture(&format!("conf/{f}")),
                scratch.path().join("net.d").join(f),
            )
            .unwrap();
        }
        std::fs::write(
            scratch.path().join("palisade-cni-build"),
            b"\x7fELF plugin v1",
        )
        .unwrap();
        Node { scratch }
    }

    fn conf_dir(&self) -> PathBuf {
        self.scratch.path().join("net.d")
    }

    fn opts(&self) -> InstallOptions {
        InstallOptions {
            conf_dir: self.conf_dir(),
            bin_dir: self.scratch.path().join("bin"),
            binary: Some(self.scratch.path().join("palisade-cni-build")),
            state_dir: Some("/run/palisade/cni".into()),
            node: Some("node-1".into()),
            bpffs_root: Some("/sys/fs/bpf/palisade".into()),
        }
    }

    /// Every file of the conf dir with its bytes, hidden ones included.
    fn snapshot(&self) -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(self.conf_dir())
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    }

    fn read(&self, name: &str) -> Json {
        Json::parse(&std::fs::read(self.conf_dir().join(name)).unwrap()).unwrap()
    }
}

fn plugin_types(doc: &Json) -> Vec<String> {
    doc.get("plugins")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.get("type").unwrap().as_str().unwrap().to_string())
        .collect()
}

#[test]
fn install_is_idempotent_and_uninstall_restores_bytes() {
    for (file, types) in [
        (
            "10-flannel.conflist",
            vec!["flannel", "portmap", "palisade-cni"],
        ),
        (
            "10-calico.conflist",
            vec!["calico", "bandwidth", "portmap", "palisade-cni"],
        ),
        (
            "10-kindnet.conflist",
            vec!["ptp", "portmap", "palisade-cni"],
        ),
    ] {
        let node = Node::with(&[file]);
        let before = node.snapshot();
        let report = install(&node.opts()).unwrap();
        assert!(report.conf_changed, "{file}");
        assert_eq!(report.conf_file, node.conf_dir().join(file));
        let doc = node.read(file);
        assert_eq!(plugin_types(&doc), types, "{file}");
        let entry = doc
            .get("plugins")
            .unwrap()
            .as_array()
            .unwrap()
            .last()
            .unwrap();
        assert_eq!(
            entry.get("stateDir").and_then(Json::as_str),
            Some("/run/palisade/cni")
        );
        // Where the plugin finds the agent's pins.
        assert_eq!(entry.get("nodeName").and_then(Json::as_str), Some("node-1"));
        assert_eq!(
            entry.get("bpffsRoot").and_then(Json::as_str),
            Some("/sys/fs/bpf/palisade")
        );
        // The rest of the document is as it was, key order included.
        let original = Json::parse(&before[0].1).unwrap();
        let keys = |j: &Json| match j {
            Json::Object(f) => f.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
            _ => vec![],
        };
        assert_eq!(keys(&doc), keys(&original), "{file}");

        let installed = node.snapshot();
        let again = install(&node.opts()).unwrap();
        assert!(!again.conf_changed, "{file}");
        assert_eq!(again.binary.as_ref().map(|b| b.1), Some(false));
        assert_eq!(
            node.snapshot(),
            installed,
            "{file}: second install changed something"
        );

        let report = uninstall(&node.opts()).unwrap();
        assert_eq!(report.changed, vec![node.conf_dir().join(file)]);
        assert_eq!(
            node.snapshot(),
            before,
            "{file}: uninstall did not restore the original"
        );
        // The binary stays for DELs of pods created meanwhile.
        assert!(node.scratch.path().join("bin/palisade-cni").exists());
    }
}

#[test]
fn single_plugin_conf_is_converted_and_restored() {
    let node = Node::with(&["1-k8s.conf"]);
    let before = node.snapshot();
    let report = install(&node.opts()).unwrap();
    assert_eq!(report.conf_file, node.conf_dir().join("1-k8s.conflist"));
    assert_eq!(
        report.converted_from,
        Some(node.conf_dir().join("1-k8s.conf"))
    );
    assert!(!node.conf_dir().join("1-k8s.conf").exists());
    let doc = node.read("1-k8s.conflist");
    assert_eq!(doc.get("cniVersion").and_then(Json::as_str), Some("1.0.0"));
    assert_eq!(doc.get("name").and_then(Json::as_str), Some("bridge"));
    assert_eq!(plugin_types(&doc), vec!["bridge", "palisade-cni"]);
    let bridge = &doc.get("plugins").unwrap().as_array().unwrap()[0];
    assert!(bridge.get("cniVersion").is_none() && bridge.get("ipam").is_some());

    let installed = node.snapshot();
    assert!(!install(&node.opts()).unwrap().conf_changed);
    assert_eq!(node.snapshot(), installed);

    uninstall(&node.opts()).unwrap();
    assert_eq!(node.snapshot(), before);
}

#[test]
fn only_the_lexically_first_file_is_changed() {
    let node = Node::with(&["10-kindnet.conflist", "10-calico.conflist", "1-k8s.conf"]);
    std::fs::write(node.conf_dir().join("README"), b"not a config").unwrap();
    let report = install(&node.opts()).unwrap();
    // "1-k8s.conf" sorts before "10-...".
    assert_eq!(
        report.converted_from,
        Some(node.conf_dir().join("1-k8s.conf"))
    );
    assert_eq!(
        plugin_types(&node.read("10-calico.conflist")),
        vec!["calico", "bandwidth", "portmap"]
    );
    assert_eq!(
        plugin_types(&node.read("10-kindnet.conflist")),
        vec!["ptp", "portmap"]
    );
}

#[test]
fn existing_entry_is_updated_in_place_and_moved_last() {
    let node = Node::with(&[]);
    let text = r#"{"cniVersion":"1.0.0","name":"kindnet","plugins":[{"type":"ptp"},{"type":"palisade-cni","logLevel":"debug","stateDir":"/old"},{"type":"portmap"}]}"#;
    std::fs::write(node.conf_dir().join("10-kindnet.conflist"), text).unwrap();
    install(&node.opts()).unwrap();
    let doc = node.read("10-kindnet.conflist");
    assert_eq!(plugin_types(&doc), vec!["ptp", "portmap", "palisade-cni"]);
    let entry = doc.get("plugins").unwrap().as_array().unwrap()[2].clone();
    assert_eq!(
        serde_json::to_string(&entry).unwrap(),
        r#"{"type":"palisade-cni","logLevel":"debug","stateDir":"/run/palisade/cni","nodeName":"node-1","bpffsRoot":"/sys/fs/bpf/palisade"}"#
    );
    // No original to go back to: uninstall removes just the entry.
    uninstall(&node.opts()).unwrap();
    assert_eq!(
        plugin_types(&node.read("10-kindnet.conflist")),
        vec!["ptp", "portmap"]
    );
}

#[test]
fn uninstall_after_a_foreign_edit_keeps_the_edit() {
    let node = Node::with(&["10-flannel.conflist"]);
    install(&node.opts()).unwrap();
    let path = node.conf_dir().join("10-flannel.conflist");
    let edited = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"hairpinMode\": true", "\"hairpinMode\": false");
    std::fs::write(&path, edited).unwrap();
    uninstall(&node.opts()).unwrap();
    let doc = node.read("10-flannel.conflist");
    assert_eq!(plugin_types(&doc), vec!["flannel", "portmap"]);
    let delegate = doc.get("plugins").unwrap().as_array().unwrap()[0]
        .get("delegate")
        .unwrap()
        .clone();
    assert_eq!(delegate.get("hairpinMode"), Some(&Json::Bool(false)));
    // No backup is left behind.
    assert_eq!(node.snapshot().len(), 1);
}

#[test]
fn file_mode_is_preserved() {
    let node = Node::with(&["10-kindnet.conflist"]);
    let path = node.conf_dir().join("10-kindnet.conflist");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    install(&node.opts()).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
        0o600
    );
    let bin = node.scratch.path().join("bin/palisade-cni");
    assert_eq!(
        std::fs::metadata(&bin).unwrap().permissions().mode() & 0o7777,
        0o755
    );
    assert_eq!(std::fs::read(&bin).unwrap(), b"\x7fELF plugin v1");
}

#[test]
fn invalid_json_is_reported_by_name_and_left_untouched() {
    let node = Node::with(&["10-kindnet.conflist"]);
    let broken = b"{\"cniVersion\": \"0.3.1\", \"name\": \"x\", \"plugins\": [";
    std::fs::write(node.conf_dir().join("05-broken.conflist"), broken).unwrap();
    let before = node.snapshot();
    let err = install(&node.opts()).unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("05-broken.conflist") && text.contains("not valid JSON"),
        "{text}"
    );
    assert_eq!(node.snapshot(), before);
    // Uninstall skips it too, and says so.
    let report = uninstall(&node.opts()).unwrap();
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(node.snapshot(), before);
}

#[test]
fn unsupported_version_is_refused_and_left_untouched() {
    let node = Node::with(&[]);
    let text = r#"{"cniVersion":"0.2.0","name":"old","type":"bridge"}"#;
    std::fs::write(node.conf_dir().join("10-old.conf"), text).unwrap();
    let err = install(&node.opts()).unwrap_err();
    assert!(format!("{err:#}").contains("0.2.0"), "{err:#}");
    assert_eq!(
        node.snapshot(),
        vec![("10-old.conf".to_string(), text.as_bytes().to_vec())]
    );
}

#[test]
fn missing_or_empty_conf_dir_is_a_clear_error() {
    let node = Node::with(&[]);
    let err = install(&node.opts()).unwrap_err();
    assert!(
        format!("{err:#}").contains("no CNI network configuration"),
        "{err:#}"
    );
    let mut opts = node.opts();
    opts.conf_dir = node.scratch.path().join("nope");
    let err = install(&opts).unwrap_err();
    assert!(format!("{err:#}").contains("nope"), "{err:#}");
}

/// Makes `dir` unwritable even for root (immutable flag) for its lifetime.
struct ReadOnly(PathBuf);

impl ReadOnly {
    fn new(dir: &Path) -> ReadOnly {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        let guard = ReadOnly(dir.to_path_buf());
        if std::fs::write(dir.join(".probe"), b"").is_ok() {
            // Root ignores modes: use the immutable flag.
            let _ = std::fs::remove_file(dir.join(".probe"));
            let ok = Command::new("chattr")
                .arg("+i")
                .arg(dir)
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                ok,
                "cannot make {} unwritable (chattr +i failed)",
                dir.display()
            );
        }
        guard
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
        let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o755));
    }
}

#[test]
fn unwritable_dirs_are_clear_errors() {
    let node = Node::with(&["10-flannel.conflist"]);
    let before = node.snapshot();
    {
        let _ro = ReadOnly::new(&node.conf_dir());
        let err = install(&node.opts()).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains(&node.conf_dir().display().to_string()),
            "{text}"
        );
    }
    assert_eq!(node.snapshot(), before);
    // A new build to copy, into a bin dir that refuses it.
    std::fs::write(
        node.scratch.path().join("palisade-cni-build"),
        b"\x7fELF plugin v2",
    )
    .unwrap();
    {
        let _ro = ReadOnly::new(&node.scratch.path().join("bin"));
        let err = install(&node.opts()).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("CNI bin directory"), "{text}");
    }
    // The binary goes first: a failed copy leaves the configuration alone.
    assert_eq!(node.snapshot(), before);
}
