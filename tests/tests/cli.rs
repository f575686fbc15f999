//! The offline commands (`palisade matrix`, `palisade check`) run as the
//! real binary: what reaches stdout, stderr and the exit status, compared
//! with the policy crate's oracle on the same manifests.
//!
//! Needs the binary: `cargo build -p palisade-agent` (or set PALISADE_BIN).

use palisade_policy::{
    evaluate, load_paths, matrix, matrix_cells, render_cells, render_legend, render_table, Family,
    Flow, MatrixEntry, Model, ProbePort,
};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_path_buf()
}

fn repo(rel: &str) -> PathBuf {
    workspace().join(rel)
}

/// `$PALISADE_BIN`, else the binary next to this test's own build (same
/// target directory and profile), else `target/debug/palisade`.
fn palisade_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PALISADE_BIN") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "PALISADE_BIN={} is not a file", p.display());
        return p;
    }
    // The test runs as target/<profile>/deps/cli-<hash>.
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("palisade")));
    let fallback = workspace().join("target/debug/palisade");
    sibling
        .into_iter()
        .chain([fallback.clone()])
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no palisade binary at {}: run `cargo build -p palisade-agent` first (or set PALISADE_BIN)",
                fallback.display()
            )
        })
}

/// What one run of the binary printed and how it ended.
struct Run {
    stdout: String,
    stderr: String,
    code: Option<i32>,
}

fn palisade(args: &[&str]) -> Run {
    let out: Output = Command::new(palisade_bin())
        .args(args)
        // Logs must not decide what the tests see on stderr.
        .env("RUST_LOG", "off")
        .output()
        .expect("start palisade");
    Run {
        stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
        code: out.status.code(),
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// `--manifests P` for each path.
fn manifest_args(paths: &[PathBuf]) -> Vec<String> {
    paths
        .iter()
        .flat_map(|p| ["--manifests".to_string(), path_str(p).to_string()])
        .collect()
}

fn probes(list: &str) -> Vec<ProbePort> {
    list.split(',').map(|p| p.parse().unwrap()).collect()
}

/// Runs `matrix --output json` and checks that stdout is exactly one JSON
/// array, equal to the oracle's matrix of the same manifests.
fn assert_matrix_json_matches_oracle(paths: &[PathBuf], ports: &str, family: &str) {
    let mut args: Vec<String> = vec!["matrix".into()];
    args.extend(manifest_args(paths));
    args.extend(["--ports", ports, "--family", family, "--output", "json"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = palisade(&args);
    assert_eq!(run.code, Some(0), "{args:?}: {}", run.stderr);
    assert_eq!(run.stderr, "", "{args:?}: nothing was skipped");

    // Only the array: one line, nothing before or after it.
    assert!(
        run.stdout.starts_with('[') && run.stdout.ends_with("]\n"),
        "{args:?}: stdout is not a lone JSON array: {}",
        run.stdout
    );
    assert_eq!(run.stdout.lines().count(), 1, "{args:?}");
    let printed: Vec<MatrixEntry> = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", run.stdout));

    let model = load_paths(paths);
    assert!(model.errors.is_empty(), "{:#?}", model.errors);
    let family = Family::from_number(family.parse().unwrap()).unwrap();
    let expected = matrix(&model, &probes(ports), family);
    assert!(!expected.is_empty(), "{args:?}: the matrix has cells");
    assert_eq!(printed, expected, "{args:?}");
}

#[test]
fn matrix_json_equals_oracle_on_deploy_examples() {
    let examples = [repo("deploy/examples")];
    for family in ["4", "6"] {
        assert_matrix_json_matches_oracle(
            &examples,
            "80/TCP,443/TCP,5432/TCP,53/UDP,9090/TCP",
            family,
        );
    }
}

#[test]
fn matrix_json_equals_oracle_on_scenarios() {
    for scenario in [
        "pod-selector",
        "named-port-ingress",
        "egress-cidr-except-dual-stack",
        "sctp-is-not-tcp",
        "end-port",
        "stacked-policies",
        "namespace-selector-match-expressions",
    ] {
        let paths = [
            repo("tests/scenarios/topology.yaml"),
            repo(&format!("tests/scenarios/{scenario}")),
        ];
        for family in ["4", "6"] {
            assert_matrix_json_matches_oracle(
                &paths,
                "80/TCP,81/TCP,80/UDP,81/UDP,80/SCTP,81/SCTP",
                family,
            );
        }
    }
}

#[test]
fn matrix_table_is_the_rendered_oracle() {
    let examples = repo("deploy/examples");
    let run = palisade(&[
        "matrix",
        "--manifests",
        path_str(&examples),
        "--ports",
        "443/TCP,53/UDP",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let model = load_paths(&[examples]);
    let cells = matrix_cells(&model, &probes("443/TCP,53/UDP"), Family::V4);
    // The examples hold a ClusterNetworkPolicy: the legend follows.
    assert_eq!(run.stdout, render_cells(&cells) + &render_legend());
    // Where no cluster rule decided, the marks are those of the plain table.
    let entries = matrix(&model, &probes("443/TCP,53/UDP"), Family::V4);
    assert!(run.stdout.starts_with(&render_table(&entries)));
    assert!(run.stdout.starts_with("443/TCP\n"), "{}", run.stdout);
    assert!(run.stdout.contains("\n53/UDP\n"), "{}", run.stdout);
}

/// The oracle's answer for a pod pair of the examples, for cross-checking
/// the `check` text.
fn oracle_allows(model: &Model, from: &str, to: &str, port: u16, proto: u8, fam: Family) -> bool {
    let ip = |key: &str| -> IpAddr {
        let (ns, name) = key.split_once('/').unwrap();
        model.pod(ns, name).unwrap().ip(fam).unwrap()
    };
    evaluate(
        model,
        &Flow {
            src: ip(from),
            dst: ip(to),
            proto,
            dport: port,
        },
    )
    .allowed()
}

#[test]
fn check_names_the_deciding_policies_and_rules() {
    let examples = repo("deploy/examples");
    let ex = path_str(&examples);
    let model = load_paths(std::slice::from_ref(&examples));

    let run = palisade(&[
        "check",
        "--manifests",
        ex,
        "--from",
        "shop/frontend-0",
        "--to",
        "shop/api-0",
        "--port",
        "443",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        run.stdout,
        "ALLOW shop/frontend-0 (10.244.1.10) -> shop/api-0 (10.244.1.20) 443/TCP\n  \
         egress of shop/frontend-0: allowed by shop/frontend-egress (egress rule 0)\n  \
         ingress of shop/api-0: allowed by shop/api-from-frontend (ingress rule 0)\n"
    );
    assert!(oracle_allows(
        &model,
        "shop/frontend-0",
        "shop/api-0",
        443,
        6,
        Family::V4
    ));

    // Denied by the destination's ingress: a DENY still exits 0.
    let run = palisade(&[
        "check",
        "--manifests",
        ex,
        "--from",
        "data/postgres-0",
        "--to",
        "shop/frontend-0",
        "--port",
        "80/TCP",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        run.stdout,
        "DENY data/postgres-0 (10.244.2.10) -> shop/frontend-0 (10.244.1.10) 80/TCP\n  \
         egress of data/postgres-0: not isolated (no NetworkPolicy selects it for egress, \
         no ClusterNetworkPolicy rule decides it): allowed\n  \
         ingress of shop/frontend-0: denied: no ingress rule allows it (isolated by \
         shop/allow-from-monitoring, shop/default-deny-ingress, shop/frontend-ingress)\n"
    );
    assert!(!oracle_allows(
        &model,
        "data/postgres-0",
        "shop/frontend-0",
        80,
        6,
        Family::V4
    ));

    // Denied by the source's egress.
    let run = palisade(&[
        "check",
        "--manifests",
        ex,
        "--from",
        "shop/frontend-1",
        "--to",
        "data/postgres-0",
        "--port",
        "5432/TCP",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stdout.starts_with("DENY shop/frontend-1 "),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(
            "egress of shop/frontend-1: denied: no egress rule allows it (isolated by shop/frontend-egress)"
        ),
        "{}",
        run.stdout
    );

    // An address outside the cluster matched by an ipBlock with except.
    for (from, word, why) in [
        (
            "192.168.50.10",
            "ALLOW",
            "allowed by data/postgres-ingress (ingress rule 1)",
        ),
        (
            "192.168.50.200",
            "DENY",
            "isolated by data/default-deny-ingress, data/postgres-ingress",
        ),
    ] {
        let run = palisade(&[
            "check",
            "--manifests",
            ex,
            "--from",
            from,
            "--to",
            "data/postgres-0",
            "--port",
            "5432",
        ]);
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        assert!(
            run.stdout.starts_with(&format!(
                "{word} {from} -> data/postgres-0 (10.244.2.10) 5432/TCP\n"
            )),
            "{}",
            run.stdout
        );
        assert!(
            run.stdout.contains(&format!(
                "egress: {from} is not a pod address: nothing to check"
            )),
            "{}",
            run.stdout
        );
        assert!(run.stdout.contains(why), "{}", run.stdout);
    }
}

#[test]
fn check_json_carries_the_verdict() {
    let examples = repo("deploy/examples");
    let run = palisade(&[
        "check",
        "--manifests",
        path_str(&examples),
        "--from",
        "shop/api-0",
        "--to",
        "data/postgres-0",
        "--port",
        "5432/TCP",
        "--output",
        "json",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["allowed"], true);
    assert_eq!(v["src"], "10.244.1.20");
    assert_eq!(v["dst"], "10.244.2.10");
    assert_eq!(v["proto"], 6);
    assert_eq!(v["dport"], 5432);
    assert_eq!(v["egress"], "NotIsolated");
    assert_eq!(
        v["ingress"],
        serde_json::json!({"Allowed": [
            {"policy": "data/postgres-ingress", "direction": "Ingress", "rule": 0}
        ]})
    );
}

/// `check --output json` agrees with the oracle on every pod pair of the
/// examples: the verdict and, per direction, the deciding rules or the
/// isolating policies.
#[test]
fn check_json_equals_oracle_on_every_pair() {
    let examples = repo("deploy/examples");
    let ex = path_str(&examples);
    let model = load_paths(std::slice::from_ref(&examples));
    let mut allowed = 0;
    let mut denied = 0;
    for (port, family) in [("443/TCP", "4"), ("53/UDP", "4"), ("5432/TCP", "6")] {
        let probe: ProbePort = port.parse().unwrap();
        let fam = Family::from_number(family.parse().unwrap()).unwrap();
        for from in &model.pods {
            for to in &model.pods {
                if from == to {
                    continue;
                }
                let (f, t) = (from.key(), to.key());
                let args = [
                    "check",
                    "--manifests",
                    ex,
                    "--from",
                    &f,
                    "--to",
                    &t,
                    "--port",
                    port,
                    "--family",
                    family,
                    "--output",
                    "json",
                ];
                let run = palisade(&args);
                assert_eq!(run.code, Some(0), "{args:?}: {}", run.stderr);
                let printed: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
                let verdict = evaluate(
                    &model,
                    &Flow {
                        src: from.ip(fam).unwrap(),
                        dst: to.ip(fam).unwrap(),
                        proto: probe.protocol.number(),
                        dport: probe.port,
                    },
                );
                assert_eq!(printed["allowed"], verdict.allowed(), "{args:?}");
                assert_eq!(
                    printed["egress"],
                    serde_json::to_value(&verdict.egress).unwrap()
                );
                assert_eq!(
                    printed["ingress"],
                    serde_json::to_value(&verdict.ingress).unwrap()
                );
                if verdict.allowed() {
                    allowed += 1;
                } else {
                    denied += 1;
                }
            }
        }
    }
    assert!(
        allowed > 0 && denied > 0,
        "{allowed} allowed, {denied} denied"
    );
}

#[test]
fn family_6_uses_the_ipv6_addresses() {
    let examples = repo("deploy/examples");
    let ex = path_str(&examples);
    let model = load_paths(std::slice::from_ref(&examples));

    let run = palisade(&[
        "check",
        "--manifests",
        ex,
        "--from",
        "shop/frontend-0",
        "--to",
        "monitoring/prometheus-0",
        "--port",
        "9090",
        "--family",
        "6",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        run.stdout,
        "DENY shop/frontend-0 (fd00:10:244::1:10) -> monitoring/prometheus-0 (fd00:10:244::3:10) 9090/TCP\n  \
         egress of shop/frontend-0: denied: no egress rule allows it (isolated by shop/frontend-egress)\n  \
         ingress of monitoring/prometheus-0: not isolated (no NetworkPolicy selects it for \
         ingress, no ClusterNetworkPolicy rule decides it): allowed\n"
    );
    assert!(!oracle_allows(
        &model,
        "shop/frontend-0",
        "monitoring/prometheus-0",
        9090,
        6,
        Family::V6
    ));

    // The frontend ipBlock is per family: the IPv6 block's except keeps
    // postgres out over IPv6 as well.
    let run = palisade(&[
        "check",
        "--manifests",
        ex,
        "--from",
        "data/postgres-0",
        "--to",
        "shop/frontend-1",
        "--port",
        "80",
        "--family",
        "6",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stdout.starts_with(
            "DENY data/postgres-0 (fd00:10:244::2:10) -> shop/frontend-1 (fd00:10:244::1:11) 80/TCP\n"
        ),
        "{}",
        run.stdout
    );

    // ICMP follows the family.
    let run = palisade(&[
        "check",
        "--manifests",
        ex,
        "--from",
        "monitoring/prometheus-0",
        "--to",
        "shop/api-0",
        "--port",
        "icmp",
        "--family",
        "6",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.contains(" ICMPv6\n"), "{}", run.stdout);
    assert!(
        run.stdout.starts_with("ALLOW "),
        "prometheus may reach shop on every protocol: {}",
        run.stdout
    );
}

/// A directory removed on drop, holding manifests written by a test.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("palisade-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const GOOD: &str = "\
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {app: a}}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, labels: {app: b}}
status: {podIP: 10.0.0.2}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-from-b, namespace: x}
spec:
  podSelector: {matchLabels: {app: a}}
  ingress:
    - from: [{podSelector: {matchLabels: {app: b}}}]
      ports: [{port: 80}]
";

/// Three broken policies (not understood: each isolates x/b's ingress
/// with nothing allowed) and one unparsable document between them.
const BAD: &str = "\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad-cidr, namespace: x}
spec:
  podSelector: {matchLabels: {app: b}}
  ingress:
    - from:
        - ipBlock: {cidr: 10.0.0.300/24}
---
kind: [unclosed
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad-range, namespace: x}
spec:
  podSelector: {matchLabels: {app: b}}
  ingress:
    - ports:
        - {port: 90, endPort: 80}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad-protocol, namespace: x}
spec:
  podSelector: {matchLabels: {app: b}}
  ingress:
    - ports:
        - {port: 80, protocol: ICMP}
";

#[test]
fn bad_input_is_reported_and_fails_only_with_strict() {
    let dir = TempDir::new("bad-input");
    dir.write("good.yaml", GOOD);
    let bad = dir.write("bad.yaml", BAD);
    let bad = path_str(&bad);
    let root = path_str(&dir.0);
    let isolated =
        "; policy not understood: its pods are isolated for ingress with nothing allowed";
    let expected_errors = [
        format!("warning: {bad}: NetworkPolicy x/bad-cidr: spec.ingress[0].from[0].ipBlock.cidr: \"10.0.0.300/24\" is not a CIDR (address/prefix-length){isolated}"),
        format!("skipped: {bad}: document 2 (line 9): syntax: "),
        format!("warning: {bad}: NetworkPolicy x/bad-range: spec.ingress[0].ports[0].endPort: 80 is less than port 90{isolated}"),
        format!("warning: {bad}: NetworkPolicy x/bad-protocol: spec.ingress[0].ports[0].protocol: unsupported protocol \"ICMP\": must be TCP, UDP or SCTP{isolated}"),
    ];
    let check_stderr = |run: &Run| {
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(lines.len(), expected_errors.len(), "{}", run.stderr);
        for e in &expected_errors {
            assert!(
                lines.iter().any(|l| l.starts_with(e.as_str())),
                "missing {e:?} in:\n{}",
                run.stderr
            );
        }
        // The syntax error points into the file, not into the document.
        assert!(run.stderr.contains("line 11 column 1"), "{}", run.stderr);
    };

    // The valid objects still load: a admits b on 80. The broken
    // policies isolate b with nothing allowed: a reaches b on no port.
    let model = load_paths(std::slice::from_ref(&dir.0));
    let expected = matrix(&model, &probes("80/TCP,81/TCP"), Family::V4);
    let allowed: Vec<(&str, &str, u16)> = expected
        .iter()
        .filter(|e| e.allowed)
        .map(|e| (e.from.as_str(), e.to.as_str(), e.port))
        .collect();
    assert_eq!(allowed, [("x/b", "x/a", 80)], "{expected:?}");
    for (strict, code) in [(false, 0), (true, 1)] {
        let mut args = vec!["matrix", "--manifests", root, "--ports", "80/TCP,81/TCP"];
        args.extend(["--output", "json"]);
        if strict {
            args.push("--strict");
        }
        let run = palisade(&args);
        assert_eq!(run.code, Some(code), "{args:?}: {}", run.stderr);
        check_stderr(&run);
        let printed: Vec<MatrixEntry> = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(printed, expected, "the valid objects are still answered");

        let mut args = vec!["check", "--manifests", root, "--from", "x/b", "--to", "x/a"];
        args.extend(["--port", "80"]);
        if strict {
            args.push("--strict");
        }
        let run = palisade(&args);
        assert_eq!(run.code, Some(code), "{args:?}: {}", run.stderr);
        check_stderr(&run);
        assert!(
            run.stdout
                .starts_with("ALLOW x/b (10.0.0.2) -> x/a (10.0.0.1) 80/TCP\n"),
            "{}",
            run.stdout
        );
    }
}

#[test]
fn missing_manifest_path_is_a_skipped_file() {
    let dir = TempDir::new("missing");
    let good = dir.write("good.yaml", GOOD);
    let missing = dir.0.join("no-such.yaml");
    for (strict, code) in [(false, 0), (true, 1)] {
        let mut args = vec!["matrix", "--manifests", path_str(&good)];
        args.extend(["--manifests", path_str(&missing), "--output", "json"]);
        if strict {
            args.push("--strict");
        }
        let run = palisade(&args);
        assert_eq!(run.code, Some(code), "{}", run.stderr);
        assert!(
            run.stderr
                .starts_with(&format!("skipped: {}: file: read: ", missing.display())),
            "{}",
            run.stderr
        );
        let printed: Vec<MatrixEntry> = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(printed.len(), 2);
    }
}

#[test]
fn bad_arguments_fail_with_a_message() {
    let examples = repo("deploy/examples");
    let ex = path_str(&examples);
    for (args, message) in [
        (
            vec![
                "check",
                "--manifests",
                ex,
                "--from",
                "shop/nope",
                "--to",
                "shop/api-0",
                "--port",
                "80",
            ],
            "error: pod shop/nope not found",
        ),
        (
            vec![
                "check",
                "--manifests",
                ex,
                "--from",
                "shop",
                "--to",
                "shop/api-0",
                "--port",
                "80",
            ],
            "expected NAMESPACE/POD or an IP address",
        ),
        (
            vec![
                "check",
                "--manifests",
                ex,
                "--from",
                "10.0.0.1",
                "--to",
                "shop/api-0",
                "--port",
                "80",
                "--family",
                "6",
            ],
            "10.0.0.1 is IPv4 but the flow is IPv6",
        ),
        (
            vec![
                "check",
                "--manifests",
                ex,
                "--from",
                "shop/api-0",
                "--to",
                "shop/frontend-0",
                "--port",
                "80/ICMP",
            ],
            "unknown protocol",
        ),
        (
            vec!["matrix", "--manifests", ex, "--family", "5"],
            "expected 4 or 6",
        ),
        (
            vec!["matrix", "--manifests", ex, "--ports", "0/TCP"],
            "expected 1-65535",
        ),
        (vec!["matrix"], "--manifests"),
    ] {
        let run = palisade(&args);
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
        assert_eq!(run.stdout, "", "{args:?}");
        assert!(run.stderr.contains(message), "{args:?}: {}", run.stderr);
    }
}

/// An audit-mode policy: `check` shows a would-deny distinctly (and exits
/// 0: the packet passes), `matrix` marks it `~` in the table and
/// `"would_deny": true` in JSON; a bad annotation value is a skipped
/// policy naming the field.
#[test]
fn check_and_matrix_show_would_deny() {
    const AUDIT: &str = "\
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {pod: a}}
status: {podIP: 10.9.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, labels: {pod: b}}
status: {podIP: 10.9.0.2}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: a-trial
  namespace: x
  annotations: {palisade.dev/enforcement: audit}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{ports: [{port: 443}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: b-typo
  namespace: x
  annotations: {palisade.dev/enforcement: Audit}
spec:
  podSelector: {matchLabels: {pod: b}}
";
    let dir = TempDir::new("audit");
    let file = dir.write("audit.yaml", AUDIT);
    let run = palisade(&[
        "check",
        "--manifests",
        path_str(&file),
        "--from",
        "x/b",
        "--to",
        "x/a",
        "--port",
        "80",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        run.stdout,
        "ALLOW x/b (10.9.0.2) -> x/a (10.9.0.1) 80/TCP (audit: would deny)\n  \
         egress of x/b: not isolated (no policy selects it for egress): allowed\n  \
         ingress of x/a: allowed (audit: would deny by x/a-trial): no ingress rule \
         allows it, and only audit policies isolate it\n"
    );
    // The misspelt mode is enforced, with a warning.
    assert_eq!(
        run.stderr,
        format!(
            "warning: {}: NetworkPolicy x/b-typo: metadata.annotations[\"palisade.dev/enforcement\"]: unknown value \"Audit\" (must be \"audit\" or \"enforce\"): the policy is enforced\n",
            file.display()
        )
    );

    // What the audit policy allows is a plain allow.
    let run = palisade(&[
        "check",
        "--manifests",
        path_str(&file),
        "--from",
        "x/b",
        "--to",
        "x/a",
        "--port",
        "443",
        "--output",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["allowed"], true);
    assert_eq!(v["would_deny"], false);
    assert_eq!(
        v["ingress"],
        serde_json::json!({"Allowed": [
            {"policy": "x/a-trial", "direction": "Ingress", "rule": 0}
        ]})
    );

    let run = palisade(&[
        "matrix",
        "--manifests",
        path_str(&file),
        "--ports",
        "80,443",
    ]);
    assert_eq!(
        run.stdout,
        "80/TCP\n-   x/a x/b\nx/a  -   X\nx/b  ~   -\n443/TCP\n-   x/a x/b\nx/a  -   X\nx/b  .   -\n"
    );
    let run = palisade(&[
        "matrix",
        "--manifests",
        path_str(&file),
        "--ports",
        "80",
        "--output",
        "json",
    ]);
    let cells: Vec<serde_json::Value> = serde_json::from_str(&run.stdout).unwrap();
    let marked: Vec<_> = cells
        .iter()
        .filter(|c| c["would_deny"] == true)
        .map(|c| (c["from"].as_str().unwrap(), c["to"].as_str().unwrap()))
        .collect();
    assert_eq!(marked, [("x/b", "x/a")]);
    let allowed: Vec<_> = cells
        .iter()
        .map(|c| (c["from"].as_str().unwrap(), c["allowed"] == true))
        .collect();
    assert_eq!(allowed, [("x/a", false), ("x/b", true)]);
}

/// A policy that does not deserialize (an object where a port belongs)
/// next to one that fails validation, over pods a (app: a) and b (app: b).
const NOT_UNDERSTOOD: &str = "\
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {app: a}}
status: {podIP: 10.9.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, labels: {app: b}}
status: {podIP: 10.9.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: c, namespace: y, labels: {app: a}}
status: {podIP: 10.9.0.3}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-web, namespace: x}
spec:
  podSelector: {matchLabels: {app: a}}
  ingress: [{ports: [{port: {number: 80}}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-egress, namespace: x}
spec:
  podSelector: {matchLabels: {app: b}}
  policyTypes: [Egress]
  egress: [{to: [{ipBlock: {cidr: 10.9.0.0/16, except: [10.8.0.0/24]}}]}]
";

#[test]
fn check_and_matrix_name_a_policy_not_understood() {
    let dir = TempDir::new("not-understood");
    let file = dir.write("np.yaml", NOT_UNDERSTOOD);
    let root = path_str(&dir.0);
    let run = palisade(&[
        "check",
        "--manifests",
        root,
        "--from",
        "x/b",
        "--to",
        "x/a",
        "--port",
        "80",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        run.stdout,
        "DENY x/b (10.9.0.2) -> x/a (10.9.0.1) 80/TCP\n  \
         egress of x/b: denied: no egress rule allows it (isolated by x/b-egress); \
         policy x/b-egress not understood: spec.egress[0].to[0].ipBlock.except[0]: \
         10.8.0.0/24 must be strictly inside cidr 10.9.0.0/16; \
         its pods are isolated for egress with nothing allowed\n  \
         ingress of x/a: denied: no ingress rule allows it (isolated by x/a-web); \
         policy x/a-web not understood: spec.ingress[0].ports[0].port: \
         invalid type: map, expected IntOrString; \
         its pods are isolated for ingress with nothing allowed\n"
    );
    let warned: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(warned.len(), 2, "{}", run.stderr);
    let f = file.display();
    assert!(
        warned[0].starts_with(&format!(
            "warning: {f}: NetworkPolicy x/a-web: spec.ingress[0].ports[0].port: "
        )),
        "{}",
        run.stderr
    );
    assert!(
        warned[1].starts_with(&format!(
            "warning: {f}: NetworkPolicy x/b-egress: spec.egress[0].to[0].ipBlock.except[0]: "
        )),
        "{}",
        run.stderr
    );
    // --strict makes it a failure, as for CI.
    let strict = palisade(&[
        "check",
        "--manifests",
        root,
        "--from",
        "x/b",
        "--to",
        "x/a",
        "--port",
        "80",
        "--strict",
    ]);
    assert_eq!(strict.code, Some(1));

    // The JSON answer names the policies and what was wrong.
    let run = palisade(&[
        "check",
        "--manifests",
        root,
        "--from",
        "x/b",
        "--to",
        "x/a",
        "--port",
        "80",
        "--output",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["allowed"], false);
    assert_eq!(v["ingress"], serde_json::json!({"Denied": ["x/a-web"]}));
    let notes = v["not_understood"].as_array().expect("not_understood");
    assert_eq!(notes.len(), 2, "{v:#}");
    assert_eq!(notes[0]["policy"], "x/a-web");
    assert!(notes[0]["note"]
        .as_str()
        .unwrap()
        .starts_with("spec.ingress[0].ports[0].port: "));

    // The pod of another namespace with the same labels is untouched.
    let run = palisade(&["matrix", "--manifests", root, "--ports", "80"]);
    assert_eq!(
        run.stdout,
        "80/TCP\n-   x/a x/b y/c\nx/a  -   .   .\nx/b  X   -   X\ny/c  X   .   -\n"
    );
    assert_eq!(run.stderr.lines().count(), 2, "{}", run.stderr);
}

/// `check` on a flow of `tests/cluster-tiers.yaml`: its stdout.
fn check_tiers(from: &str, to: &str, port: &str, json: bool) -> String {
    let tiers = repo("tests/cluster-tiers.yaml");
    let mut args = vec![
        "check",
        "--manifests",
        path_str(&tiers),
        "--from",
        from,
        "--to",
        to,
        "--port",
        port,
    ];
    if json {
        args.extend(["--output", "json"]);
    }
    let run = palisade(&args);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stderr, "", "the fixture loads cleanly");
    run.stdout
}

#[test]
fn check_and_matrix_name_the_tiers() {
    let guard = "ClusterNetworkPolicy cluster-guard (Admin tier, priority 10)";
    // One flow per tier: the answer line, and the deciding side's line.
    for (from, to, port, first, side) in [
        (
            "mon/prom",
            "db/pg",
            "9187",
            "ALLOW mon/prom (10.0.3.1) -> db/pg (10.0.2.1) 9187/TCP",
            format!("ingress of db/pg: allowed by {guard}, ingress rule 0 (allow-scrape): Accept"),
        ),
        (
            "web/fe",
            "169.254.169.254",
            "80",
            "DENY web/fe (10.0.1.1) -> 169.254.169.254 80/TCP",
            format!("egress of web/fe: denied by {guard}, egress rule 0 (deny-metadata): Deny"),
        ),
        (
            "web/fe",
            "db/pg",
            "5432",
            "DENY web/fe (10.0.1.1) -> db/pg (10.0.2.1) 5432/TCP",
            format!(
                "ingress of db/pg: Admin tier passed by {guard}, ingress rule 1 \
                 (delegate-postgres): Pass, then: denied: no ingress rule allows it \
                 (isolated by db/default-deny)"
            ),
        ),
        (
            "db/pg",
            "web/fe",
            "80",
            "DENY db/pg (10.0.2.1) -> web/fe (10.0.1.1) 80/TCP",
            "ingress of web/fe: denied by ClusterNetworkPolicy web-baseline (Baseline tier, \
             priority 5), ingress rule 0 (no-db): Deny"
                .to_string(),
        ),
        (
            "mon/prom",
            "web/fe",
            "80",
            "ALLOW mon/prom (10.0.3.1) -> web/fe (10.0.1.1) 80/TCP",
            "ingress of web/fe: allowed by ClusterNetworkPolicy web-baseline (Baseline tier, \
             priority 5), ingress rule 1 (monitoring): Accept"
                .to_string(),
        ),
        (
            "web/other",
            "web/fe",
            "8080",
            "ALLOW web/other (10.0.1.2) -> web/fe (10.0.1.1) 8080/TCP",
            "ingress of web/fe: not isolated (no NetworkPolicy selects it for ingress, \
             no ClusterNetworkPolicy rule decides it): allowed"
                .to_string(),
        ),
    ] {
        let out = check_tiers(from, to, port, false);
        let lines: Vec<&str> = out.lines().map(str::trim).collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert_eq!(lines[0], first, "{out}");
        assert!(lines.contains(&side.as_str()), "{out}\nexpected: {side}");

        // The JSON says the same, and its verdict is the oracle's.
        let json: serde_json::Value =
            serde_json::from_str(&check_tiers(from, to, port, true)).unwrap();
        assert_eq!(json["allowed"], first.starts_with("ALLOW"), "{json}");
    }

    let json: serde_json::Value =
        serde_json::from_str(&check_tiers("web/fe", "mon/prom", "9090", true)).unwrap();
    assert_eq!(
        json["ingress"],
        serde_json::json!({"Cluster": {"tier": "Admin", "priority": 20,
            "policy": "protect-monitoring", "direction": "Ingress", "rule": 0,
            "name": null, "action": "Deny"}})
    );
    let json: serde_json::Value =
        serde_json::from_str(&check_tiers("db/pg", "web/fe", "5432", true)).unwrap();
    assert_eq!(json["allowed"], false);
    assert_eq!(json["ingress"]["Cluster"]["tier"], "Baseline");
    assert_eq!(json["passed"]["ingress"][0]["action"], "Pass");
    assert_eq!(json["passed"]["ingress"][0]["policy"], "cluster-guard");

    // The matrix: each tier's mark, the legend, and the rules in JSON.
    let tiers = repo("tests/cluster-tiers.yaml");
    let run = palisade(&[
        "matrix",
        "--manifests",
        path_str(&tiers),
        "--ports",
        "9187/TCP",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stdout.starts_with(
            "9187/TCP\n\
             -         db/pg mon/prom web/fe web/other\n\
             db/pg       -      .       B        B\n\
             mon/prom    +      -       +        +\n\
             web/fe      X      D       -        .\n\
             web/other   X      D       .        -\n"
        ),
        "{}",
        run.stdout
    );
    for legend in [
        "+ allowed, a side of it by an Admin ClusterNetworkPolicy Accept",
        "X denied by NetworkPolicy",
        "D denied by an Admin ClusterNetworkPolicy Deny",
        "B denied by a Baseline ClusterNetworkPolicy Deny",
    ] {
        assert!(run.stdout.contains(legend), "{}", run.stdout);
    }
    let run = palisade(&[
        "matrix",
        "--manifests",
        path_str(&tiers),
        "--ports",
        "9187/TCP",
        "--output",
        "json",
    ]);
    let cells: Vec<serde_json::Value> = serde_json::from_str(&run.stdout).unwrap();
    let deciding: Vec<(String, String, String, String)> = cells
        .iter()
        .filter_map(|c| {
            let r = c.get("cluster")?.get(0)?;
            Some((
                format!("{} -> {}", c["from"].as_str()?, c["to"].as_str()?),
                r["tier"].as_str()?.to_string(),
                r["action"].as_str()?.to_string(),
                r["policy"].as_str()?.to_string(),
            ))
        })
        .collect();
    let row = |f: &str, t: &str, tier: &str, action: &str, policy: &str| {
        (
            format!("{f} -> {t}"),
            tier.to_string(),
            action.to_string(),
            policy.to_string(),
        )
    };
    assert_eq!(
        deciding,
        [
            row("db/pg", "web/fe", "Baseline", "Deny", "web-baseline"),
            row("db/pg", "web/other", "Baseline", "Deny", "web-baseline"),
            row("mon/prom", "db/pg", "Admin", "Accept", "cluster-guard"),
            row("mon/prom", "web/fe", "Admin", "Accept", "cluster-guard"),
            row("mon/prom", "web/other", "Admin", "Accept", "cluster-guard"),
            row("web/fe", "mon/prom", "Admin", "Deny", "protect-monitoring"),
            row(
                "web/other",
                "mon/prom",
                "Admin",
                "Deny",
                "protect-monitoring"
            ),
        ]
    );
    // The cells still read as the lab's measured matrix does.
    let entries: Vec<MatrixEntry> = serde_json::from_str(&run.stdout).unwrap();
    let model = load_paths(&[tiers]);
    assert_eq!(entries, matrix(&model, &probes("9187/TCP"), Family::V4));
}
