//! Copies of the endpoint records that the classifiers find without a hash
//! lookup (`ENDPOINT_CELLS`, `docs/maps.md`).
//!
//! `ENDPOINTS` stays the record of truth: the writer writes it first and
//! the cell after, and removes the cell first. A classifier takes the
//! record from the cell `ifindex & (ENDPOINT_CELLS_MAX - 1)` when that cell
//! names its interface, else from `ENDPOINTS`; so a cell that is missing,
//! shared with another interface or could not be made costs a hash lookup,
//! never a wrong record. Each cell is a one-entry array written before it
//! is linked and never after: a record is replaced by linking a new array,
//! so a packet never reads half of one record and half of the next.

use super::sys;
use anyhow::{Context, Result};
use aya::maps::{Array, ArrayOfMaps, MapData};
use palisade_common::{Endpoint, EndpointCell, ENDPOINT_CELLS_MAX};
use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd};

/// One cell: a one-entry array holding an [`EndpointCell`].
pub type CellMap = Array<MapData, EndpointCell>;

/// The cell of interface `ifindex`.
pub fn cell_of(ifindex: u32) -> u32 {
    ifindex & (ENDPOINT_CELLS_MAX - 1)
}

/// A new cell holding the record of interface `ifindex`, not yet linked.
pub fn new_cell(ifindex: u32, endpoint: &Endpoint) -> Result<CellMap> {
    let mut cell: CellMap = Array::create(1, 0).context("create an endpoint cell")?;
    let value = EndpointCell {
        ifindex,
        _pad: 0,
        endpoint: *endpoint,
    };
    cell.set(0, value, 0).context("write an endpoint cell")?;
    Ok(cell)
}

/// What the cells hold, by cell: for tests and inspection. One system
/// call per cell, every cell.
pub fn read(outer: &ArrayOfMaps<MapData, CellMap>) -> Result<BTreeMap<u32, EndpointCell>> {
    let mut out = BTreeMap::new();
    for cell in 0..ENDPOINT_CELLS_MAX {
        // An empty cell reads as an error: nothing is linked there.
        let Ok(inner) = outer.get(&cell, 0) else {
            continue;
        };
        let value = inner
            .get(&0, 0)
            .with_context(|| format!("read ENDPOINT_CELLS[{cell}]"))?;
        out.insert(cell, value);
    }
    Ok(out)
}

/// The writer's handle on `ENDPOINT_CELLS`.
pub struct EndpointCells {
    outer: ArrayOfMaps<MapData, CellMap>,
    /// A second handle on the outer map, for deletes (aya's array of maps
    /// has none).
    outer_data: MapData,
    /// Cell -> the interface whose record it holds.
    owners: BTreeMap<u32, u32>,
}

impl EndpointCells {
    pub fn new(outer: ArrayOfMaps<MapData, CellMap>, outer_data: MapData) -> Self {
        EndpointCells {
            outer,
            outer_data,
            owners: BTreeMap::new(),
        }
    }

    /// Makes the cells hold exactly `records` (the contents of
    /// `ENDPOINTS`), whatever an earlier agent left in them: one that
    /// stopped between writing a record and its cell left a cell older
    /// than the record. Every cell is emptied first (its interfaces read
    /// `ENDPOINTS` meanwhile), then filled again.
    pub fn sync(&mut self, records: &BTreeMap<u32, Endpoint>) -> Result<()> {
        self.owners.clear();
        for cell in 0..ENDPOINT_CELLS_MAX {
            self.unlink(cell)?;
        }
        for (ifindex, endpoint) in records {
            self.set(*ifindex, endpoint)?;
        }
        Ok(())
    }

    /// Puts the record of `ifindex`, already written to `ENDPOINTS`, in its
    /// cell, unless another live interface holds the cell. A cell that
    /// cannot be made is emptied instead: its interface then reads
    /// `ENDPOINTS`. Fails only if the cell cannot be emptied, when it would
    /// still serve an older record.
    pub fn set(&mut self, ifindex: u32, endpoint: &Endpoint) -> Result<()> {
        let cell = cell_of(ifindex);
        if self.owners.get(&cell).is_some_and(|&o| o != ifindex) {
            return Ok(());
        }
        let linked = new_cell(ifindex, endpoint).and_then(|m| {
            self.outer
                .set(cell, &m, 0)
                .with_context(|| format!("link ENDPOINT_CELLS[{cell}]"))
        });
        match linked {
            Ok(()) => {
                self.owners.insert(cell, ifindex);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(ifindex, error = %format!("{e:#}"), "no endpoint cell for a pod; its packets read ENDPOINTS");
                self.owners.remove(&cell);
                self.unlink(cell)
            }
        }
    }

    /// Empties the cell of `ifindex` if it holds its record; called before
    /// the record leaves `ENDPOINTS`.
    pub fn remove(&mut self, ifindex: u32) -> Result<()> {
        let cell = cell_of(ifindex);
        if self.owners.get(&cell) != Some(&ifindex) {
            return Ok(());
        }
        self.owners.remove(&cell);
        self.unlink(cell)
    }

    fn unlink(&self, cell: u32) -> Result<()> {
        sys::delete_index(self.outer_data.fd().as_fd().as_raw_fd(), cell)
            .with_context(|| format!("empty ENDPOINT_CELLS[{cell}]"))
    }
}
