//! Running iproute2, and any command bounded in time. Every failure
//! carries the command and its stderr.

use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Runs `lines` as one `ip -batch -`, inside `netns` when given. One process
/// for many commands keeps lab setup fast. With `keep_going`, a failing line
/// does not stop the rest (teardown), and the error lists every failure.
pub fn ip_batch(netns: Option<&str>, lines: &[String], keep_going: bool) -> Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut cmd = Command::new("ip");
    if let Some(ns) = netns {
        cmd.args(["-n", ns]);
    }
    if keep_going {
        cmd.arg("-force");
    }
    cmd.args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let where_ = netns.map(|n| format!(" in netns {n}")).unwrap_or_default();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("running `ip -batch`{where_} (is iproute2 installed?)"))?;
    let script = lines.join("\n") + "\n";
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(script.as_bytes())
        .with_context(|| format!("feeding `ip -batch`{where_}"))?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "`ip -batch`{where_} failed ({}): {}\nscript:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            numbered(&lines.join("\n"))
        );
    }
    Ok(())
}

// `ip -batch` reports failures by line number.
fn numbered(script: &str) -> String {
    script
        .lines()
        .enumerate()
        .map(|(i, l)| format!("{:>4}  {l}\n", i + 1))
        .collect()
}

/// How a command run by `run_bounded` ended.
#[derive(Debug)]
pub struct Bounded {
    /// None: still running at the limit, and killed.
    pub status: Option<ExitStatus>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Runs `cmd` with `input` on its stdin, its output collected, killed when
/// it runs past `limit`: a hung tool (a CNI plugin, kubectl) must not hang
/// the lab or a test. Errs only when it cannot be started.
pub fn run_bounded(cmd: &mut Command, input: &[u8], limit: Duration) -> Result<Bounded> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    // A write error only means the command exited early, which its status
    // and output explain.
    let mut pipe = child.stdin.take().expect("piped");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    let out = drain(child.stdout.take().expect("piped"));
    let err = drain(child.stderr.take().expect("piped"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = writer.join();
    Ok(Bounded {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}
