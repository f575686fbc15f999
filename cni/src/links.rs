//! [`Links`] answered by iproute2 (`ip -j -d link`), and `nsenter` for the
//! container's namespace.
//!
//! Running two small programs costs a few milliseconds per ADD and keeps
//! the plugin free of netlink and namespace-switching code: `CNI_NETNS` is
//! a path, which `nsenter --net=PATH` takes as is.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context;
use serde::Deserialize;

use crate::hostif::{LinkInfo, Links};

/// Link lookups through `ip` and `nsenter`.
#[derive(Debug, Clone, Default)]
pub struct IpLinks {
    /// Run "host" lookups inside this namespace instead of the current one
    /// (tests build a whole node inside a namespace).
    pub host_netns: Option<PathBuf>,
}

impl IpLinks {
    /// Lookups in the namespace the plugin runs in.
    pub fn host() -> IpLinks {
        IpLinks::default()
    }

    /// Lookups that treat the namespace at `path` as the host.
    pub fn in_netns(path: impl Into<PathBuf>) -> IpLinks {
        IpLinks {
            host_netns: Some(path.into()),
        }
    }

    fn host_command(&self, args: &[&str]) -> anyhow::Result<Option<Vec<LinkInfo>>> {
        match &self.host_netns {
            Some(ns) => ip_in(&ns.to_string_lossy(), args),
            None => ip(Command::new("ip"), args),
        }
    }
}

impl Links for IpLinks {
    fn host_link(&self, name: &str) -> anyhow::Result<Option<LinkInfo>> {
        Ok(self
            .host_command(&["link", "show", "dev", name])?
            .and_then(|l| l.into_iter().next()))
    }

    fn host_link_by_index(&self, ifindex: u32) -> anyhow::Result<Option<LinkInfo>> {
        Ok(self
            .host_command(&["link", "show"])?
            .and_then(|l| l.into_iter().find(|link| link.ifindex == ifindex)))
    }

    fn netns_link(&self, netns: &str, name: &str) -> anyhow::Result<Option<LinkInfo>> {
        Ok(ip_in(netns, &["link", "show", "dev", name])?.and_then(|l| l.into_iter().next()))
    }
}

fn ip_in(netns: &str, args: &[&str]) -> anyhow::Result<Option<Vec<LinkInfo>>> {
    if !std::path::Path::new(netns).exists() {
        anyhow::bail!("network namespace {netns} does not exist");
    }
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={netns}")).arg("--").arg("ip");
    ip(cmd, args)
}

/// Runs `ip -j -d ARGS`; `Ok(None)` when the device does not exist.
fn ip(mut cmd: Command, args: &[&str]) -> anyhow::Result<Option<Vec<LinkInfo>>> {
    cmd.args(["-j", "-d"]).args(args);
    let shown = palisade_datapath::command::describe(&cmd);
    let out = palisade_datapath::command::output(&mut cmd)?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("does not exist") {
            return Ok(None);
        }
        anyhow::bail!("{shown} failed ({}): {}", out.status, stderr.trim());
    }
    parse_ip_json(&out.stdout)
        .map(Some)
        .with_context(|| format!("reading the output of {shown}"))
}

/// Reads `ip -j -d link show` output.
pub fn parse_ip_json(bytes: &[u8]) -> anyhow::Result<Vec<LinkInfo>> {
    #[derive(Deserialize)]
    struct Link {
        ifindex: u32,
        ifname: String,
        link_index: Option<u32>,
        linkinfo: Option<Kind>,
    }
    #[derive(Deserialize)]
    struct Kind {
        info_kind: Option<String>,
    }
    let links: Vec<Link> = serde_json::from_slice(bytes)?;
    Ok(links
        .into_iter()
        .map(|l| LinkInfo {
            name: l.ifname,
            ifindex: l.ifindex,
            kind: l.linkinfo.and_then(|k| k.info_kind),
            peer_ifindex: l.link_index,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kind_and_peer_index() {
        let text = br#"[{"ifindex":2,"link_index":7,"ifname":"veth1","linkinfo":{"info_kind":"veth","info_slave_kind":"bridge"}},
                        {"ifindex":3,"ifname":"cni0","linkinfo":{"info_kind":"bridge"}},
                        {"ifindex":1,"ifname":"eth0","flags":["UP"]}]"#;
        let links = parse_ip_json(text).unwrap();
        assert_eq!(
            links[0],
            LinkInfo {
                name: "veth1".into(),
                ifindex: 2,
                kind: Some("veth".into()),
                peer_ifindex: Some(7)
            }
        );
        assert_eq!(links[1].kind.as_deref(), Some("bridge"));
        assert_eq!(links[2].kind, None);
        assert!(parse_ip_json(b"not json").is_err());
    }
}
