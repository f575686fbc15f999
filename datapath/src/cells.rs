//! Copies of the endpoint records that the classifiers' fast path finds
//! without a hash lookup (`ENDPOINT_CELLS`, `docs/maps.md`).
//!
//! `ENDPOINTS` stays the record of truth (the general path reads it): the
//! writer writes it first and the cell after, and removes the cell first.
//! The fast path takes the record from the cell `ifindex & (ENDPOINT_CELLS_MAX - 1)` when that cell
//! names its interface, else from `ENDPOINTS`; so a cell that is missing,
//! shared with another interface or could not be made costs a hash lookup,
//! never a wrong record. Each cell is a one-entry array written before it
//! is linked and never after: a record is replaced by linking a new array,
//! so a packet never reads half of one record and half of the next.
//!
//! Linking or unlinking an inner map makes the kernel wait for an RCU
//! grace period (`batch.rs`): the cells of a round are linked together by
//! `flush`, one batch and one wait.

use super::load::MapShape;
use super::maps::create_inner;
use super::{batch, sys};
use anyhow::{Context, Result};
use aya::maps::{Array, Map, MapData};
use palisade_common::{layout::TYPE_ARRAY, Endpoint, EndpointCell, ENDPOINT_CELLS_MAX, EP_PENDING};
use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::thread::JoinHandle;

/// One cell: a one-entry array holding an [`EndpointCell`].
pub type CellMap = Array<MapData, EndpointCell>;

/// The cell of interface `ifindex`.
pub fn cell_of(ifindex: u32) -> u32 {
    ifindex & (ENDPOINT_CELLS_MAX - 1)
}

/// A new cell holding the record of interface `ifindex`, not yet linked,
/// with a descriptor of its own for the batch call.
pub fn new_cell(ifindex: u32, endpoint: &Endpoint) -> Result<(CellMap, OwnedFd)> {
    let shape = MapShape {
        map_type: TYPE_ARRAY,
        key_size: 4,
        value_size: std::mem::size_of::<EndpointCell>() as u32,
        max_entries: 1,
        flags: 0,
    };
    let (mut cell, fd): (CellMap, _) = create_inner(&shape, "palisade_cell", Map::Array)?;
    cell.set(0, value(ifindex, endpoint), 0)
        .context("write an endpoint cell")?;
    Ok((cell, fd))
}

fn value(ifindex: u32, endpoint: &Endpoint) -> EndpointCell {
    EndpointCell {
        ifindex,
        _pad: 0,
        endpoint: *endpoint,
    }
}

/// What the cells hold, by cell: the linked cells' map ids in one batch
/// lookup, then each cell's record.
pub fn read(outer: &MapData) -> Result<BTreeMap<u32, EndpointCell>> {
    let mut out = BTreeMap::new();
    for (cell, id) in batch::inner_ids(outer.fd(), ENDPOINT_CELLS_MAX)? {
        let ctx = || format!("read ENDPOINT_CELLS[{cell}] (map id {id})");
        // A cell unlinked since the batch lookup is gone: skip it.
        let Ok(data) = MapData::from_id(id) else {
            continue;
        };
        let inner: CellMap = Array::try_from(Map::Array(data)).with_context(ctx)?;
        out.insert(cell, inner.get(&0, 0).with_context(ctx)?);
    }
    Ok(out)
}

/// Cells a link left empty, with why.
type Unlinked = Vec<(u32, anyhow::Error)>;

/// The writer's handle on `ENDPOINT_CELLS`.
pub struct EndpointCells {
    /// The outer map, for the batch and delete calls (aya's array of maps
    /// has neither).
    outer_data: MapData,
    /// Cell -> the interface whose record it holds, or will once linked.
    owners: BTreeMap<u32, u32>,
    /// Cell -> the record to link there at `flush`.
    queued: BTreeMap<u32, (u32, Endpoint)>,
    /// Cells known to be linked.
    linked: BTreeSet<u32>,
    /// Cells being linked on a thread of their own (`flush`), and the
    /// thread, which returns those it could not link.
    background: Option<(Vec<u32>, JoinHandle<Unlinked>)>,
}

impl EndpointCells {
    pub fn new(outer_data: MapData) -> Self {
        EndpointCells {
            outer_data,
            owners: BTreeMap::new(),
            queued: BTreeMap::new(),
            linked: BTreeSet::new(),
            background: None,
        }
    }

    /// Makes the cells hold exactly `records` (the contents of
    /// `ENDPOINTS`), whatever an earlier agent left: one that stopped
    /// between writing a record and its cell left a cell older than the
    /// record. Cells that already hold their record stay; the others are
    /// emptied and linked again (`flush`).
    pub fn sync(&mut self, records: &BTreeMap<u32, Endpoint>) -> Result<()> {
        self.settle()?;
        self.owners.clear();
        self.queued.clear();
        self.linked.clear();
        let held = read(&self.outer_data)?;
        for (cell, have) in &held {
            let pending = have.endpoint.flags & EP_PENDING != 0;
            if records.get(&have.ifindex) == Some(&have.endpoint)
                && cell_of(have.ifindex) == *cell
                && !pending
            {
                self.owners.insert(*cell, have.ifindex);
                self.linked.insert(*cell);
            } else {
                // One by one: the kernel has no batch delete for arrays of
                // maps (and only an interrupted agent leaves wrong cells).
                self.unlink(*cell)?;
            }
        }
        for (ifindex, endpoint) in records {
            if self.owners.get(&cell_of(*ifindex)) != Some(ifindex) {
                self.set(*ifindex, endpoint)?;
            }
        }
        self.flush()
    }

    /// Queues the record of `ifindex`, already written to `ENDPOINTS`, for
    /// its cell, unless another live interface holds the cell. Until
    /// `flush`, packets read the cell as it was.
    ///
    /// A pending record (an interface whose pod is not known yet) gets no
    /// cell: its packets all take the general path, which drops them, and
    /// the cell its pod's record gets later is then a new one, linked
    /// without holding up the round (`flush`). Fails only when the cell
    /// of an earlier record cannot be emptied.
    pub fn set(&mut self, ifindex: u32, endpoint: &Endpoint) -> Result<()> {
        let cell = cell_of(ifindex);
        if self.owners.get(&cell).is_some_and(|&o| o != ifindex) {
            return Ok(());
        }
        if endpoint.flags & EP_PENDING != 0 {
            return self.remove(ifindex);
        }
        self.owners.insert(cell, ifindex);
        self.queued.insert(cell, (ifindex, *endpoint));
        Ok(())
    }

    /// Links the queued cells. A cell that replaces a linked one is linked
    /// before this returns (one batch): until then packets read the older
    /// record, whose inner maps the caller may delete only afterwards. A
    /// cell linked where none was is linked on a thread of its own: its
    /// packets read the same record from `ENDPOINTS` meanwhile, and the
    /// round need not wait for one more RCU grace period. A cell that
    /// cannot be made or linked is emptied: its interface then reads
    /// `ENDPOINTS`. Fails only if such a cell cannot be emptied, when it
    /// would still serve an older record.
    pub fn flush(&mut self) -> Result<()> {
        self.settle()?;
        let (mut replacing, mut fresh) = (Vec::new(), Vec::new());
        for (cell, (ifindex, endpoint)) in std::mem::take(&mut self.queued) {
            match new_cell(ifindex, &endpoint) {
                Ok((_, fd)) if self.linked.contains(&cell) => replacing.push((cell, fd)),
                Ok((_, fd)) => fresh.push((cell, fd)),
                Err(e) => self.give_up(cell, e)?,
            }
        }
        for (cell, e) in link(self.outer_data.fd().as_fd(), &replacing) {
            self.give_up(cell, e)?;
        }
        if fresh.is_empty() {
            return Ok(());
        }
        let outer = self.outer_data.fd().as_fd().try_clone_to_owned()?;
        let cells = fresh.iter().map(|(c, _)| *c).collect();
        let thread = std::thread::Builder::new()
            .name("endpoint-cells".into())
            .spawn(move || link(outer.as_fd(), &fresh))?;
        self.background = Some((cells, thread));
        Ok(())
    }

    /// Waits for the cells being linked in the background, if any.
    fn settle(&mut self) -> Result<()> {
        let Some((cells, thread)) = self.background.take() else {
            return Ok(());
        };
        let failed = thread.join().expect("the endpoint cell thread panicked");
        self.linked.extend(cells);
        for (cell, e) in failed {
            self.give_up(cell, e)?;
        }
        Ok(())
    }

    fn give_up(&mut self, cell: u32, e: anyhow::Error) -> Result<()> {
        let ifindex = self.owners.remove(&cell);
        tracing::warn!(?ifindex, error = %format!("{e:#}"), "no endpoint cell for a pod; its packets read ENDPOINTS");
        self.unlink(cell)
    }

    /// Empties the cell of `ifindex` now if it holds (or was to hold) its
    /// record; called before the record leaves `ENDPOINTS`.
    pub fn remove(&mut self, ifindex: u32) -> Result<()> {
        self.settle()?;
        let cell = cell_of(ifindex);
        if self.owners.get(&cell) != Some(&ifindex) {
            return Ok(());
        }
        self.owners.remove(&cell);
        self.queued.remove(&cell);
        self.unlink(cell)
    }

    fn unlink(&mut self, cell: u32) -> Result<()> {
        self.linked.remove(&cell);
        sys::delete_index(self.outer_data.fd().as_fd().as_raw_fd(), cell)
            .with_context(|| format!("empty ENDPOINT_CELLS[{cell}]"))
    }
}

impl Drop for EndpointCells {
    fn drop(&mut self) {
        if let Err(e) = self.settle() {
            tracing::warn!(error = %format!("{e:#}"), "endpoint cells left behind; the next agent empties them");
        }
    }
}

/// Links each cell's inner map into `outer`: one batch (one RCU grace
/// period), or one by one should the kernel refuse the batch. Returns the
/// cells not linked.
fn link(outer: BorrowedFd<'_>, cells: &[(u32, OwnedFd)]) -> Unlinked {
    let keys: Vec<u32> = cells.iter().map(|(c, _)| *c).collect();
    let fds: Vec<BorrowedFd<'_>> = cells.iter().map(|(_, fd)| fd.as_fd()).collect();
    if batch::update_inner(&outer, &keys, &fds).is_ok() {
        return Vec::new();
    }
    keys.iter()
        .zip(&fds)
        .filter_map(|(cell, fd)| {
            batch::update_inner(&outer, &[*cell], &[*fd])
                .err()
                .map(|e| (*cell, e.context(format!("link ENDPOINT_CELLS[{cell}]"))))
        })
        .collect()
}
