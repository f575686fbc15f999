//! Everything needed to remove a lab, whoever asks: the lab's `Drop`, a
//! Ctrl-C/SIGTERM handler (`signals`), or the next run finding a crashed run's
//! leftovers.
//!
//! Teardown works from the lab id alone, reading the kernel's state and a
//! small record directory (`/run/palisade-lab/<id>/`), so the three callers
//! share one idempotent code path. The record holds the owner process
//! (pid and start time, so a recycled pid is not mistaken for a live
//! owner), the processes the lab started, and the lab's bpffs mount points.
//! `/run` is a tmpfs, like `/run/netns`: a reboot clears both together.

use crate::names;
use crate::netns::NETNS_RUN_DIR;
use anyhow::{Context, Result};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const RECORD_ROOT: &str = "/run/palisade-lab";
const OWNER_FILE: &str = "owner";
const CHILDREN_FILE: &str = "children";

pub fn record_dir(id: &str) -> PathBuf {
    Path::new(RECORD_ROOT).join(id)
}

/// Creates the record of a new lab owned by this process. Fails when the
/// id is taken (the caller picks another).
///
/// The record appears complete or not at all (written aside, then renamed
/// into place): a concurrent run scanning for leftovers must never see a
/// record without its owner and take a live lab for a dead one.
pub fn create_record(id: &str, label: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(RECORD_ROOT).with_context(|| format!("creating {RECORD_ROOT}"))?;
    let me = std::process::id();
    let staging = Path::new(RECORD_ROOT).join(format!(".new-{id}-{me}"));
    std::fs::create_dir(&staging).with_context(|| format!("creating {}", staging.display()))?;
    let start = process_start_time(me).unwrap_or(0);
    let written = std::fs::write(staging.join(OWNER_FILE), format!("{me} {start}\n{label}\n"))
        .with_context(|| format!("writing {}", staging.join(OWNER_FILE).display()));
    let dir = record_dir(id);
    // rename(2) onto an existing non-empty directory fails: ids stay unique.
    let placed = written.and_then(|()| {
        std::fs::rename(&staging, &dir).with_context(|| format!("creating {}", dir.display()))
    });
    if let Err(e) = placed {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    Ok(dir)
}

/// Notes a process the lab started, so that a teardown from another run
/// can still kill it.
pub fn record_child(id: &str, pid: u32) -> Result<()> {
    let path = record_dir(id).join(CHILDREN_FILE);
    let start = process_start_time(pid).unwrap_or(0);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(f, "{pid} {start}").with_context(|| format!("writing {}", path.display()))
}

/// The start time of a process (clock ticks since boot, field 22 of
/// `/proc/<pid>/stat`), which together with the pid names it uniquely.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields
    // are counted after its closing parenthesis, which is the last one.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

fn is_alive(pid: u32, start: u64) -> bool {
    process_start_time(pid).is_some_and(|s| s == start)
}

fn read_pid_lines(path: &Path) -> Vec<(u32, u64)> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
        })
        .collect()
}

/// Is the process that made lab `id` still running? A lab without a
/// readable owner is an orphan.
fn owner_alive(id: &str) -> bool {
    read_pid_lines(&record_dir(id).join(OWNER_FILE))
        .first()
        .is_some_and(|&(pid, start)| is_alive(pid, start))
}

/// Lab namespaces present on the host, by lab id.
fn lab_netns() -> Vec<(String, String)> {
    let Ok(rd) = std::fs::read_dir(NETNS_RUN_DIR) else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let id = names::lab_id_of_netns(&name)?.to_string();
            Some((id, name))
        })
        .collect()
}

/// Mount points at or below `dir`, deepest first (the order to unmount).
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmounts a path (lazily: a process still holding a file there does not
/// keep the mount visible).
pub fn unmount(path: &Path) -> Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    // SAFETY: `c` is a valid NUL-terminated path.
    let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("unmounting {}", path.display()));
    }
    Ok(())
}

/// Removes every trace of lab `id`: its processes, namespaces (their veths
/// and routes go with them), mounts and record. Keeps going past failures
/// and reports them all at the end; safe to call more than once.
pub fn teardown(id: &str) -> Result<()> {
    let dir = record_dir(id);
    let mut errors = Vec::new();

    for (pid, start) in read_pid_lines(&dir.join(CHILDREN_FILE)) {
        if is_alive(pid, start) {
            // SAFETY: signalling a pid we verified is the process we started.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }

    // Another process may be removing the same (dead) lab at the same
    // time, so a failing step only counts when what it should remove is
    // still there afterwards.
    let netns_of = |id: &str| -> Vec<String> {
        lab_netns()
            .into_iter()
            .filter(|(i, _)| i == id)
            .map(|(_, n)| n)
            .collect()
    };
    let lines: Vec<String> = netns_of(id)
        .iter()
        .map(|n| format!("netns del {n}"))
        .collect();
    let deleted = crate::cmd::ip_batch(None, &lines, true);
    let left = netns_of(id);
    if !left.is_empty() {
        let why = deleted
            .err()
            .map(|e| format!(" ({e:#})"))
            .unwrap_or_default();
        errors.push(format!(
            "namespaces still present: {}{why}",
            left.join(", ")
        ));
    }

    for m in mounts_under(&dir) {
        if let Err(e) = unmount(&m) {
            if mounts_under(&dir).contains(&m) {
                errors.push(format!("{e:#}"));
            }
        }
    }
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            errors.push(format!("removing {}: {e}", dir.display()))
        }
        _ => {}
    }
    if errors.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("tearing down lab {id}: {}", errors.join("; "))
    }
}

/// Tears down labs left by runs that are gone (crashed, killed with
/// SIGKILL). Labs whose owner still runs (a concurrent test) are kept.
/// Returns the ids removed.
pub fn clean_leftovers() -> Result<Vec<String>> {
    let mut ids: BTreeSet<String> = lab_netns().into_iter().map(|(id, _)| id).collect();
    if let Ok(rd) = std::fs::read_dir(RECORD_ROOT) {
        ids.extend(
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| names::is_lab_id(n)),
        );
    }
    let mut removed = Vec::new();
    let mut errors = Vec::new();
    for id in ids {
        if owner_alive(&id) {
            continue;
        }
        match teardown(&id) {
            Ok(()) => removed.push(id),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if !errors.is_empty() {
        anyhow::bail!("{}", errors.join("; "));
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_start_time_is_readable() {
        let me = std::process::id();
        assert!(process_start_time(me).is_some());
        assert!(is_alive(me, process_start_time(me).unwrap()));
        assert!(!is_alive(me, process_start_time(me).unwrap() + 1));
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/run/a\040b"), "/run/a b");
        assert_eq!(unescape_mountinfo(r"/plain"), "/plain");
    }
}
