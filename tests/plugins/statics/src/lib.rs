//! Fixture: counts calls in a static, which only survives between events when the host reuses
//! the instance (`instances = "pooled"`). Panics when the body is `{"panic":true}`, to check a
//! trapped instance is discarded.

use std::sync::atomic::{AtomicU64, Ordering};

use hookwall_guest::{Action, Event, Plugin, serde_json::Value};

static CALLS: AtomicU64 = AtomicU64::new(0);

struct Statics;

impl Plugin for Statics {
    fn handle(event: Event) -> Result<Action, String> {
        let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
        let body: Value = event.json().unwrap_or(Value::Null);
        if body["panic"] == true {
            panic!("asked to panic");
        }
        Ok(Action::forward([event
            .into_delivery()
            .header("x-calls", calls.to_string())]))
    }
}

hookwall_guest::export!(Statics);
