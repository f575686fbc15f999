//! `metav1.LabelSelector` into `Selector`, with the checks the API server
//! makes.

use super::{FieldError, FieldResult};
use crate::model::{Requirement, Selector, SelectorOp};
use crate::names;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// `field` is the path of the selector itself, e.g. `spec.podSelector`.
pub fn convert(sel: &LabelSelector, field: &str) -> FieldResult<Selector> {
    let match_labels = sel.match_labels.clone().unwrap_or_default();
    for (k, v) in &match_labels {
        let f = format!("{field}.matchLabels[{k:?}]");
        names::check_label_key(k).map_err(|m| FieldError::new(&f, m))?;
        names::check_label_value(v).map_err(|m| FieldError::new(&f, m))?;
    }

    let mut match_expressions = Vec::new();
    for (i, r) in sel.match_expressions.iter().flatten().enumerate() {
        let f = |sub: &str| format!("{field}.matchExpressions[{i}]{sub}");
        names::check_label_key(&r.key).map_err(|m| FieldError::new(f(".key"), m))?;
        let op = match r.operator.as_str() {
            "In" => SelectorOp::In,
            "NotIn" => SelectorOp::NotIn,
            "Exists" => SelectorOp::Exists,
            "DoesNotExist" => SelectorOp::DoesNotExist,
            other => {
                return Err(FieldError::new(
                    f(".operator"),
                    format!(
                        "unknown operator {other:?}: must be In, NotIn, Exists or DoesNotExist"
                    ),
                ))
            }
        };
        let values = r.values.clone().unwrap_or_default();
        match op {
            SelectorOp::In | SelectorOp::NotIn if values.is_empty() => {
                return Err(FieldError::new(
                    f(".values"),
                    format!("must be non-empty for operator {}", r.operator),
                ))
            }
            SelectorOp::Exists | SelectorOp::DoesNotExist if !values.is_empty() => {
                return Err(FieldError::new(
                    f(".values"),
                    format!("must be empty for operator {}", r.operator),
                ))
            }
            _ => {}
        }
        for (j, v) in values.iter().enumerate() {
            names::check_label_value(v)
                .map_err(|m| FieldError::new(f(&format!(".values[{j}]")), m))?;
        }
        match_expressions.push(Requirement {
            key: r.key.clone(),
            op,
            values,
        });
    }

    Ok(Selector {
        match_labels: match_labels.into(),
        match_expressions,
    })
}
