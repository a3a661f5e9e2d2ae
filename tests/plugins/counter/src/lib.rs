//! Fixture: a stateful plugin. Counts events per `type` in the key-value store (with
//! compare-and-swap, so concurrent events never lose a count), stamps the count and the host
//! clock on the delivery, and bumps a plugin counter.

use hookwall_guest::{Action, Event, Plugin, clock, kv, metrics, serde_json::Value};

struct Counter;

impl Plugin for Counter {
    fn handle(event: Event) -> Result<Action, String> {
        let body: Value = event.json()?;
        let key = format!("count:{}", body["type"].as_str().unwrap_or("unknown"));
        let count = loop {
            let current = kv::get(&key)?;
            let n: u64 = current
                .as_deref()
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let next = (n + 1).to_string();
            if kv::compare_and_swap(&key, current.as_deref(), next.as_bytes(), None)? {
                break n + 1;
            }
        };
        metrics::counter_add("events_counted", 1);
        Ok(Action::forward([event
            .into_delivery()
            .header("x-count", count.to_string())
            .header("x-clock-ms", clock::now_ms().to_string())]))
    }
}

hookwall_guest::export!(Counter);
