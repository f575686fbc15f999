//! A memory cgroup with a limit, for running the agent inside the limit
//! its DaemonSet sets (`deploy/README.md`, "Memory"): cgroup v2 where the
//! unified hierarchy has the memory controller, else the v1 memory
//! hierarchy. The cgroup is removed on drop, once its processes are gone.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;

pub struct MemCgroup {
    dir: PathBuf,
    v2: bool,
    /// The file a `wrap` script waits for.
    go: Option<PathBuf>,
}

/// What the kernel counted for the cgroup.
#[derive(Debug)]
pub struct MemUse {
    pub peak_mib: u64,
    /// Times the limit was hit (v1 `failcnt`, v2 `max` events).
    pub limit_hits: u64,
    pub oom_kills: u64,
}

impl MemCgroup {
    /// A new cgroup named `name` limited to `mib` MiB (memory, kernel
    /// memory included: BPF maps are charged to their creator's cgroup).
    pub fn new(name: &str, mib: u64) -> Result<MemCgroup> {
        let unified = PathBuf::from("/sys/fs/cgroup");
        let v2 = std::fs::read_to_string(unified.join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|w| w == "memory"));
        let dir = if v2 {
            unified.join(name)
        } else {
            unified.join("memory").join(name)
        };
        std::fs::create_dir(&dir).with_context(|| format!("create cgroup {}", dir.display()))?;
        let cg = MemCgroup { dir, v2, go: None };
        let bytes = (mib << 20).to_string();
        match v2 {
            true => cg.write("memory.max", &bytes)?,
            false => cg.write("memory.limit_in_bytes", &bytes)?,
        }
        Ok(cg)
    }

    /// A script in `dir` that waits for `start` and then runs `bin` with
    /// its arguments. The script's process is moved into the cgroup from
    /// outside (`start`): a program run in a network namespace by `ip
    /// netns exec` sees a sysfs of its own, without the cgroup mounts. So
    /// everything the program allocates from its first instruction on, its
    /// maps included, is charged to the cgroup.
    pub fn wrap(&mut self, bin: &std::path::Path, dir: &std::path::Path) -> Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let script = dir.join("in-memcg.sh");
        let go = dir.join("in-memcg.go");
        let text = format!(
            "#!/bin/sh\nwhile [ ! -e '{}' ]; do sleep 0.01; done\nexec '{}' \"$@\"\n",
            go.display(),
            bin.display()
        );
        std::fs::write(&script, text)?;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
        self.go = Some(go);
        Ok(script)
    }

    /// Moves process `pid` (a `wrap` script waiting) into the cgroup, then
    /// lets it run the program.
    pub fn start(&self, pid: u32) -> Result<()> {
        self.write("cgroup.procs", &pid.to_string())?;
        let go = self.go.as_ref().context("no wrap script")?;
        std::fs::write(go, "")?;
        Ok(())
    }

    pub fn usage(&self) -> Result<MemUse> {
        let read = |f: &str| -> Result<String> {
            std::fs::read_to_string(self.dir.join(f)).with_context(|| format!("read {f}"))
        };
        let field = |text: &str, key: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
                .unwrap_or(0)
        };
        let num = |f: &str| -> Result<u64> { Ok(read(f)?.trim().parse()?) };
        Ok(if self.v2 {
            let events = read("memory.events")?;
            MemUse {
                peak_mib: num("memory.peak").unwrap_or(0) >> 20,
                limit_hits: field(&events, "max "),
                oom_kills: field(&events, "oom_kill "),
            }
        } else {
            MemUse {
                peak_mib: num("memory.max_usage_in_bytes")? >> 20,
                limit_hits: num("memory.failcnt")?,
                oom_kills: field(&read("memory.oom_control")?, "oom_kill "),
            }
        })
    }

    fn write(&self, file: &str, value: &str) -> Result<()> {
        let path = self.dir.join(file);
        std::fs::write(&path, value).with_context(|| format!("write {value} to {}", path.display()))
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        // A process left in it (an early return before the lab's teardown)
        // would keep it from going.
        let procs = std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // SAFETY: a plain signal to a process of this cgroup.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        // Killed processes take a moment to be reaped.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        eprintln!("cgroup {} left behind", self.dir.display());
    }
}

/// Fails unless `pid` is in a cgroup named `name`.
pub fn check_in(pid: u32, name: &str) -> Result<()> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    if !text.lines().any(|l| l.ends_with(&format!("/{name}"))) {
        bail!("process {pid} is not in cgroup {name}: {text}");
    }
    Ok(())
}
