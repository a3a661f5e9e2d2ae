//! Fixture: panics, which aborts the instance (a trap) on wasm32-wasip2.

use hookwall_guest::{Action, Event, Plugin};

struct Panic;

impl Plugin for Panic {
    fn handle(event: Event) -> Result<Action, String> {
        panic!("panic plugin panics on event {}", event.id)
    }
}

hookwall_guest::export!(Panic);
