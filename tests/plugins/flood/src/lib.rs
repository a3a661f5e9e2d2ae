//! Fixture: oversized output, chosen by the body's `mode`: `many` (10 000 deliveries), `big`
//! (five 4 MiB bodies), `headers` (1 000 headers), `huge` (one 1 GiB body: the memory limit
//! stops it first).

use hookwall_guest::{Action, Delivery, Event, Plugin, serde_json::Value};

struct Flood;

impl Plugin for Flood {
    fn handle(event: Event) -> Result<Action, String> {
        let body: Value = event.json()?;
        let deliveries: Vec<Delivery> = match body["mode"].as_str() {
            Some("many") => (0..10_000).map(|_| Delivery::unrouted().body(b"x".to_vec())).collect(),
            Some("big") => (0..5).map(|_| Delivery::unrouted().body(vec![b'x'; 4 << 20])).collect(),
            Some("headers") => {
                let mut d = Delivery::unrouted();
                for i in 0..1_000 {
                    d = d.header(format!("x-h{i}"), "v");
                }
                vec![d]
            }
            Some("huge") => vec![Delivery::unrouted().body(vec![b'x'; 1 << 30])],
            _ => vec![event.into_delivery()],
        };
        Ok(Action::forward(deliveries))
    }
}

hookwall_guest::export!(Flood);
