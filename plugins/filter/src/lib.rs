//! # filter: the bundled event filter
//!
//! Drops the events that match any of its rules (e.g. a provider's `ping` events) and passes
//! the others on unchanged. A dropped event is acknowledged to the sender (200, `dropped`),
//! stored with the reason, and delivered nowhere.
//!
//! Config:
//!
//! - `rules`: an array of rules (a `name`, one selector `header` or `json`, one test `equals`,
//!   `prefix`, `in` or `exists`; the rule language of the `hookwall-rules` crate, shared with
//!   `router`). No `sink`: this plugin does not route.
//! - `keep_only` (`true`/`false`, default `false`): invert the filter, passing on only the
//!   events that match a rule and dropping the rest.
//!
//! ```toml
//! rules = [
//!   { name = "github-ping", header = "x-github-event", equals = "ping" },
//!   { name = "test-mode", json = "/livemode", equals = "false" },
//! ]
//! ```
//!
//! An invalid config fails every event (dead-lettered with the reason) rather than letting
//! everything through.

use hookwall_guest::{Action, Event, Plugin, config, log, metrics};
use hookwall_rules::{SinkField, first_match, parse_rules};

struct Filter;

impl Plugin for Filter {
    fn handle(event: Event) -> Result<Action, String> {
        let rules = match config("rules") {
            Some(text) => parse_rules(&text, SinkField::Forbidden)
                .map_err(|e| format!("filter: invalid rules config: {e}"))?,
            None => Vec::new(),
        };
        let keep_only = match config("keep_only").as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(format!(
                    "filter: `keep_only` must be true or false, got {other}"
                ));
            }
        };
        Ok(decide(
            first_match(&rules, &event).map(|r| r.name.as_str()),
            keep_only,
            event,
        ))
    }
}

fn decide(matched: Option<&str>, keep_only: bool, event: Event) -> Action {
    let reason = match (matched, keep_only) {
        (Some(rule), false) => format!("filter: rule `{rule}` matched"),
        (None, true) => "filter: no rule matched (keep_only)".to_owned(),
        _ => return Action::forward([event.into_delivery()]),
    };
    log::debug!("event {} dropped: {reason}", event.id);
    metrics::counter_add("dropped", 1);
    Action::drop(reason)
}

hookwall_guest::export!(Filter);
