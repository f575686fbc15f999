//! Where the agent's model comes from: manifest files or the Kubernetes
//! API. The agent loop only asks a [`Source`] whether its input changed and
//! for the current [`Model`]; compiling and programming are the same for
//! both.

pub mod api;
pub mod delta;
pub mod input;
pub mod manifests;

use palisade_compiler::Change;
use palisade_policy::Model;
use std::os::fd::RawFd;
use std::time::Instant;

/// An input of the agent loop.
pub trait Source {
    /// Whether the input may have changed since the last [`Source::snapshot`]
    /// and is ready to be read again. Event-driven sources answer true only
    /// once a burst of changes has settled, so a burst costs one round.
    fn changed(&mut self) -> bool;

    /// The current input. `None` while the source has not yet seen the whole
    /// cluster once (the API before its first full list): programming a
    /// partial view would unprogram what is enforced.
    fn snapshot(&mut self) -> Option<Model>;

    /// Brings `model`, what this source's last [`Source::snapshot`] or
    /// `update` gave, to the current input in place, and returns the
    /// changes in the compiler's terms, already under the last-good rule.
    /// `None` when the source cannot patch (files: read them whole with
    /// [`Source::snapshot`]) or is not synced.
    fn update(&mut self, _model: &mut Model) -> Option<Vec<Change>> {
        None
    }

    /// Whether [`Source::snapshot`] can give a model now.
    fn synced(&self) -> bool;

    /// Checked between polls (every few tens of milliseconds), so it must be
    /// cheap: true when [`Source::changed`] would be true now. Sources that
    /// are only polled (files) keep the default.
    fn notify(&mut self) -> bool {
        false
    }

    /// Whether a change is waiting for its burst to settle: the loop then
    /// asks again within a millisecond rather than at its next step.
    fn settling(&self) -> bool {
        false
    }

    /// A descriptor that becomes readable when the input changes, to end
    /// the loop's wait at once (the API watchers signal it).
    fn wake_fd(&self) -> Option<RawFd> {
        None
    }

    /// When the agent first learned of the oldest change the last
    /// [`Source::snapshot`] contains (an event received, an edit noticed);
    /// None when it contains no change (a retry). The agent measures the
    /// time to enforce from it.
    fn learned(&self) -> Option<Instant> {
        None
    }
}
