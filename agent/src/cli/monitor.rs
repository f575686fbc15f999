//! `palisade monitor`: the agent's verdict stream, one line per event.
//!
//! Connects to the agent's monitor socket, asks for the pod and verdicts
//! wanted, and prints what arrives: as text for people, or as the decoded
//! events' JSON for tools.

use crate::monitor::event::{AllowedBy, ClusterGroup, DecodedEvent, Verdict};
use crate::monitor::protocol::{Request, ServerLine, VerdictFilter, DEFAULT_SOCKET};
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// One readable line per event.
    Text,
    /// The decoded event as one JSON object per line.
    Json,
}

#[derive(clap::Args, Debug)]
pub struct MonitorArgs {
    /// Only events of this pod (`namespace/name`), as the deciding pod or
    /// as the peer.
    #[arg(long, value_name = "NS/POD")]
    pub pod: Option<String>,
    /// Which verdicts: denied (with audit-mode would-deny), allowed (the
    /// first packet of each allowed flow) or all.
    #[arg(long, value_enum, default_value_t = VerdictFilter::Denied)]
    pub verdict: VerdictFilter,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// The agent's monitor socket (its `--monitor-socket`).
    #[arg(long, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Exit after this many events.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
}

pub fn run(args: MonitorArgs) -> Result<ExitCode> {
    let request = Request {
        pod: args.pod.clone(),
        verdict: args.verdict,
    };
    // Checked here too, so a typo is reported before connecting.
    if let Some(p) = &args.pod {
        let ok = p
            .split_once('/')
            .is_some_and(|(ns, n)| !ns.is_empty() && !n.is_empty() && !n.contains('/'));
        if !ok {
            bail!("--pod {p:?}: expected namespace/name");
        }
    }
    if args.count == Some(0) {
        return Ok(ExitCode::SUCCESS);
    }
    let mut conn = connect(&args.socket)?;
    let mut line = serde_json::to_string(&request)?;
    line.push('\n');
    conn.write_all(line.as_bytes())
        .with_context(|| format!("send the request to {}", args.socket.display()))?;
    let reader = BufReader::new(conn);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut seen = 0u64;
    for line in reader.lines() {
        let line = line.with_context(|| format!("read from {}", args.socket.display()))?;
        let parsed: ServerLine = serde_json::from_str(&line)
            .with_context(|| format!("unexpected line from the agent: {line}"))?;
        let text = match parsed {
            ServerLine::Error { error } => bail!("the agent refused the request: {error}"),
            ServerLine::Dropped { dropped } => {
                eprintln!(
                    "palisade monitor: {dropped} events dropped (this client read too slowly)"
                );
                continue;
            }
            ServerLine::Event(e) => match args.output {
                Output::Json => serde_json::to_string(&e)?,
                Output::Text => text_line(&e),
            },
        };
        // A closed stdout (a pipe into `head`) ends the command quietly.
        if writeln!(out, "{text}").and_then(|_| out.flush()).is_err() {
            return Ok(ExitCode::SUCCESS);
        }
        seen += 1;
        if args.count.is_some_and(|n| seen >= n) {
            return Ok(ExitCode::SUCCESS);
        }
    }
    bail!("the agent closed the verdict stream (it stopped?)")
}

fn connect(path: &std::path::Path) -> Result<UnixStream> {
    UnixStream::connect(path).map_err(|e| {
        use std::io::ErrorKind;
        match e.kind() {
            ErrorKind::NotFound | ErrorKind::ConnectionRefused => anyhow::anyhow!(
                "no monitor socket at {}: the agent is not running on this node, or it serves \
                 another --monitor-socket (pass the same path with --socket)",
                path.display()
            ),
            ErrorKind::PermissionDenied => anyhow::anyhow!(
                "{}: permission denied: the stream is for root and the agent's \
                 --monitor-group (a member needs to log in again after being added)",
                path.display()
            ),
            _ => anyhow::Error::new(e).context(format!("connect to {}", path.display())),
        }
    })
}

/// `TIME VERDICT DIRECTION POD PEER TUPLE DETAIL`, one event per line.
pub fn text_line(e: &DecodedEvent) -> String {
    let arrow = if e.direction == "ingress" { "<-" } else { "->" };
    let peer = e.peer.as_deref().unwrap_or("-");
    let tuple = format!(
        "{} {}:{} > {}:{}",
        e.protocol,
        bracket(&e.src),
        e.sport,
        bracket(&e.dst),
        e.dport
    );
    let detail = if e.stale {
        "(policy changed since: rule not known)".to_string()
    } else {
        match (&e.verdict, &e.allowed_by) {
            (Verdict::Allowed, Some(AllowedBy::Rules { rules, .. })) => {
                let names: Vec<String> = rules
                    .iter()
                    .map(|r| format!("{} {}[{}]", r.policy, e.direction, r.rule))
                    .collect();
                format!("allowed by {}", names.join(", "))
            }
            (Verdict::Allowed, Some(AllowedBy::ClusterRules(g))) => {
                format!("allowed by {}", cluster_text(g, &e.direction))
            }
            (Verdict::Allowed, Some(AllowedBy::NotIsolated)) => "not isolated".into(),
            (Verdict::Allowed, Some(AllowedBy::Node)) => "node traffic (always allowed)".into(),
            (Verdict::Allowed, Some(AllowedBy::Service)) => {
                "to a Service: egress decided after DNAT".into()
            }
            (Verdict::Allowed, Some(AllowedBy::SpilledGroup { policies })) => {
                format!("allowed by a spilled rule group of {}", policies.join(", "))
            }
            (Verdict::Allowed, None) => String::new(),
            (_, _) if e.denied_by.is_some() => {
                let g = e.denied_by.as_ref().expect("checked");
                let reason = e.reason.as_deref().unwrap_or("policy");
                format!("{reason}: denied by {}", cluster_text(g, &e.direction))
            }
            (_, _) => {
                let reason = e.reason.as_deref().unwrap_or("policy");
                if e.isolated_by.is_empty() {
                    reason.to_string()
                } else {
                    format!("{reason}: isolated by {}", e.isolated_by.join(", "))
                }
            }
        }
    };
    format!(
        "{} {:<10} {:<7} {} {arrow} {peer} {tuple} {detail}",
        e.time,
        e.verdict.name(),
        e.direction,
        e.pod
    )
}

/// `Admin ClusterNetworkPolicy NAME (priority P) DIR[I] (RULE NAME), ...:
/// ACTION`: the rules of one cluster group.
fn cluster_text(g: &ClusterGroup, direction: &str) -> String {
    let rules: Vec<String> = g
        .rules
        .iter()
        .map(|r| {
            let name = r
                .name
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            format!(
                "{} ClusterNetworkPolicy {} (priority {}) {direction}[{}]{name}",
                g.tier, r.policy, r.priority, r.rule
            )
        })
        .collect();
    format!("{}: {}", rules.join(", "), g.action)
}

fn bracket(ip: &std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        v4 => v4.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::event::RuleName;

    fn event() -> DecodedEvent {
        DecodedEvent {
            time: "2026-01-01T00:00:00.000Z".into(),
            verdict: Verdict::Denied,
            direction: "ingress".into(),
            pod: "shop/web".into(),
            ifindex: 4,
            peer: Some("shop/client".into()),
            protocol: "UDP".into(),
            src: "10.0.0.3".parse().unwrap(),
            sport: 5000,
            dst: "10.0.0.2".parse().unwrap(),
            dport: 80,
            reason: Some("policy".into()),
            allowed_by: None,
            isolated_by: vec!["shop/deny".into()],
            denied_by: None,
            generation: 0,
            stale: false,
        }
    }

    #[test]
    fn text_lines_name_pods_tuple_and_policies() {
        let l = text_line(&event());
        assert_eq!(
            l,
            "2026-01-01T00:00:00.000Z denied     ingress shop/web <- shop/client UDP 10.0.0.3:5000 > 10.0.0.2:80 policy: isolated by shop/deny"
        );
        let mut a = event();
        a.verdict = Verdict::Allowed;
        a.direction = "egress".into();
        a.allowed_by = Some(AllowedBy::Rules {
            group: 0,
            rules: vec![RuleName {
                policy: "shop/web".into(),
                rule: 1,
            }],
        });
        assert!(
            text_line(&a).ends_with(
                "-> shop/client UDP 10.0.0.3:5000 > 10.0.0.2:80 allowed by shop/web egress[1]"
            ),
            "{}",
            text_line(&a)
        );
    }

    #[test]
    fn text_lines_name_cluster_rules() {
        use crate::monitor::event::ClusterRuleName;
        let group = |tier: &str, action: &str| ClusterGroup {
            group: 0,
            tier: tier.into(),
            action: action.into(),
            rules: vec![ClusterRuleName {
                policy: "guard".into(),
                priority: 10,
                rule: 0,
                name: Some("deny-metadata".into()),
            }],
        };
        let mut d = event();
        d.direction = "egress".into();
        d.isolated_by = vec![];
        d.denied_by = Some(group("Admin", "Deny"));
        assert!(
            text_line(&d).ends_with(
                "policy: denied by Admin ClusterNetworkPolicy guard (priority 10) egress[0] (deny-metadata): Deny"
            ),
            "{}",
            text_line(&d)
        );
        let mut a = event();
        a.verdict = Verdict::Allowed;
        a.reason = None;
        a.isolated_by = vec![];
        a.allowed_by = Some(AllowedBy::ClusterRules(group("Baseline", "Accept")));
        assert!(
            text_line(&a).ends_with(
                "allowed by Baseline ClusterNetworkPolicy guard (priority 10) ingress[0] (deny-metadata): Accept"
            ),
            "{}",
            text_line(&a)
        );
    }

    #[test]
    fn a_missing_socket_says_what_to_do() {
        let err = connect(std::path::Path::new("/nonexistent/palisade.sock")).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("/nonexistent/palisade.sock"), "{msg}");
        assert!(msg.contains("agent is not running"), "{msg}");
    }
}
