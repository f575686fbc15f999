//! The hook that holds a pod's host interface pending.

use crate::record::Record;

/// Holds and releases pod interfaces. The real one attaches the
/// fail-closed classifiers; tests use one that records the calls.
pub trait Holder {
    /// Makes `rec.host_interface` drop everything until the agent has
    /// programmed the pod's policy. Called after the record is written.
    /// An error fails ADD, so the runtime tears the pod down.
    fn hold(&self, rec: &Record) -> anyhow::Result<()>;

    /// Undoes [`Holder::hold`]. Must succeed when nothing is held or the
    /// interface is gone (DEL is repeated and runs after pod teardown).
    /// An error fails DEL and keeps the record, so a retry can finish.
    fn release(&self, rec: &Record) -> anyhow::Result<()>;

    /// Confirms the interface is still held or enforced (CHECK).
    fn check(&self, rec: &Record) -> anyhow::Result<()>;

    /// Whether ADD can be served right now (STATUS). Holding does not need
    /// the agent to run, so the default is ready.
    fn status(&self) -> anyhow::Result<()> {
        Ok(())
    }
}
