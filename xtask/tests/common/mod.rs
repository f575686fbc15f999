//! Running the xtask binary from tests: bounded, output captured, with
//! scratch directories removed on drop. The lab tests need root and the
//! `palisade` and `palisade-cni` binaries (`cargo xtask build`, or
//! `PALISADE_BIN`).

#![allow(dead_code)] // each test file uses part of it

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Labs compete for the CPU with their own probes' timeouts: one at a time.
pub static LAB: Mutex<()> = Mutex::new(());

pub fn lab_lock() -> std::sync::MutexGuard<'static, ()> {
    LAB.lock().unwrap_or_else(|e| e.into_inner())
}

/// A directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("xtask-it-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `xtask args...` with the built agent, killing it after `limit`.
pub fn xtask(args: &[&str], limit: Duration) -> Run {
    let agent = palisade_lab::palisade_bin().expect("the palisade binary");
    palisade_lab::palisade_cni_bin().expect("the palisade-cni binary");
    // One output directory per call: tests of a file run concurrently.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let k = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out = Scratch::new(&format!("out-{k}"));
    let (o, e) = (out.path().join("stdout"), out.path().join("stderr"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .env(palisade_lab::BIN_ENV, agent)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&o).unwrap())
        .stderr(std::fs::File::create(&e).unwrap())
        .spawn()
        .expect("starting xtask");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() >= deadline {
            // SIGTERM first: the lab's handler tears down what it made.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            std::thread::sleep(Duration::from_secs(3));
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let run = Run {
        ok: status.is_some_and(|s| s.success()),
        stdout: std::fs::read_to_string(&o).unwrap_or_default(),
        stderr: std::fs::read_to_string(&e).unwrap_or_default(),
    };
    assert!(
        status.is_some(),
        "xtask {args:?} did not finish within {limit:?}; stderr:\n{}",
        run.stderr
    );
    run
}

/// A pod manifest: namespace `x`, label `role`, one address, serving 80/TCP.
pub fn pod(name: &str, role: &str, node: Option<&str>, ip: &str) -> String {
    let node = node
        .map(|n| format!("  nodeName: {n}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: x\n  labels: {{role: {role}}}\n\
         spec:\n{node}  containers:\n  - name: c\n    ports:\n    - {{name: http, containerPort: 80}}\n\
         status:\n  phase: Running\n  podIPs:\n  - ip: {ip}\n"
    )
}

pub const NAMESPACE: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n";
