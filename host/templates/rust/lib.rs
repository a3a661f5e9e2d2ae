//! {{name}}: a Hookwall plugin. `./build.sh` builds `{{name}}.wasm`; drop it into Hookwall's
//! plugins directory (with `{{name}}.toml` to attach it to sources), or try it with
//! `hookwall plugin test {{name}}.wasm --event event.json`.
//!
//! The contract is `wit/plugin.wit` (a copy of the host's): `handle` gets each verified event
//! and returns what to do with it. For a richer API, use the `hookwall-guest` crate from
//! Hookwall's repository (`guest-sdk/`).

wit_bindgen::generate!({ world: "plugin", path: "wit" });

use hookwall::plugin::host::{Level, config, log};
// `Event` and `Action` are in scope already: the world `use`s them.
use hookwall::plugin::types::{Delivery, Priority, Rejection};

struct Component;

impl Guest for Component {
    fn handle(event: Event) -> Result<Action, String> {
        let Ok(body) = serde_json::from_slice::<serde_json::Value>(&event.body) else {
            return Ok(Action::Reject(Rejection {
                status: 400,
                code: "invalid_json".into(),
                message: "the body is not JSON".into(),
                field: None,
            }));
        };
        let Some(kind) = body.get("type").and_then(|t| t.as_str()) else {
            return Ok(Action::Reject(Rejection {
                status: 422,
                code: "missing_field".into(),
                message: "`type` is required".into(),
                field: Some("/type".into()),
            }));
        };
        // `sink` from the plugin's config; unset: unrouted (the source's sinks get it).
        let sink = config("sink");
        log(Level::Info, &format!("{}: {} ({kind})", event.id, "{{name}}"));
        let mut headers = event.headers;
        headers.push(("x-plugin".into(), "{{name}}".into()));
        Ok(Action::Forward(vec![Delivery {
            sink,
            headers,
            body: event.body,
            priority: Priority::Normal,
        }]))
    }
}

export!(Component);
