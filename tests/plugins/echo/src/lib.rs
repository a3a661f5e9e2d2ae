//! Fixture: forwards unrouted, body and headers unchanged, plus `x-echo-config` = config
//! `greeting` (or `none`), to test config passing.

use hookwall_guest::{Action, Event, Plugin, config};

struct Echo;

impl Plugin for Echo {
    fn handle(event: Event) -> Result<Action, String> {
        let greeting = config("greeting").unwrap_or_else(|| "none".into());
        Ok(Action::forward([event
            .into_delivery()
            .header("x-echo-config", greeting)]))
    }
}

hookwall_guest::export!(Echo);
