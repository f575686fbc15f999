//! Label selector matching, as `metav1.LabelSelector` defines it: every
//! `matchLabels` pair and every `matchExpressions` requirement must hold
//! (AND); the empty selector matches everything.

use crate::model::{Labels, Requirement, Selector, SelectorOp};

impl Requirement {
    pub fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match self.op {
            SelectorOp::In => value.is_some_and(|v| self.values.contains(v)),
            // NotIn holds for objects without the key at all, as upstream.
            SelectorOp::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            SelectorOp::Exists => value.is_some(),
            SelectorOp::DoesNotExist => value.is_none(),
        }
    }
}

impl Selector {
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }

    /// True for `{}`: selects every object.
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn req(key: &str, op: SelectorOp, values: &[&str]) -> Requirement {
        Requirement {
            key: key.into(),
            op,
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    fn exprs(rs: Vec<Requirement>) -> Selector {
        Selector {
            match_labels: Labels::new(),
            match_expressions: rs,
        }
    }

    #[test]
    fn empty_selector_matches_everything() {
        let s = Selector::default();
        assert!(s.is_empty());
        assert!(s.matches(&labels(&[])));
        assert!(s.matches(&labels(&[("pod", "a")])));
    }

    #[test]
    fn match_labels_need_every_pair() {
        let s = Selector {
            match_labels: labels(&[("pod", "a"), ("tier", "web")]),
            match_expressions: vec![],
        };
        assert!(s.matches(&labels(&[("pod", "a"), ("tier", "web"), ("x", "y")])));
        assert!(!s.matches(&labels(&[("pod", "a")])));
        assert!(!s.matches(&labels(&[("pod", "a"), ("tier", "db")])));
    }

    #[test]
    fn operators() {
        let a = labels(&[("pod", "a")]);
        let b = labels(&[("pod", "b")]);
        let none = labels(&[("other", "x")]);

        let r#in = exprs(vec![req("pod", SelectorOp::In, &["a", "c"])]);
        assert!(r#in.matches(&a));
        assert!(!r#in.matches(&b));
        assert!(!r#in.matches(&none));

        let not_in = exprs(vec![req("pod", SelectorOp::NotIn, &["a"])]);
        assert!(!not_in.matches(&a));
        assert!(not_in.matches(&b));
        assert!(
            not_in.matches(&none),
            "NotIn matches objects without the key"
        );

        let exists = exprs(vec![req("pod", SelectorOp::Exists, &[])]);
        assert!(exists.matches(&a));
        assert!(!exists.matches(&none));

        let absent = exprs(vec![req("pod", SelectorOp::DoesNotExist, &[])]);
        assert!(!absent.matches(&a));
        assert!(absent.matches(&none));
    }

    #[test]
    fn labels_and_expressions_are_anded() {
        let s = Selector {
            match_labels: labels(&[("tier", "web")]),
            match_expressions: vec![req("pod", SelectorOp::NotIn, &["a"])],
        };
        assert!(s.matches(&labels(&[("tier", "web"), ("pod", "b")])));
        assert!(!s.matches(&labels(&[("tier", "web"), ("pod", "a")])));
        assert!(!s.matches(&labels(&[("pod", "b")])));
    }
}
