//! # rust-router: the tutorial plugin
//!
//! For each event it
//! 1. parses the body as JSON — invalid JSON is rejected with 400 `invalid_json`;
//! 2. checks the fields listed in config `required` (default `["id", "type"]`; a name, or a JSON
//!    pointer such as `/customer/id`) — a missing or `null` one is rejected with 422
//!    `missing_field` naming the field as a JSON pointer;
//! 3. forwards the body unchanged with the original headers plus `x-hookwall-plugin: rust-router`,
//!    to sink `orders_sink` (default `orders`) when the body's `type` starts with `orders_prefix`
//!    (default `order.`), else to sink `other_sink` (default `other`).

use hookwall_guest::{
    Action, Delivery, Event, Plugin, config, config_json, log, serde_json::Value,
};

struct RustRouter;

impl Plugin for RustRouter {
    fn handle(event: Event) -> Result<Action, String> {
        let Ok(body) = event.json_value() else {
            return Ok(Action::reject(
                400,
                "invalid_json",
                "the body is not valid JSON",
            ));
        };

        // `?` turns a malformed `required` setting into a plugin failure: the event is
        // dead-lettered with the message instead of being checked against a wrong list.
        let required: Vec<String> =
            config_json("required")?.unwrap_or_else(|| vec!["id".into(), "type".into()]);
        for field in &required {
            let pointer = json_pointer(field);
            if body.pointer(&pointer).is_none_or(Value::is_null) {
                let message = format!("required field `{pointer}` is missing");
                return Ok(Action::reject(422, "missing_field", message).field(pointer));
            }
        }

        let kind = body.get("type").and_then(Value::as_str).unwrap_or("");
        let prefix = config("orders_prefix").unwrap_or_else(|| "order.".into());
        let sink = if kind.starts_with(&prefix) {
            config("orders_sink").unwrap_or_else(|| "orders".into())
        } else {
            config("other_sink").unwrap_or_else(|| "other".into())
        };
        log::info!("event {} of type {kind:?} routed to {sink}", event.id);

        Ok(Action::forward([Delivery::to(sink)
            .headers(event.headers)
            .set_header("x-hookwall-plugin", "rust-router")
            .body(event.body)]))
    }
}

hookwall_guest::export!(RustRouter);

/// `"type"` → `"/type"` (escaped per RFC 6901); a value that already is a pointer is kept.
fn json_pointer(field: &str) -> String {
    if field.starts_with('/') {
        field.to_owned()
    } else {
        format!("/{}", field.replace('~', "~0").replace('/', "~1"))
    }
}

#[cfg(test)]
mod tests {
    use super::json_pointer;

    #[test]
    fn field_names_become_pointers() {
        assert_eq!(json_pointer("type"), "/type");
        assert_eq!(json_pointer("/customer/id"), "/customer/id");
        assert_eq!(json_pointer("a/b~c"), "/a~1b~0c");
    }
}
