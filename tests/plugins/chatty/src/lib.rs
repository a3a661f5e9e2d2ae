//! Fixture: calls host imports in a tight loop — logs forever unless the body says `kv`, then
//! writes the key-value store until the host refuses.

use hookwall_guest::{Action, Event, Plugin, kv, log, serde_json::Value};

struct Chatty;

impl Plugin for Chatty {
    fn handle(event: Event) -> Result<Action, String> {
        let body: Value = event.json().unwrap_or(Value::Null);
        let mut i = 0u64;
        if body["mode"] == "kv" {
            loop {
                kv::set(&format!("k{}", i % 8), b"v", None)?;
                i += 1;
            }
        }
        loop {
            log::info(&format!("line {i}"));
            i = std::hint::black_box(i + 1);
        }
    }
}

hookwall_guest::export!(Chatty);
