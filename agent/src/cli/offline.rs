//! `palisade check` and `palisade matrix`: verdicts of the spec oracle on
//! manifests, no kernel involved. Results go to stdout; skipped objects are
//! reported on stderr and fail the command only with `--strict`.
//!
//! Audit mode shows as such: a flow that passes only because the isolation
//! it meets is audit-only is `ALLOW ... (audit: would deny)` in `check`,
//! `~` in the matrix table and `"would_deny": true` in the matrix JSON.
//! So do the ClusterNetworkPolicy tiers: `check` names the deciding
//! cluster rule and any Pass on the way, the matrix marks what an Admin
//! or Baseline rule decided (`MARKS`) and its JSON names the rules.

use super::tiers::{cluster_selected, pass_prefix, passes};
use super::ManifestArgs;
use palisade_common::{PROTO_ICMP, PROTO_ICMPV6};
use palisade_policy::{
    evaluate, load_paths, matrix_cells, render_cells, render_legend, Action, ClusterRuleRef,
    DirVerdict, Direction, Family, Flow, MatrixCell, MatrixEntry, Model, ProbePort, RuleRef,
    Verdict,
};
use std::net::IpAddr;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    pub manifests: ManifestArgs,
    /// Source: NAMESPACE/POD or an IP address.
    #[arg(long)]
    pub from: String,
    /// Destination: NAMESPACE/POD or an IP address.
    #[arg(long)]
    pub to: String,
    /// PORT/PROTOCOL (TCP, UDP or SCTP; a bare PORT is TCP), or ICMP.
    #[arg(long)]
    pub port: String,
    /// Address family used for pods given by name (4 or 6). Defaults to
    /// the family of an IP given as --from or --to, else 4.
    #[arg(long, value_parser = parse_family)]
    pub family: Option<Family>,
    #[arg(long, value_enum, default_value_t)]
    pub output: CheckOutput,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CheckOutput {
    /// ALLOW or DENY, then why.
    #[default]
    Text,
    /// One JSON object: allowed, the flow, and both directions' verdicts.
    Json,
}

#[derive(clap::Args, Debug)]
pub struct MatrixArgs {
    #[command(flatten)]
    pub manifests: ManifestArgs,
    /// Ports to probe, comma-separated PORT/PROTOCOL (e.g. 80/TCP,81/UDP).
    #[arg(long, value_delimiter = ',', default_value = "80/TCP", value_parser = parse_probe)]
    pub ports: Vec<ProbePort>,
    #[arg(long, value_enum, default_value_t)]
    pub output: MatrixOutput,
    /// Address family of the pod addresses used (4 or 6).
    #[arg(long, value_parser = parse_family, default_value = "4")]
    pub family: Family,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MatrixOutput {
    /// A truth table per port: sources down, destinations across, `.`
    /// allowed, `X` denied, `~` allowed only because the isolation is in
    /// audit mode (would deny).
    #[default]
    Table,
    /// One JSON array of {from, to, port, protocol, allowed}, plus
    /// `"would_deny": true` on cells allowed only by audit mode.
    Json,
}

pub(super) fn parse_family(s: &str) -> Result<Family, String> {
    s.parse::<u8>()
        .ok()
        .and_then(Family::from_number)
        .ok_or_else(|| format!("{s:?}: expected 4 or 6"))
}

fn parse_probe(s: &str) -> Result<ProbePort, String> {
    s.parse()
}

/// Loads the manifests and reports their problems on stderr. The flag
/// says whether `--strict` turns them into a failure.
pub(super) fn load(args: &ManifestArgs) -> (Model, bool) {
    let model = load_paths(&args.manifests);
    let failed = report_input(&model) && args.strict;
    (model, failed)
}

/// Prints the skipped objects and the warnings (policies not understood,
/// values read past) on stderr; true when there was any.
pub(super) fn report_input(model: &Model) -> bool {
    for e in &model.errors {
        eprintln!("skipped: {e}");
    }
    for w in &model.warnings {
        eprintln!("warning: {w}");
    }
    !model.errors.is_empty() || !model.warnings.is_empty()
}

/// For the policies named in a denial that Palisade could not understand:
/// `; policy ns/name not understood: <field>: <problem>; its pods are
/// isolated ... with nothing allowed`, one clause each.
fn not_understood(model: &Model, policies: &[String]) -> String {
    unreadable(model, policies)
        .map(|(key, note)| format!("; policy {key} not understood: {note}"))
        .collect()
}

/// `(namespace/name, note)` of the named policies not understood.
fn unreadable<'a>(
    model: &'a Model,
    policies: &'a [String],
) -> impl Iterator<Item = (String, String)> + 'a {
    model
        .policies
        .iter()
        .filter(|p| p.unreadable.is_some() && policies.contains(&p.key()))
        .filter_map(|p| Some((p.key(), p.unreadable_note()?)))
}

fn exit(failed: bool) -> ExitCode {
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

pub fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let (model, failed) = load(&args.manifests);
    let query = Query::resolve(&model, &args)?;
    let verdict = evaluate(&model, &query.flow);
    match args.output {
        CheckOutput::Text => print!("{}", query.explain(&model, &verdict)),
        CheckOutput::Json => println!(
            "{}",
            serde_json::to_string_pretty(&query.json(&model, &verdict))?
        ),
    }
    Ok(exit(failed))
}

pub fn matrix(args: MatrixArgs) -> anyhow::Result<ExitCode> {
    let (model, failed) = load(&args.manifests);
    let cells = matrix_cells(&model, &args.ports, args.family);
    match args.output {
        MatrixOutput::Json => println!("{}", matrix_json(&cells)?),
        MatrixOutput::Table => {
            if cells.is_empty() {
                eprintln!(
                    "no pair of running pods with an IPv{} address",
                    family_number(args.family)
                );
            }
            print!("{}", render_cells(&cells));
            // The tiers' marks need a key; without cluster policies the
            // tables read as they always have.
            if !model.cluster_policies.is_empty() && !cells.is_empty() {
                print!("{}", render_legend());
            }
        }
    }
    Ok(exit(failed))
}

/// A matrix cell as JSON: the entry as `MatrixEntry` serializes it (same
/// keys, same order), plus `"would_deny": true` on cells allowed only by
/// audit mode and `"cluster": [rules]` on cells a ClusterNetworkPolicy
/// rule decided (each left out elsewhere, so output without audit or
/// cluster policies keeps its shape).
#[derive(serde::Serialize)]
struct JsonCell<'a> {
    #[serde(flatten)]
    entry: &'a MatrixEntry,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    would_deny: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cluster: Vec<&'a ClusterRuleRef>,
}

fn matrix_json(cells: &[MatrixCell]) -> serde_json::Result<String> {
    let out: Vec<JsonCell> = cells
        .iter()
        .map(|c| JsonCell {
            entry: &c.entry,
            would_deny: c.would_deny,
            cluster: c.cluster_rules(),
        })
        .collect();
    serde_json::to_string(&out)
}

fn family_number(f: Family) -> u8 {
    match f {
        Family::V4 => 4,
        Family::V6 => 6,
    }
}

/// `--from`/`--to`: a pod by name or an address.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    Pod { namespace: String, name: String },
    Ip(IpAddr),
}

impl std::str::FromStr for Endpoint {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Endpoint> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Endpoint::Ip(ip));
        }
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Endpoint::Pod {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                })
            }
            _ => anyhow::bail!("{s:?}: expected NAMESPACE/POD or an IP address"),
        }
    }
}

/// `--port`: an L4 port or ICMP (of the flow's family).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortArg {
    L4(ProbePort),
    Icmp,
}

impl std::str::FromStr for PortArg {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<PortArg> {
        if s.eq_ignore_ascii_case("icmp") {
            return Ok(PortArg::Icmp);
        }
        s.parse::<ProbePort>()
            .map(PortArg::L4)
            .map_err(|e| anyhow::anyhow!("--port {e} (or ICMP)"))
    }
}

/// A resolved `check`: the flow and how to name its ends.
pub(super) struct Query {
    pub(super) flow: Flow,
    pub(super) from: String,
    pub(super) to: String,
    pub(super) port: String,
}

impl Query {
    pub(super) fn resolve(model: &Model, args: &CheckArgs) -> anyhow::Result<Query> {
        let from: Endpoint = args.from.parse()?;
        let to: Endpoint = args.to.parse()?;
        let port: PortArg = args.port.parse()?;

        // An address fixes the family; pods by name follow it.
        let mut family = args.family;
        for e in [&from, &to] {
            if let Endpoint::Ip(ip) = e {
                let f = Family::of(ip);
                match family {
                    Some(known) if known != f => anyhow::bail!(
                        "{ip} is IPv{} but the flow is IPv{}",
                        family_number(f),
                        family_number(known)
                    ),
                    _ => family = Some(f),
                }
            }
        }
        let family = family.unwrap_or_default();
        let (src, from_label) = endpoint_address(model, &from, family)?;
        let (dst, to_label) = endpoint_address(model, &to, family)?;
        let (proto, dport, port) = match port {
            PortArg::L4(p) => (p.protocol.number(), p.port, p.to_string()),
            PortArg::Icmp => match family {
                Family::V4 => (PROTO_ICMP, 0, "ICMP".to_string()),
                Family::V6 => (PROTO_ICMPV6, 0, "ICMPv6".to_string()),
            },
        };
        Ok(Query {
            flow: Flow {
                src,
                dst,
                proto,
                dport,
            },
            from: from_label,
            to: to_label,
            port,
        })
    }

    /// The text answer: the verdict line, then one line per direction.
    pub(super) fn explain(&self, model: &Model, verdict: &Verdict) -> String {
        let word = if verdict.allowed() { "ALLOW" } else { "DENY" };
        let audit = if verdict.would_deny() {
            " (audit: would deny)"
        } else {
            ""
        };
        let mut out = format!("{word} {} -> {} {}{audit}\n", self.from, self.to, self.port);
        let sides = [
            (Direction::Egress, self.flow.src, &verdict.egress),
            (Direction::Ingress, self.flow.dst, &verdict.ingress),
        ];
        for (dir, addr, v) in sides {
            let line = match model.pod_by_ip(addr) {
                None => format!(
                    "{}: {addr} is not a pod address: nothing to check",
                    dir.name()
                ),
                Some(pod) => {
                    let passed = passes(model, pod, dir, &self.flow, v);
                    format!(
                        "{} of {}: {}{}",
                        dir.name(),
                        pod.key(),
                        pass_prefix(&passed),
                        side_text(model, pod, dir, v)
                    )
                }
            };
            out.push_str(&format!("  {line}\n"));
        }
        out
    }

    fn json(&self, model: &Model, verdict: &Verdict) -> serde_json::Value {
        let mut out = serde_json::json!({
            "allowed": verdict.allowed(),
            "would_deny": verdict.would_deny(),
            "from": self.from,
            "to": self.to,
            "src": self.flow.src,
            "dst": self.flow.dst,
            "proto": self.flow.proto,
            "dport": self.flow.dport,
            "egress": verdict.egress,
            "ingress": verdict.ingress,
        });
        // Pass rules the verdicts went through, only when there are some.
        let mut passed = serde_json::Map::new();
        for (dir, addr, v) in [
            (Direction::Egress, self.flow.src, &verdict.egress),
            (Direction::Ingress, self.flow.dst, &verdict.ingress),
        ] {
            if let Some(pod) = model.pod_by_ip(addr) {
                let p = passes(model, pod, dir, &self.flow, v);
                if !p.is_empty() {
                    passed.insert(dir.name().to_string(), serde_json::json!(p));
                }
            }
        }
        if !passed.is_empty() {
            out["passed"] = passed.into();
        }
        // Only when a deciding policy was not understood, so that other
        // answers keep their shape.
        let mut named = Vec::new();
        for v in [&verdict.egress, &verdict.ingress] {
            if let DirVerdict::Denied(p) | DirVerdict::WouldDeny(p) = v {
                named.extend(p.iter().cloned());
            }
        }
        named.sort();
        named.dedup();
        let notes: Vec<serde_json::Value> = unreadable(model, &named)
            .map(|(policy, note)| serde_json::json!({"policy": policy, "note": note}))
            .collect();
        if !notes.is_empty() {
            out["not_understood"] = notes.into();
        }
        out
    }
}

pub(super) fn describe_rule(r: &RuleRef) -> String {
    format!("{} ({} rule {})", r.policy, r.direction.name(), r.rule)
}

pub(super) use super::tiers::describe_cluster_rule;

/// What decided one side of a pod, after any Pass: a cluster rule,
/// NetworkPolicy, or nothing (the default allows).
fn side_text(model: &Model, pod: &palisade_policy::Pod, dir: Direction, v: &DirVerdict) -> String {
    let d = dir.name();
    match v {
        DirVerdict::NotIsolated if cluster_selected(model, pod) => format!(
            "not isolated (no NetworkPolicy selects it for {d}, no ClusterNetworkPolicy rule decides it): allowed"
        ),
        DirVerdict::NotIsolated => {
            format!("not isolated (no policy selects it for {d}): allowed")
        }
        DirVerdict::Allowed(rules) => format!(
            "allowed by {}",
            rules
                .iter()
                .map(describe_rule)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        DirVerdict::Denied(policies) => format!(
            "denied: no {d} rule allows it (isolated by {}){}",
            policies.join(", "),
            not_understood(model, policies)
        ),
        DirVerdict::WouldDeny(policies) => format!(
            "allowed (audit: would deny by {}): no {d} rule allows it, and only audit policies isolate it{}",
            policies.join(", "),
            not_understood(model, policies)
        ),
        DirVerdict::Cluster(r) => format!(
            "{} by {}",
            if r.action == Action::Accept {
                "allowed"
            } else {
                "denied"
            },
            describe_cluster_rule(r)
        ),
    }
}

/// The address an endpoint stands for and how to print it.
fn endpoint_address(
    model: &Model,
    e: &Endpoint,
    family: Family,
) -> anyhow::Result<(IpAddr, String)> {
    match e {
        Endpoint::Ip(ip) => Ok(match model.pod_by_ip(*ip) {
            Some(p) => (*ip, format!("{} ({ip})", p.key())),
            None => (*ip, ip.to_string()),
        }),
        Endpoint::Pod { namespace, name } => {
            let pod = model.pod(namespace, name).ok_or_else(|| {
                anyhow::anyhow!(
                    "pod {namespace}/{name} not found among running pods with an address"
                )
            })?;
            let ip = pod.ip(family).ok_or_else(|| {
                anyhow::anyhow!(
                    "pod {namespace}/{name} has no IPv{} address",
                    family_number(family)
                )
            })?;
            Ok((ip, format!("{namespace}/{name} ({ip})")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn repo(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
    }

    fn scenario(name: &str) -> Model {
        let m = load_paths(&[
            repo("tests/scenarios/topology.yaml"),
            repo(&format!("tests/scenarios/{name}")),
        ]);
        assert!(m.errors.is_empty(), "{:#?}", m.errors);
        m
    }

    fn args(from: &str, to: &str, port: &str, family: Option<Family>) -> CheckArgs {
        CheckArgs {
            manifests: ManifestArgs {
                manifests: vec![],
                strict: false,
            },
            from: from.into(),
            to: to.into(),
            port: port.into(),
            family,
            output: CheckOutput::Text,
        }
    }

    fn run_check(model: &Model, a: &CheckArgs) -> (bool, String) {
        let q = Query::resolve(model, a).unwrap();
        let v = evaluate(model, &q.flow);
        (v.allowed(), q.explain(model, &v))
    }

    #[test]
    fn check_explains_allow_and_deny() {
        let m = scenario("pod-selector");
        let (ok, text) = run_check(&m, &args("x/b", "x/a", "80/TCP", None));
        assert!(ok);
        assert_eq!(
            text,
            "ALLOW x/b (10.244.1.11) -> x/a (10.244.1.10) 80/TCP\n  \
             egress of x/b: not isolated (no policy selects it for egress): allowed\n  \
             ingress of x/a: allowed by x/x-a-allows-x-b (ingress rule 0)\n"
        );
        let (ok, text) = run_check(&m, &args("y/b", "x/a", "80", Some(Family::V6)));
        assert!(!ok);
        assert!(
            text.starts_with("DENY y/b (fd00:10:244::211) -> x/a (fd00:10:244::110) 80/TCP\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "ingress of x/a: denied: no ingress rule allows it (isolated by x/x-a-allows-x-b)"
            ),
            "{text}"
        );
    }

    /// x/a's ingress isolated by an audit policy allowing only x/b; y/b's
    /// egress by an enforced default deny.
    fn audit_model() -> Model {
        let text = "
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {pod: a}}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, labels: {pod: b}}
status: {podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: c, namespace: x, labels: {pod: c}}
status: {podIP: 10.0.0.3}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-audit, namespace: x, annotations: {palisade.dev/enforcement: audit}}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: c-deny-egress, namespace: x}
spec: {podSelector: {matchLabels: {pod: c}}, policyTypes: [Egress]}
";
        let m = palisade_policy::load_str(text, "audit.yaml");
        assert!(m.errors.is_empty(), "{:#?}", m.errors);
        m
    }

    #[test]
    fn check_shows_would_deny() {
        let m = audit_model();
        let (ok, text) = run_check(&m, &args("x/c", "x/a", "80/TCP", None));
        assert!(!ok, "c's enforced egress denies it: {text}");
        assert!(text.starts_with("DENY "), "{text}");
        assert!(!text.contains("(audit: would deny)\n"), "{text}");

        let a = args("x/b", "x/a", "80/TCP", None);
        let (ok, text) = run_check(&m, &a);
        assert!(ok);
        assert!(text.contains("ingress of x/a: allowed by x/a-audit (ingress rule 0)"));

        let m2 = {
            // c's egress no longer denied: only a's audit isolation is left.
            let mut m2 = m.clone();
            m2.policies.retain(|p| p.name != "c-deny-egress");
            m2
        };
        let (ok, text) = run_check(&m2, &args("x/c", "x/a", "80/TCP", None));
        assert!(ok);
        assert_eq!(
            text,
            "ALLOW x/c (10.0.0.3) -> x/a (10.0.0.1) 80/TCP (audit: would deny)\n  \
             egress of x/c: not isolated (no policy selects it for egress): allowed\n  \
             ingress of x/a: allowed (audit: would deny by x/a-audit): no ingress rule \
             allows it, and only audit policies isolate it\n"
        );
        let q = Query::resolve(&m2, &args("x/c", "x/a", "80/TCP", None)).unwrap();
        let json = q.json(&m2, &evaluate(&m2, &q.flow));
        assert_eq!(json["allowed"], true);
        assert_eq!(json["would_deny"], true);
        assert_eq!(
            json["ingress"],
            serde_json::json!({"WouldDeny": ["x/a-audit"]})
        );
    }

    #[test]
    fn matrix_marks_would_deny() {
        let m = audit_model();
        let cells = matrix_cells(&m, &["80/TCP".parse().unwrap()], Family::V4);
        assert_eq!(
            render_cells(&cells),
            "80/TCP\n\
             -   x/a x/b x/c\n\
             x/a  -   .   .\n\
             x/b  .   -   .\n\
             x/c  X   X   -\n"
        );
        let mut m2 = m.clone();
        m2.policies.retain(|p| p.name != "c-deny-egress");
        let cells = matrix_cells(&m2, &["80/TCP".parse().unwrap()], Family::V4);
        assert_eq!(
            render_cells(&cells),
            "80/TCP\n\
             -   x/a x/b x/c\n\
             x/a  -   .   .\n\
             x/b  .   -   .\n\
             x/c  ~   .   -\n"
        );
        let json: serde_json::Value = serde_json::from_str(&matrix_json(&cells).unwrap()).unwrap();
        assert!(
            matrix_json(&cells).unwrap().contains(
                r#"{"from":"x/c","to":"x/a","port":80,"protocol":"TCP","allowed":true,"would_deny":true}"#
            ),
            "{json}"
        );
        let marked: Vec<(&str, &str)> = json
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e.get("would_deny").is_some())
            .map(|e| (e["from"].as_str().unwrap(), e["to"].as_str().unwrap()))
            .collect();
        assert_eq!(marked, [("x/c", "x/a")]);
    }

    fn tiers() -> Model {
        let m = load_paths(&[repo("tests/cluster-tiers.yaml")]);
        assert!(m.errors.is_empty() && m.warnings.is_empty(), "{m:#?}");
        m
    }

    /// The line of one side (`egress of ...` / `ingress of ...`).
    fn side<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line in {text}"))
    }

    #[test]
    fn check_names_the_tier_that_decided() {
        let m = tiers();
        let guard = "ClusterNetworkPolicy cluster-guard (Admin tier, priority 10)";
        let open = "not isolated (no NetworkPolicy selects it for egress, \
                    no ClusterNetworkPolicy rule decides it): allowed";
        for (from, to, port, allowed, prefix, line) in [
            (
                "mon/prom",
                "db/pg",
                "9187",
                true,
                "ingress of db/pg",
                format!("allowed by {guard}, ingress rule 0 (allow-scrape): Accept"),
            ),
            (
                "web/fe",
                "169.254.169.254",
                "80",
                false,
                "egress of web/fe",
                format!("denied by {guard}, egress rule 0 (deny-metadata): Deny"),
            ),
            (
                "web/fe",
                "mon/prom",
                "9090",
                false,
                "ingress of mon/prom",
                "denied by ClusterNetworkPolicy protect-monitoring (Admin tier, priority 20), \
                 ingress rule 0: Deny"
                    .into(),
            ),
            (
                "web/fe",
                "db/pg",
                "5432",
                false,
                "ingress of db/pg",
                format!(
                    "Admin tier passed by {guard}, ingress rule 1 (delegate-postgres): Pass, \
                     then: denied: no ingress rule allows it (isolated by db/default-deny)"
                ),
            ),
            (
                "db/pg",
                "web/fe",
                "5432",
                false,
                "ingress of web/fe",
                format!(
                    "Admin tier passed by {guard}, ingress rule 1 (delegate-postgres): Pass, \
                     then: denied by ClusterNetworkPolicy web-baseline (Baseline tier, \
                     priority 5), ingress rule 0 (no-db): Deny"
                ),
            ),
            (
                "mon/prom",
                "web/fe",
                "80",
                true,
                "ingress of web/fe",
                "allowed by ClusterNetworkPolicy web-baseline (Baseline tier, priority 5), \
                 ingress rule 1 (monitoring): Accept"
                    .into(),
            ),
            (
                "web/other",
                "web/fe",
                "8080",
                true,
                "egress of web/other",
                open.into(),
            ),
        ] {
            let (ok, text) = run_check(&m, &args(from, to, port, None));
            assert_eq!(ok, allowed, "{text}");
            assert_eq!(
                side(&text, prefix),
                format!("{prefix}: {line}"),
                "{from} -> {to} {port}"
            );
        }
    }

    #[test]
    fn check_json_names_the_cluster_rule_and_the_pass() {
        let m = tiers();
        let json = |from, to, port| {
            let q = Query::resolve(&m, &args(from, to, port, None)).unwrap();
            q.json(&m, &evaluate(&m, &q.flow))
        };
        let j = json("web/fe", "169.254.169.254", "80");
        assert_eq!(j["allowed"], false);
        assert_eq!(
            j["egress"],
            serde_json::json!({"Cluster": {"tier": "Admin", "priority": 10,
                "policy": "cluster-guard", "direction": "Egress", "rule": 0,
                "name": "deny-metadata", "action": "Deny"}})
        );
        assert!(j.get("passed").is_none(), "{j}");
        let j = json("web/fe", "db/pg", "5432");
        assert_eq!(
            j["ingress"],
            serde_json::json!({"Denied": ["db/default-deny"]})
        );
        assert_eq!(
            j["passed"],
            serde_json::json!({"ingress": [{"tier": "Admin", "priority": 10,
                "policy": "cluster-guard", "direction": "Ingress", "rule": 1,
                "name": "delegate-postgres", "action": "Pass"}]})
        );
    }

    #[test]
    fn matrix_marks_each_tier() {
        let m = tiers();
        let cells = matrix_cells(&m, &["9187/TCP".parse().unwrap()], Family::V4);
        assert_eq!(
            render_cells(&cells),
            "9187/TCP\n\
             -         db/pg mon/prom web/fe web/other\n\
             db/pg       -      .       B        B\n\
             mon/prom    +      -       +        +\n\
             web/fe      X      D       -        .\n\
             web/other   X      D       .        -\n"
        );
        let json: serde_json::Value = serde_json::from_str(&matrix_json(&cells).unwrap()).unwrap();
        let cell = |from: &str, to: &str| {
            json.as_array()
                .unwrap()
                .iter()
                .find(|c| c["from"] == from && c["to"] == to)
                .unwrap()
                .clone()
        };
        assert_eq!(cell("web/fe", "mon/prom")["cluster"][0]["action"], "Deny");
        assert_eq!(cell("web/fe", "mon/prom")["cluster"][0]["tier"], "Admin");
        assert_eq!(cell("db/pg", "web/fe")["cluster"][0]["tier"], "Baseline");
        assert_eq!(
            cell("mon/prom", "db/pg")["cluster"][0]["name"],
            "allow-scrape"
        );
        // NetworkPolicy's own verdicts keep their shape.
        assert!(cell("web/fe", "db/pg").get("cluster").is_none());
        assert!(render_legend().contains("D denied by an Admin ClusterNetworkPolicy Deny\n"));
    }

    #[test]
    fn check_takes_addresses_and_icmp() {
        let m = scenario("egress-cidr");
        // An outside address: only x/a's egress is checked.
        let (ok, text) = run_check(&m, &args("x/a", "192.0.2.1", "ICMP", None));
        assert!(!ok);
        assert!(
            text.contains("ingress: 192.0.2.1 is not a pod address"),
            "{text}"
        );
        // A pod's address stands for the pod; the family follows it.
        let a = args("x/a", "fd00:10:244::211", "80/TCP", None);
        let q = Query::resolve(&m, &a).unwrap();
        assert_eq!(q.flow.src, "fd00:10:244::110".parse::<IpAddr>().unwrap());
        assert_eq!(q.to, "y/b (fd00:10:244::211)");
        let (ok, _) = run_check(&m, &args("x/a", "10.244.2.11", "80/TCP", None));
        assert!(ok);
        let q = Query::resolve(&m, &args("x/a", "y/b", "icmp", Some(Family::V6))).unwrap();
        assert_eq!((q.flow.proto, q.flow.dport), (PROTO_ICMPV6, 0));
    }

    #[test]
    fn check_rejects_bad_arguments() {
        let m = scenario("egress-cidr");
        for (from, to, port, family, msg) in [
            ("x", "x/a", "80/TCP", None, "NAMESPACE/POD"),
            ("x/nope", "x/a", "80/TCP", None, "not found"),
            ("x/a", "x/b", "80/ICMP", None, "unknown protocol"),
            ("x/a", "x/b", "0/TCP", None, "1-65535"),
            (
                "10.0.0.1",
                "fd00::1",
                "80",
                None,
                "IPv6 but the flow is IPv4",
            ),
            (
                "10.0.0.1",
                "x/b",
                "80",
                Some(Family::V6),
                "IPv4 but the flow is IPv6",
            ),
        ] {
            let err = Query::resolve(&m, &args(from, to, port, family))
                .err()
                .unwrap();
            assert!(err.to_string().contains(msg), "{from} {to} {port}: {err}");
        }
    }

    #[test]
    fn matrix_json_shape() {
        let m = scenario("default-deny-ingress");
        let cells = matrix_cells(&m, &["80/TCP".parse().unwrap()], Family::V4);
        let json = matrix_json(&cells).unwrap();
        assert!(json.starts_with(
            r#"[{"from":"x/a","to":"x/b","port":80,"protocol":"TCP","allowed":false},"#
        ));
        let back: Vec<MatrixEntry> = serde_json::from_str(&json).unwrap();
        let entries: Vec<_> = cells.into_iter().map(|c| c.entry).collect();
        assert_eq!(back, entries);
    }

    #[test]
    fn cli_parses_repeated_manifests_and_port_lists() {
        use clap::Parser;
        let cli = super::super::Cli::try_parse_from([
            "palisade",
            "matrix",
            "--manifests",
            "a",
            "--manifests",
            "b.yaml",
            "--ports",
            "80/TCP,81/udp,80/SCTP",
            "--family",
            "6",
            "--output",
            "json",
        ])
        .unwrap();
        let super::super::Command::Matrix(m) = cli.command else {
            panic!("not matrix")
        };
        assert_eq!(
            m.manifests.manifests,
            [PathBuf::from("a"), PathBuf::from("b.yaml")]
        );
        let ports: Vec<String> = m.ports.iter().map(|p| p.to_string()).collect();
        assert_eq!(ports, ["80/TCP", "81/UDP", "80/SCTP"]);
        assert_eq!(m.family, Family::V6);
        assert_eq!(m.output, MatrixOutput::Json);
        assert!(super::super::Cli::try_parse_from(["palisade", "matrix"]).is_err());
        assert!(super::super::Cli::try_parse_from([
            "palisade",
            "matrix",
            "--manifests",
            "a",
            "--family",
            "5"
        ])
        .is_err());
    }

    #[test]
    fn deploy_examples_load_cleanly() {
        let m = load_paths(&[repo("deploy/examples")]);
        assert!(m.errors.is_empty(), "{:#?}", m.errors);
        assert!(!m.pods.is_empty());
        assert!(!m.policies.is_empty());
        let entries = palisade_policy::matrix(&m, &["80/TCP".parse().unwrap()], Family::V4);
        assert!(entries.iter().any(|e| e.allowed));
        assert!(entries.iter().any(|e| !e.allowed));
    }
}
