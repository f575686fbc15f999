//! Ctrl-C, SIGTERM and SIGHUP tear down the labs of this process before it
//! exits: without this, Drop would never run and the namespaces would stay
//! until the next lab removed them.

use crate::cleanup::teardown;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, Once};

/// Labs of this process that are up, for the signal handler.
static LIVE: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

pub fn register(id: &str) {
    install_signal_handler();
    LIVE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id.to_string());
}

pub fn unregister(id: &str) {
    LIVE.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
}

static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);
static INSTALL: Once = Once::new();

extern "C" fn on_signal(sig: libc::c_int) {
    // Only async-signal-safe work here: hand the signal number to the
    // watcher thread through a pipe.
    let byte = sig as u8;
    let fd = SIGNAL_PIPE.load(Ordering::Relaxed);
    // SAFETY: write(2) is async-signal-safe; `byte` outlives the call.
    unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
}

/// On SIGINT, SIGTERM or SIGHUP: tear down every live lab of this process,
/// then exit with 128 + the signal number (130 for Ctrl-C). Without this,
/// Ctrl-C during a test would leave namespaces behind (Drop does not run
/// when a signal kills the process).
fn install_signal_handler() {
    INSTALL.call_once(|| {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            eprintln!(
                "palisade-lab: no signal pipe ({}); Ctrl-C will leave labs behind until the next run",
                std::io::Error::last_os_error()
            );
            return;
        }
        SIGNAL_PIPE.store(fds[1], Ordering::Relaxed);
        let read_fd = fds[0];
        let spawned = std::thread::Builder::new()
            .name("palisade-lab-signals".into())
            .spawn(move || loop {
                let mut byte = 0u8;
                // SAFETY: reading one byte into a local buffer.
                let n = unsafe { libc::read(read_fd, (&mut byte as *mut u8).cast(), 1) };
                if n != 1 {
                    continue;
                }
                let ids: Vec<String> = LIVE
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .cloned()
                    .collect();
                eprintln!("palisade-lab: signal {byte}: tearing down {} lab(s)", ids.len());
                for id in ids {
                    if let Err(e) = teardown(&id) {
                        eprintln!("palisade-lab: {e:#}");
                    }
                }
                // SAFETY: terminating the process is what the signal asked for.
                unsafe { libc::_exit(128 + i32::from(byte)) };
            });
        if let Err(e) = spawned {
            eprintln!("palisade-lab: no signal thread ({e}); Ctrl-C will leave labs behind until the next run");
            return;
        }
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: installing a handler that only calls write(2).
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_signal as *const () as libc::sighandler_t;
                sa.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(sig, &sa, std::ptr::null_mut());
            }
        }
    });
}
