//! Crash points for the fault tests (`tests/tests/faults*.rs`), in debug
//! builds only: with `PALISADE_TEST_CRASH_AT=POINT` (or `POINT:N`) in the
//! environment, the process kills itself with SIGKILL the first (or Nth)
//! time it reaches `POINT`, as a node killing the agent right there would:
//! no unwinding, no cleanup, only what the kernel holds survives. The
//! points sit between the kernel writes whose order the pins' consistency
//! depends on. Release builds compile the calls to nothing.

/// The environment variable that names a crash point.
pub const ENV: &str = "PALISADE_TEST_CRASH_AT";

/// Between linking a round's new inner maps and the first endpoint flip.
pub const FLIP_LINKED: &str = "flip-linked";
/// After a round's endpoint flips, before the old generations are unlinked.
pub const FLIP_FLIPPED: &str = "flip-flipped";
/// After each link moved from an older layout to this one.
pub const MIGRATE_MOVED: &str = "migrate-moved";
/// Every link moved, the older layout's pins not removed yet.
pub const MIGRATE_LINKS_MOVED: &str = "migrate-links-moved";

/// Dies here if the environment names this point (and this is the Nth
/// time it is reached).
#[cfg(debug_assertions)]
pub fn point(name: &str) {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::OnceLock;
    static WANTED: OnceLock<Option<(String, u32)>> = OnceLock::new();
    static REACHED: AtomicU32 = AtomicU32::new(0);
    let wanted = WANTED.get_or_init(|| {
        let spec = std::env::var(ENV).ok()?;
        match spec.split_once(':') {
            Some((p, n)) => Some((p.to_string(), n.parse().ok()?)),
            None => Some((spec, 1)),
        }
    });
    let Some((point, nth)) = wanted else { return };
    if point != name || REACHED.fetch_add(1, Ordering::SeqCst) + 1 != *nth {
        return;
    }
    tracing::error!("{ENV}: killed at {name}");
    // SAFETY: signalling this very process.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    loop {
        std::thread::park();
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn point(_name: &str) {}
