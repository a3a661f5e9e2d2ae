//! # router: the bundled rule router
//!
//! Routes each event to a sink by the first matching rule, forwarding the body and headers
//! unchanged plus `x-hookwall-route: <rule name>` (or `default` when no rule matched).
//!
//! Config (non-string TOML values reach the plugin as JSON text):
//!
//! - `rules`: an array of rules, tried in order; absent means no rules. Each rule has a `name`,
//!   a `sink`, one selector (`header` or `json`) and one test (`equals`, `prefix`, `in`,
//!   `exists`); see the `hookwall-rules` crate for their exact meaning (shared with `filter`).
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

use hookwall_guest::{Action, Delivery, Event, Plugin, config, log};
use hookwall_rules::{SinkField, first_match, parse_rules};

/// Header added to every delivery, naming the rule that routed it.
const ROUTE_HEADER: &str = "x-hookwall-route";
/// The route name when no rule matched.
const DEFAULT_ROUTE: &str = "default";

struct Router;

impl Plugin for Router {
    fn handle(event: Event) -> Result<Action, String> {
        let rules = match config("rules") {
            Some(text) => parse_rules(&text, SinkField::Required)
                .map_err(|e| format!("router: invalid rules config: {e}"))?,
            None => Vec::new(),
        };
        let (route, sink) = match first_match(&rules, &event) {
            Some(rule) => (rule.name.clone(), rule.sink.clone()),
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
