//! A node's pinned endpoint records and their cells (`ENDPOINT_CELLS`),
//! read and planted with aya, for tests that check or upset what the
//! writer keeps.

use aya::maps::{ArrayOfMaps, HashMap, Map, MapData};
use palisade::datapath::cells::{self, cell_of, new_cell, CellMap};
use palisade_common::{names, Endpoint};
use std::collections::BTreeMap;
use std::path::Path;

/// Every record of `ENDPOINTS` in the pin directory `pins`, by interface.
pub fn records(pins: &Path) -> BTreeMap<u32, Endpoint> {
    let data = MapData::from_pin(pins.join(names::ENDPOINTS)).expect("open ENDPOINTS");
    let map: HashMap<MapData, u32, Endpoint> =
        HashMap::try_from(Map::HashMap(data)).expect("typed ENDPOINTS");
    map.iter().map(|e| e.expect("read ENDPOINTS")).collect()
}

/// The records the cells hold, by interface, each checked to sit in the
/// cell of its interface.
pub fn cell_records(pins: &Path) -> BTreeMap<u32, Endpoint> {
    let outer = MapData::from_pin(pins.join(names::ENDPOINT_CELLS)).expect("open cells");
    let read = cells::read(&outer).expect("read cells");
    read.into_iter()
        .map(|(cell, c)| {
            assert_eq!(cell_of(c.ifindex), cell, "{c:?} in cell {cell}");
            (c.ifindex, c.endpoint)
        })
        .collect()
}

/// Links a cell holding `endpoint` as the record of `ifindex`, whatever
/// `ENDPOINTS` says: what an interrupted writer, or a fault, leaves.
pub fn plant_cell(pins: &Path, ifindex: u32, endpoint: &Endpoint) {
    let data = MapData::from_pin(pins.join(names::ENDPOINT_CELLS)).expect("open cells");
    let mut outer: ArrayOfMaps<MapData, CellMap> =
        ArrayOfMaps::try_from(Map::ArrayOfMaps(data)).expect("typed cells");
    let (cell, _) = new_cell(ifindex, endpoint).expect("cell");
    outer.set(cell_of(ifindex), &cell, 0).expect("link cell");
}
