//! Full node maps for the fault suite. A map is filled with entries of no
//! use (addresses of TEST-NET ranges, interface indexes no device has)
//! until the kernel refuses one more: the agent never wrote them, so it
//! never removes them; emptying them again is the test's way back.
//!
//! `IDENTITIES` holds a million entries: it is pinned smaller, before the
//! first agent starts (an agent keeps a pinned map of the right layout
//! whatever its capacity, with a warning), so that filling it is quick.

use super::FaultNode;
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{HashMap, Map, MapData};
use palisade::datapath::load::MapShape;
use palisade_common::{names, Endpoint, IpKey, ServiceKey, EP_DENY_ALL};

const BPF_MAP_TYPE_LPM_TRIE: u32 = 11;
const BPF_F_NO_PREALLOC: u32 = 1;

/// Pins `IDENTITIES` with room for `entries` before any agent ran.
pub fn pin_small_identities(node: &FaultNode, entries: u32) {
    let dir = node.pins();
    std::fs::create_dir_all(&dir).unwrap();
    let shape = MapShape {
        map_type: BPF_MAP_TYPE_LPM_TRIE,
        key_size: std::mem::size_of::<Key<IpKey>>() as u32,
        value_size: 4,
        max_entries: entries,
        flags: BPF_F_NO_PREALLOC,
    };
    let map = MapData::create(shape.obj(), names::IDENTITIES, None).expect("create IDENTITIES");
    map.pin(dir.join(names::IDENTITIES))
        .expect("pin IDENTITIES");
}

fn open(node: &FaultNode, name: &str) -> MapData {
    MapData::from_pin(node.pins().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// An IPv4 key of 198.18.0.0/15 (benchmarking range: never a pod's).
fn filler_ip(n: u32) -> IpKey {
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&(0xc612_0000u32 + n).to_be_bytes());
    IpKey { family: 4, addr }
}

/// A map filled by the test: what it added, to take out again.
pub struct Filled {
    name: &'static str,
    added: u32,
}

impl Filled {
    pub fn added(&self) -> u32 {
        self.added
    }
}

/// Fills `name` through `insert(n)` until the kernel refuses an entry.
fn fill(name: &'static str, mut insert: impl FnMut(u32) -> bool) -> Filled {
    let mut added = 0;
    // Bounded: a map holds at most a few hundred thousand of these.
    while added < 2_000_000 && insert(added) {
        added += 1;
    }
    Filled { name, added }
}

/// Fills `ENDPOINTS` with records of interface indexes no device has.
pub fn fill_endpoints(node: &FaultNode) -> Filled {
    let mut map: HashMap<MapData, u32, Endpoint> =
        HashMap::try_from(Map::HashMap(open(node, names::ENDPOINTS))).unwrap();
    let record = Endpoint {
        flags: EP_DENY_ALL,
        ..Endpoint::default()
    };
    fill(names::ENDPOINTS, |n| {
        map.insert(1_000_000 + n, record, 0).is_ok()
    })
}

/// Fills `IDENTITIES` with /32s of 198.18.0.0/15.
pub fn fill_identities(node: &FaultNode) -> Filled {
    let mut map: LpmTrie<MapData, IpKey, u32> =
        LpmTrie::try_from(Map::LpmTrie(open(node, names::IDENTITIES))).unwrap();
    fill(names::IDENTITIES, |n| {
        map.insert(&Key::new(40, filler_ip(n)), 9_999, 0).is_ok()
    })
}

/// Fills `SERVICES` with frontends in 198.18.0.0/15.
pub fn fill_services(node: &FaultNode) -> Filled {
    let mut map: HashMap<MapData, ServiceKey, u32> =
        HashMap::try_from(Map::HashMap(open(node, names::SERVICES))).unwrap();
    fill(names::SERVICES, |n| {
        let key = ServiceKey {
            addr: filler_ip(n),
            proto: 6,
            port_be: 80u16.to_be_bytes(),
        };
        map.insert(key, 1, 0).is_ok()
    })
}

/// Takes the filler entries out again.
pub fn empty(node: &FaultNode, filled: Filled) {
    let data = open(node, filled.name);
    match filled.name {
        names::ENDPOINTS => {
            let mut map: HashMap<MapData, u32, Endpoint> =
                HashMap::try_from(Map::HashMap(data)).unwrap();
            for n in 0..filled.added {
                map.remove(&(1_000_000 + n)).unwrap();
            }
        }
        names::IDENTITIES => {
            let mut map: LpmTrie<MapData, IpKey, u32> =
                LpmTrie::try_from(Map::LpmTrie(data)).unwrap();
            for n in 0..filled.added {
                map.remove(&Key::new(40, filler_ip(n))).unwrap();
            }
        }
        names::SERVICES => {
            let mut map: HashMap<MapData, ServiceKey, u32> =
                HashMap::try_from(Map::HashMap(data)).unwrap();
            for n in 0..filled.added {
                let key = ServiceKey {
                    addr: filler_ip(n),
                    proto: 6,
                    port_be: 80u16.to_be_bytes(),
                };
                map.remove(&key).unwrap();
            }
        }
        other => panic!("no filler for {other}"),
    }
}

/// Whether `IDENTITIES` holds `ip` (an IPv4 /32).
pub fn has_identity(node: &FaultNode, ip: std::net::Ipv4Addr) -> bool {
    let map: LpmTrie<MapData, IpKey, u32> =
        LpmTrie::try_from(Map::LpmTrie(open(node, names::IDENTITIES))).unwrap();
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&ip.octets());
    map.get(&Key::new(40, IpKey { family: 4, addr }), 0).is_ok()
}

/// Whether `SERVICES` holds TCP `ip`:`port`.
pub fn has_service(node: &FaultNode, ip: std::net::Ipv4Addr, port: u16) -> bool {
    let map: HashMap<MapData, ServiceKey, u32> =
        HashMap::try_from(Map::HashMap(open(node, names::SERVICES))).unwrap();
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&ip.octets());
    let key = ServiceKey {
        addr: IpKey { family: 4, addr },
        proto: 6,
        port_be: port.to_be_bytes(),
    };
    map.get(&key, 0).is_ok()
}
