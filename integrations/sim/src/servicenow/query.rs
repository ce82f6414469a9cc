//! ServiceNow encoded queries (`sysparm_query`): the subset the simulator
//! understands, parsed into conditions and an ordering, and applied to records.
//!
//! Grammar handled: terms separated by `^` (AND); `^^` is a literal caret;
//! `field=value`, `field!=value`, `fieldLIKEvalue`, `fieldNOT LIKEvalue`,
//! `fieldSTARTSWITHvalue`, `fieldENDSWITHvalue`, `fieldISEMPTY`,
//! `fieldISNOTEMPTY`, `ORDERBYfield`, `ORDERBYDESCfield`, and the `EQ` end
//! marker the ServiceNow UI appends. Field names are lowercase
//! (`[a-z0-9_]`), as ServiceNow's are, which is what separates a field from an
//! operator in `short_descriptionLIKEdisk`.
//!
//! Anything else (`^OR`, `^NQ`, dot-walking, `<`/`>`, `IN`, `RLQUERY`...) is
//! refused with an error instead of being ignored. Real ServiceNow silently
//! drops conditions it cannot use (and may then return every row); the
//! simulator refuses so that client bugs show up in tests.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use thiserror::Error;

/// One comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Like,
    NotLike,
    StartsWith,
    EndsWith,
    IsEmpty,
    IsNotEmpty,
}

/// `field <op> value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub field: String,
    pub op: Op,
    pub value: String,
}

/// One `ORDERBY`/`ORDERBYDESC` term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderBy {
    pub field: String,
    pub descending: bool,
}

/// A parsed encoded query: all conditions must hold (AND), then rows are
/// ordered by each `ORDERBY` term in turn.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncodedQuery {
    pub conditions: Vec<Condition>,
    pub order: Vec<OrderBy>,
}

/// Why an encoded query was refused.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("unsupported encoded query term {term:?}: {reason}")]
pub struct QueryError {
    pub term: String,
    pub reason: &'static str,
}

/// Operators in the order they must be tried (longest first where one is a
/// prefix of another).
const OPERATORS: &[(&str, Op)] = &[
    ("ISNOTEMPTY", Op::IsNotEmpty),
    ("ISEMPTY", Op::IsEmpty),
    ("NOT LIKE", Op::NotLike),
    ("STARTSWITH", Op::StartsWith),
    ("ENDSWITH", Op::EndsWith),
    ("LIKE", Op::Like),
    ("!=", Op::Ne),
    ("=", Op::Eq),
];

impl EncodedQuery {
    /// Parses a `sysparm_query` value. The empty query matches everything.
    pub fn parse(query: &str) -> Result<Self, QueryError> {
        let mut parsed = EncodedQuery::default();
        for term in split_terms(query) {
            if term.is_empty() || term == "EQ" {
                continue;
            }
            if let Some(field) = term.strip_prefix("ORDERBYDESC") {
                parsed.order.push(OrderBy {
                    field: order_field(&term, field)?,
                    descending: true,
                });
            } else if let Some(field) = term.strip_prefix("ORDERBY") {
                parsed.order.push(OrderBy {
                    field: order_field(&term, field)?,
                    descending: false,
                });
            } else {
                parsed.conditions.push(parse_condition(&term)?);
            }
        }
        Ok(parsed)
    }

    /// Whether a record satisfies every condition. A field the record does
    /// not have reads as the empty string.
    pub fn matches(&self, record: &BTreeMap<String, String>) -> bool {
        self.conditions.iter().all(|c| {
            let actual = record.get(&c.field).map(String::as_str).unwrap_or("");
            c.matches(actual)
        })
    }

    /// Orders rows by the `ORDERBY` terms; a stable sort, so rows that tie
    /// keep their insertion order.
    pub fn sort(&self, rows: &mut [&BTreeMap<String, String>]) {
        if self.order.is_empty() {
            return;
        }
        rows.sort_by(|a, b| {
            for key in &self.order {
                let x = a.get(&key.field).map(String::as_str).unwrap_or("");
                let y = b.get(&key.field).map(String::as_str).unwrap_or("");
                let ord = if key.descending { y.cmp(x) } else { x.cmp(y) };
                if ord != Ordering::Equal {
                    return ord;
                }
            }
            Ordering::Equal
        });
    }
}

impl Condition {
    fn matches(&self, actual: &str) -> bool {
        let lower = || (actual.to_lowercase(), self.value.to_lowercase());
        match self.op {
            Op::Eq => actual == self.value,
            Op::Ne => actual != self.value,
            Op::Like => {
                let (a, v) = lower();
                a.contains(&v)
            }
            Op::NotLike => {
                let (a, v) = lower();
                !a.contains(&v)
            }
            Op::StartsWith => {
                let (a, v) = lower();
                a.starts_with(&v)
            }
            Op::EndsWith => {
                let (a, v) = lower();
                a.ends_with(&v)
            }
            Op::IsEmpty => actual.is_empty(),
            Op::IsNotEmpty => !actual.is_empty(),
        }
    }
}

/// Splits on `^`, reading `^^` as a literal caret.
fn split_terms(query: &str) -> Vec<String> {
    let mut terms = Vec::new();
    let mut current = String::new();
    let mut chars = query.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '^' {
            if chars.peek() == Some(&'^') {
                chars.next();
                current.push('^');
            } else {
                terms.push(std::mem::take(&mut current));
            }
        } else {
            current.push(c);
        }
    }
    terms.push(current);
    terms
}

fn is_field_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'
}

fn order_field(term: &str, field: &str) -> Result<String, QueryError> {
    if field.is_empty() || !field.chars().all(is_field_char) {
        return Err(QueryError {
            term: term.to_owned(),
            reason: "ORDERBY needs a plain field name",
        });
    }
    Ok(field.to_owned())
}

fn parse_condition(term: &str) -> Result<Condition, QueryError> {
    let err = |reason| QueryError {
        term: term.to_owned(),
        reason,
    };
    if term.starts_with("OR") {
        return Err(err("OR conditions are not simulated"));
    }
    if term.starts_with("NQ") {
        return Err(err("NQ (new query) is not simulated"));
    }
    let split = term.find(|c: char| !is_field_char(c)).unwrap_or(term.len());
    let (field, rest) = term.split_at(split);
    if field.is_empty() {
        return Err(err("a condition must start with a lowercase field name"));
    }
    if rest.starts_with('.') {
        return Err(err("dot-walking is not simulated"));
    }
    for (token, op) in OPERATORS {
        if let Some(value) = rest.strip_prefix(token) {
            if matches!(op, Op::IsEmpty | Op::IsNotEmpty) && !value.is_empty() {
                return Err(err("ISEMPTY and ISNOTEMPTY take no value"));
            }
            return Ok(Condition {
                field: field.to_owned(),
                op: *op,
                value: value.to_owned(),
            });
        }
    }
    Err(err(
        "operator not simulated (supported: =, !=, LIKE, NOT LIKE, STARTSWITH, ENDSWITH, ISEMPTY, ISNOTEMPTY)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn cond(field: &str, op: Op, value: &str) -> Condition {
        Condition {
            field: field.into(),
            op,
            value: value.into(),
        }
    }

    #[test]
    fn the_client_lookup_query_parses_into_two_equalities() {
        let q = EncodedQuery::parse("correlation_id=inc-42^active=true").unwrap();
        assert_eq!(
            q.conditions,
            vec![
                cond("correlation_id", Op::Eq, "inc-42"),
                cond("active", Op::Eq, "true")
            ]
        );
        assert!(q.order.is_empty());
        assert!(q.matches(&record(&[("correlation_id", "inc-42"), ("active", "true")])));
        assert!(!q.matches(&record(&[
            ("correlation_id", "inc-42"),
            ("active", "false")
        ])));
        assert!(!q.matches(&record(&[("correlation_id", "inc-4"), ("active", "true")])));
    }

    #[test]
    fn every_operator_is_recognised_after_a_lowercase_field() {
        let q = EncodedQuery::parse(
            "a!=1^short_descriptionLIKEdisk^bNOT LIKEx^cSTARTSWITHab^dENDSWITHyz^eISEMPTY^fISNOTEMPTY^EQ",
        )
        .unwrap();
        assert_eq!(
            q.conditions,
            vec![
                cond("a", Op::Ne, "1"),
                cond("short_description", Op::Like, "disk"),
                cond("b", Op::NotLike, "x"),
                cond("c", Op::StartsWith, "ab"),
                cond("d", Op::EndsWith, "yz"),
                cond("e", Op::IsEmpty, ""),
                cond("f", Op::IsNotEmpty, ""),
            ]
        );
        let hit = record(&[
            ("a", "2"),
            ("short_description", "Full DISK on db1"),
            ("b", "y"),
            ("c", "ABC"),
            ("d", "xyz"),
            ("f", "set"),
        ]);
        assert!(q.matches(&hit));
        let mut miss = hit.clone();
        miss.insert("e".into(), "not empty".into());
        assert!(!q.matches(&miss));
    }

    #[test]
    fn a_double_caret_is_a_literal_caret_not_a_separator() {
        let q = EncodedQuery::parse("correlation_id=a^^b^active=true").unwrap();
        assert_eq!(q.conditions[0], cond("correlation_id", Op::Eq, "a^b"));
        assert_eq!(q.conditions.len(), 2);
        // An injected condition stays inside the value.
        let q = EncodedQuery::parse("correlation_id=x^^ORactive=false").unwrap();
        assert_eq!(
            q.conditions,
            vec![cond("correlation_id", Op::Eq, "x^ORactive=false")]
        );
    }

    #[test]
    fn values_may_contain_equals_signs_and_the_empty_query_matches_all() {
        let q = EncodedQuery::parse("description=a=b").unwrap();
        assert_eq!(q.conditions, vec![cond("description", Op::Eq, "a=b")]);
        let all = EncodedQuery::parse("").unwrap();
        assert!(all.matches(&record(&[("x", "y")])));
    }

    #[test]
    fn orderby_terms_sort_stably_ascending_and_descending() {
        let q = EncodedQuery::parse("ORDERBYDESCsys_created_on^ORDERBYnumber").unwrap();
        assert_eq!(
            q.order,
            vec![
                OrderBy {
                    field: "sys_created_on".into(),
                    descending: true
                },
                OrderBy {
                    field: "number".into(),
                    descending: false
                },
            ]
        );
        let r1 = record(&[
            ("sys_created_on", "2026-01-01 00:00:00"),
            ("number", "INC2"),
        ]);
        let r2 = record(&[
            ("sys_created_on", "2026-01-02 00:00:00"),
            ("number", "INC3"),
        ]);
        let r3 = record(&[
            ("sys_created_on", "2026-01-01 00:00:00"),
            ("number", "INC1"),
        ]);
        let mut rows = vec![&r1, &r2, &r3];
        q.sort(&mut rows);
        let numbers: Vec<_> = rows.iter().map(|r| r["number"].as_str()).collect();
        assert_eq!(numbers, ["INC3", "INC1", "INC2"]);
    }

    #[test]
    fn unsupported_terms_are_refused_with_the_reason() {
        for (q, reason) in [
            ("a=1^ORb=2", "OR conditions"),
            ("a=1^NQb=2", "NQ"),
            ("caller_id.name=bob", "dot-walking"),
            ("priority<3", "operator not simulated"),
            ("=x", "lowercase field"),
            ("Active=true", "lowercase field"),
            ("eISEMPTYx", "take no value"),
            ("ORDERBY", "plain field"),
        ] {
            let err = EncodedQuery::parse(q).unwrap_err();
            assert!(err.reason.contains(reason), "{q}: {err}");
        }
    }
}
