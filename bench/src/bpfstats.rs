//! The kernel's own run statistics of the attached programs (`run_cnt`,
//! `run_time_ns` of `bpf_prog_info`) over a measurement.
//!
//! The kernel keeps them only while statistics are enabled. They are
//! enabled with BPF_ENABLE_STATS, which is the switch behind the
//! `kernel.bpf_stats_enabled` sysctl but held by a file descriptor: the
//! kernel turns it off again when the descriptor is closed, also when this
//! process dies of a signal, so the machine is never left paying for
//! statistics. The sysctl itself is never written.
//!
//! While enabled, every run of every program also pays two clock reads
//! (tens of ns): the `noop` program's figure, measured the same way,
//! carries the same overhead.

use anyhow::{Context, Result};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{loaded_programs, ProgramInfo};
use aya::sys::{enable_stats, Stats};
use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::Path;

/// Statistics are on while this lives.
pub struct Enabled(#[allow(dead_code)] OwnedFd);

pub fn enable() -> Result<Enabled> {
    let fd = enable_stats(Stats::RunTime).context("BPF_ENABLE_STATS (run time statistics)")?;
    Ok(Enabled(fd))
}

/// Cumulative counters of one program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub runs: u64,
    pub run_ns: u64,
}

impl Counters {
    pub fn of(info: &ProgramInfo) -> Counters {
        Counters {
            runs: info.run_count(),
            run_ns: info.run_time().as_nanos() as u64,
        }
    }

    /// What happened between `self` (before) and `after`.
    pub fn delta(self, after: Counters) -> Counters {
        Counters {
            runs: after.runs.saturating_sub(self.runs),
            run_ns: after.run_ns.saturating_sub(self.run_ns),
        }
    }

    /// Average ns per run; `None` when the program did not run.
    pub fn avg_ns(self) -> Option<f64> {
        (self.runs > 0).then(|| self.run_ns as f64 / self.runs as f64)
    }
}

/// The programs behind the TCX links pinned in `links_dir` (the agent pins
/// `<ifindex>-<program>`): program name to program id. One program serves
/// every interface, so each name has one id.
pub fn pinned_programs(links_dir: &Path) -> Result<BTreeMap<String, u32>> {
    let mut out = BTreeMap::new();
    let entries = std::fs::read_dir(links_dir)
        .with_context(|| format!("reading the link pins in {}", links_dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        let Some(prog) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split_once('-'))
            .map(|(_, p)| p.to_string())
        else {
            continue;
        };
        let link = PinnedLink::from_pin(&path)
            .with_context(|| format!("opening the link pin {}", path.display()))?;
        let id = FdLink::from(link)
            .info()
            .with_context(|| format!("link info of {}", path.display()))?
            .program_id();
        out.insert(prog, id);
    }
    Ok(out)
}

/// Current counters of the programs with these ids (one pass over the
/// programs loaded on the host: aya offers no lookup by id).
pub fn read(ids: &[u32]) -> Result<BTreeMap<u32, Counters>> {
    let mut out = BTreeMap::new();
    for info in loaded_programs() {
        // Programs unloaded while iterating are simply skipped.
        let Ok(info) = info else { continue };
        if ids.contains(&info.id()) {
            out.insert(info.id(), Counters::of(&info));
        }
    }
    for id in ids {
        if !out.contains_key(id) {
            anyhow::bail!("program id {id} is not loaded");
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_and_averages() {
        let before = Counters {
            runs: 1_000,
            run_ns: 50_000,
        };
        let after = Counters {
            runs: 3_000,
            run_ns: 290_000,
        };
        let d = before.delta(after);
        assert_eq!(
            d,
            Counters {
                runs: 2_000,
                run_ns: 240_000
            }
        );
        assert_eq!(d.avg_ns(), Some(120.0));
        assert_eq!(Counters::default().avg_ns(), None);
        // A program reloaded between the reads (counters restart) gives an
        // empty delta, not a wrapped one.
        assert_eq!(after.delta(before), Counters::default());
    }
}
