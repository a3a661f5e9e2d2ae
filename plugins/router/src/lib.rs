//! # router: the bundled rule router
//!
//! Routes each event to a sink by the first matching rule, forwarding the body and headers
//! unchanged plus `x-hookwall-route: <rule name>` (or `default` when no rule matched).
//!
//! Config (non-string TOML values reach the plugin as JSON text):
//!
//! - `rules`: an array of rules, tried in order; absent means no rules. Each rule has a `name`,
//!   a `sink`, one selector and one test:
//!   - selector: `"header": "x-event-type"` (first value, name case-insensitive) or
//!     `"json": "/type"` (a JSON pointer into the body; a body that is not JSON matches no `json` rule);
//!   - test: `"equals": "..."`, `"prefix": "..."`, `"in": ["a", "b"]` (strings; JSON numbers and
//!     booleans compare by their JSON text, objects and arrays never match) or `"exists": true|false`
//!     (a JSON `null` counts as absent).
//! - `default`: the sink for events no rule matched. If absent they are forwarded unrouted, so
//!   the next plugin of the chain, or the source's configured sinks, get them.
//!
//! ```toml
//! rules = [
//!   { name = "orders", json = "/type", prefix = "order.", sink = "orders" },
//!   { name = "github-push", header = "x-github-event", equals = "push", sink = "ci" },
//! ]
//! default = "archive"
//! ```
//!
//! An invalid `rules` value fails every event with `router: invalid rules config: ...`, so a
//! typo dead-letters events instead of silently misrouting them.

use std::{borrow::Cow, cell::OnceCell};

use hookwall_guest::{
    Action, Delivery, Event, Plugin, config, log,
    serde_json::{self, Value},
};
use serde::Deserialize;

/// Header added to every delivery, naming the rule that routed it.
const ROUTE_HEADER: &str = "x-hookwall-route";
/// The route name when no rule matched.
const DEFAULT_ROUTE: &str = "default";

struct Router;

impl Plugin for Router {
    fn handle(event: Event) -> Result<Action, String> {
        let rules = match config("rules") {
            Some(text) => {
                parse_rules(&text).map_err(|e| format!("router: invalid rules config: {e}"))?
            }
            None => Vec::new(),
        };
        let (route, sink) = match first_match(&rules, &event) {
            Some(rule) => (rule.name.clone(), Some(rule.sink.clone())),
            None => (DEFAULT_ROUTE.to_owned(), config("default")),
        };
        log::debug!(
            "route={route} sink={} event {} routed",
            sink.as_deref().unwrap_or("(unrouted)"),
            event.id
        );
        let delivery = event.into_delivery().set_header(ROUTE_HEADER, route);
        Ok(Action::forward([Delivery { sink, ..delivery }]))
    }
}

hookwall_guest::export!(Router);

#[derive(Debug, PartialEq)]
struct Rule {
    name: String,
    selector: Selector,
    test: Test,
    sink: String,
}

#[derive(Debug, PartialEq)]
enum Selector {
    Header(String),
    /// A JSON pointer into the body.
    Json(String),
}

#[derive(Debug, PartialEq)]
enum Test {
    Equals(String),
    Prefix(String),
    Exists(bool),
    In(Vec<String>),
}

/// A rule as written; [`parse_rules`] checks that it has exactly one selector and one test.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    sink: String,
    header: Option<String>,
    json: Option<String>,
    equals: Option<String>,
    prefix: Option<String>,
    exists: Option<bool>,
    #[serde(rename = "in")]
    one_of: Option<Vec<String>>,
}

fn parse_rules(text: &str) -> Result<Vec<Rule>, String> {
    let raw: Vec<RawRule> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    raw.into_iter()
        .enumerate()
        .map(|(i, rule)| {
            let name = rule.name.clone();
            rule.validate()
                .map_err(|e| format!("rule {i} (`{name}`): {e}"))
        })
        .collect()
}

impl RawRule {
    fn validate(self) -> Result<Rule, String> {
        let selector = match (self.header, self.json) {
            (Some(header), None) => Selector::Header(header),
            (None, Some(pointer)) if pointer.is_empty() || pointer.starts_with('/') => {
                Selector::Json(pointer)
            }
            (None, Some(pointer)) => {
                return Err(format!(
                    "`json` must be a JSON pointer like \"/type\", got {pointer:?}"
                ));
            }
            _ => return Err("needs exactly one of `header` or `json`".into()),
        };
        let test = match (self.equals, self.prefix, self.exists, self.one_of) {
            (Some(value), None, None, None) => Test::Equals(value),
            (None, Some(prefix), None, None) => Test::Prefix(prefix),
            (None, None, Some(exists), None) => Test::Exists(exists),
            (None, None, None, Some(values)) => Test::In(values),
            _ => return Err("needs exactly one of `equals`, `prefix`, `exists` or `in`".into()),
        };
        Ok(Rule {
            name: self.name,
            selector,
            test,
            sink: self.sink,
        })
    }
}

/// What a selector found in the event.
enum Found<'a> {
    Absent,
    /// A header value, a JSON string, or a JSON number or boolean as its JSON text.
    Scalar(Cow<'a, str>),
    /// A JSON object or array: it exists, but equals no string.
    Structured,
}

/// The first rule that matches `event`. The body is parsed as JSON at most once, and only if a
/// `json` rule is reached.
fn first_match<'r>(rules: &'r [Rule], event: &Event) -> Option<&'r Rule> {
    let body = OnceCell::new();
    rules.iter().find(|rule| {
        let found = match &rule.selector {
            Selector::Header(name) => event
                .header(name)
                .map_or(Found::Absent, |v| Found::Scalar(v.into())),
            Selector::Json(pointer) => {
                let body = body.get_or_init(|| serde_json::from_slice::<Value>(&event.body).ok());
                match body.as_ref().and_then(|b| b.pointer(pointer)) {
                    None | Some(Value::Null) => Found::Absent,
                    Some(Value::String(s)) => Found::Scalar(s.as_str().into()),
                    Some(v @ (Value::Number(_) | Value::Bool(_))) => {
                        Found::Scalar(v.to_string().into())
                    }
                    Some(Value::Array(_) | Value::Object(_)) => Found::Structured,
                }
            }
        };
        rule.test.matches(&found)
    })
}

impl Test {
    fn matches(&self, found: &Found<'_>) -> bool {
        match (self, found) {
            (Test::Exists(exists), found) => *exists != matches!(found, Found::Absent),
            (Test::Equals(expected), Found::Scalar(value)) => value == expected,
            (Test::Prefix(prefix), Found::Scalar(value)) => value.starts_with(prefix.as_str()),
            (Test::In(values), Found::Scalar(value)) => values.iter().any(|v| v == value),
            _ => false,
        }
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

    fn event(headers: &[(&str, &str)], body: &str) -> Event {
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

    fn route(headers: &[(&str, &str)], body: &str) -> Option<String> {
        let rules = parse_rules(RULES).unwrap();
        first_match(&rules, &event(headers, body)).map(|r| r.name.clone())
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
        let rules =
            parse_rules(r#"[{"name":"no-id","json":"/id","exists":false,"sink":"s"}]"#).unwrap();
        assert!(first_match(&rules, &event(&[], r#"{"id":null}"#)).is_some());
        assert!(first_match(&rules, &event(&[], "{}")).is_some());
        assert!(first_match(&rules, &event(&[], r#"{"id":1}"#)).is_none());
    }

    #[test]
    fn invalid_rules_are_explained() {
        let err = |text: &str| parse_rules(text).unwrap_err();
        assert!(err("[").contains("EOF"), "{}", err("["));
        assert!(err(r#"{"name":"a"}"#).contains("expected a sequence"));
        assert_eq!(
            err(r#"[{"name":"a","sink":"s","equals":"x"}]"#),
            "rule 0 (`a`): needs exactly one of `header` or `json`"
        );
        assert_eq!(
            err(r#"[{"name":"a","sink":"s","header":"h","json":"/x","equals":"x"}]"#),
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
        assert!(
            err(r#"[{"name":"a","header":"h","equals":"x"}]"#).contains("missing field `sink`")
        );
    }
}
