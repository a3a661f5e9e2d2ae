//! Fixture: counts calls in a static, which only survives between events when the host reuses
//! the instance (`instances = "pooled"`). Panics when the body is `{"panic":true}`, to check a
//! trapped instance is discarded. `{"stderr":N}` first prints an N-byte line to stderr (a capture
//! that outlived its call would fill up); `{"busy_ms":N}` first keeps the CPU busy for N ms of
//! the host clock (a slow call, to fill a plugin's concurrency bound).

use std::sync::atomic::{AtomicU64, Ordering};

use hookwall_guest::{Action, Event, Plugin, clock, serde_json::Value};

static CALLS: AtomicU64 = AtomicU64::new(0);

struct Statics;

impl Plugin for Statics {
    fn handle(event: Event) -> Result<Action, String> {
        let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
        let body: Value = event.json().unwrap_or(Value::Null);
        if let Some(n) = body["stderr"].as_u64() {
            eprintln!("{}", "e".repeat(n.saturating_sub(1) as usize));
        }
        if let Some(ms) = body["busy_ms"].as_u64() {
            let until = clock::now_ms() + ms;
            while clock::now_ms() < until {
                std::hint::spin_loop();
            }
        }
        if body["panic"] == true {
            panic!("asked to panic");
        }
        Ok(Action::forward([event
            .into_delivery()
            .header("x-calls", calls.to_string())]))
    }
}

hookwall_guest::export!(Statics);
