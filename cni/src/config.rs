//! The network configuration the runtime passes on stdin.

use std::path::PathBuf;

use crate::error::{code, CniError};
use crate::json::Json;

/// The spec versions this plugin speaks.
///
/// 0.3.0 is the floor: it introduced chaining and `prevResult`, without
/// which the plugin cannot know the pod's interface. 0.3.x runtimes pass
/// no `prevResult` to DEL and never call CHECK; neither matters, because
/// DEL works from the plugin's own record. 0.3.1 must stay: flannel,
/// Calico and kindnet still ship their configuration lists with it, and
/// the runtime hands that version to every plugin of the list. Anything
/// before 0.3.0 has no chaining at all and is refused.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The newest supported version, used to answer when the input names none.
pub const LATEST_VERSION: &str = "1.1.0";

/// Where attachment records go unless `stateDir` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/run/palisade/cni";

/// How much the plugin writes to stderr, which runtimes log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}

impl LogLevel {
    pub fn parse(s: &str) -> Option<LogLevel> {
        Some(match s {
            "error" => LogLevel::Error,
            "warn" | "warning" => LogLevel::Warn,
            "info" => LogLevel::Info,
            "debug" => LogLevel::Debug,
            _ => return None,
        })
    }
}

/// One entry of `cni.dev/valid-attachments` (GC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidAttachment {
    pub container_id: String,
    pub ifname: String,
}

/// The request configuration of one invocation.
#[derive(Debug, Clone)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    pub plugin_type: String,
    /// The previous plugin's result, passed through untouched on ADD.
    pub prev_result: Option<Json>,
    pub state_dir: PathBuf,
    pub log_level: LogLevel,
    /// Present on GC only.
    pub valid_attachments: Option<Vec<ValidAttachment>>,
}

/// The `cniVersion` of `stdin` if it can be read, for error results.
pub fn version_hint(stdin: &[u8]) -> String {
    Json::parse(stdin)
        .ok()
        .and_then(|j| {
            j.get("cniVersion")
                .and_then(Json::as_str)
                .map(str::to_string)
        })
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| LATEST_VERSION.to_string())
}

/// Refuses versions outside [`SUPPORTED_VERSIONS`], saying why.
pub fn check_version(what: &str, version: &str) -> Result<(), CniError> {
    if SUPPORTED_VERSIONS.contains(&version) {
        return Ok(());
    }
    let why = if matches!(version, "0.1.0" | "0.2.0") {
        "; versions before 0.3.0 have no plugin chaining and pass no prevResult, so a chained plugin cannot learn the pod's interface"
    } else {
        ""
    };
    Err(CniError::new(
        code::INCOMPATIBLE_VERSION,
        "incompatible CNI version",
        format!(
            "{what}: cniVersion {version:?} is not supported (supported: {}){why}",
            SUPPORTED_VERSIONS.join(", ")
        ),
    ))
}

impl NetConf {
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
        let json = Json::parse(stdin).map_err(|e| {
            CniError::new(
                code::DECODING_FAILURE,
                "failed to decode network config",
                format!("network config on stdin: {e}"),
            )
        })?;
        if !matches!(json, Json::Object(_)) {
            return Err(invalid("network config", "not a JSON object"));
        }

        let name = json.get("name").and_then(Json::as_str).unwrap_or_default();
        let what = if name.is_empty() {
            "network config".to_string()
        } else {
            format!("network config {name:?}")
        };

        let cni_version = required_str(&json, &what, "cniVersion")?;
        check_version(&what, &cni_version)?;
        if name.is_empty() {
            return Err(invalid(&what, "name: missing"));
        }
        let plugin_type = required_str(&json, &what, "type")?;

        let prev_result = match json.get("prevResult") {
            None | Some(Json::Null) => None,
            Some(v @ Json::Object(_)) => Some(v.clone()),
            Some(_) => return Err(invalid(&what, "prevResult: not an object")),
        };

        let state_dir = match json.get("stateDir") {
            None => PathBuf::from(DEFAULT_STATE_DIR),
            Some(Json::String(s)) if s.starts_with('/') => PathBuf::from(s),
            Some(other) => {
                return Err(invalid(
                    &what,
                    &format!("stateDir: {} is not an absolute path", compact(other)),
                ))
            }
        };

        let log_level = match json.get("logLevel") {
            None => LogLevel::Warn,
            Some(v) => v.as_str().and_then(LogLevel::parse).ok_or_else(|| {
                invalid(
                    &what,
                    &format!(
                        "logLevel: {} is not one of \"error\", \"warn\", \"info\", \"debug\"",
                        compact(v)
                    ),
                )
            })?,
        };

        let valid_attachments = match json.get("cni.dev/valid-attachments") {
            None => None,
            Some(v) => Some(parse_valid_attachments(&what, v)?),
        };

        Ok(NetConf {
            cni_version,
            name: name.to_string(),
            plugin_type,
            prev_result,
            state_dir,
            log_level,
            valid_attachments,
        })
    }

    /// `network config "NAME"`, the prefix of error details.
    pub fn what(&self) -> String {
        format!("network config {:?}", self.name)
    }
}

fn parse_valid_attachments(what: &str, v: &Json) -> Result<Vec<ValidAttachment>, CniError> {
    const KEY: &str = "cni.dev/valid-attachments";
    let items = v
        .as_array()
        .ok_or_else(|| invalid(what, &format!("{KEY}: not an array")))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let field = |name: &str| {
                item.get(name)
                    .and_then(Json::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| {
                        invalid(what, &format!("{KEY}[{i}].{name}: missing or not a string"))
                    })
            };
            Ok(ValidAttachment {
                container_id: field("containerID")?,
                ifname: field("ifname")?,
            })
        })
        .collect()
}

fn required_str(json: &Json, what: &str, key: &str) -> Result<String, CniError> {
    match json.get(key) {
        Some(Json::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Json::String(_)) | None => Err(invalid(what, &format!("{key}: missing"))),
        Some(other) => Err(invalid(
            what,
            &format!("{key}: {} is not a string", compact(other)),
        )),
    }
}

pub(crate) fn invalid(what: &str, detail: &str) -> CniError {
    CniError::new(
        code::INVALID_CONFIG,
        "invalid network config",
        format!("{what}: {detail}"),
    )
}

fn compact(v: &Json) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_keys_and_defaults() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"palisade-cni"}"#,
        )
        .unwrap();
        assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert_eq!(c.log_level, LogLevel::Warn);
        assert!(c.prev_result.is_none());
        let c = NetConf::parse(
            br#"{"cniVersion":"1.1.0","name":"n","type":"palisade-cni","stateDir":"/tmp/x","logLevel":"debug","prevResult":{"cniVersion":"1.1.0"}}"#,
        )
        .unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.log_level, LogLevel::Debug);
        assert!(c.prev_result.is_some());
    }

    #[test]
    fn old_versions_are_refused_with_the_reason() {
        let e = NetConf::parse(br#"{"cniVersion":"0.2.0","name":"n","type":"t"}"#).unwrap_err();
        assert_eq!(e.code, code::INCOMPATIBLE_VERSION);
        assert!(e.details.contains("network config \"n\""), "{e}");
        assert!(e.details.contains("before 0.3.0"), "{e}");
        assert!(NetConf::parse(br#"{"cniVersion":"0.3.1","name":"n","type":"t"}"#).is_ok());
        let e = NetConf::parse(br#"{"cniVersion":"2.0.0","name":"n","type":"t"}"#).unwrap_err();
        assert_eq!(e.code, code::INCOMPATIBLE_VERSION);
    }

    #[test]
    fn bad_fields_are_named() {
        let e = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"n","type":"t","stateDir":"rel"}"#)
            .unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert!(
            e.details.starts_with("network config \"n\": stateDir:"),
            "{e}"
        );
        let e = NetConf::parse(br#"{"cniVersion":"1.0.0","type":"t"}"#).unwrap_err();
        assert!(e.details.contains("name: missing"), "{e}");
        let e = NetConf::parse(br#"{"cniVersion":"1.1.0","name":"n","type":"t","cni.dev/valid-attachments":[{"containerID":"a"}]}"#).unwrap_err();
        assert!(
            e.details.contains("cni.dev/valid-attachments[0].ifname"),
            "{e}"
        );
        let e = NetConf::parse(b"{not json").unwrap_err();
        assert_eq!(e.code, code::DECODING_FAILURE);
    }

    #[test]
    fn version_hint_falls_back_to_latest() {
        assert_eq!(version_hint(br#"{"cniVersion":"0.4.0"}"#), "0.4.0");
        assert_eq!(version_hint(br#"{"cniVersion":"0.1.0"}"#), LATEST_VERSION);
        assert_eq!(version_hint(b"garbage"), LATEST_VERSION);
    }
}
