//! # hookwall-rules: what the bundled plugins match events with
//!
//! One rule language for `router`, `filter` and `cloudevents`, so a rule means the same thing
//! in every bundled plugin. A rule has a `name`, one selector and one test:
//!
//! - selector: `"header": "x-event-type"` (first value, name case-insensitive) or
//!   `"json": "/type"` (a JSON pointer into the body; a body that is not JSON has no fields);
//! - test: `"equals": "..."`, `"prefix": "..."`, `"in": ["a", "b"]` (strings; JSON numbers and
//!   booleans compare by their JSON text, objects and arrays never match) or
//!   `"exists": true|false` (a JSON `null` counts as absent).
//!
//! Plugins that route also need a `sink` per rule ([`SinkField::Required`]); the others refuse
//! one ([`SinkField::Forbidden`]), so a rule copied into the wrong plugin is an error, not a no-op.

use std::{borrow::Cow, cell::OnceCell};

use hookwall_guest::{
    Event,
    serde_json::{self, Value},
};
use serde::Deserialize;

/// Where a rule looks in the event.
#[derive(Debug, Clone, PartialEq)]
pub enum Selector {
    Header(String),
    /// A JSON pointer into the body.
    Json(String),
}

/// What a rule checks about the selected value.
#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    Equals(String),
    Prefix(String),
    Exists(bool),
    In(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub selector: Selector,
    pub test: Test,
    /// The target sink, for plugins that route.
    pub sink: Option<String>,
}

/// Whether the plugin's rules name a sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkField {
    Required,
    Forbidden,
}

/// A selector as written in config: exactly one of `header` or `json`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectorSpec {
    pub header: Option<String>,
    pub json: Option<String>,
}

impl SelectorSpec {
    pub fn validate(self) -> Result<Selector, String> {
        match (self.header, self.json) {
            (Some(header), None) => Ok(Selector::Header(header)),
            (None, Some(pointer)) => {
                check_pointer(&pointer)?;
                Ok(Selector::Json(pointer))
            }
            _ => Err("needs exactly one of `header` or `json`".into()),
        }
    }
}

/// Checks that `pointer` is a JSON pointer (RFC 6901): empty, or starting with `/`.
pub fn check_pointer(pointer: &str) -> Result<(), String> {
    if pointer.is_empty() || pointer.starts_with('/') {
        Ok(())
    } else {
        Err(format!(
            "`{pointer}` is not a JSON pointer; write it like \"/type\" or \"/data/object/id\""
        ))
    }
}

/// A rule as written; [`parse_rules`] checks it has exactly one selector and one test.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    sink: Option<String>,
    header: Option<String>,
    json: Option<String>,
    equals: Option<String>,
    prefix: Option<String>,
    exists: Option<bool>,
    #[serde(rename = "in")]
    one_of: Option<Vec<String>>,
}

/// Parses a JSON array of rules (the `config` import hands TOML arrays over as JSON text).
/// Errors name the rule by index and name.
pub fn parse_rules(text: &str, sink: SinkField) -> Result<Vec<Rule>, String> {
    let raw: Vec<RawRule> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    raw.into_iter()
        .enumerate()
        .map(|(i, rule)| {
            let name = rule.name.clone();
            rule.validate(sink)
                .map_err(|e| format!("rule {i} (`{name}`): {e}"))
        })
        .collect()
}

impl RawRule {
    fn validate(self, sink: SinkField) -> Result<Rule, String> {
        let selector = SelectorSpec {
            header: self.header,
            json: self.json,
        }
        .validate()?;
        let test = match (self.equals, self.prefix, self.exists, self.one_of) {
            (Some(value), None, None, None) => Test::Equals(value),
            (None, Some(prefix), None, None) => Test::Prefix(prefix),
            (None, None, Some(exists), None) => Test::Exists(exists),
            (None, None, None, Some(values)) => Test::In(values),
            _ => return Err("needs exactly one of `equals`, `prefix`, `exists` or `in`".into()),
        };
        match (sink, &self.sink) {
            (SinkField::Required, None) => return Err("missing field `sink`".into()),
            (SinkField::Forbidden, Some(_)) => {
                return Err("`sink` is not used here (this plugin does not route)".into());
            }
            _ => {}
        }
        Ok(Rule {
            name: self.name,
            selector,
            test,
            sink: self.sink,
        })
    }
}

/// What a selector found in the event.
#[derive(Debug)]
pub enum Found<'a> {
    Absent,
    /// A header value, a JSON string, or a JSON number or boolean as its JSON text.
    Scalar(Cow<'a, str>),
    /// A JSON object or array: it exists, but equals no string.
    Structured,
}

impl Found<'_> {
    /// The value as text, if it is a scalar.
    pub fn text(&self) -> Option<&str> {
        match self {
            Found::Scalar(s) => Some(s),
            _ => None,
        }
    }
}

/// An event with its body parsed as JSON at most once, and only if a selector needs it.
pub struct Subject<'e> {
    event: &'e Event,
    body: OnceCell<Option<Value>>,
}

impl<'e> Subject<'e> {
    pub fn new(event: &'e Event) -> Self {
        Subject {
            event,
            body: OnceCell::new(),
        }
    }

    /// The body as JSON, or `None` when it is not JSON.
    pub fn json(&self) -> Option<&Value> {
        self.body
            .get_or_init(|| serde_json::from_slice::<Value>(&self.event.body).ok())
            .as_ref()
    }

    pub fn find(&self, selector: &Selector) -> Found<'_> {
        match selector {
            Selector::Header(name) => self
                .event
                .header(name)
                .map_or(Found::Absent, |v| Found::Scalar(v.into())),
            Selector::Json(pointer) => match self.json().and_then(|b| b.pointer(pointer)) {
                None | Some(Value::Null) => Found::Absent,
                Some(Value::String(s)) => Found::Scalar(s.as_str().into()),
                Some(v @ (Value::Number(_) | Value::Bool(_))) => {
                    Found::Scalar(v.to_string().into())
                }
                Some(Value::Array(_) | Value::Object(_)) => Found::Structured,
            },
        }
    }

    pub fn matches(&self, rule: &Rule) -> bool {
        rule.test.matches(&self.find(&rule.selector))
    }
}

/// The first rule that matches `event`.
pub fn first_match<'r>(rules: &'r [Rule], event: &Event) -> Option<&'r Rule> {
    let subject = Subject::new(event);
    rules.iter().find(|rule| subject.matches(rule))
}

impl Test {
    pub fn matches(&self, found: &Found<'_>) -> bool {
        match (self, found) {
            (Test::Exists(exists), found) => *exists != matches!(found, Found::Absent),
            (Test::Equals(expected), Found::Scalar(value)) => value == expected,
            (Test::Prefix(prefix), Found::Scalar(value)) => value.starts_with(prefix.as_str()),
            (Test::In(values), Found::Scalar(value)) => values.iter().any(|v| v == value),
            _ => false,
        }
    }
}

/// A test event, for the plugins' unit tests.
pub fn test_event(headers: &[(&str, &str)], body: &str) -> Event {
    Event {
        id: "evt".into(),
        source: "src".into(),
        received_at_ms: 0,
        method: "POST".into(),
        path: "/".into(),
        query: String::new(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: body.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = r#"[
        {"name": "orders", "json": "/type", "prefix": "order.", "sink": "orders"},
        {"name": "push", "header": "x-github-event", "equals": "push", "sink": "ci"},
        {"name": "billing", "json": "/kind", "in": ["invoice", "refund"], "sink": "billing"},
        {"name": "numbered", "json": "/n", "equals": "3", "sink": "numbers"},
        {"name": "flagged", "header": "x-flag", "exists": true, "sink": "flags"},
        {"name": "nested", "json": "/meta", "exists": true, "sink": "meta"}
    ]"#;

    fn route(headers: &[(&str, &str)], body: &str) -> Option<String> {
        let rules = parse_rules(RULES, SinkField::Required).unwrap();
        first_match(&rules, &test_event(headers, body)).map(|r| r.name.clone())
    }

    #[test]
    fn first_matching_rule_wins() {
        assert_eq!(
            route(&[], r#"{"type":"order.created"}"#).as_deref(),
            Some("orders")
        );
        assert_eq!(
            route(&[("x-github-event", "push")], r#"{"type":"order.paid"}"#).as_deref(),
            Some("orders")
        );
        assert_eq!(
            route(&[("X-GitHub-Event", "push")], "not json").as_deref(),
            Some("push")
        );
        assert_eq!(
            route(&[], r#"{"kind":"refund"}"#).as_deref(),
            Some("billing")
        );
        assert_eq!(route(&[], r#"{"n":3}"#).as_deref(), Some("numbered"));
        assert_eq!(route(&[("x-flag", "")], "").as_deref(), Some("flagged"));
        assert_eq!(route(&[], r#"{"meta":{"a":1}}"#).as_deref(), Some("nested"));
    }

    #[test]
    fn nothing_matches() {
        assert_eq!(route(&[], ""), None);
        assert_eq!(
            route(
                &[("x-github-event", "issues")],
                r#"{"type":"user.created"}"#
            ),
            None
        );
        assert_eq!(
            route(&[], r#"{"type":{"a":1},"meta":null,"kind":"other"}"#),
            None
        );
    }

    #[test]
    fn exists_false_matches_absent_and_null() {
        let rules = parse_rules(
            r#"[{"name":"no-id","json":"/id","exists":false}]"#,
            SinkField::Forbidden,
        )
        .unwrap();
        assert!(first_match(&rules, &test_event(&[], r#"{"id":null}"#)).is_some());
        assert!(first_match(&rules, &test_event(&[], "{}")).is_some());
        assert!(first_match(&rules, &test_event(&[], r#"{"id":1}"#)).is_none());
    }

    #[test]
    fn invalid_rules_are_explained() {
        let err = |text: &str| parse_rules(text, SinkField::Required).unwrap_err();
        assert!(err("[").contains("EOF"), "{}", err("["));
        assert!(err(r#"{"name":"a"}"#).contains("expected a sequence"));
        assert_eq!(
            err(r#"[{"name":"a","sink":"s","equals":"x"}]"#),
            "rule 0 (`a`): needs exactly one of `header` or `json`"
        );
        assert_eq!(
            err(r#"[{"name":"a","sink":"s","header":"h","equals":"x","prefix":"y"}]"#),
            "rule 0 (`a`): needs exactly one of `equals`, `prefix`, `exists` or `in`"
        );
        assert!(
            err(r#"[{"name":"a","sink":"s","json":"type","equals":"x"}]"#).contains("JSON pointer")
        );
        assert!(
            err(r#"[{"name":"a","sink":"s","header":"h","equals":"x","extra":1}]"#)
                .contains("unknown field `extra`")
        );
        assert_eq!(
            err(r#"[{"name":"a","header":"h","equals":"x"}]"#),
            "rule 0 (`a`): missing field `sink`"
        );
        assert!(
            parse_rules(
                r#"[{"name":"a","header":"h","equals":"x","sink":"s"}]"#,
                SinkField::Forbidden
            )
            .unwrap_err()
            .contains("`sink` is not used here")
        );
    }
}
