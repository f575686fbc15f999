//! `labelSelector` and `fieldSelector` of lists and watches, in the API
//! server's text form (`app=web,tier!=db,env in (a,b),!legacy` and
//! `metadata.name=x,status.phase!=Failed`).

use crate::state::Kind;
use serde_json::Value;

#[derive(Clone, Debug, PartialEq)]
enum Op {
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
}

/// One requirement on a label (or a field, with `In`/`NotIn` of one value).
#[derive(Clone, Debug, PartialEq)]
struct Requirement {
    key: String,
    op: Op,
}

impl Requirement {
    fn holds(&self, value: Option<&str>) -> bool {
        match (&self.op, value) {
            (Op::Exists, v) => v.is_some(),
            (Op::DoesNotExist, v) => v.is_none(),
            (Op::In(set), Some(v)) => set.iter().any(|s| s == v),
            (Op::In(_), None) => false,
            (Op::NotIn(set), v) => v.is_none_or(|v| !set.iter().any(|s| s == v)),
        }
    }
}

/// Both selectors of a request; empty ones select everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Selector {
    labels: Vec<Requirement>,
    fields: Vec<Requirement>,
}

/// The fields the API server lets clients select on, per kind (every
/// kind has `metadata.name` and `metadata.namespace`).
fn selectable(kind: Kind, field: &str) -> bool {
    matches!(field, "metadata.name" | "metadata.namespace")
        || (kind == Kind::Pod
            && matches!(
                field,
                "spec.nodeName" | "spec.restartPolicy" | "status.phase" | "status.podIP"
            ))
        || (kind == Kind::Namespace && field == "status.phase")
}

impl Selector {
    /// Parses the two query parameters; errors name the parameter.
    pub fn parse(kind: Kind, labels: &str, fields: &str) -> Result<Selector, String> {
        let labels = parse_labels(labels).map_err(|e| format!("labelSelector: {e}"))?;
        let fields = parse_fields(fields).map_err(|e| format!("fieldSelector: {e}"))?;
        if let Some(r) = fields.iter().find(|r| !selectable(kind, &r.key)) {
            return Err(format!(
                "fieldSelector: field label not supported for {}: {}",
                kind.name(),
                r.key
            ));
        }
        Ok(Selector { labels, fields })
    }

    /// Whether it selects every object.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    pub fn selects(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        self.labels
            .iter()
            .all(|r| r.holds(labels.get(&r.key).and_then(Value::as_str)))
            && self.fields.iter().all(|r| {
                let v = r.key.split('.').fold(object, |v, k| &v[k]);
                // An absent field compares as the empty string.
                r.holds(Some(v.as_str().unwrap_or_default()))
            })
    }
}

/// Splits at commas outside parentheses.
fn terms(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&text[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

fn parse_labels(text: &str) -> Result<Vec<Requirement>, String> {
    terms(text).into_iter().map(parse_label).collect()
}

fn parse_label(term: &str) -> Result<Requirement, String> {
    let req = |key: &str, op| Requirement {
        key: key.trim().to_string(),
        op,
    };
    if let Some(key) = term.strip_prefix('!') {
        return Ok(req(key, Op::DoesNotExist));
    }
    for (sep, negated) in [(" notin ", true), (" in ", false)] {
        if let Some((key, set)) = term.split_once(sep) {
            let set = set
                .trim()
                .strip_prefix('(')
                .and_then(|s| s.strip_suffix(')'))
                .ok_or_else(|| format!("{term:?}: expected a parenthesised set"))?;
            let values = set.split(',').map(|v| v.trim().to_string()).collect();
            return Ok(req(
                key,
                if negated {
                    Op::NotIn(values)
                } else {
                    Op::In(values)
                },
            ));
        }
    }
    if let Some(r) = parse_equality(term) {
        return r;
    }
    if term.contains(['<', '>', '(', ' ']) {
        return Err(format!("{term:?}: unsupported requirement"));
    }
    Ok(req(term, Op::Exists))
}

/// `k=v`, `k==v`, `k!=v`; None when the term has no such operator.
fn parse_equality(term: &str) -> Option<Result<Requirement, String>> {
    let (key, value, negated) = if let Some((k, v)) = term.split_once("!=") {
        (k, v, true)
    } else if let Some((k, v)) = term.split_once("==") {
        (k, v, false)
    } else {
        let (k, v) = term.split_once('=')?;
        (k, v, false)
    };
    let key = key.trim();
    if key.is_empty() {
        return Some(Err(format!("{term:?}: empty key")));
    }
    let values = vec![value.trim().to_string()];
    let op = if negated {
        Op::NotIn(values)
    } else {
        Op::In(values)
    };
    Some(Ok(Requirement {
        key: key.to_string(),
        op,
    }))
}

fn parse_fields(text: &str) -> Result<Vec<Requirement>, String> {
    terms(text)
        .into_iter()
        .map(|t| parse_equality(t).unwrap_or_else(|| Err(format!("{t:?}: expected key=value"))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(labels: Value) -> Value {
        json!({"metadata": {"name": "a", "namespace": "x", "labels": labels},
               "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}})
    }

    #[test]
    fn label_requirements() {
        let p = pod(json!({"app": "web", "tier": "front"}));
        let sel = |l: &str| Selector::parse(Kind::Pod, l, "").unwrap().selects(&p);
        assert!(sel(""));
        assert!(sel("app=web"));
        assert!(sel("app==web,tier"));
        assert!(!sel("app!=web"));
        assert!(sel("app in (db, web),!legacy"));
        assert!(!sel("app notin (web)"));
        assert!(sel("legacy notin (x)"));
        assert!(!sel("legacy"));
    }

    #[test]
    fn field_requirements() {
        let p = pod(json!({}));
        let sel = |f: &str| Selector::parse(Kind::Pod, "", f).unwrap().selects(&p);
        assert!(sel("metadata.name=a,metadata.namespace=x"));
        assert!(!sel("metadata.name!=a"));
        assert!(sel("spec.nodeName=n1,status.phase!=Failed"));
    }

    #[test]
    fn bad_selectors_name_their_parameter() {
        let e = Selector::parse(Kind::NetworkPolicy, "", "spec.podSelector=x").unwrap_err();
        assert!(
            e.starts_with("fieldSelector: field label not supported"),
            "{e}"
        );
        let e = Selector::parse(Kind::Pod, "app in web", "").unwrap_err();
        assert!(e.starts_with("labelSelector:"), "{e}");
        let e = Selector::parse(Kind::Pod, "", "metadata.name").unwrap_err();
        assert!(e.starts_with("fieldSelector:"), "{e}");
    }
}
