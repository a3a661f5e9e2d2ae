//! Fixture: sleeps through WASI (`monotonic-clock.subscribe-duration` + `poll`, a host call
//! that awaits a timer) for the number of ms in its body (10 s when none), then forwards the
//! event. Tests that the per-call deadline also cuts off time spent waiting in a host call,
//! which no epoch tick interrupts.

use std::time::Duration;

use hookwall_guest::{Action, Event, Plugin};

struct Sleepy;

impl Plugin for Sleepy {
    fn handle(event: Event) -> Result<Action, String> {
        let ms = std::str::from_utf8(&event.body)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(10_000);
        std::thread::sleep(Duration::from_millis(ms));
        Ok(Action::forward([event.into_delivery()]))
    }
}

hookwall_guest::export!(Sleepy);
