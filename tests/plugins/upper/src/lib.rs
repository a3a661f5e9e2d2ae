//! Fixture for chaining: forwards unrouted with the body ASCII-uppercased and `x-upper: 1`.

use hookwall_guest::{Action, Event, Plugin};

struct Upper;

impl Plugin for Upper {
    fn handle(event: Event) -> Result<Action, String> {
        let mut delivery = event.into_delivery().header("x-upper", "1");
        delivery.body.make_ascii_uppercase();
        Ok(Action::forward([delivery]))
    }
}

hookwall_guest::export!(Upper);
