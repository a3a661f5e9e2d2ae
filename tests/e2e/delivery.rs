//! Delivery through the real binary to a real upstream: the `http` sink's signing and stable
//! ids, retry classification, `Retry-After`, an outage under load, dead letters and replay.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use hookwall_testkit::upstream::{Answer, Upstream, standard_webhooks_valid, webhook_ids};
use hookwall_testkit::{Hookwall, on_threads, wait_for, wasm};
use serde_json::{Value, json};

use crate::{BIN, base_config, dead_letters, hmac_source, post_signed, send_signed, workdir};

/// The `app` sink's signing key (Standard Webhooks form).
const SINK_SECRET: &str = "whsec_aG9va3dhbGwtc2luay10ZXN0LWtleS0zMi1ieXRlcyE=";

/// One HMAC source `shop` (plugins `plugins`) routing to the http sink `app` at `url`.
pub fn http_config(url: &str, sink_extra: &str, plugins: &str) -> String {
    format!(
        r#"{}
[sinks.app]
type = "http"
url = "{url}"
secret = "{SINK_SECRET}"
headers = {{ "x-tenant" = "acme" }}
{sink_extra}
{}"#,
        base_config("", "", Some("deadline = \"200ms\""), ""),
        hmac_source("shop", plugins, "app")
    )
}

/// Hookwall (no plugins) delivering to `up` through the http sink `app` with `sink_extra`.
fn start_for(up: &Upstream, sink_extra: &str) -> (tempfile::TempDir, Hookwall) {
    let dir = workdir(&[]);
    let hw = Hookwall::start(BIN, dir.path(), &http_config(&up.url(), sink_extra, ""));
    (dir, hw)
}

/// Quick retries, for the tests that watch one failure and its retry.
const FAST_RETRY: &str = "retry = { initial = \"50ms\", max_delay = \"100ms\" }";

/// POSTs one signed event to the `shop` source and asserts it is acknowledged with a 200.
fn post_ok(hw: &Hookwall, id: &str, body: &Value) {
    assert_eq!(post_signed(hw, "shop", id, body).status, 200, "event {id}");
}

/// `post_ok` for events `PREFIX-0` .. `PREFIX-(n-1)`, each with the body `{"i": i}`.
fn post_numbered(hw: &Hookwall, prefix: &str, n: usize) {
    for i in 0..n {
        post_ok(hw, &format!("{prefix}-{i}"), &json!({"i": i}));
    }
}

/// Waits up to `secs` seconds for the upstream to have accepted exactly `n` requests.
fn await_accepted(up: &Upstream, n: usize, secs: u64) {
    assert!(
        wait_for(Duration::from_secs(secs), || up.accepted().len() == n),
        "{} accepted, want {n}",
        up.accepted().len()
    );
}

/// Waits up to 10 s for exactly `n` dead letters.
fn await_dead_letters(hw: &Hookwall, n: usize) {
    assert!(
        wait_for(Duration::from_secs(10), || dead_letters(hw).len() == n),
        "want {n} dead letters"
    );
}

/// Pauses (`true`) or resumes (`false`) the `app` sink through the admin API.
fn pause_app(hw: &Hookwall, pause: bool) -> hookwall_testkit::Reply {
    let verb = if pause { "pause" } else { "resume" };
    hw.admin_post(&format!("/api/v1/sinks/app/{verb}"), &json!({}))
}

#[test]
fn a_delivery_is_signed_with_the_sinks_key_and_carries_a_stable_id() {
    let up = Upstream::start();
    let (_dir, hw) = start_for(&up, FAST_RETRY);
    // One failure first, so the id can be compared across attempts.
    up.script([Answer::Status(500, None)]);
    post_ok(&hw, "evt-1", &json!({"n": 1}));
    await_accepted(&up, 1, 10);
    let got = up.received();
    assert_eq!(got.len(), 2, "one failure, one success");
    let ok = &got[1];
    assert_eq!(ok.method, "POST");
    assert_eq!(ok.path, "/hook");
    assert_eq!(ok.json(), json!({"n": 1}));
    assert_eq!(ok.header("webhook-id"), Some("shop:evt-1:app:0"));
    assert_eq!(ok.header("idempotency-key"), Some("shop:evt-1:app:0"));
    assert_eq!(got[0].header("webhook-id"), ok.header("webhook-id"));
    assert_eq!(ok.header("x-tenant"), Some("acme"));
    assert!(standard_webhooks_valid(SINK_SECRET, ok), "{:?}", ok.headers);
    // The check can fail: another key does not verify.
    assert!(!standard_webhooks_valid(
        "whsec_d3Jvbmcta2V5LXdyb25nLWtleQ==",
        ok
    ));
    // The attempts are on record (once Hookwall has recorded the 2xx it just received).
    let mut event = Value::Null;
    assert!(wait_for(Duration::from_secs(10), || {
        event = hw.event("evt-1").json();
        event["deliveries"][0]["state"] == "delivered"
    }));
    let attempts = &event["deliveries"][0]["attempts"];
    assert_eq!(attempts[0]["status"], 500);
    assert_eq!(event["deliveries"][0]["state"], "delivered");
}

#[test]
fn http2_prior_knowledge_is_spoken_when_configured() {
    let up = Upstream::start();
    let (_dir, hw) = start_for(&up, "http2 = \"prior-knowledge\"");
    post_ok(&hw, "h2-1", &json!({"n": 1}));
    await_accepted(&up, 1, 10);
    assert_eq!(up.received()[0].version, "HTTP/2.0");
}

#[test]
fn a_400_is_dead_lettered_at_once_with_its_attempt() {
    let up = Upstream::start();
    up.answer(Answer::Status(400, None));
    let (_dir, hw) = start_for(&up, FAST_RETRY);
    post_ok(&hw, "bad-1", &json!({"n": 1}));
    await_dead_letters(&hw, 1);
    // Long enough for several retries at 50 ms had it been retried.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(up.count(), 1, "a 400 is not retried");
    let letter = &dead_letters(&hw)[0];
    assert_eq!(letter["sink"], "app");
    assert_eq!(letter["event_id"], "bad-1");
    let shown = hw
        .admin_get(&format!("/api/v1/dead-letters/{}", letter["seq"]))
        .json();
    let attempts = shown["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["status"], 400);
    assert!(attempts[0]["at_ms"].as_u64().unwrap() > 0);
    assert!(
        attempts[0]["error"].as_str().unwrap().contains("400"),
        "{shown}"
    );
    assert_eq!(shown["delivery_id"], "shop:bad-1:app:0");

    // Fix the cause, replay through the CLI: delivered exactly once more, same id.
    up.answer(Answer::Status(200, None));
    let (ok, out, err) = hw.cli(&["dlq", "list"]);
    assert!(ok && out.contains("bad-1"), "{out}{err}");
    let (ok, out, err) = hw.cli(&["dlq", "replay", "--sink", "app"]);
    assert!(ok, "{err}");
    assert!(out.contains("replayed 1"), "{out}");
    await_accepted(&up, 1, 10);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(up.accepted().len(), 1, "delivered once");
    assert_eq!(
        up.accepted()[0].header("webhook-id"),
        Some("shop:bad-1:app:0")
    );
    assert!(dead_letters(&hw).is_empty());
    // Nothing left to replay.
    let again = hw
        .admin_post("/api/v1/replay", &json!({"all": true}))
        .json();
    assert_eq!(again["replayed"], 0);
}

#[test]
fn retry_after_is_honoured() {
    let up = Upstream::start();
    up.script([Answer::Status(429, Some(2)), Answer::Status(503, Some(1))]);
    let (_dir, hw) = start_for(&up, FAST_RETRY);
    post_ok(&hw, "ra-1", &json!({"n": 1}));
    await_accepted(&up, 1, 15);
    let got = up.received();
    assert_eq!(got.len(), 3);
    let gap1 = got[1].at - got[0].at;
    let gap2 = got[2].at - got[1].at;
    // The backoff alone would be ≤ 100 ms.
    assert!(gap1 >= Duration::from_millis(1900), "{gap1:?}");
    assert!(gap2 >= Duration::from_millis(900), "{gap2:?}");
    assert!(gap1 < Duration::from_secs(4), "{gap1:?}");
}

#[test]
fn a_stalled_upstream_times_out_and_is_retried() {
    let up = Upstream::start();
    up.script([Answer::Stall(Duration::from_secs(3))]);
    let (_dir, hw) = start_for(&up, &format!("timeout = \"500ms\"\n{FAST_RETRY}"));
    post_ok(&hw, "st-1", &json!({"n": 1}));
    assert!(wait_for(Duration::from_secs(15), || {
        hw.event("st-1").json()["deliveries"][0]["state"] == "delivered"
    }));
    let event = hw.event("st-1").json();
    let first = event["deliveries"][0]["attempts"][0]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(first.contains("did not answer"), "{first}");
}

#[test]
fn a_failing_plugin_fixed_then_replayed_is_delivered_once() {
    let up = Upstream::start();
    let dir = workdir(&[("p", wasm::FAIL)]);
    let hw = Hookwall::start(BIN, dir.path(), &http_config(&up.url(), "", "\"p\""));
    for i in 0..3 {
        let r = post_signed(&hw, "shop", &format!("pf-{i}"), &json!({"n": i}));
        assert_eq!(r.status, 202, "accepted and dead-lettered");
    }
    assert_eq!(dead_letters(&hw).len(), 3);
    assert_eq!(dead_letters(&hw)[0]["sink"], Value::Null);
    // Replaying with the plugin still broken makes new dead letters, delivers nothing.
    let r = hw
        .admin_post("/api/v1/replay", &json!({"source": "shop"}))
        .json();
    assert_eq!(r["replayed"], 3);
    assert_eq!(dead_letters(&hw).len(), 3);
    assert_eq!(up.count(), 0);

    // Deploy the fix (hot reload), then replay one by seq and the rest by source.
    let tmp = dir.path().join("plugins/.p.tmp");
    std::fs::copy(wasm::ECHO, &tmp).unwrap();
    std::fs::rename(&tmp, dir.path().join("plugins/p.wasm")).unwrap();
    // Probe until the new plugin answers; probes the old one failed are dead letters too.
    let mut probes = 0;
    assert!(wait_for(Duration::from_secs(10), || {
        probes += 1;
        post_signed(&hw, "shop", &format!("probe-{probes}"), &json!({})).status == 200
    }));
    let failed_probes = probes - 1;
    await_accepted(&up, 1, 10);
    let seq = dead_letters(&hw)
        .iter()
        .find(|l| l["event_id"] == "pf-0")
        .unwrap()["seq"]
        .as_u64()
        .unwrap();
    let r = hw.admin_post("/api/v1/replay", &json!({"seq": seq})).json();
    assert_eq!(r["replayed"], 1);
    let (ok, out, err) = hw.cli(&["dlq", "replay", "--source", "shop"]);
    assert!(
        ok && out.contains(&format!("replayed {}", 2 + failed_probes)),
        "{out}{err}"
    );
    let total = 4 + failed_probes;
    await_accepted(&up, total, 10);
    std::thread::sleep(Duration::from_millis(300));
    let ids: Vec<String> = up
        .accepted()
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), total, "each delivered once: {ids:?}");
    for i in 0..3 {
        assert_eq!(
            ids.iter()
                .filter(|id| **id == format!("shop:pf-{i}:app:0"))
                .count(),
            1,
            "{ids:?}"
        );
    }
    // The echo plugin's mark shows the current plugin ran.
    assert!(
        up.accepted()
            .iter()
            .all(|r| r.header("x-echo-config").is_some())
    );
    assert!(dead_letters(&hw).is_empty());
    assert_eq!(hw.event("pf-0").json()["status"], "forwarded");
}

#[test]
fn purge_pause_and_resume() {
    let up = Upstream::start();
    up.answer(Answer::Status(404, None));
    let (_dir, hw) = start_for(&up, "");
    post_ok(&hw, "pg-1", &json!({}));
    await_dead_letters(&hw, 1);
    let bad = hw.admin_post(
        "/api/v1/dead-letters/purge",
        &json!({"seq": 1, "all": true}),
    );
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"], "bad_request");
    let (ok, out, _) = hw.cli(&["dlq", "purge", "--all"]);
    assert!(ok && out.contains("purged 1"), "{out}");
    assert!(dead_letters(&hw).is_empty());
    assert_eq!(
        hw.event("pg-1").json()["deliveries"][0]["state"],
        "resolved"
    );

    up.answer(Answer::Status(200, None));
    let r = pause_app(&hw, true);
    assert_eq!(r.json(), json!({"sink": "app", "paused": true}));
    post_ok(&hw, "pg-2", &json!({}));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(up.accepted().len(), 0, "a paused sink sends nothing");
    pause_app(&hw, false);
    await_accepted(&up, 1, 10);
    assert_eq!(
        hw.admin_post("/api/v1/sinks/nope/pause", &json!({})).status,
        404
    );
}

#[test]
fn retention_prunes_delivered_events_and_keeps_dead_letters() {
    let up = Upstream::start();
    up.script([Answer::Status(422, None)]);
    let dir = workdir(&[]);
    let text = http_config(&up.url(), "", "")
        .replace("path = \"data\"", "path = \"data\"\nretention = \"1s\"");
    let hw = Hookwall::start(BIN, dir.path(), &text);
    post_ok(&hw, "kept", &json!({}));
    await_dead_letters(&hw, 1);
    post_ok(&hw, "pruned", &json!({}));
    await_accepted(&up, 1, 10);
    assert!(
        wait_for(Duration::from_secs(10), || hw.event("pruned").status == 404),
        "the delivered event is pruned after retention"
    );
    assert_eq!(hw.event("kept").status, 200);
    assert_eq!(dead_letters(&hw).len(), 1);
}

/// The app is down for 30 s while events keep coming: nothing is lost, retries back off
/// (the gaps between one delivery's attempts grow), memory stays bounded.
#[test]
fn an_outage_under_steady_load_delivers_everything_after_recovery() {
    let mut up = Upstream::start();
    up.answer(Answer::Status(503, None));
    let (_dir, hw) = start_for(
        &up,
        // The breaker off: this test watches the backoff alone (the breaker has its own).
        "circuit = { failures = 0 }\nretry = { max_attempts = 1000, initial = \"100ms\", max_delay = \"5s\" }",
    );
    let start = Instant::now();
    let outage = Duration::from_secs(30);
    let mut sent = 0;
    let mut rss = Vec::new();
    // 503 for the first half, connections refused for the second (a crashed app).
    let mut went_down = false;
    while start.elapsed() < outage {
        for _ in 0..5 {
            let r = post_signed(&hw, "shop", &format!("o-{sent}"), &json!({"n": sent}));
            assert_eq!(r.status, 200);
            sent += 1;
        }
        if !went_down && start.elapsed() > outage / 2 {
            up.down();
            went_down = true;
        }
        if let Some(kib) = hw.rss_kib() {
            rss.push(kib);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(up.accepted().len(), 0);
    up.up();
    up.answer(Answer::Status(200, None));
    let all = wait_for(Duration::from_secs(60), || up.accepted_ids().len() == sent);
    assert!(all, "delivered {} of {sent}", up.accepted().len());

    // The first event's attempts during the 503 half: the gaps grow (jittered, so compare
    // the mean of the first three with the mean of the last three).
    let mut attempts: HashMap<String, Vec<Instant>> = HashMap::new();
    for r in up.received() {
        if r.status == 503 {
            let id = r.header("webhook-id").unwrap().to_string();
            attempts.entry(id).or_default().push(r.at);
        }
    }
    let first = &attempts["shop:o-0:app:0"];
    assert!(first.len() >= 6, "{} attempts", first.len());
    let gaps: Vec<Duration> = first.windows(2).map(|w| w[1] - w[0]).collect();
    let mean = |g: &[Duration]| g.iter().sum::<Duration>() / g.len() as u32;
    let (early, late) = (mean(&gaps[..3]), mean(&gaps[gaps.len() - 3..]));
    assert!(late > early * 2, "gaps did not grow: {gaps:?}");

    // Memory: the last sample is within 64 MiB of the one at about 5 s into the outage.
    let (base, last) = (rss[rss.len() / 6], *rss.last().unwrap());
    assert!(
        last < base + 64 * 1024,
        "RSS grew from {base} KiB to {last} KiB"
    );
    let per_sink: BTreeMap<&str, usize> = BTreeMap::from([("app", sent)]);
    eprintln!(
        "outage: {per_sink:?} events, {} requests in all, RSS {base} -> {last} KiB",
        up.count()
    );
}

/// POSTs one signed event to a running instance at `addr`; `true` on 2xx (acknowledged).
fn post_event(addr: std::net::SocketAddr, id: &str) -> bool {
    let body = serde_json::to_vec(&json!({"id": id})).unwrap();
    send_signed(addr, "shop", id, &body, &[]).is_ok_and(|r| (200..300).contains(&r.status))
}

/// Sender `t`'s events `c-T-I` for `I` in `range`, posted one by one to `addr`; the
/// acknowledged ids are pushed to `acked`.
fn send_range(
    addr: std::net::SocketAddr,
    t: usize,
    range: std::ops::Range<usize>,
    acked: &std::sync::Mutex<Vec<String>>,
) {
    for i in range {
        let id = format!("c-{t}-{i}");
        if post_event(addr, &id) {
            acked.lock().unwrap().push(id);
        }
    }
}

/// `kill -9` in the middle of a run with a flaky app: every event that got a 2xx reaches the
/// app at least once, under its stable id, after the restart. Prints the duplicate count.
#[test]
fn a_crash_mid_run_loses_no_acknowledged_event() {
    let up = Upstream::start();
    up.answer(Answer::FailEvery(7));
    let (_dir, mut hw) = start_for(
        &up,
        "retry = { max_attempts = 1000, initial = \"20ms\", max_delay = \"200ms\" }",
    );
    const SENDERS: usize = 4;
    const PER_SENDER: usize = 600;
    let acked = std::sync::Mutex::new(Vec::new());
    let addr = hw.addr;
    std::thread::scope(|s| {
        for t in 0..SENDERS {
            let acked = &acked;
            s.spawn(move || send_range(addr, t, 0..PER_SENDER / 2, acked));
        }
        // Kill while the senders are mid-way and deliveries are in flight.
        let enough = wait_for(Duration::from_secs(60), || {
            acked.lock().unwrap().len() >= SENDERS * PER_SENDER / 4 && up.count() > 100
        });
        assert!(enough, "the run did not get going");
        hw.kill();
    });
    let before_restart = acked.lock().unwrap().len();
    hw.restart();
    let addr = hw.addr;
    on_threads(SENDERS, |t| {
        send_range(addr, t, PER_SENDER / 2..PER_SENDER, &acked)
    });
    let acked = acked.into_inner().unwrap();
    let want: HashSet<String> = acked.iter().map(|id| format!("shop:{id}:app:0")).collect();
    let all = wait_for(Duration::from_secs(120), || {
        want.is_subset(&up.accepted_ids())
    });
    let accepted = up.accepted();
    let unique = webhook_ids(&accepted);
    assert!(
        all,
        "{} acknowledged, {} delivered",
        want.len(),
        unique.len()
    );
    eprintln!(
        "crash test: {} acknowledged ({before_restart} before the kill), {} delivered, \
         {} duplicate deliveries, {} requests in all (1 in 7 answered 503)",
        want.len(),
        unique.len(),
        accepted.len() - unique.len(),
        up.count()
    );
}

/// `order_key` under concurrency 8 with a slow, flaky app: per order, the app accepts the
/// events in the order they were sent and never two at once; different orders overlap.
#[test]
fn per_key_order_holds_under_concurrency() {
    let up = Upstream::start();
    up.answer(Answer::FailEvery(4));
    up.delay(Duration::from_millis(20));
    let (_dir, hw) = start_for(
        &up,
        "concurrency = 8\norder_key = \"json:/order_id\"\ncircuit = { failures = 0 }\n\
             retry = { max_attempts = 100, initial = \"30ms\", max_delay = \"200ms\" }",
    );
    const ORDERS: usize = 6;
    const STEPS: usize = 10;
    for step in 0..STEPS {
        for order in 0..ORDERS {
            let r = post_signed(
                &hw,
                "shop",
                &format!("k-{order}-{step}"),
                &json!({"order_id": format!("o{order}"), "step": step}),
            );
            assert_eq!(r.status, 200);
        }
    }
    assert!(wait_for(Duration::from_secs(60), || up.accepted().len()
        >= ORDERS * STEPS));
    std::thread::sleep(Duration::from_millis(200));
    for (order, steps) in &crate::steps_per_order(&up) {
        let want: Vec<u64> = (0..STEPS as u64).collect();
        assert_eq!(steps, &want, "order {order} delivered out of order");
    }
    // Same key one at a time: every request of one order starts after the previous ended,
    // which the in-order, exactly-once acceptance above implies with retries in between; and
    // different keys did run in parallel.
    assert!(
        up.max_in_flight() > 1,
        "keys were not delivered in parallel"
    );
    assert!(
        up.max_in_flight() <= 8,
        "concurrency exceeded: {}",
        up.max_in_flight()
    );
}

/// A dead app opens the circuit: the sink pauses and probes instead of sending every due
/// retry; it closes again once a probe succeeds, and everything is delivered.
#[test]
fn the_circuit_opens_on_a_dead_app_and_closes_after_a_probe() {
    let up = Upstream::start();
    up.answer(Answer::Status(503, None));
    let (_dir, hw) = start_for(
        &up,
        "concurrency = 4\ncircuit = { failures = 3, cooldown = \"1s\", max_cooldown = \"1s\" }\n\
             retry = { max_attempts = 1000, initial = \"10ms\", max_delay = \"20ms\" }",
    );
    post_numbered(&hw, "cb", 40);
    let sink = || hw.admin_get("/api/v1/sinks").json()["sinks"][0].clone();
    assert!(wait_for(Duration::from_secs(10), || sink()["circuit_open"] == true));
    let at_open = up.count();
    std::thread::sleep(Duration::from_secs(3));
    // Without the breaker, 40 deliveries retrying every ≤ 20 ms would be ~6000 requests in
    // 3 s; open, it is one probe per second.
    let during = up.count() - at_open;
    assert!(during <= 6, "{during} requests while the circuit was open");
    up.answer(Answer::Status(200, None));
    await_accepted(&up, 40, 10);
    assert_eq!(sink()["circuit_open"], false);
}

#[test]
fn a_sink_rate_spaces_deliveries() {
    let up = Upstream::start();
    let (_dir, hw) = start_for(&up, "rate = \"10/s\"");
    pause_app(&hw, true);
    for i in 0..30 {
        post_ok(&hw, &format!("rt-{i}"), &json!({}));
    }
    let started = Instant::now();
    pause_app(&hw, false);
    await_accepted(&up, 30, 20);
    // A burst of 10, then 10/s: the other 20 take about 2 s.
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1700), "{took:?}");
}

#[test]
fn batches_go_as_one_request_with_the_documented_envelope() {
    let up = Upstream::start();
    let (_dir, hw) = start_for(&up, "batch = { max_events = 5 }\nconcurrency = 1");
    pause_app(&hw, true);
    post_numbered(&hw, "b", 12);
    pause_app(&hw, false);
    assert!(wait_for(Duration::from_secs(10), || {
        up.accepted()
            .iter()
            .map(|r| r.json()["batch"].as_array().map_or(0, Vec::len))
            .sum::<usize>()
            == 12
    }));
    let requests = up.accepted();
    assert_eq!(requests.len(), 3, "5 + 5 + 2");
    let first = &requests[0];
    assert!(standard_webhooks_valid(SINK_SECRET, first));
    // The batch id names exactly its items (issue #24: `batch:FIRST+N` could name other items
    // after a retry regrouped them).
    let id = hookwall::sink::batch_id((0..5).map(|i| format!("shop:b-{i}:app:0")));
    assert_eq!(first.header("webhook-id"), Some(id.as_str()));
    let item = &first.json()["batch"][0];
    assert_eq!(item["id"], "b-0");
    assert_eq!(item["delivery_id"], "shop:b-0:app:0");
    assert_eq!(item["body"], json!({"i": 0}));
    assert_eq!(item["source"], "shop");
}

/// Deliveries in one upstream request: the batch's length, or 1 for a single delivery.
fn deliveries_in(r: &hookwall_testkit::upstream::Received) -> usize {
    serde_json::from_slice::<Value>(&r.body)
        .ok()
        .and_then(|b| b["batch"].as_array().map(Vec::len))
        .unwrap_or(1)
}

#[test]
fn max_wait_gathers_a_trickle_into_fewer_requests() {
    let up = Upstream::start();
    let max_wait = Duration::from_secs(2);
    // The default concurrency (16): without max_wait each event would go out as it comes.
    let (_dir, hw) = start_for(&up, "batch = { max_events = 50, max_wait = \"2s\" }");
    // A trickle: ten events one by one, each acknowledged before the next is sent.
    let n = 10;
    post_numbered(&hw, "w", n);
    let delivered = || up.accepted().iter().map(deliveries_in).sum::<usize>();
    assert!(wait_for(Duration::from_secs(20), || delivered() == n));
    let requests = up.accepted().len();
    println!("max_wait: {n} events sent one by one arrived in {requests} request(s)");
    assert!(requests <= n / 2, "{requests} requests for {n} events");
    let ids: HashSet<String> = up
        .accepted()
        .iter()
        .flat_map(|r| match r.json()["batch"].as_array() {
            Some(items) => items
                .iter()
                .map(|i| i["delivery_id"].as_str().unwrap_or_default().to_string())
                .collect(),
            None => vec![r.header("webhook-id").unwrap_or_default().to_string()],
        })
        .collect();
    assert_eq!(ids.len(), n, "each event once: {ids:?}");

    // A lone event is not stranded: it goes once its max_wait is over.
    let before = up.accepted().len();
    let sent = Instant::now();
    post_ok(&hw, "w-lone", &json!({"lone": true}));
    assert!(wait_for(Duration::from_secs(20), || up.accepted().len() > before));
    let lone = up.accepted()[before].clone();
    assert_eq!(lone.header("webhook-id"), Some("shop:w-lone:app:0"));
    let waited = lone.at - sent;
    println!("max_wait: a lone event arrived after {waited:?}");
    assert!(
        waited >= max_wait * 3 / 4,
        "held for max_wait before going alone: {waited:?}"
    );
}

#[test]
fn a_full_batch_does_not_wait_for_max_wait() {
    let up = Upstream::start();
    let (_dir, hw) = start_for(
        &up,
        "batch = { max_events = 5, max_wait = \"10m\" }\nconcurrency = 1",
    );
    post_numbered(&hw, "f", 5);
    // Far sooner than the 10 minutes a partial batch would wait.
    await_accepted(&up, 1, 30);
    let batch = &up.accepted()[0];
    assert_eq!(deliveries_in(batch), 5);
    let id = hookwall::sink::batch_id((0..5).map(|i| format!("shop:f-{i}:app:0")));
    assert_eq!(batch.header("webhook-id"), Some(id.as_str()));
}
