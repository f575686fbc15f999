//! A read-only view of a node's pinned policy state, for inspection tools:
//! the pins are opened directly (no eBPF object is loaded and the node lock
//! is not taken), so it works beside a running agent. The contents are
//! decoded back into the compiler's types, so the lookup model and the
//! compiler's renderings apply to what the kernel really holds.
//!
//! The maps are read one after the other, not atomically: a read racing a
//! generation flip of the agent may see the old endpoint record with inner
//! maps already deleted, which reads back as a missing direction.

use super::cells::{cell_of, CellMap};
use super::encode::{Lpm, PodMaps};
use super::load::PinLayout;
use super::maps::{dir_keys, read_dir, CidrInner, IdentityInner, PortInner, SpillInner};
use super::writer::live_keys;
use anyhow::{bail, Context, Result};
use aya::maps::{ArrayOfMaps, HashMap, HashOfMaps, LpmTrie, Map, MapData};
use ipnetwork::IpNetwork;
use palisade_common::{
    names, DirPolicy, Endpoint, IpKey, PolicyKey, PortKey, EP_AUDIT_EGRESS, EP_AUDIT_INGRESS,
    EP_DENY_ALL, EP_ISOLATED_EGRESS, EP_ISOLATED_INGRESS, EP_PENDING, FAMILY_V4, FAMILY_V6,
};
use palisade_compiler::{CompiledDirection, CompiledPod, PortPrefix};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

/// The pinned maps of one node, opened for reading.
pub struct PinnedNode {
    endpoints: HashMap<MapData, u32, Endpoint>,
    cells: ArrayOfMaps<MapData, CellMap>,
    identities: LpmTrie<MapData, IpKey, u32>,
    identity: HashOfMaps<MapData, PolicyKey, IdentityInner>,
    cidr: HashOfMaps<MapData, PolicyKey, CidrInner>,
    port: HashOfMaps<MapData, PolicyKey, PortInner>,
    spill: HashOfMaps<MapData, PolicyKey, SpillInner>,
}

/// One interface's live state: its endpoint record as the classifiers'
/// fast path reads it and the inner maps of the generation the record points at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinnedEndpoint {
    pub ifindex: u32,
    pub endpoint: Endpoint,
    pub maps: PodMaps,
    pub source: RecordSource,
}

/// Where the classifiers' fast path finds an interface's record (the
/// general path reads `ENDPOINTS`; `docs/maps.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordSource {
    /// Its cell of `ENDPOINT_CELLS`, which holds what `ENDPOINTS` holds.
    Cell,
    /// `ENDPOINTS`: the cell is empty (a pending interface, a cell being
    /// linked) or holds another interface's record.
    Endpoints,
    /// Its cell, which holds another record than `ENDPOINTS` (a round
    /// between the two writes, or a fault): the cell's is the one read.
    CellDiffers,
}

impl RecordSource {
    pub fn describe(self) -> &'static str {
        match self {
            RecordSource::Cell => "read from its cell",
            RecordSource::Endpoints => "read from ENDPOINTS (no cell of its own)",
            RecordSource::CellDiffers => "read from its cell, which differs from ENDPOINTS",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            RecordSource::Cell => "cell",
            RecordSource::Endpoints => "endpoints",
            RecordSource::CellDiffers => "cell-differs",
        }
    }
}

fn open(layout: &PinLayout, name: &str, wrap: fn(MapData) -> Map) -> Result<Map> {
    let path = layout.map(name);
    if !path.exists() {
        bail!(
            "no pinned map {} (has `palisade agent` programmed this node with this --bpffs-root?)",
            path.display()
        );
    }
    let data =
        MapData::from_pin(&path).with_context(|| format!("open pinned map {}", path.display()))?;
    Ok(wrap(data))
}

impl PinnedNode {
    /// Opens the policy maps pinned under `<bpffs_root>/<node>/`.
    pub fn open(bpffs_root: &Path, node: &str) -> Result<Self> {
        let layout = PinLayout::new(bpffs_root, node)?;
        macro_rules! typed {
            ($name:expr, $wrap:expr) => {
                open(&layout, $name, $wrap)?.try_into().with_context(|| {
                    format!(
                        "pinned map {} does not have the layout of palisade_common",
                        $name
                    )
                })?
            };
        }
        Ok(PinnedNode {
            endpoints: typed!(names::ENDPOINTS, Map::HashMap),
            cells: typed!(names::ENDPOINT_CELLS, Map::ArrayOfMaps),
            identities: typed!(names::IDENTITIES, Map::LpmTrie),
            identity: typed!(names::POLICY_IDENTITY, Map::HashOfMaps),
            cidr: typed!(names::POLICY_CIDR, Map::HashOfMaps),
            port: typed!(names::POLICY_PORT, Map::HashOfMaps),
            spill: typed!(names::POLICY_SPILL, Map::HashOfMaps),
        })
    }

    /// The endpoint record of `ifindex` and its live inner maps; `None`
    /// when the interface has no record.
    pub fn endpoint(&self, ifindex: u32) -> Result<Option<PinnedEndpoint>> {
        let record = match self.endpoints.get(&ifindex, 0) {
            Ok(ep) => Some(ep),
            Err(aya::maps::MapError::KeyNotFound) => None,
            Err(e) => return Err(e).with_context(|| format!("read ENDPOINTS[{ifindex}]")),
        };
        let (endpoint, source) = match (self.cell(ifindex)?, record) {
            (Some(c), Some(r)) if c == r => (c, RecordSource::Cell),
            (Some(c), _) => (c, RecordSource::CellDiffers),
            (None, Some(r)) => (r, RecordSource::Endpoints),
            (None, None) => return Ok(None),
        };
        let live = live_keys(ifindex, &endpoint);
        let [ing, eg] = dir_keys(ifindex, endpoint.generation);
        let read = |k: PolicyKey| -> Result<_> {
            if live.contains(&k) {
                read_dir(&self.identity, &self.cidr, &self.port, &self.spill, k)
            } else {
                Ok(None)
            }
        };
        Ok(Some(PinnedEndpoint {
            ifindex,
            endpoint,
            maps: PodMaps {
                ingress: read(ing)?,
                egress: read(eg)?,
            },
            source,
        }))
    }

    /// The record in the cell of `ifindex`, when the cell names it.
    fn cell(&self, ifindex: u32) -> Result<Option<Endpoint>> {
        let cell = cell_of(ifindex);
        // An empty cell reads as an error: nothing is linked there.
        let Ok(inner) = self.cells.get(&cell, 0) else {
            return Ok(None);
        };
        let value = inner
            .get(&0, 0)
            .with_context(|| format!("read ENDPOINT_CELLS[{cell}]"))?;
        Ok((value.ifindex == ifindex).then_some(value.endpoint))
    }

    /// Every entry of the node's identity trie.
    pub fn identities(&self) -> Result<BTreeMap<Lpm<IpKey>, u32>> {
        let mut out = BTreeMap::new();
        for item in self.identities.iter() {
            let (k, v) = item.context("read IDENTITIES")?;
            out.insert((k.prefix_len(), k.data()), v);
        }
        Ok(out)
    }
}

/// The address of an [`IpKey`] (`None` for an unknown family).
pub fn key_ip(k: &IpKey) -> Option<IpAddr> {
    match k.family {
        FAMILY_V4 => Some(IpAddr::from([k.addr[0], k.addr[1], k.addr[2], k.addr[3]])),
        FAMILY_V6 => Some(IpAddr::from(k.addr)),
        _ => None,
    }
}

/// The CIDR of an address LPM key (prefix length minus the family byte).
pub fn key_cidr(key: Lpm<IpKey>) -> Result<IpNetwork> {
    let (len, k) = key;
    let ip = key_ip(&k).with_context(|| format!("CIDR key with unknown family {}", k.family))?;
    let prefix = len
        .checked_sub(8)
        .and_then(|l| u8::try_from(l).ok())
        .with_context(|| format!("CIDR key with prefix length {len}"))?;
    IpNetwork::new(ip, prefix).with_context(|| format!("CIDR key {ip} with prefix length {len}"))
}

/// The port prefix of a port LPM key.
pub fn key_port(key: Lpm<PortKey>) -> Result<PortPrefix> {
    let (len, k) = key;
    let bits = len
        .checked_sub(8)
        .filter(|l| *l <= 16)
        .with_context(|| format!("port key with prefix length {len}"))?;
    Ok(PortPrefix {
        proto: k.proto,
        port: u16::from_be_bytes(k.port_be),
        len: bits as u8,
    })
}

/// The pod addresses of an endpoint record (unused slots skipped).
pub fn endpoint_ips(ep: &Endpoint) -> Vec<IpAddr> {
    ep.addrs.iter().filter_map(key_ip).collect()
}

fn decode_dir(
    (isolated, audit): (bool, bool),
    policy: &DirPolicy,
    maps: Option<&super::encode::DirMaps>,
) -> Result<CompiledDirection> {
    let mut d = CompiledDirection {
        isolated,
        audit,
        open: policy.open != 0,
        admin: policy.admin,
        deny: policy.deny,
        pass: policy.pass,
        any_peer: policy.any_peer,
        any_port: policy.any_port,
        any_port_class: policy.any_port_class,
        spill_any_peer: policy.spill_any_peer != 0,
        ..CompiledDirection::default()
    };
    if let Some(m) = maps {
        d.identities = m.identities.clone();
        for (k, v) in &m.cidrs {
            d.cidrs.insert(key_cidr(*k)?, *v);
        }
        for (k, v) in &m.ports {
            d.ports.insert(key_port(*k)?, *v);
        }
        d.spill = m.spill.clone();
    }
    Ok(d)
}

/// The pinned state of one interface in the compiler's terms, as pod
/// `namespace/name`. The kernel keeps no rule names: `groups`, `classes`
/// and `spill_groups` stay empty. A pending or deny-all record becomes a
/// pod with an `error`, which the lookup model denies like the classifier.
pub fn decode_pod(namespace: &str, name: &str, pinned: &PinnedEndpoint) -> Result<CompiledPod> {
    let ep = &pinned.endpoint;
    let error = if ep.flags & EP_PENDING != 0 {
        Some("endpoint is pending: its policy was never programmed".to_string())
    } else if ep.flags & EP_DENY_ALL != 0 {
        Some("endpoint is deny-all: its policy maps could not be written".to_string())
    } else {
        None
    };
    let ctx = || format!("decode the pinned maps of ifindex {}", pinned.ifindex);
    Ok(CompiledPod {
        namespace: namespace.to_string(),
        name: name.to_string(),
        ips: endpoint_ips(ep),
        ingress: decode_dir(
            (
                ep.flags & EP_ISOLATED_INGRESS != 0,
                ep.flags & EP_AUDIT_INGRESS != 0,
            ),
            &ep.ingress,
            pinned.maps.ingress.as_ref(),
        )
        .with_context(ctx)?,
        egress: decode_dir(
            (
                ep.flags & EP_ISOLATED_EGRESS != 0,
                ep.flags & EP_AUDIT_EGRESS != 0,
            ),
            &ep.egress,
            pinned.maps.egress.as_ref(),
        )
        .with_context(ctx)?,
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::super::encode::{cidr_key, encode_pod, host_key, port_key};
    use super::*;
    use palisade_common::{RuleBits, PROTO_TCP};

    #[test]
    fn keys_decode_to_what_they_were_encoded_from() {
        for net in [
            "10.1.0.0/16",
            "0.0.0.0/0",
            "fd00::/64",
            "::/0",
            "10.1.2.3/32",
        ] {
            let net: IpNetwork = net.parse().unwrap();
            assert_eq!(key_cidr(cidr_key(net)).unwrap(), net);
        }
        let p = PortPrefix {
            proto: PROTO_TCP,
            port: 8080,
            len: 13,
        };
        assert_eq!(key_port(port_key(p)).unwrap(), p);
        assert!(key_cidr((4, host_key("10.0.0.1".parse().unwrap()).1)).is_err());
    }

    #[test]
    fn an_encoded_pod_decodes_back() {
        let mut ingress = CompiledDirection {
            isolated: true,
            any_port: 1,
            ..CompiledDirection::default()
        };
        let bits = RuleBits {
            bits: 1,
            ..RuleBits::default()
        };
        ingress.identities.insert(300, bits);
        ingress
            .cidrs
            .insert("192.168.0.0/16".parse().unwrap(), bits);
        let pod = CompiledPod {
            namespace: "ns".into(),
            name: "a".into(),
            ips: vec!["10.0.0.1".parse().unwrap()],
            ingress,
            ..CompiledPod::default()
        };
        let (endpoint, maps) = encode_pod(&pod);
        let back = decode_pod(
            "ns",
            "a",
            &PinnedEndpoint {
                ifindex: 7,
                endpoint,
                maps,
                source: RecordSource::Cell,
            },
        )
        .unwrap();
        assert_eq!(back, pod);
    }
}
