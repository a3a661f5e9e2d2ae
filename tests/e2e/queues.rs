//! Queue sinks through the real binary against real servers started by the test: a Redis
//! stream (`XADD`, confirmed by the entry id) and a NATS JetStream stream (publish, confirmed
//! by the ack; `Nats-Msg-Id` lets the stream drop redeliveries).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use hookwall_testkit::{Hookwall, NatsServer, RedisServer, StreamEntry, wait_for};
use serde_json::json;

use crate::{BIN, base_config, hmac_source, post_signed, workdir};

/// Hookwall in a new work dir: the source `shop` into the sink `q` (the `sink` lines and quick
/// retries).
fn start_queue(sink: &str) -> (tempfile::TempDir, Hookwall) {
    let config = format!(
        r#"{}
[sinks.q]
{sink}
retry = {{ max_attempts = 100, initial = "50ms", max_delay = "500ms" }}
circuit = {{ cooldown = "200ms", max_cooldown = "1s" }}
{}"#,
        base_config("", "", None, ""),
        hmac_source("shop", "", "q")
    );
    let dir = workdir(&[]);
    let hw = Hookwall::start(BIN, dir.path(), &config);
    (dir, hw)
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
    let sink = format!(
        "type = \"redis\"\nurl = \"{}\"\nstream = \"hw:events\"\nmaxlen = 1000",
        redis.url()
    );
    let (_dir, hw) = start_queue(&sink);
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
        assert!(range.contains(&format!("shop:r-{i}:q:0")), "{range}");
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
    let event = hw.event("r-6").json();
    let attempts = event["deliveries"][0]["attempts"].as_array().unwrap();
    assert!(attempts.len() >= 2, "retried while Redis was down: {event}");
}

/// Each message's `Nats-Msg-Id` → how many times the stream holds it.
fn msg_ids(entries: &[StreamEntry]) -> BTreeMap<String, usize> {
    let mut ids = BTreeMap::new();
    for e in entries {
        let id = e.header("Nats-Msg-Id").unwrap_or("(none)").to_string();
        *ids.entry(id).or_insert(0) += 1;
    }
    ids
}

/// The errors of event `id`'s failed delivery attempts.
fn attempt_errors(hw: &Hookwall, id: &str) -> Vec<String> {
    hw.event(id).json()["deliveries"][0]["attempts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["error"].as_str().map(str::to_string))
        .collect()
}

/// Polls the stream until it holds a message for every id in `expected`.
fn wait_for_ids(nats: &NatsServer, expected: &BTreeSet<String>) -> bool {
    wait_for(Duration::from_secs(60), || {
        nats.stream_messages("HW").is_ok_and(|m| {
            let ids = msg_ids(&m);
            expected.iter().all(|id| ids.contains_key(id))
        })
    })
}

/// With NATS down: sends events `n-{i}` for `range` (each must be acknowledged), keeps NATS
/// down until the first one's delivery has failed (at once when the client saw the connection
/// drop, else when the ack of a message published into it times out), then restarts NATS on
/// the same port and store.
fn send_while_down(
    hw: &Hookwall,
    nats: &mut NatsServer,
    range: std::ops::Range<usize>,
    expected: &mut BTreeSet<String>,
) {
    let first = format!("n-{}", range.start);
    for i in range {
        let r = post_signed(hw, "shop", &format!("n-{i}"), &json!({"n": i}));
        assert_eq!(r.status, 200, "ingest does not depend on the sink");
        expected.insert(format!("shop:n-{i}:q:0"));
    }
    assert!(wait_for(Duration::from_secs(30), || !attempt_errors(
        hw, &first
    )
    .is_empty()));
    nats.restart();
}

#[test]
fn nats_jetstream_messages_carry_the_stable_id_and_survive_outages() {
    let mut nats = NatsServer::start();
    let sink = format!(
        "type = \"nats\"\nurl = \"{}\"\nsubject = \"hw.events\"",
        nats.url()
    );
    // NATS is down when Hookwall starts: the sink connects later.
    nats.kill();
    let (_dir, hw) = start_queue(&sink);
    let mut expected = BTreeSet::new();
    send_while_down(&hw, &mut nats, 0..3, &mut expected);
    // Up, but no stream captures the subject yet: still retried, until one does.
    assert!(
        wait_for(Duration::from_secs(30), || attempt_errors(&hw, "n-0")
            .iter()
            .any(|e| e.contains("no stream"))),
        "{:?}",
        attempt_errors(&hw, "n-0")
    );
    nats.create_stream("HW", &["hw.events"]);
    assert!(
        wait_for_ids(&nats, &expected),
        "delivered once a stream captures the subject: {:?}",
        nats.stream_messages("HW").map(|m| msg_ids(&m))
    );

    // Up: each message is the raw body with the ids in its headers.
    for i in 3..8 {
        let r = post_signed(&hw, "shop", &format!("n-{i}"), &json!({"n": i}));
        assert_eq!(r.status, 200);
        expected.insert(format!("shop:n-{i}:q:0"));
    }
    assert!(wait_for_ids(&nats, &expected));
    let messages = nats.stream_messages("HW").unwrap();
    let m = messages
        .iter()
        .find(|m| m.header("Nats-Msg-Id") == Some("shop:n-5:q:0"))
        .expect("n-5's message");
    assert_eq!(m.subject, "hw.events");
    assert_eq!(m.payload, br#"{"n":5}"#);
    assert_eq!(m.header("hookwall-event-id"), Some("n-5"));
    assert_eq!(m.header("hookwall-source"), Some("shop"));
    assert_eq!(m.header("hookwall-sink"), Some("q"));
    assert_eq!(m.header("content-type"), Some("application/json"), "{m:?}");

    // Down mid-run, events keep being acknowledged; back on the same port and store.
    nats.kill();
    send_while_down(&hw, &mut nats, 8..20, &mut expected);
    assert!(
        wait_for_ids(&nats, &expected),
        "every acknowledged event reaches the stream: {:?}",
        nats.stream_messages("HW").map(|m| msg_ids(&m))
    );
    // Let Hookwall settle every delivery before counting copies.
    assert!(wait_for(Duration::from_secs(30), || {
        hw.admin_get("/api/v1/sinks").json()["sinks"][0]["pending"] == 0
    }));
    let messages = nats.stream_messages("HW").unwrap();
    let ids = msg_ids(&messages);
    let duplicates = messages.len() - ids.len();
    println!(
        "nats: {} events, {} messages in the stream, {duplicates} duplicates",
        expected.len(),
        messages.len()
    );
    assert_eq!(ids.keys().cloned().collect::<BTreeSet<_>>(), expected);
    assert_eq!(
        duplicates, 0,
        "JetStream's dedupe window drops redeliveries: {ids:?}"
    );
    for id in ["n-0", "n-8"] {
        let event = hw.event(id).json();
        assert_eq!(event["deliveries"][0]["state"], "delivered", "{event}");
    }
}

/// `type = "amqp"` against a private RabbitMQ: every event arrives once, persistent, with its
/// stable id as `message_id`, routed by the templated key; the broker killed mid-run → the
/// deliveries are retried and arrive once it is back.
#[test]
fn amqp_messages_arrive_once_and_survive_a_broker_outage() {
    let mut mq = hookwall_testkit::RabbitServer::start();
    mq.declare("hookwall", "orders", "hooks.#");
    let sink = format!(
        "type = \"amqp\"\nurl = \"{}\"\nexchange = \"hookwall\"\nrouting_key = \"hooks.{{source}}.{{sink}}\"",
        mq.url()
    );
    let (_dir, hw) = start_queue(&sink);
    let mut got: Vec<hookwall_testkit::AmqpMessage> = Vec::new();
    for i in 0..5 {
        let r = post_signed(&hw, "shop", &format!("a-{i}"), &json!({"n": i}));
        assert_eq!(r.status, 200);
    }
    assert!(wait_for(Duration::from_secs(15), || {
        got.extend(mq.take("orders").unwrap_or_default());
        got.len() >= 5
    }));
    let first = &got[0];
    assert_eq!(first.routing_key, "hooks.shop.q");
    assert_eq!(first.delivery_mode, Some(2), "persistent");
    assert_eq!(first.message_id.as_deref(), Some("shop:a-0:q:0"));
    assert_eq!(first.header("hookwall-event-id"), Some("a-0"));
    assert_eq!(first.header("hookwall-source"), Some("shop"));
    assert_eq!(first.body, serde_json::to_vec(&json!({"n": 0})).unwrap());

    // The broker dies; events keep being accepted; once it is back they are delivered.
    mq.kill();
    for i in 5..8 {
        let r = post_signed(&hw, "shop", &format!("a-{i}"), &json!({"n": i}));
        assert_eq!(r.status, 200, "ingest does not depend on the sink");
    }
    std::thread::sleep(Duration::from_millis(700));
    mq.restart();
    // A consumer dedupes on message_id: the broker, killed, may hand back messages whose acks
    // it had not written yet.
    let ids = |got: &[hookwall_testkit::AmqpMessage]| -> BTreeSet<String> {
        got.iter().filter_map(|m| m.message_id.clone()).collect()
    };
    // Generous: on a loaded machine the broker's restart can take several seconds, and with the
    // default circuit (cooldown 5 s doubling to 1 m) the probes that failed meanwhile once put
    // the first delivery past 30 s in a full `.ci/run`; the sinks here use a short cooldown.
    assert!(
        wait_for(Duration::from_secs(60), || {
            got.extend(mq.take("orders").unwrap_or_default());
            ids(&got).len() >= 8
        }),
        "got {:?}",
        ids(&got)
    );
    let want: BTreeSet<String> = (0..8).map(|i| format!("shop:a-{i}:q:0")).collect();
    assert_eq!(ids(&got), want, "every event");
    let event = hw.event("a-6").json();
    let attempts = event["deliveries"][0]["attempts"].as_array().unwrap();
    assert!(
        attempts.len() >= 2,
        "retried while the broker was down: {event}"
    );
}

/// A message no queue is bound for is returned by the broker: the delivery is not confirmed
/// but retried, and goes once a queue is bound.
#[test]
fn an_unroutable_amqp_message_is_retried_until_a_queue_is_bound() {
    let mq = hookwall_testkit::RabbitServer::start();
    let sink = format!(
        "type = \"amqp\"\nurl = \"{}\"\nrouting_key = \"late-queue\"",
        mq.url()
    );
    let (_dir, hw) = start_queue(&sink);
    let r = post_signed(&hw, "shop", "u-1", &json!({"n": 1}));
    assert_eq!(r.status, 200);
    assert!(wait_for(Duration::from_secs(10), || {
        let event = hw.event("u-1").json();
        event["deliveries"][0]["attempts"]
            .as_array()
            .is_some_and(|a| {
                a.iter().any(|x| {
                    x["error"]
                        .as_str()
                        .is_some_and(|e| e.contains("unroutable"))
                })
            })
    }));
    // The default exchange routes to the queue named by the key, once it exists.
    mq.declare("bind-helper", "late-queue", "x");
    let mut got = Vec::new();
    assert!(wait_for(Duration::from_secs(15), || {
        got.extend(mq.take("late-queue").unwrap_or_default());
        !got.is_empty()
    }));
    assert_eq!(got[0].message_id.as_deref(), Some("shop:u-1:q:0"));
}
