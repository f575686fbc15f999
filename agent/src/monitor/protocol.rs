//! The monitor socket's protocol: newline-delimited JSON. The client sends
//! one request line, the server answers with a stream of lines, each an
//! event, a notice of events dropped for this client, or an error.

use super::event::{DecodedEvent, Verdict};
use serde::{Deserialize, Serialize};

/// Default path of the monitor socket.
pub const DEFAULT_SOCKET: &str = "/run/palisade/monitor.sock";

/// Which verdicts a client wants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum VerdictFilter {
    /// Denied packets, and would-deny ones (audit mode).
    #[default]
    Denied,
    /// The first packet of each allowed flow.
    Allowed,
    /// Both.
    All,
}

impl VerdictFilter {
    pub fn wants(self, v: Verdict) -> bool {
        match self {
            VerdictFilter::All => true,
            VerdictFilter::Denied => matches!(v, Verdict::Denied | Verdict::WouldDeny),
            VerdictFilter::Allowed => v == Verdict::Allowed,
        }
    }

    /// Whether the classifiers must emit allowed-flow events for this client.
    pub fn needs_allowed(self) -> bool {
        matches!(self, VerdictFilter::Allowed | VerdictFilter::All)
    }
}

/// The client's one request line.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// `namespace/name`: only events of this pod (as the deciding pod or
    /// as the peer). `null`: every pod.
    #[serde(default)]
    pub pod: Option<String>,
    #[serde(default)]
    pub verdict: VerdictFilter,
}

impl Request {
    pub fn wants(&self, e: &DecodedEvent) -> bool {
        self.verdict.wants(e.verdict)
            && self
                .pod
                .as_deref()
                .is_none_or(|p| e.pod == p || e.peer.as_deref() == Some(p))
    }

    /// Parses and checks a request line.
    pub fn parse(line: &str) -> Result<Request, String> {
        let r: Request = serde_json::from_str(line.trim()).map_err(|e| {
            format!(
                "bad request {:?}: {e}; expected {{\"pod\": \"namespace/name\" or null, \"verdict\": \"denied\", \"allowed\" or \"all\"}}",
                line.trim()
            )
        })?;
        if let Some(p) = &r.pod {
            let ok = p
                .split_once('/')
                .is_some_and(|(ns, n)| !ns.is_empty() && !n.is_empty() && !n.contains('/'));
            if !ok {
                return Err(format!("bad request: pod {p:?} is not namespace/name"));
            }
        }
        Ok(r)
    }
}

/// One line from the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ServerLine {
    Event(Box<DecodedEvent>),
    /// Events that matched but were dropped because this client read too
    /// slowly, since the previous notice.
    Dropped {
        dropped: u64,
    },
    /// The request was refused; the server closes the connection.
    Error {
        error: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_with_defaults_and_refuse_bad_pods() {
        let r = Request::parse(r#"{"pod": null, "verdict": "all"}"#).unwrap();
        assert_eq!(r.verdict, VerdictFilter::All);
        assert_eq!(Request::parse("{}").unwrap(), Request::default());
        let r = Request::parse(r#"{"pod": "shop/web", "verdict": "allowed"}"#).unwrap();
        assert_eq!(r.pod.as_deref(), Some("shop/web"));
        assert!(Request::parse(r#"{"pod": "web"}"#)
            .unwrap_err()
            .contains("namespace/name"));
        assert!(Request::parse(r#"{"verdict": "maybe"}"#)
            .unwrap_err()
            .contains("bad request"));
        assert!(Request::parse("nope").is_err());
    }

    #[test]
    fn notices_and_errors_are_told_apart_from_events() {
        let l: ServerLine = serde_json::from_str(r#"{"dropped": 3}"#).unwrap();
        assert_eq!(l, ServerLine::Dropped { dropped: 3 });
        let l: ServerLine = serde_json::from_str(r#"{"error": "x"}"#).unwrap();
        assert_eq!(l, ServerLine::Error { error: "x".into() });
    }
}
