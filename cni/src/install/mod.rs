//! Installing the plugin into a node's CNI configuration, and removing it.

mod cli;
mod conflist;
mod fsio;

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;

pub use cli::{install_main, parse_args, uninstall_main};
pub use conflist::PLUGIN_TYPE;

use crate::config::SUPPORTED_VERSIONS;
use crate::json::Json;
use conflist::{conf_to_conflist, has_entry, put_entry, remove_entry};

pub const DEFAULT_CONF_DIR: &str = "/etc/cni/net.d";
pub const DEFAULT_BIN_DIR: &str = "/opt/cni/bin";

/// The extensions runtimes load from the configuration directory.
const CONFIG_EXTENSIONS: &[&str] = &["conf", "conflist", "json"];

/// Where the original of a file we rewrote is kept, so that uninstall can
/// put it back byte for byte. Runtimes ignore it (hidden, and not one of
/// the extensions they load).
fn backup_path(file: &Path) -> PathBuf {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    file.with_file_name(format!(".{name}.palisade-orig"))
}

#[derive(Debug, Clone)]
pub struct InstallOptions {
    pub conf_dir: PathBuf,
    pub bin_dir: PathBuf,
    /// The plugin binary to copy into `bin_dir`; `None` copies nothing.
    pub binary: Option<PathBuf>,
    /// Written as the entry's `stateDir` when given.
    pub state_dir: Option<PathBuf>,
    /// Written as the entry's `nodeName`: the agent's `--node`, which names
    /// the directory of the node's pins.
    pub node: Option<String>,
    /// Written as the entry's `bpffsRoot`: the agent's `--bpffs-root`.
    pub bpffs_root: Option<PathBuf>,
}

impl Default for InstallOptions {
    fn default() -> Self {
        InstallOptions {
            conf_dir: DEFAULT_CONF_DIR.into(),
            bin_dir: DEFAULT_BIN_DIR.into(),
            binary: None,
            state_dir: None,
            node: None,
            bpffs_root: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallReport {
    /// The configuration list that now ends with our entry.
    pub conf_file: PathBuf,
    /// Whether it was written (false: it already was as wanted).
    pub conf_changed: bool,
    /// The single-plugin file it was converted from, now removed.
    pub converted_from: Option<PathBuf>,
    /// The installed binary and whether it was replaced.
    pub binary: Option<(PathBuf, bool)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UninstallReport {
    /// Files from which our entry was removed (restored or rewritten).
    pub changed: Vec<PathBuf>,
    /// Files that could not be read as JSON; left alone.
    pub skipped: Vec<(PathBuf, String)>,
}

/// The configuration files of `conf_dir` in the order runtimes consider
/// them (lexical), the first being the one containerd and CRI-O use.
pub fn config_files(conf_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = fs::read_dir(conf_dir)
        .with_context(|| format!("reading CNI configuration directory {}", conf_dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", conf_dir.display()))?;
        let path = entry.path();
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default();
        if CONFIG_EXTENSIONS.contains(&ext) && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Copies `binary` to `<bin_dir>/palisade-cni` (0755) unless it is there
/// already; whether it was replaced.
pub fn install_binary(binary: &Path, bin_dir: &Path) -> anyhow::Result<(PathBuf, bool)> {
    let dest = bin_dir.join(PLUGIN_TYPE);
    let bytes =
        fs::read(binary).with_context(|| format!("reading plugin binary {}", binary.display()))?;
    if fs::read(&dest).is_ok_and(|old| old == bytes) {
        return Ok((dest, false));
    }
    // Renamed into place: a runtime exec'ing the old binary keeps it.
    fsio::write_atomic(&dest, &bytes, 0o755).with_context(|| {
        format!(
            "installing the plugin into CNI bin directory {}",
            bin_dir.display()
        )
    })?;
    Ok((dest, true))
}

/// Appends the plugin to the network configuration the runtime uses.
///
/// The binary goes first so that no runtime ever finds the entry without
/// the program. A file that is not valid JSON is reported and left as is.
pub fn install(opts: &InstallOptions) -> anyhow::Result<InstallReport> {
    let binary = match &opts.binary {
        Some(b) => Some(install_binary(b, &opts.bin_dir)?),
        None => None,
    };

    let file = config_files(&opts.conf_dir)?.into_iter().next().with_context(|| {
        format!(
            "no CNI network configuration (*.conf, *.conflist, *.json) in {}: the node's network plugin has not written one yet",
            opts.conf_dir.display()
        )
    })?;
    let bytes = fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let doc = Json::parse(&bytes)
        .with_context(|| format!("{}: not valid JSON; left untouched", file.display()))?;
    if !matches!(doc, Json::Object(_)) {
        anyhow::bail!("{}: not a JSON object; left untouched", file.display());
    }
    let mode = fsio::mode_of(&file)?;

    let is_list = file.extension().is_some_and(|e| e == "conflist");
    let (target, mut list) = if is_list {
        (file.clone(), doc)
    } else {
        (file.with_extension("conflist"), conf_to_conflist(doc))
    };

    check_versions(&file, &list)?;
    if !has_entry(&list) {
        // The untouched original, for uninstall.
        fsio::write_atomic(&backup_path(&file), &bytes, mode)
            .with_context(|| format!("keeping the original of {}", file.display()))?;
    }
    let mut keys = vec![("type".to_string(), Json::str(PLUGIN_TYPE))];
    if let Some(dir) = &opts.state_dir {
        keys.push(("stateDir".to_string(), Json::str(&dir.to_string_lossy())));
    }
    if let Some(node) = &opts.node {
        keys.push(("nodeName".to_string(), Json::str(node)));
    }
    if let Some(root) = &opts.bpffs_root {
        keys.push(("bpffsRoot".to_string(), Json::str(&root.to_string_lossy())));
    }
    put_entry(&mut list, &keys)
        .map_err(|why| anyhow::anyhow!("{}: {why}; left untouched", file.display()))?;

    let new_bytes = list.to_pretty();
    let conf_changed = !(is_list && new_bytes == bytes);
    if conf_changed {
        fsio::write_atomic(&target, &new_bytes, mode)
            .with_context(|| format!("adding palisade-cni to {}", target.display()))?;
    }
    let converted_from = if is_list {
        None
    } else {
        // The list sorts after the single file of the same stem, so the
        // runtime switches to it exactly when the single file goes.
        fsio::remove_if_exists(&file)?;
        Some(file)
    };
    Ok(InstallReport {
        conf_file: target,
        conf_changed,
        converted_from,
        binary,
    })
}

/// Refuses a configuration whose spec versions the plugin would refuse:
/// installed there, it would fail every pod's ADD.
fn check_versions(file: &Path, list: &Json) -> anyhow::Result<()> {
    let mut versions: Vec<&str> = list
        .get("cniVersion")
        .and_then(Json::as_str)
        .into_iter()
        .collect();
    if let Some(more) = list.get("cniVersions").and_then(Json::as_array) {
        versions.extend(more.iter().filter_map(Json::as_str));
    }
    if versions.is_empty() || versions.iter().any(|v| SUPPORTED_VERSIONS.contains(v)) {
        return Ok(());
    }
    anyhow::bail!(
        "{}: cniVersion {} is not supported by palisade-cni (supported: {}); left untouched",
        file.display(),
        versions.join(", "),
        SUPPORTED_VERSIONS.join(", ")
    )
}

/// Removes the plugin from every configuration file that lists it.
///
/// A file whose remaining content is what it was before install gets its
/// original bytes back (a converted single-plugin file included);
/// otherwise only our entry goes. The binary stays: runtimes may replay
/// the configuration cached at ADD when they delete pods created while
/// the plugin was installed, and a DEL with nothing recorded is a no-op.
pub fn uninstall(opts: &InstallOptions) -> anyhow::Result<UninstallReport> {
    let mut report = UninstallReport::default();
    for file in config_files(&opts.conf_dir)? {
        let bytes = fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        let mut doc = match Json::parse(&bytes) {
            Ok(doc) => doc,
            Err(e) => {
                report.skipped.push((file, format!("not valid JSON: {e}")));
                continue;
            }
        };
        if !remove_entry(&mut doc) {
            continue;
        }
        restore_or_rewrite(&file, &doc)?;
        report.changed.push(file);
    }
    Ok(report)
}

fn restore_or_rewrite(file: &Path, doc: &Json) -> anyhow::Result<()> {
    let mode = fsio::mode_of(file)?;
    let own_backup = backup_path(file);
    let single_backups: Vec<(PathBuf, PathBuf)> = ["conf", "json"]
        .iter()
        .map(|ext| {
            let original = file.with_extension(ext);
            (backup_path(&original), original)
        })
        .collect();

    let read_backup = |path: &Path| -> Option<(Vec<u8>, Json)> {
        let bytes = fs::read(path).ok()?;
        let json = Json::parse(&bytes).ok()?;
        Some((bytes, json))
    };

    let mut done = false;
    if let Some((bytes, json)) = read_backup(&own_backup) {
        if json.same_as(doc) {
            fsio::write_atomic(file, &bytes, mode)?;
            done = true;
        }
    }
    if !done {
        for (backup, original) in &single_backups {
            if let Some((bytes, json)) = read_backup(backup) {
                if conf_to_conflist(json).same_as(doc) {
                    // The single file sorts first, so the runtime switches
                    // back to it as soon as it is written.
                    fsio::write_atomic(original, &bytes, mode)?;
                    fsio::remove_if_exists(file)?;
                    done = true;
                    break;
                }
            }
        }
    }
    if !done {
        fsio::write_atomic(file, &doc.to_pretty(), mode)?;
    }
    fsio::remove_if_exists(&own_backup)?;
    for (backup, _) in &single_backups {
        fsio::remove_if_exists(backup)?;
    }
    Ok(())
}
