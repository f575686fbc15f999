//! `install` and `uninstall` command lines.

use std::path::PathBuf;

use anyhow::Context;

use super::{install, uninstall, InstallOptions};

/// Reads `--cni-conf-dir DIR`, `--cni-bin-dir DIR`, `--binary PATH`,
/// `--state-dir DIR`, `--node NAME` and `--bpffs-root DIR` (also as
/// `--flag=value`).
pub fn parse_args(args: &[String]) -> anyhow::Result<InstallOptions> {
    let mut opts = InstallOptions::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = || -> anyhow::Result<PathBuf> {
            let v = match &inline {
                Some(v) => v.clone(),
                None => it
                    .next()
                    .cloned()
                    .with_context(|| format!("{flag}: missing value"))?,
            };
            anyhow::ensure!(!v.is_empty(), "{flag}: empty value");
            Ok(PathBuf::from(v))
        };
        match flag {
            "--cni-conf-dir" => opts.conf_dir = value()?,
            "--cni-bin-dir" => opts.bin_dir = value()?,
            "--binary" => opts.binary = Some(value()?),
            "--state-dir" => {
                let dir = value()?;
                anyhow::ensure!(dir.is_absolute(), "--state-dir: {} is not an absolute path", dir.display());
                opts.state_dir = Some(dir);
            }
            "--node" => opts.node = Some(value()?.to_string_lossy().into_owned()),
            "--bpffs-root" => {
                let dir = value()?;
                anyhow::ensure!(dir.is_absolute(), "--bpffs-root: {} is not an absolute path", dir.display());
                opts.bpffs_root = Some(dir);
            }
            other => anyhow::bail!(
                "unknown argument {other:?} (expected --cni-conf-dir, --cni-bin-dir, --binary, --state-dir, --node, --bpffs-root)"
            ),
        }
    }
    Ok(opts)
}

/// `palisade-cni install ARGS`: copies the binary (this program unless
/// `--binary` says otherwise) and adds the plugin to the configuration.
pub fn install_main(args: &[String]) -> anyhow::Result<()> {
    let mut opts = parse_args(args)?;
    if opts.binary.is_none() {
        opts.binary = Some(std::env::current_exe().context("locating this program")?);
    }
    let report = install(&opts)?;
    if let Some((path, changed)) = &report.binary {
        println!(
            "{} {}",
            if *changed { "installed" } else { "unchanged" },
            path.display()
        );
    }
    if let Some(from) = &report.converted_from {
        println!(
            "converted {} to {}",
            from.display(),
            report.conf_file.display()
        );
    }
    println!(
        "{} {}",
        if report.conf_changed {
            "updated"
        } else {
            "unchanged"
        },
        report.conf_file.display()
    );
    Ok(())
}

/// `palisade-cni uninstall ARGS`: removes the plugin from the configuration.
pub fn uninstall_main(args: &[String]) -> anyhow::Result<()> {
    let report = uninstall(&parse_args(args)?)?;
    for path in &report.changed {
        println!("removed palisade-cni from {}", path.display());
    }
    for (path, why) in &report.skipped {
        eprintln!("skipped {}: {why}", path.display());
    }
    if report.changed.is_empty() {
        println!("palisade-cni was not configured");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_in_both_forms() {
        let o = parse_args(&args(&[
            "--cni-conf-dir",
            "/c",
            "--cni-bin-dir=/b",
            "--binary",
            "/x",
            "--state-dir=/s",
            "--node",
            "node-1",
            "--bpffs-root=/sys/fs/bpf/p",
        ]))
        .unwrap();
        assert_eq!(o.node.as_deref(), Some("node-1"));
        assert_eq!(o.bpffs_root, Some(PathBuf::from("/sys/fs/bpf/p")));
        assert_eq!(o.conf_dir, PathBuf::from("/c"));
        assert_eq!(o.bin_dir, PathBuf::from("/b"));
        assert_eq!(o.binary, Some(PathBuf::from("/x")));
        assert_eq!(o.state_dir, Some(PathBuf::from("/s")));
        let d = parse_args(&[]).unwrap();
        assert_eq!(d.conf_dir, PathBuf::from(super::super::DEFAULT_CONF_DIR));
    }

    #[test]
    fn bad_flags_are_named() {
        assert!(parse_args(&args(&["--nope"]))
            .unwrap_err()
            .to_string()
            .contains("--nope"));
        assert!(parse_args(&args(&["--binary"]))
            .unwrap_err()
            .to_string()
            .contains("--binary"));
        assert!(parse_args(&args(&["--state-dir=rel"]))
            .unwrap_err()
            .to_string()
            .contains("--state-dir"));
    }
}
