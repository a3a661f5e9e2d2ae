//! Fixture: answers `{"type":"challenge","challenge":X}` with `{"challenge":X}` (a provider
//! handshake, via `respond`); forwards everything else unrouted.

use hookwall_guest::{Action, Event, Plugin, serde_json::Value};

struct Handshake;

impl Plugin for Handshake {
    fn handle(event: Event) -> Result<Action, String> {
        let body: Value = event.json().unwrap_or(Value::Null);
        if body["type"] == "challenge" {
            let challenge = body["challenge"].clone();
            return Ok(Action::respond_json(
                200,
                &hookwall_guest::serde_json::json!({ "challenge": challenge }),
            )?);
        }
        Ok(Action::forward([event.into_delivery()]))
    }
}

hookwall_guest::export!(Handshake);
