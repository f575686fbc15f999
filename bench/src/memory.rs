//! Kernel memory of each engine's policy state at R rules.
//!
//! - Palisade: the `memlock` figure the kernel gives for each map (what
//!   `bpftool map show` prints as `bytes_memlock`: on this kernel the
//!   actual usage of maps without preallocation, the full capacity of
//!   preallocated ones). The policy state is the node-wide policy maps
//!   (endpoints, identity trie, the four outer maps) plus every inner map
//!   they hold (per pod and direction: identities, CIDRs, ports, spill):
//!   that is what grows with R. The other maps (conntrack, fragments,
//!   events, counters, scratch) have a fixed, preallocated size whatever
//!   the rules, like the kernel's own conntrack that the netfilter engines
//!   use and nobody counts; they are reported apart.
//! - iptables: the ipsets' "Size in memory" of `ipset list -t`. The memory
//!   of the iptables rules themselves is not reported by any interface.
//! - nftables: the kernel reports no memory figure for nftables sets or
//!   rules (neither `nft` nor netlink expose one), so there is none.

use anyhow::{Context, Result};
use aya::maps::{HashOfMaps, Map, MapData};
use palisade_common::{names, PolicyKey};
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

/// The maps of the policy state (the rest is fixed-size).
const POLICY_MAPS: [&str; 6] = [
    names::ENDPOINTS,
    names::IDENTITIES,
    names::POLICY_IDENTITY,
    names::POLICY_CIDR,
    names::POLICY_PORT,
    names::POLICY_SPILL,
];
const OUTER_MAPS: [&str; 4] = [
    names::POLICY_IDENTITY,
    names::POLICY_CIDR,
    names::POLICY_PORT,
    names::POLICY_SPILL,
];

/// Palisade's kernel memory on one node.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Palisade {
    /// Node-wide policy maps (endpoints, identities, outer maps).
    pub node_policy_bytes: u64,
    /// Every inner map of every local pod.
    pub pod_maps_bytes: u64,
    pub pod_maps: u64,
    /// Conntrack, events, counters and the other fixed-size maps.
    pub fixed_bytes: u64,
}

impl Palisade {
    /// What grows with the policy.
    pub fn policy_bytes(&self) -> u64 {
        self.node_policy_bytes + self.pod_maps_bytes
    }
}

/// The `memlock:` line of a `/proc/<pid>/fdinfo/<fd>` text.
pub fn fdinfo_memlock(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
}

fn memlock(map: &MapData) -> Result<u64> {
    let fd = map.fd().as_fd().as_raw_fd();
    let path = format!("/proc/self/fdinfo/{fd}");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    fdinfo_memlock(&text).with_context(|| format!("no memlock line in {path}"))
}

/// Reads the maps pinned in `pins` (the agent's node directory).
pub fn palisade(pins: &Path) -> Result<Palisade> {
    let mut m = Palisade::default();
    let entries =
        std::fs::read_dir(pins).with_context(|| format!("reading the pins {}", pins.display()))?;
    for entry in entries {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            continue; // the link pins' directory
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(map) = MapData::from_pin(entry.path()) else {
            continue; // the agent's lock file is no map
        };
        let bytes = memlock(&map).with_context(|| format!("map {name}"))?;
        if POLICY_MAPS.contains(&name.as_str()) {
            m.node_policy_bytes += bytes;
        } else {
            m.fixed_bytes += bytes;
        }
    }
    for name in OUTER_MAPS {
        let path = pins.join(name);
        let outer = MapData::from_pin(&path)
            .with_context(|| format!("opening the pinned map {}", path.display()))?;
        let outer: HashOfMaps<MapData, PolicyKey, MapData> =
            HashOfMaps::try_from(Map::HashOfMaps(outer))
                .with_context(|| format!("{name} is not a hash of maps keyed by PolicyKey"))?;
        for key in outer.keys() {
            let key = key.with_context(|| format!("iterating {name}"))?;
            // An entry removed since the key was read (the agent flipped a
            // generation) has no map to count any more.
            let Ok(inner) = outer.get(&key, 0) else {
                continue;
            };
            m.pod_maps_bytes += memlock(&inner).with_context(|| format!("inner map of {name}"))?;
            m.pod_maps += 1;
        }
    }
    Ok(m)
}

/// One set of `ipset list -t`: its name and "Size in memory".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpsetSize {
    pub name: String,
    pub bytes: u64,
}

/// Parses `ipset list -t` (headers only, one block per set).
pub fn parse_ipset_list(text: &str) -> Result<Vec<IpsetSize>> {
    let mut out = Vec::new();
    let mut name: Option<&str> = None;
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("Name:") {
            name = Some(n.trim());
        } else if let Some(v) = line.strip_prefix("Size in memory:") {
            let set = name
                .take()
                .with_context(|| format!("ipset list: \"{line}\" outside a set"))?;
            let bytes = v
                .trim()
                .parse()
                .with_context(|| format!("ipset list: set {set}: size {:?}", v.trim()))?;
            out.push(IpsetSize {
                name: set.to_string(),
                bytes,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memlock_from_fdinfo() {
        let text = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t2071\nmap_type:\t11\n\
                    key_size:\t20\nvalue_size:\t16\nmax_entries:\t4096\nmap_flags:\t0x1\n\
                    map_extra:\t0x0\nmemlock:\t9568\nmap_id:\t412\nfrozen:\t0\n";
        assert_eq!(fdinfo_memlock(text), Some(9568));
        assert_eq!(fdinfo_memlock("pos:\t0\n"), None);
    }

    #[test]
    fn ipset_sizes() {
        let text = "Name: pal-0\nType: hash:ip\nRevision: 6\n\
                    Header: family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x5c1d0a4e\n\
                    Size in memory: 1304\nReferences: 1\nNumber of entries: 12\n\
                    Name: pal-1\nType: hash:net\nRevision: 7\n\
                    Header: family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x11223344\n\
                    Size in memory: 792\nReferences: 2\nNumber of entries: 2\n";
        let sets = parse_ipset_list(text).unwrap();
        assert_eq!(
            sets,
            vec![
                IpsetSize {
                    name: "pal-0".into(),
                    bytes: 1304
                },
                IpsetSize {
                    name: "pal-1".into(),
                    bytes: 792
                },
            ]
        );
        assert!(parse_ipset_list("").unwrap().is_empty());
        let err = parse_ipset_list("Name: x\nSize in memory: lots\n").unwrap_err();
        assert!(format!("{err:#}").contains("set x"));
    }
}
