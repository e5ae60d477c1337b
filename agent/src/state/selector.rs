//! Label selectors: validated once at the boundary, then matched cheaply.
//!
//! `matchLabels` and `matchExpressions` are ANDed. Every `matchLabels` entry
//! `k: v` becomes the requirement `k In [v]`, so matching only knows one form.
//! An empty selector matches everything; `NotIn` and `DoesNotExist` match when
//! the key is absent.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Labels of a pod or namespace.
pub type Labels = BTreeMap<String, String>;

/// Why a `LabelSelector` is invalid.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum SelectorError {
    /// The operator is not one of In, NotIn, Exists, DoesNotExist.
    #[error(
        "matchExpressions[{index}]: unknown operator {operator:?} (expected In, NotIn, Exists or DoesNotExist)"
    )]
    UnknownOperator {
        /// Index in `matchExpressions`.
        index: usize,
        /// The operator as written.
        operator: String,
    },
    /// In/NotIn without values.
    #[error("matchExpressions[{index}]: operator {operator} needs at least one value")]
    MissingValues {
        /// Index in `matchExpressions`.
        index: usize,
        /// In or NotIn.
        operator: &'static str,
    },
    /// Exists/DoesNotExist with values.
    #[error("matchExpressions[{index}]: operator {operator} must not have values")]
    UnexpectedValues {
        /// Index in `matchExpressions`.
        index: usize,
        /// Exists or DoesNotExist.
        operator: &'static str,
    },
}

impl SelectorError {
    /// The offending field, relative to the selector.
    pub fn field(&self) -> String {
        match self {
            SelectorError::UnknownOperator { index, .. } => {
                format!("matchExpressions[{index}].operator")
            }
            SelectorError::MissingValues { index, .. }
            | SelectorError::UnexpectedValues { index, .. } => {
                format!("matchExpressions[{index}].values")
            }
        }
    }
}

/// One requirement on a label.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Requirement {
    /// The label is present with one of the values.
    In(String, BTreeSet<String>),
    /// The label is absent, or present with none of the values.
    NotIn(String, BTreeSet<String>),
    /// The label is present.
    Exists(String),
    /// The label is absent.
    DoesNotExist(String),
}

impl Requirement {
    /// Whether `labels` satisfy the requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        match self {
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        }
    }
}

/// A validated label selector: the AND of its requirements (sorted, deduplicated).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

impl Selector {
    /// The selector that matches everything (`{}`).
    pub fn everything() -> Self {
        Selector::default()
    }

    /// Builds a selector from requirements (order does not matter).
    pub fn from_requirements(requirements: impl IntoIterator<Item = Requirement>) -> Self {
        let set: BTreeSet<Requirement> = requirements.into_iter().collect();
        Selector {
            requirements: set.into_iter().collect(),
        }
    }

    /// Validates a Kubernetes `LabelSelector`.
    pub fn parse(selector: &LabelSelector) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        for (k, v) in selector.match_labels.iter().flatten() {
            reqs.push(Requirement::In(k.clone(), BTreeSet::from([v.clone()])));
        }
        for (index, expr) in selector.match_expressions.iter().flatten().enumerate() {
            let values: BTreeSet<String> = expr.values.iter().flatten().cloned().collect();
            let key = expr.key.clone();
            let req = match expr.operator.as_str() {
                "In" | "NotIn" => {
                    let operator = if expr.operator == "In" { "In" } else { "NotIn" };
                    if values.is_empty() {
                        return Err(SelectorError::MissingValues { index, operator });
                    }
                    if operator == "In" {
                        Requirement::In(key, values)
                    } else {
                        Requirement::NotIn(key, values)
                    }
                }
                "Exists" | "DoesNotExist" => {
                    let operator = if expr.operator == "Exists" {
                        "Exists"
                    } else {
                        "DoesNotExist"
                    };
                    if !values.is_empty() {
                        return Err(SelectorError::UnexpectedValues { index, operator });
                    }
                    if operator == "Exists" {
                        Requirement::Exists(key)
                    } else {
                        Requirement::DoesNotExist(key)
                    }
                }
                other => {
                    return Err(SelectorError::UnknownOperator {
                        index,
                        operator: other.to_string(),
                    });
                }
            };
            reqs.push(req);
        }
        Ok(Selector::from_requirements(reqs))
    }

    /// The requirements, sorted.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether this is the empty selector (matches everything).
    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

impl fmt::Display for Selector {
    /// Kubernetes' selector syntax, e.g. `app=web,tier in (a,b),!legacy`; `{}` when empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.requirements.is_empty() {
            return f.write_str("{}");
        }
        let join = |vs: &BTreeSet<String>| vs.iter().cloned().collect::<Vec<_>>().join(",");
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match r {
                Requirement::In(k, vs) if vs.len() == 1 => write!(f, "{k}={}", join(vs))?,
                Requirement::In(k, vs) => write!(f, "{k} in ({})", join(vs))?,
                Requirement::NotIn(k, vs) => write!(f, "{k} notin ({})", join(vs))?,
                Requirement::Exists(k) => write!(f, "{k}")?,
                Requirement::DoesNotExist(k) => write!(f, "!{k}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    fn labels(kv: &[(&str, &str)]) -> Labels {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: Option<&[&str]>) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: values.map(|vs| vs.iter().map(|v| v.to_string()).collect()),
        }
    }

    fn selector(ml: &[(&str, &str)], exprs: Vec<LabelSelectorRequirement>) -> Selector {
        let ls = LabelSelector {
            match_labels: Some(labels(ml)),
            match_expressions: Some(exprs),
        };
        Selector::parse(&ls).expect("valid selector")
    }

    #[test]
    fn empty_selector_matches_everything() {
        let s = Selector::parse(&LabelSelector::default()).expect("valid");
        assert!(s.matches(&labels(&[])));
        assert!(s.matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn match_labels_and_expressions_are_anded() {
        let s = selector(
            &[("app", "web")],
            vec![expr("tier", "In", Some(&["a", "b"]))],
        );
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "b")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "c")])));
        assert!(!s.matches(&labels(&[("app", "db"), ("tier", "a")])));
    }

    #[test]
    fn not_in_and_does_not_exist_match_when_the_key_is_absent() {
        let s = selector(
            &[],
            vec![
                expr("x", "NotIn", Some(&["1"])),
                expr("y", "DoesNotExist", None),
            ],
        );
        assert!(s.matches(&labels(&[])));
        assert!(s.matches(&labels(&[("x", "2")])));
        assert!(!s.matches(&labels(&[("x", "1")])));
        assert!(!s.matches(&labels(&[("y", "")])));
    }

    #[test]
    fn exists_needs_the_key_with_any_value() {
        let s = selector(&[], vec![expr("x", "Exists", None)]);
        assert!(s.matches(&labels(&[("x", "")])));
        assert!(!s.matches(&labels(&[("y", "1")])));
    }

    #[test]
    fn invalid_operators_and_value_counts_are_rejected() {
        let bad = |e| LabelSelector {
            match_expressions: Some(vec![e]),
            match_labels: None,
        };
        assert!(matches!(
            Selector::parse(&bad(expr("k", "Equals", Some(&["1"])))),
            Err(SelectorError::UnknownOperator { .. })
        ));
        assert!(matches!(
            Selector::parse(&bad(expr("k", "In", Some(&[])))),
            Err(SelectorError::MissingValues { .. })
        ));
        assert!(matches!(
            Selector::parse(&bad(expr("k", "NotIn", None))),
            Err(SelectorError::MissingValues { .. })
        ));
        assert!(matches!(
            Selector::parse(&bad(expr("k", "Exists", Some(&["1"])))),
            Err(SelectorError::UnexpectedValues { .. })
        ));
        assert!(matches!(
            Selector::parse(&bad(expr("k", "DoesNotExist", Some(&["1"])))),
            Err(SelectorError::UnexpectedValues { .. })
        ));
    }

    #[test]
    fn equal_selectors_written_differently_compare_equal() {
        let a = selector(&[("app", "web")], vec![]);
        let b = selector(&[], vec![expr("app", "In", Some(&["web"]))]);
        assert_eq!(a, b);
    }
}
