//! Queue sinks through the real binary against real servers started by the test: a Redis
//! stream (`XADD`, confirmed by the entry id).

use std::time::Duration;

use hookwall_testkit::{Hookwall, RedisServer, wait_for};
use serde_json::json;

use crate::{BIN, SECRET, post_signed, workdir};

fn queue_config(sink: &str) -> String {
    format!(
        r#"
[server]
listen = "{{listen}}"
shutdown_grace = "2s"

[storage]
path = "data"

[admin]
listen = "{{admin}}"

[sinks.q]
{sink}
retry = {{ max_attempts = 100, initial = "50ms", max_delay = "500ms" }}

[sources.shop]
path = "/hooks/shop"
verify = {{ scheme = "hmac", header = "X-Signature", prefix = "sha256=", secrets = ["{SECRET}"], id_header = "X-Event-Id" }}
sinks = ["q"]
"#
    )
}

fn xlen(redis: &RedisServer, stream: &str) -> Option<u64> {
    redis
        .command(&["XLEN", stream])
        .ok()?
        .trim()
        .strip_prefix(':')?
        .parse()
        .ok()
}

#[test]
fn redis_stream_entries_carry_the_stable_id_and_survive_an_outage() {
    let mut redis = RedisServer::start();
    let dir = workdir(&[]);
    let sink = format!(
        "type = \"redis\"\nurl = \"{}\"\nstream = \"hw:events\"\nmaxlen = 1000",
        redis.url()
    );
    let hw = Hookwall::start(BIN, dir.path(), &queue_config(&sink));
    for i in 0..5 {
        let r = post_signed(&hw, "shop", &format!("r-{i}"), &json!({"n": i}));
        assert_eq!(r.status, 200);
    }
    assert!(wait_for(Duration::from_secs(10), || xlen(
        &redis,
        "hw:events"
    ) == Some(5)));
    let range = redis.command(&["XRANGE", "hw:events", "-", "+"]).unwrap();
    for i in 0..5 {
        assert!(range.contains(&format!("r-{i}:q:0")), "{range}");
    }
    assert!(range.contains("{\"n\":3}"), "{range}");

    // Redis goes away (and comes back empty): the deliveries wait and then arrive.
    redis.kill();
    for i in 5..8 {
        let r = post_signed(&hw, "shop", &format!("r-{i}"), &json!({"n": i}));
        assert_eq!(r.status, 200, "ingest does not depend on the sink");
    }
    std::thread::sleep(Duration::from_millis(500));
    redis.restart();
    assert!(wait_for(Duration::from_secs(15), || xlen(
        &redis,
        "hw:events"
    ) == Some(3)));
    let event = hw.admin_get("/api/v1/events/r-6").json();
    let attempts = event["deliveries"][0]["attempts"].as_array().unwrap();
    assert!(attempts.len() >= 2, "retried while Redis was down: {event}");
}
