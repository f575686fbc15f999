//! The commands: ADD, DEL, CHECK, VERSION, GC, STATUS.

use std::time::SystemTime;

use crate::config::{self, LogLevel, NetConf, LATEST_VERSION, SUPPORTED_VERSIONS};
use crate::env::{Attachment, Command, Env};
use crate::error::{code, CniError};
use crate::holder::Holder;
use crate::hostif::{find_host_interface, Links};
use crate::json::Json;
use crate::links::IpLinks;
use crate::record::{Record, RecordStore, RECORD_VERSION};
use crate::result::PrevResult;

/// What the process prints and returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: Vec<u8>,
    /// Log lines for the runtime's log.
    pub stderr: Vec<u8>,
    pub exit_code: i32,
}

impl Outcome {
    /// The parsed stdout, for tests and callers that inspect the result.
    pub fn stdout_json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.stdout).ok()
    }
}

/// Runs one invocation against the kernel's links.
pub fn run(env: &Env, stdin: &[u8], holder: &dyn Holder) -> Outcome {
    run_with(env, stdin, holder, &IpLinks::host())
}

/// Runs one invocation with the given link lookups.
pub fn run_with(env: &Env, stdin: &[u8], holder: &dyn Holder, links: &dyn Links) -> Outcome {
    let mut log = Log {
        level: LogLevel::Warn,
        lines: Vec::new(),
    };
    let result = dispatch(env, stdin, holder, links, &mut log);
    let (stdout, exit_code) = match result {
        Ok(out) => (out, 0),
        Err((err, version)) => {
            log.write(LogLevel::Error, &err.to_string());
            (err.to_json(&version), 1)
        }
    };
    Outcome {
        stdout,
        stderr: log.lines,
        exit_code,
    }
}

type Failure = (CniError, String);

fn dispatch(
    env: &Env,
    stdin: &[u8],
    holder: &dyn Holder,
    links: &dyn Links,
    log: &mut Log,
) -> Result<Vec<u8>, Failure> {
    let hint = config::version_hint(stdin);
    let command = Command::from_env(env).map_err(|e| (e, hint.clone()))?;
    if command == Command::Version {
        return version(stdin).map_err(|e| (e, hint));
    }
    let conf = NetConf::parse(stdin).map_err(|e| (e, hint))?;
    log.level = conf.log_level;
    let version = conf.cni_version.clone();
    let ctx = Ctx {
        conf: &conf,
        store: RecordStore::new(&conf.state_dir),
        holder,
        links,
    };
    let out = match command {
        Command::Add => ctx.add(env, log),
        Command::Del => ctx.del(env, log),
        Command::Check => ctx.check(env, log),
        Command::Gc => ctx.gc(log),
        Command::Status => ctx.status(),
        Command::Version => unreachable!("answered above"),
    };
    out.map_err(|e| (e, version))
}

/// VERSION: echoes the input's `cniVersion` (any, as the spec asks).
fn version(stdin: &[u8]) -> Result<Vec<u8>, CniError> {
    let asked = if stdin.iter().all(u8::is_ascii_whitespace) {
        LATEST_VERSION.to_string()
    } else {
        let json = Json::parse(stdin).map_err(|e| {
            CniError::new(
                code::DECODING_FAILURE,
                "failed to decode version request",
                e.to_string(),
            )
        })?;
        json.get("cniVersion")
            .and_then(Json::as_str)
            .filter(|v| !v.is_empty())
            .unwrap_or(LATEST_VERSION)
            .to_string()
    };
    Ok(serde_json::to_vec(&serde_json::json!({
        "cniVersion": asked,
        "supportedVersions": SUPPORTED_VERSIONS,
    }))
    .expect("serializing cannot fail"))
}

struct Ctx<'a> {
    conf: &'a NetConf,
    store: RecordStore,
    holder: &'a dyn Holder,
    links: &'a dyn Links,
}

impl Ctx<'_> {
    fn prev_result(&self) -> Result<(&Json, PrevResult), CniError> {
        let json = self.conf.prev_result.as_ref().ok_or_else(|| {
            config::invalid(
                &self.conf.what(),
                "prevResult: missing; palisade-cni only runs chained, after the plugin that creates the pod interface",
            )
        })?;
        let prev =
            PrevResult::from_json(json).map_err(|why| config::invalid(&self.conf.what(), &why))?;
        Ok((json, prev))
    }

    fn add(&self, env: &Env, log: &mut Log) -> Result<Vec<u8>, CniError> {
        let att = Attachment::from_env(env, true)?;
        let (json, prev) = self.prev_result()?;
        let netns = att.netns.clone().unwrap_or_default();
        let host = find_host_interface(&prev, &netns, &att.ifname, self.links).map_err(|e| {
            CniError::from_anyhow(
                code::HOST_INTERFACE,
                "cannot find the pod's host interface",
                &e.context(format!(
                    "{}, container {}",
                    self.conf.what(),
                    att.container_id
                )),
            )
        })?;
        let container = prev.container_interface(Some(&netns), &att.ifname);
        let rec = Record {
            version: RECORD_VERSION,
            network: self.conf.name.clone(),
            container_id: att.container_id.clone(),
            ifname: att.ifname.clone(),
            netns,
            pod_namespace: att.pod.namespace.clone(),
            pod_name: att.pod.name.clone(),
            pod_uid: att.pod.uid.clone(),
            host_interface: host.name.clone(),
            host_ifindex: host.ifindex,
            ips: prev.pod_ips(container),
            created: crate::time::rfc3339(SystemTime::now()),
        };

        // Record first: whoever sees the interface held finds its record.
        self.store.write(&rec).map_err(|e| {
            CniError::from_anyhow(code::RECORD, "cannot write the attachment record", &e)
        })?;
        if let Err(e) = self.holder.hold(&rec) {
            // Fail closed: the runtime tears the pod down, the record goes.
            if let Err(rm) = self.store.remove(&rec.container_id, &rec.ifname) {
                log.write(LogLevel::Error, &format!("{rm:#}"));
            }
            return Err(CniError::from_anyhow(
                code::HOLD,
                "cannot hold the pod's interface",
                &e.context(format!(
                    "holding {} for container {}",
                    host.name, rec.container_id
                )),
            ));
        }
        log.write(
            LogLevel::Info,
            &format!(
                "ADD {}/{}: holding {} (ifindex {})",
                rec.container_id, rec.ifname, host.name, host.ifindex
            ),
        );

        let mut out = json.clone();
        out.set("cniVersion", Json::str(&self.conf.cni_version), false);
        Ok(serde_json::to_vec(&out).expect("serializing cannot fail"))
    }

    fn del(&self, env: &Env, log: &mut Log) -> Result<Vec<u8>, CniError> {
        let att = Attachment::from_env(env, false)?;
        let rec = match self.store.read(&att.container_id, &att.ifname) {
            Ok(Some(rec)) => rec,
            Ok(None) => {
                log.write(
                    LogLevel::Debug,
                    &format!("DEL {}/{}: nothing recorded", att.container_id, att.ifname),
                );
                return Ok(Vec::new());
            }
            Err(e) => {
                // A record that cannot be read cannot be released; keeping
                // it would fail every DEL for ever. The agent reconciles
                // from the kernel, so drop it and say so.
                log.write(
                    LogLevel::Warn,
                    &format!("DEL: dropping unreadable record: {e:#}"),
                );
                self.remove(&att)?;
                return Ok(Vec::new());
            }
        };
        self.holder.release(&rec).map_err(|e| {
            CniError::from_anyhow(
                code::RELEASE,
                "cannot release the pod's interface",
                &e.context(format!(
                    "releasing {} for container {}",
                    rec.host_interface, rec.container_id
                )),
            )
        })?;
        self.remove(&att)?;
        log.write(
            LogLevel::Info,
            &format!(
                "DEL {}/{}: released {}",
                rec.container_id, rec.ifname, rec.host_interface
            ),
        );
        Ok(Vec::new())
    }

    fn remove(&self, att: &Attachment) -> Result<bool, CniError> {
        self.store
            .remove(&att.container_id, &att.ifname)
            .map_err(|e| {
                CniError::from_anyhow(code::RECORD, "cannot remove the attachment record", &e)
            })
    }

    fn check(&self, env: &Env, _log: &mut Log) -> Result<Vec<u8>, CniError> {
        let att = Attachment::from_env(env, true)?;
        let (_, prev) = self.prev_result()?;
        let failed = |detail: String| CniError::new(code::CHECK, "attachment check failed", detail);
        let rec = self
            .store
            .read(&att.container_id, &att.ifname)
            .map_err(|e| {
                CniError::from_anyhow(code::RECORD, "cannot read the attachment record", &e)
            })?
            .ok_or_else(|| {
                failed(format!(
                    "no record of container {} interface {} in {}",
                    att.container_id,
                    att.ifname,
                    self.store.dir().display()
                ))
            })?;

        let netns = att.netns.clone().unwrap_or_default();
        let what = format!(
            "record of container {} interface {}",
            rec.container_id, rec.ifname
        );
        if rec.netns != netns {
            return Err(failed(format!(
                "{what}: netns is {:?}, CNI_NETNS is {netns:?}",
                rec.netns
            )));
        }
        let mut want = prev.pod_ips(prev.container_interface(Some(&netns), &att.ifname));
        let mut have = rec.ips.clone();
        want.sort();
        have.sort();
        if want != have {
            return Err(failed(format!(
                "{what}: ips are {have:?}, prevResult says {want:?}"
            )));
        }
        let host_listed: Vec<&str> = prev
            .interfaces
            .iter()
            .filter(|i| i.on_host())
            .map(|i| i.name.as_str())
            .collect();
        // A bridge result lists the bridge and the veth; the recorded veth
        // must be among them. Results without host interfaces say nothing.
        if !host_listed.is_empty() && !host_listed.contains(&rec.host_interface.as_str()) {
            return Err(failed(format!(
                "{what}: host interface {} is not among prevResult's host interfaces {host_listed:?}",
                rec.host_interface
            )));
        }
        self.holder.check(&rec).map_err(|e| {
            CniError::from_anyhow(
                code::CHECK,
                "attachment check failed",
                &e.context(format!("{what}: {}", rec.host_interface)),
            )
        })?;
        Ok(Vec::new())
    }

    /// GC: releases and removes this network's records whose attachment is
    /// not in `cni.dev/valid-attachments`, carrying on past errors.
    fn gc(&self, log: &mut Log) -> Result<Vec<u8>, CniError> {
        let valid = self.conf.valid_attachments.as_ref().ok_or_else(|| {
            // Without the list every record would look stale.
            config::invalid(
                &self.conf.what(),
                "cni.dev/valid-attachments: missing (required on GC)",
            )
        })?;
        let listing = self
            .store
            .list()
            .map_err(|e| CniError::from_anyhow(code::GC, "garbage collection failed", &e))?;
        for (path, why) in &listing.unreadable {
            log.write(
                LogLevel::Warn,
                &format!("GC: skipping {}: {why}", path.display()),
            );
        }
        let mut errors = Vec::new();
        for rec in listing
            .records
            .iter()
            .filter(|r| r.network == self.conf.name)
        {
            let live = valid
                .iter()
                .any(|v| v.container_id == rec.container_id && v.ifname == rec.ifname);
            if live {
                continue;
            }
            let done = self
                .holder
                .release(rec)
                .and_then(|()| self.store.remove(&rec.container_id, &rec.ifname).map(drop));
            match done {
                Ok(()) => log.write(
                    LogLevel::Info,
                    &format!("GC: removed stale {}/{}", rec.container_id, rec.ifname),
                ),
                Err(e) => errors.push(format!("{}/{}: {e:#}", rec.container_id, rec.ifname)),
            }
        }
        if errors.is_empty() {
            Ok(Vec::new())
        } else {
            Err(CniError::new(
                code::GC,
                "garbage collection failed",
                errors.join("; "),
            ))
        }
    }

    /// STATUS: ready when the state directory can be used and the holder
    /// says so.
    fn status(&self) -> Result<Vec<u8>, CniError> {
        self.store
            .ensure_dir()
            .and_then(|()| self.holder.status())
            .map_err(|e| CniError::from_anyhow(code::NOT_AVAILABLE, "plugin not available", &e))?;
        Ok(Vec::new())
    }
}

struct Log {
    level: LogLevel,
    lines: Vec<u8>,
}

impl Log {
    fn write(&mut self, level: LogLevel, line: &str) {
        if level <= self.level {
            self.lines
                .extend_from_slice(format!("palisade-cni: {line}\n").as_bytes());
        }
    }
}
