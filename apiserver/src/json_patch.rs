//! JSON patch (RFC 6902, `application/json-patch+json`, what `kubectl
//! patch --type json` sends): a list of operations on JSON pointers
//! (RFC 6901), applied in order, all or nothing.

use crate::reply::ApiError;
use serde_json::Value;

/// Applies `ops` to `target`; on any failure `target` is left unchanged
/// and the error (422) names the operation and its path.
pub fn apply(target: &mut Value, ops: &Value) -> Result<(), ApiError> {
    let ops = ops
        .as_array()
        .ok_or_else(|| ApiError::bad_request("a JSON patch must be a list of operations"))?;
    let mut doc = target.clone();
    for (i, op) in ops.iter().enumerate() {
        step(&mut doc, op).map_err(|why| {
            ApiError::invalid(format!(
                "the JSON patch's operation {i} ({} {}): {why}",
                op["op"].as_str().unwrap_or("?"),
                op["path"].as_str().unwrap_or("?")
            ))
        })?;
    }
    *target = doc;
    Ok(())
}

fn step(doc: &mut Value, op: &Value) -> Result<(), String> {
    let path = op["path"].as_str().ok_or("no path")?;
    let value = || op.get("value").cloned().ok_or("no value");
    let from = || op["from"].as_str().ok_or("no from");
    match op["op"].as_str().ok_or("no op")? {
        "add" => add(doc, path, value()?),
        "remove" => remove(doc, path).map(drop),
        "replace" => {
            let v = value()?;
            *get_mut(doc, path)? = v;
            Ok(())
        }
        "move" => {
            let from = from()?;
            if path.starts_with(&format!("{from}/")) {
                return Err("cannot move a value into itself".into());
            }
            let v = remove(doc, from)?;
            add(doc, path, v)
        }
        "copy" => {
            let v = get_mut(doc, from()?)?.clone();
            add(doc, path, v)
        }
        "test" => {
            if *get_mut(doc, path)? == value()? {
                Ok(())
            } else {
                Err("test failed: the value differs".into())
            }
        }
        other => Err(format!("unknown op {other:?}")),
    }
}

/// The tokens of a pointer (`/a/b~1c` -> `a`, `b/c`); "" is the root.
fn tokens(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| format!("{path:?} is not a JSON pointer"))?;
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn index(list: &[Value], token: &str, append: bool) -> Result<usize, String> {
    if append && token == "-" {
        return Ok(list.len());
    }
    let i: usize = token
        .parse()
        .map_err(|_| format!("{token:?} is not a list index"))?;
    let limit = if append {
        list.len()
    } else {
        list.len().saturating_sub(1)
    };
    if i > limit || (!append && list.is_empty()) {
        return Err(format!("index {i} is out of range"));
    }
    Ok(i)
}

fn child<'a>(v: &'a mut Value, token: &str) -> Result<&'a mut Value, String> {
    match v {
        Value::Object(m) => m
            .get_mut(token)
            .ok_or_else(|| format!("no field {token:?}")),
        Value::Array(l) => {
            let i = index(l, token, false)?;
            Ok(&mut l[i])
        }
        _ => Err(format!("{token:?}: not inside an object or a list")),
    }
}

fn get_mut<'a>(doc: &'a mut Value, path: &str) -> Result<&'a mut Value, String> {
    tokens(path)?.iter().try_fold(doc, |v, t| child(v, t))
}

/// The parent of `path`'s target and the last token.
fn parent<'a>(doc: &'a mut Value, path: &str) -> Result<(&'a mut Value, String), String> {
    let mut t = tokens(path)?;
    let last = t.pop().ok_or("the root has no parent")?;
    let p = t.iter().try_fold(doc, |v, t| child(v, t))?;
    Ok((p, last))
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (p, last) = parent(doc, path)?;
    match p {
        Value::Object(m) => {
            m.insert(last, value);
            Ok(())
        }
        Value::Array(l) => {
            let i = index(l, &last, true)?;
            l.insert(i, value);
            Ok(())
        }
        _ => Err("the parent is neither an object nor a list".into()),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let (p, last) = parent(doc, path)?;
    match p {
        Value::Object(m) => m.remove(&last).ok_or_else(|| format!("no field {last:?}")),
        Value::Array(l) => {
            let i = index(l, &last, false)?;
            Ok(l.remove(i))
        }
        _ => Err("the parent is neither an object nor a list".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn operations_apply_in_order() {
        let mut doc = json!({"spec": {"policyTypes": ["Ingress"], "a/b": 1}, "metadata": {}});
        let ops = json!([
            {"op": "add", "path": "/spec/policyTypes/-", "value": "Egress"},
            {"op": "test", "path": "/spec/policyTypes/1", "value": "Egress"},
            {"op": "copy", "from": "/spec/policyTypes", "path": "/metadata/copied"},
            {"op": "move", "from": "/spec/a~1b", "path": "/metadata/moved"},
            {"op": "replace", "path": "/spec/policyTypes/0", "value": "X"},
            {"op": "remove", "path": "/metadata/copied/0"},
        ]);
        apply(&mut doc, &ops).unwrap();
        assert_eq!(
            doc,
            json!({"spec": {"policyTypes": ["X", "Egress"]},
                   "metadata": {"copied": ["Egress"], "moved": 1}})
        );
    }

    #[test]
    fn a_failing_operation_changes_nothing() {
        let mut doc = json!({"spec": {"a": 1}});
        for ops in [
            json!([{"op": "remove", "path": "/spec/a"}, {"op": "test", "path": "/spec/b", "value": 1}]),
            json!([{"op": "replace", "path": "/spec/nope", "value": 1}]),
            json!([{"op": "add", "path": "/spec/a/b", "value": 1}]),
            json!([{"op": "frobnicate", "path": "/spec"}]),
            json!([{"op": "move", "from": "/spec", "path": "/spec/a"}]),
        ] {
            let e = apply(&mut doc, &ops).unwrap_err();
            assert_eq!(e.code, 422, "{ops}");
            assert_eq!(doc, json!({"spec": {"a": 1}}));
        }
    }
}
