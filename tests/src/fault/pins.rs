//! The fault node's pinned state, read with aya (fast enough to poll):
//! endpoint records and the keys of the policy outer maps.

use super::FaultNode;
use aya::maps::{HashMap, HashOfMaps, Map, MapData};
use palisade_common::{names, Endpoint, PolicyKey};
use std::collections::BTreeSet;
use std::time::Duration;

/// The pinned record of an interface, if any.
pub fn endpoint(node: &FaultNode, ifindex: u32) -> Option<Endpoint> {
    let data = MapData::from_pin(node.pins().join(names::ENDPOINTS)).ok()?;
    let map: HashMap<MapData, u32, Endpoint> =
        HashMap::try_from(Map::HashMap(data)).expect("ENDPOINTS is a hash map");
    map.get(&ifindex, 0).ok()
}

/// The keys of the outer map `POLICY_IDENTITY` (every outer map of a
/// direction holds the same keys).
pub fn outer_keys(node: &FaultNode) -> BTreeSet<PolicyKey> {
    let path = node.pins().join(names::POLICY_IDENTITY);
    let data = MapData::from_pin(&path).expect("POLICY_IDENTITY pinned");
    let map: HashOfMaps<MapData, PolicyKey, MapData> =
        HashOfMaps::try_from(Map::HashOfMaps(data)).expect("a hash of maps");
    map.keys().map(|k| k.expect("outer key")).collect()
}

/// The outer keys the records make live: what remains once every
/// interrupted update is cleaned up.
pub fn live_keys(node: &FaultNode, ifindexes: &[u32]) -> BTreeSet<PolicyKey> {
    ifindexes
        .iter()
        .filter_map(|i| endpoint(node, *i).map(|e| (*i, e)))
        .flat_map(|(i, e)| palisade::datapath::writer::live_keys(i, &e))
        .collect()
}

/// Waits (up to `limit`) until the record of `ifindex` has an epoch other
/// than `epoch`: a change of its policy was programmed. Whether it did.
pub fn wait_new_epoch(node: &FaultNode, ifindex: u32, epoch: u32, limit: Duration) -> bool {
    crate::kernel::poll_until(limit, || {
        endpoint(node, ifindex).is_some_and(|e| e.epoch != epoch)
    })
}
