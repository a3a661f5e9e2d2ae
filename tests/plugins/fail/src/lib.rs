//! Fixture: returns an error for every event (a plugin failure, not a trap).

use hookwall_guest::{Action, Event, Plugin};

struct Fail;

impl Plugin for Fail {
    fn handle(_event: Event) -> Result<Action, String> {
        Err("fail plugin always fails".into())
    }
}

hookwall_guest::export!(Fail);
