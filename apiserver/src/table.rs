//! Server-side printing: `kubectl get` asks for a `meta.k8s.io/v1` Table
//! (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io,...`) and prints
//! its columns as they come. The columns are the API server's for each
//! kind (`-o wide` adds those of priority 1); a client that does not ask
//! gets the objects.

use crate::state::Kind;
use serde_json::{json, Value};

/// What each row carries besides its cells (`includeObject`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Include {
    None,
    Metadata,
    Object,
}

/// Whether the request asks for a Table, and with what in each row.
pub fn wanted(accept: &str, include_object: Option<&str>) -> Option<Include> {
    let table = accept.split(',').any(|media| {
        let params: Vec<&str> = media.split(';').map(str::trim).collect();
        params.contains(&"as=Table") && params.contains(&"g=meta.k8s.io")
    });
    table.then_some(match include_object {
        Some("None") => Include::None,
        Some("Object") => Include::Object,
        _ => Include::Metadata,
    })
}

/// A Table of `objects` of `kind`; `metadata` is the list's.
pub fn table(kind: Kind, objects: &[Value], metadata: Value, include: Include) -> Value {
    let now = now();
    let columns: Vec<Value> = columns(kind)
        .iter()
        .map(|(name, priority, description)| {
            let format = if *name == "Name" { "name" } else { "" };
            json!({"name": name, "type": "string", "format": format,
                   "description": description, "priority": priority})
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut row = json!({"cells": cells(kind, o, now)});
            match include {
                Include::None => {}
                Include::Metadata => {
                    row["object"] = json!({"kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]});
                }
                Include::Object => row["object"] = o.clone(),
            }
            row
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata,
           "columnDefinitions": columns, "rows": rows})
}

/// (name, priority, description) of each column.
fn columns(kind: Kind) -> &'static [(&'static str, u8, &'static str)] {
    const NAME: (&str, u8, &str) = ("Name", 0, "Name must be unique within a namespace.");
    const AGE: (&str, u8, &str) = ("Age", 0, "Time since the object was created.");
    match kind {
        Kind::Namespace => &[NAME, ("Status", 0, "The phase of the namespace."), AGE],
        Kind::NetworkPolicy => &[
            NAME,
            ("Pod-Selector", 0, "The pods the policy applies to."),
            AGE,
        ],
        Kind::Pod => &[
            NAME,
            ("Ready", 0, "Ready containers of all containers."),
            (
                "Status",
                0,
                "The phase of the pod, or why it is not running.",
            ),
            ("Restarts", 0, "Container restarts."),
            AGE,
            ("IP", 1, "The pod's IP address."),
            ("Node", 1, "The node the pod runs on."),
        ],
        Kind::Node => &[
            NAME,
            ("Status", 0, "Whether the node is Ready."),
            AGE,
            ("Internal-IP", 1, "The node's internal address."),
        ],
        Kind::ClusterNetworkPolicy => &[
            NAME,
            ("Tier", 0, "Admin or Baseline."),
            ("Priority", 0, "Lower first within the tier."),
            AGE,
        ],
        Kind::Service => &[
            NAME,
            ("Type", 0, "How the service is exposed."),
            ("Cluster-IP", 0, "The service's cluster IP."),
            ("External-IP", 0, "External addresses of the service."),
            ("Port(s)", 0, "The service's ports."),
            AGE,
            ("Selector", 1, "The pods behind the service."),
        ],
    }
}

fn text(v: &Value, or: &str) -> String {
    v.as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or(or)
        .to_string()
}

fn cells(kind: Kind, o: &Value, now: i64) -> Vec<Value> {
    let name = text(&o["metadata"]["name"], "");
    let age = age(&o["metadata"]["creationTimestamp"], now);
    let (spec, status) = (&o["spec"], &o["status"]);
    let cells = match kind {
        Kind::Namespace => vec![name, text(&status["phase"], "Active"), age],
        Kind::NetworkPolicy => vec![name, label_selector(&spec["podSelector"]), age],
        Kind::Pod => {
            let containers = spec["containers"].as_array().map_or(0, Vec::len);
            let statuses = status["containerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let ready = statuses.iter().filter(|s| s["ready"] == true).count();
            let restarts: i64 = statuses
                .iter()
                .filter_map(|s| s["restartCount"].as_i64())
                .sum();
            let phase = text(&status["reason"], &text(&status["phase"], "Pending"));
            vec![
                name,
                format!("{ready}/{containers}"),
                phase,
                restarts.to_string(),
                age,
                text(
                    &status["podIPs"][0]["ip"],
                    &text(&status["podIP"], "<none>"),
                ),
                text(&spec["nodeName"], "<none>"),
            ]
        }
        Kind::Node => {
            let conditions = status["conditions"].as_array().cloned().unwrap_or_default();
            let ready = conditions
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            let internal = status["addresses"]
                .as_array()
                .and_then(|a| a.iter().find(|a| a["type"] == "InternalIP"))
                .map(|a| text(&a["address"], "<none>"))
                .unwrap_or_else(|| "<none>".to_string());
            let ready = if ready { "Ready" } else { "NotReady" };
            vec![name, ready.to_string(), age, internal]
        }
        Kind::ClusterNetworkPolicy => vec![
            name,
            text(&spec["tier"], ""),
            spec["priority"]
                .as_i64()
                .map_or(String::new(), |p| p.to_string()),
            age,
        ],
        Kind::Service => vec![
            name,
            text(&spec["type"], "ClusterIP"),
            text(&spec["clusterIP"], "<none>"),
            external_ips(o),
            ports(spec),
            age,
            match_labels(&spec["selector"]),
        ],
    };
    cells.into_iter().map(Value::String).collect()
}

fn external_ips(service: &Value) -> String {
    let ips: Vec<String> = service["spec"]["externalIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(
            service["status"]["loadBalancer"]["ingress"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|i| {
                    if i["ip"].is_string() {
                        &i["ip"]
                    } else {
                        &i["hostname"]
                    }
                }),
        )
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    if ips.is_empty() {
        "<none>".into()
    } else {
        ips.join(",")
    }
}

/// `80/TCP,53:30053/UDP`.
fn ports(spec: &Value) -> String {
    let ports: Vec<String> = spec["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let proto = text(&p["protocol"], "TCP");
            match p["nodePort"].as_i64() {
                Some(n) => format!("{}:{n}/{proto}", p["port"]),
                None => format!("{}/{proto}", p["port"]),
            }
        })
        .collect();
    if ports.is_empty() {
        "<none>".into()
    } else {
        ports.join(",")
    }
}

/// `k=v,k2=v2` (sorted), `<none>` when empty.
fn match_labels(labels: &Value) -> String {
    let pairs: Vec<String> = labels
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    if pairs.is_empty() {
        "<none>".into()
    } else {
        pairs.join(",")
    }
}

/// A LabelSelector as kubectl writes one: `app=web,tier in (a,b),!x`.
fn label_selector(selector: &Value) -> String {
    let mut parts: Vec<String> = match match_labels(&selector["matchLabels"]).as_str() {
        "<none>" => Vec::new(),
        s => vec![s.to_string()],
    };
    for e in selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let key = text(&e["key"], "");
        let values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        parts.push(match e["operator"].as_str().unwrap_or_default() {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key,
            "DoesNotExist" => format!("!{key}"),
            other => format!("{key} {other} ({})", values.join(",")),
        });
    }
    if parts.is_empty() {
        "<none>".into()
    } else {
        parts.join(",")
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Time since `created`, as kubectl prints ages (`45s`, `3m12s`, `5h`).
fn age(created: &Value, now: i64) -> String {
    let Some(t) = created
        .as_str()
        .and_then(|t| k8s_openapi::chrono::DateTime::parse_from_rfc3339(t).ok())
    else {
        return "<unknown>".into();
    };
    human_duration(now - t.timestamp())
}

/// apimachinery's `duration.HumanDuration`.
fn human_duration(seconds: i64) -> String {
    let (m, h, d, y) = (
        seconds / 60,
        seconds / 3600,
        seconds / 86400,
        seconds / (86400 * 365),
    );
    match seconds {
        s if s < -1 => "<invalid>".into(),
        s if s < 0 => "0s".into(),
        s if s < 120 => format!("{s}s"),
        _ if m < 10 => match seconds % 60 {
            0 => format!("{m}m"),
            s => format!("{m}m{s}s"),
        },
        _ if m < 180 => format!("{m}m"),
        _ if h < 8 => match m % 60 {
            0 => format!("{h}h"),
            mm => format!("{h}h{mm}m"),
        },
        _ if h < 48 => format!("{h}h"),
        _ if h < 192 => match h % 24 {
            0 => format!("{d}d"),
            hh => format!("{d}d{hh}h"),
        },
        _ if d < 730 => format!("{d}d"),
        _ if y < 8 => match d % 365 {
            0 => format!("{y}y"),
            dd => format!("{y}y{dd}d"),
        },
        _ => format!("{y}y"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_asked_for_in_the_accept_header() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(wanted(kubectl, None), Some(Include::Metadata));
        assert_eq!(wanted(kubectl, Some("Object")), Some(Include::Object));
        assert_eq!(wanted("application/json, */*", None), None);
    }

    #[test]
    fn rows_print_as_kubectl_prints_them() {
        let policy = json!({"metadata": {"name": "p", "creationTimestamp": "2025-01-01T00:00:00Z"},
            "spec": {"podSelector": {"matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]},
                                     {"key": "x", "operator": "DoesNotExist"}]}}});
        let t0 = 1_735_689_600; // 2025-01-01T00:00:00Z
        assert_eq!(
            cells(Kind::NetworkPolicy, &policy, t0 + 200),
            [
                json!("p"),
                json!("app=web,tier in (a,b),!x"),
                json!("3m20s")
            ]
        );
        let svc = json!({"metadata": {"name": "s"}, "spec": {"clusterIP": "10.96.0.1",
            "ports": [{"port": 80}, {"port": 53, "protocol": "UDP", "nodePort": 30053}]}});
        let c = cells(Kind::Service, &svc, t0);
        assert_eq!(
            c[2..5],
            [
                json!("10.96.0.1"),
                json!("<none>"),
                json!("80/TCP,53:30053/UDP")
            ]
        );
        assert_eq!(c[5], "<unknown>");
        let t = table(
            Kind::Pod,
            &[
                json!({"metadata": {"name": "a"}, "spec": {"nodeName": "n1"},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}]}}),
            ],
            json!({}),
            Include::Metadata,
        );
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["a", "0/0", "Running", "0", "<unknown>", "10.0.0.1", "n1"])
        );
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["columnDefinitions"].as_array().unwrap().len(), 7);
    }

    #[test]
    fn ages() {
        for (s, want) in [
            (5, "5s"),
            (119, "119s"),
            (125, "2m5s"),
            (600, "10m"),
            (3 * 3600 + 60, "3h1m"),
            (30 * 3600, "30h"),
            (50 * 3600, "2d2h"),
            (10 * 86400, "10d"),
            (3 * 365 * 86400, "3y"),
            (3 * 365 * 86400 + 86400, "3y1d"),
        ] {
            assert_eq!(human_duration(s), want, "{s}");
        }
    }
}
