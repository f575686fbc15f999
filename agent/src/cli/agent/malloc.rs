//! The agent's one allocator setting: how many glibc malloc arenas its
//! threads share.
//!
//! glibc gives each thread that meets a locked arena one of its own, up to
//! eight per CPU. The agent's watcher, runtime and loop threads allocate
//! objects that other threads free, so each arena keeps its own free but
//! unreturned pages: at 150,000 pods and 10,000 NetworkPolicies the
//! high-water mark was 402 MiB with the default and 376 MiB with one arena,
//! in runs back to back, at the same times to enforce (`docs/bench.md`).
//! Small allocations take each thread's cache first, so one arena costs
//! little contention.

/// Arenas when `MALLOC_ARENA_MAX` does not say.
const ARENAS: i32 = 1;

/// Limits the arenas to [`ARENAS`] unless the environment set
/// `MALLOC_ARENA_MAX` (which glibc has read already, and which then wins).
/// Call before the agent starts any thread.
#[cfg(target_env = "gnu")]
pub fn limit_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    // SAFETY: mallopt only sets an allocator parameter; no thread is
    // allocating concurrently yet.
    if unsafe { libc::mallopt(libc::M_ARENA_MAX, ARENAS) } != 1 {
        tracing::warn!("could not limit malloc arenas: memory use may be higher");
    }
}

/// Other C libraries have no arenas to limit.
#[cfg(not(target_env = "gnu"))]
pub fn limit_arenas() {}
