//! # json-schema: the bundled JSON Schema validator
//!
//! Validates each event's body against a JSON Schema (drafts 4, 6, 7, 2019-09 and 2020-12, by
//! the schema's `$schema`; default 2020-12) and rejects an invalid one with **422**
//! `schema_violation`, naming the failing field as a JSON pointer in `field` (for a missing
//! required property, the pointer to where it should be). A body that is not JSON is rejected
//! with 422 `invalid_json`. Valid events pass on unchanged.
//!
//! Config:
//!
//! - `schema_file`: the schema's path (relative to the host config file, or to the plugins
//!   directory in the plugin's manifest). The host reads the file when it loads the plugin and
//!   hands its text over as `schema` (see the README's "config values from files").
//! - or `schema`: the schema itself, as JSON text or an inline TOML table.
//!
//! Only the schema's own `$ref`s resolve: the plugin has no file or network access, so a
//! remote `$ref` fails every event with an error naming it (dead-lettered).
//!
//! ```toml
//! [plugins.config.json-schema]
//! schema_file = "schemas/order.json"
//! ```

use hookwall_guest::{
    Action, Event, Plugin, config, log,
    serde_json::{self, Value},
};
use jsonschema::error::ValidationErrorKind;

/// At most this many violations are listed in the rejection's message.
const MAX_LISTED: usize = 5;

struct JsonSchema;

impl Plugin for JsonSchema {
    fn handle(event: Event) -> Result<Action, String> {
        let schema = config("schema").ok_or(
            "json-schema: no schema configured; set `schema_file` (or `schema`) in the plugin's config",
        )?;
        let schema: Value = serde_json::from_str(&schema)
            .map_err(|e| format!("json-schema: the configured schema is not JSON: {e}"))?;
        let validator = jsonschema::validator_for(&schema)
            .map_err(|e| format!("json-schema: invalid schema: {e}"))?;
        let body: Value = match serde_json::from_slice(&event.body) {
            Ok(body) => body,
            Err(e) => {
                return Ok(Action::reject(
                    422,
                    "invalid_json",
                    format!("the body is not JSON: {e}"),
                ));
            }
        };
        let violations: Vec<(String, String)> = validator
            .iter_errors(&body)
            .map(|e| (field_of(&e), e.to_string()))
            .collect();
        let Some((field, _)) = violations.first() else {
            return Ok(Action::forward([event.into_delivery()]));
        };
        let mut message = violations
            .iter()
            .take(MAX_LISTED)
            .map(|(f, m)| format!("{}: {m}", if f.is_empty() { "(root)" } else { f }))
            .collect::<Vec<_>>()
            .join("; ");
        if violations.len() > MAX_LISTED {
            message += &format!("; and {} more", violations.len() - MAX_LISTED);
        }
        log::debug!("event {} rejected: {message}", event.id);
        let field = field.clone();
        Ok(Action::reject(422, "schema_violation", message).field(field))
    }
}

hookwall_guest::export!(JsonSchema);

/// The JSON pointer of the failing field: the instance path, plus the property's name for a
/// missing required property (so the sender learns which field to add).
fn field_of(error: &jsonschema::ValidationError<'_>) -> String {
    let path = error.instance_path().as_str().to_owned();
    match error.kind() {
        ValidationErrorKind::Required {
            property: Value::String(name),
        } => format!("{path}/{}", name.replace('~', "~0").replace('/', "~1")),
        _ => path,
    }
}
