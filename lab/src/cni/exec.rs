//! Running one CNI plugin binary as a container runtime does: inside the
//! node's network namespace (here `ip netns exec`, which also gives it the
//! node's `/sys`), the attachment's parameters in `CNI_*` variables, the
//! request configuration on stdin, the result or error as JSON on stdout.

use crate::cmd::run_bounded;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Longer than a plugin ever needs (the bridge plugin waits up to 2.5 s
/// for its port to come up); a hung plugin must not hang the lab.
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The `CNI_*` environment of one attachment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Env {
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: String,
    pub path: String,
}

impl Env {
    fn vars(&self, command: &str) -> [(&'static str, String); 6] {
        [
            ("CNI_COMMAND", command.to_string()),
            ("CNI_CONTAINERID", self.container_id.clone()),
            ("CNI_NETNS", self.netns.clone()),
            ("CNI_IFNAME", self.ifname.clone()),
            ("CNI_ARGS", self.args.clone()),
            ("CNI_PATH", self.path.clone()),
        ]
    }
}

/// Runs `binary` with `CNI_COMMAND=command` in `node_netns`. Returns what
/// it printed (a result for ADD, usually nothing for DEL); an error carries
/// the plugin's own error object when it printed one, its exit status and
/// its stderr.
pub fn run(
    node_netns: &str,
    binary: &Path,
    command: &str,
    env: &Env,
    stdin: &Value,
) -> Result<Option<Value>> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", node_netns])
        .arg(binary)
        .envs(env.vars(command));
    let input = serde_json::to_vec(stdin)?;
    let ran = run_bounded(&mut cmd, &input, PLUGIN_TIMEOUT)
        .context("running `ip netns exec` (is iproute2 installed?)")?;
    let (status, stdout) = (ran.status, ran.stdout);
    let stderr = String::from_utf8_lossy(&ran.stderr).trim().to_string();
    let stderr_note = if stderr.is_empty() {
        String::new()
    } else {
        format!("; stderr: {stderr}")
    };
    let Some(status) = status else {
        bail!("no answer within {PLUGIN_TIMEOUT:?}, killed{stderr_note}");
    };
    let parsed: Option<Value> = if stdout.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(serde_json::from_slice(&stdout).with_context(|| {
            format!(
                "{status}: output is not JSON: {}{stderr_note}",
                String::from_utf8_lossy(&stdout).trim()
            )
        })?)
    };
    if !status.success() {
        let what = parsed
            .as_ref()
            .map(describe_error)
            .unwrap_or_else(|| "no error object on stdout".to_string());
        bail!("{status}: {what}{stderr_note}");
    }
    Ok(parsed)
}

/// The spec's error object: `{"code": 7, "msg": "...", "details": "..."}`.
pub fn describe_error(v: &Value) -> String {
    let msg = v["msg"].as_str().unwrap_or("(no msg)");
    let mut s = format!("error {}: {msg}", v["code"]);
    if let Some(d) = v["details"].as_str().filter(|d| !d.is_empty()) {
        s.push_str(&format!(" ({d})"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn error_objects_are_described() {
        let e = json!({"cniVersion": "1.0.0", "code": 7, "msg": "Invalid Configuration",
                       "details": "Network 10.0.0.0/31 too small"});
        assert_eq!(
            describe_error(&e),
            "error 7: Invalid Configuration (Network 10.0.0.0/31 too small)"
        );
        assert_eq!(
            describe_error(&json!({"code": 11, "msg": "x"})),
            "error 11: x"
        );
    }
}
