//! Running iproute2. Every failure carries the command and its stderr.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::process::{Command, Stdio};

/// Runs `lines` as one `ip -batch -`, inside `netns` when given. One process
/// for many commands keeps lab setup fast. With `keep_going`, a failing line
/// does not stop the rest (teardown), and the error lists every failure.
pub fn ip_batch(netns: Option<&str>, lines: &[String], keep_going: bool) -> Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut cmd = Command::new("ip");
    if let Some(ns) = netns {
        cmd.args(["-n", ns]);
    }
    if keep_going {
        cmd.arg("-force");
    }
    cmd.args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let where_ = netns.map(|n| format!(" in netns {n}")).unwrap_or_default();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("running `ip -batch`{where_} (is iproute2 installed?)"))?;
    let script = lines.join("\n") + "\n";
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(script.as_bytes())
        .with_context(|| format!("feeding `ip -batch`{where_}"))?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "`ip -batch`{where_} failed ({}): {}\nscript:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            numbered(&lines.join("\n"))
        );
    }
    Ok(())
}

// `ip -batch` reports failures by line number.
fn numbered(script: &str) -> String {
    script
        .lines()
        .enumerate()
        .map(|(i, l)| format!("{:>4}  {l}\n", i + 1))
        .collect()
}
