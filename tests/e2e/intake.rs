//! Exactly-once intake through the real binary: dedupe (embedded and across replicas through a
//! private Redis), rate limits, overload shedding, and Redis outages.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use hookwall_testkit::{Hookwall, RedisServer, Reply, on_threads, read_jsonl, wait_for};
use serde_json::{Value, json};

use crate::{
    BIN, base_config, file_sink, hmac_source, open_source, post_signed, run_config, workdir,
    write_config,
};

/// How long deliveries of a few hundred events may take to reach a file sink.
const DELIVERY_WAIT: Duration = Duration::from_secs(30);

/// Server, storage, admin and one file sink `out` (at `sink_path`), then `sources`.
fn config(server_extra: &str, storage_extra: &str, sink_path: &str, sources: &str) -> String {
    let retry = "retry = { max_attempts = 100, initial = \"50ms\", max_delay = \"200ms\" }";
    format!(
        "{}{}{sources}\n",
        base_config(server_extra, storage_extra, None, ""),
        file_sink("out", sink_path, retry)
    )
}

/// Hookwall in a fresh work dir (no plugins) with [`config`]`(ARGS…)`.
fn start(
    server_extra: &str,
    storage_extra: &str,
    sink_path: &str,
    sources: &str,
) -> (tempfile::TempDir, Hookwall) {
    let dir = workdir(&[]);
    let hw = Hookwall::start(
        BIN,
        dir.path(),
        &config(server_extra, storage_extra, sink_path, sources),
    );
    (dir, hw)
}

/// `[sources.NAME]` at `/hooks/NAME` with HMAC (id in `X-Event-Id`) and `extra` lines.
fn signed_source(name: &str, extra: &str) -> String {
    format!("{}{extra}\n", hmac_source(name, "", "out"))
}

/// `[sources.NAME]` at `/hooks/NAME` without verification and with `extra` lines.
fn unsigned_source(name: &str, extra: &str) -> String {
    open_source(name, "", "out", extra)
}

fn post_open(hw: &Hookwall, source: &str, body: &Value) -> Reply {
    hw.post(
        &format!("/hooks/{source}"),
        &[],
        &serde_json::to_vec(body).unwrap(),
    )
}

fn intake(hw: &Hookwall) -> Value {
    let r = hw.admin_get("/api/v1/intake");
    assert_eq!(r.status, 200, "{r:?}");
    r.json()
}

/// Waits until nothing is pending, then returns the sink's lines.
fn settled_lines(hw: &Hookwall, sink: &Path) -> Vec<Value> {
    assert!(
        wait_for(DELIVERY_WAIT, || intake(hw)["pending_deliveries"] == 0),
        "deliveries did not settle:\n{}",
        hw.log()
    );
    read_jsonl(sink)
}

/// `Retry-After` as whole seconds; panics when absent.
fn retry_after(r: &Reply) -> u64 {
    r.header("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After on {r:?}"))
        .parse()
        .expect("Retry-After in seconds")
}

#[test]
fn parallel_copies_of_one_event_are_stored_and_delivered_once() {
    // Body hash as the key: every copy gets its own generated id, so only the dedupe mark
    // (committed with the event) can make them one event.
    let (dir, hw) = start(
        "",
        "",
        "out.jsonl",
        &unsigned_source("hash", r#"dedupe = { key = "body-sha256" }"#),
    );
    const COPIES: usize = 200;
    let body = json!({"type": "order.created", "order": 42});
    let barrier = Barrier::new(COPIES);
    let replies: Vec<Reply> = on_threads(COPIES, |_| {
        barrier.wait();
        post_open(&hw, "hash", &body)
    });
    let mut accepted = Vec::new();
    let mut duplicate_of = HashSet::new();
    for r in &replies {
        assert_eq!(r.status, 200, "{r:?}");
        let v = r.json();
        match v["status"].as_str() {
            Some("accepted") => accepted.push(v["id"].as_str().unwrap().to_string()),
            Some("duplicate") => {
                duplicate_of.insert(v["id"].as_str().unwrap().to_string());
            }
            _ => panic!("unexpected answer {v}"),
        }
    }
    assert_eq!(accepted.len(), 1, "exactly one copy is accepted");
    assert_eq!(
        duplicate_of.into_iter().collect::<Vec<_>>(),
        accepted,
        "every duplicate names the accepted event"
    );
    let lines = settled_lines(&hw, &dir.path().join("out.jsonl"));
    assert_eq!(lines.len(), 1, "delivered once: {lines:?}");
    assert_eq!(lines[0]["id"], accepted[0].as_str());
    assert_eq!(intake(&hw)["duplicates"], (COPIES - 1) as u64);
}

#[test]
fn duplicates_are_recognised_after_a_crash_and_marks_expire() {
    let sources = format!(
        "{}{}",
        unsigned_source("hash", r#"dedupe = { key = "json:/delivery" }"#),
        unsigned_source(
            "short",
            r#"dedupe = { key = "json:/delivery", ttl = "1s" }"#
        ),
    );
    let (dir, mut hw) = start("", "", "out.jsonl", &sources);
    let first = post_open(&hw, "hash", &json!({"delivery": "d-1", "n": 1})).json();
    assert_eq!(first["status"], "accepted");

    // A crash right after the 2xx: the mark was committed with the event.
    hw.kill();
    hw.restart();
    let again = post_open(&hw, "hash", &json!({"delivery": "d-1", "n": 2})).json();
    assert_eq!(again, json!({"status": "duplicate", "id": first["id"]}));

    // After the TTL the same key is a new event.
    let short = post_open(&hw, "short", &json!({"delivery": "d-2"})).json();
    assert_eq!(short["status"], "accepted");
    let copy = post_open(&hw, "short", &json!({"delivery": "d-2"})).json();
    assert_eq!(copy["status"], "duplicate");
    std::thread::sleep(Duration::from_millis(1100));
    let later = post_open(&hw, "short", &json!({"delivery": "d-2"})).json();
    assert_eq!(later["status"], "accepted");
    assert_ne!(later["id"], short["id"]);

    // Delivery is at-least-once: the kill may land between the sink write and
    // its delivered mark, so d-1 can be written twice — with the same id.
    let lines = settled_lines(&hw, &dir.path().join("out.jsonl"));
    let ids: std::collections::BTreeSet<_> = lines
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 3, "three distinct events: {lines:?}");
}

#[test]
fn without_fsync_a_crash_loses_at_most_the_last_second() {
    // `fsync = false` skips the fsync per commit, but the writer still makes the store durable
    // within a second: events acknowledged well before a kill -9 survive it.
    let (_dir, mut hw) = start(
        "",
        "fsync = false",
        "out.jsonl",
        &unsigned_source("lazy", ""),
    );
    let ids: Vec<String> = (0..20)
        .map(|n| {
            let r = post_open(&hw, "lazy", &json!({"n": n})).json();
            assert_eq!(r["status"], "accepted", "{r}");
            r["id"].as_str().unwrap().to_owned()
        })
        .collect();
    // Three lazy-sync intervals: room for a slow machine.
    std::thread::sleep(Duration::from_secs(3));
    hw.kill();
    hw.restart();
    for id in &ids {
        let r = hw.event(id);
        assert_eq!(
            r.status,
            200,
            "event {id} lost in the crash: {r:?}\n{}",
            hw.log()
        );
    }
}

#[test]
fn over_the_rate_limit_is_429_with_retry_after_and_bad_signatures_spend_nothing() {
    let (_dir, hw) = start(
        "",
        "",
        "out.jsonl",
        &signed_source(
            "demo",
            r#"rate_limit = { rate = "1/m", burst = 2, by = "client_ip" }"#,
        ),
    );
    // Unauthenticated requests are refused before the limiter: they cost no budget.
    for i in 0..5 {
        let r = hw.post(
            "/hooks/demo",
            &[
                ("X-Signature", "sha256=00"),
                ("X-Event-Id", &format!("bad-{i}")),
            ],
            b"{}",
        );
        assert_eq!(r.status, 401);
    }
    for id in ["e-1", "e-2"] {
        let r = post_signed(&hw, "demo", id, &json!({"id": id}));
        assert_eq!(r.status, 200, "{r:?}");
    }
    let r = post_signed(&hw, "demo", "e-3", &json!({"id": "e-3"}));
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.json()["error"], "rate_limited");
    assert!(r.json()["message"].is_string());
    let wait = retry_after(&r);
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    assert_eq!(hw.event("e-3").status, 404);
    assert_eq!(intake(&hw)["rate_limited"], 1);
}

#[test]
fn overload_sheds_new_events_with_503_and_keeps_every_accepted_one() {
    // The sink's directory does not exist yet: deliveries pile up as pending retries.
    let (dir, hw) = start(
        "overload = { max_pending = 3 }",
        "",
        "later/out.jsonl",
        &signed_source("demo", ""),
    );
    for i in 0..3 {
        let r = post_signed(&hw, "demo", &format!("e-{i}"), &json!({"n": i}));
        assert_eq!(r.status, 200, "{r:?}");
    }
    let r = post_signed(&hw, "demo", "e-3", &json!({"n": 3}));
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.json()["error"], "overloaded");
    assert_eq!(retry_after(&r), 5);
    assert_eq!(hw.event("e-3").status, 404);
    assert!(hw.log().contains("overloaded"), "{}", hw.log());

    // The sink comes back: the backlog drains, nothing accepted was dropped, and new events
    // are taken again.
    std::fs::create_dir(dir.path().join("later")).unwrap();
    let sink = dir.path().join("later/out.jsonl");
    assert!(
        wait_for(DELIVERY_WAIT, || read_jsonl(&sink).len() == 3),
        "{}",
        hw.log()
    );
    assert!(wait_for(
        Duration::from_secs(5),
        || intake(&hw)["pending_deliveries"] == 0
    ));
    let r = post_signed(&hw, "demo", "e-3", &json!({"n": 3}));
    assert_eq!(r.status, 200, "{r:?}");
    let ids: HashSet<String> = settled_lines(&hw, &sink)
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, (0..4).map(|i| format!("e-{i}")).collect());
    assert!(intake(&hw)["overload_shed"].as_u64().unwrap() >= 1);
}

/// Sends `copies` of event `id` at once, one to each replica, retrying a copy that was told
/// to retry (503), like a provider would. Returns the final answers.
fn send_copies(replicas: &[&Hookwall], id: &str, body: &Value) -> Vec<Value> {
    on_threads(replicas.len(), |i| {
        for _ in 0..20 {
            let r = post_signed(replicas[i], "dedupe", id, body);
            if r.status == 503 {
                retry_after(&r);
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            assert_eq!(r.status, 200, "{r:?}");
            return r.json();
        }
        panic!("{id} was refused 20 times");
    })
}

#[test]
fn two_replicas_on_one_redis_share_dedupe_and_one_rate_limit() {
    let redis = RedisServer::start();
    let storage = format!("redis = \"{}\"", redis.url());
    // Shared limit: RATE/s over both replicas. GCRA never banks more than the burst, so a
    // client stalled longer than BURST/RATE (a loaded CI machine) would forfeit budget and
    // under-count; a one-second burst keeps the count about the limiter, not the machine.
    const RATE: u64 = 30;
    const BURST: u64 = 30;
    let sources = format!(
        "{}{}",
        signed_source("dedupe", ""),
        signed_source(
            "limited",
            &format!(r#"rate_limit = {{ rate = "{RATE}/s", burst = {BURST} }}"#)
        ),
    );
    let (dir_a, a) = start("", &storage, "out.jsonl", &sources);
    let (dir_b, b) = start("", &storage, "out.jsonl", &sources);

    // 1000 distinct events, each sent twice at once, the two copies to different replicas.
    const EVENTS: usize = 1000;
    const WORKERS: usize = 8;
    let per_worker = on_threads(WORKERS, |w| {
        let mut out = Vec::new();
        for i in (w..EVENTS).step_by(WORKERS) {
            let id = format!("evt-{i}");
            let order = if i % 2 == 0 { [&a, &b] } else { [&b, &a] };
            out.extend(send_copies(&order, &id, &json!({"n": i})));
        }
        out
    });
    let answers: Vec<Value> = per_worker.into_iter().flatten().collect();
    let accepted = answers.iter().filter(|v| v["status"] == "accepted").count();
    let duplicates = answers
        .iter()
        .filter(|v| v["status"] == "duplicate")
        .count();
    assert_eq!((accepted, duplicates), (EVENTS, EVENTS));

    let (sink_a, sink_b) = (
        dir_a.path().join("out.jsonl"),
        dir_b.path().join("out.jsonl"),
    );
    let mut lines = settled_lines(&a, &sink_a);
    lines.extend(settled_lines(&b, &sink_b));
    let ids: HashSet<&str> = lines.iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(lines.len(), EVENTS, "exactly one delivery per event");
    assert_eq!(ids.len(), EVENTS);

    // The shared limit: both replicas flooded for 10 s; what passes is the burst plus RATE/s.
    const RUN: Duration = Duration::from_secs(10);
    let started = Instant::now();
    let senders = [&a, &b, &a, &b, &a, &b];
    let counts: Vec<(u64, u64)> = on_threads(senders.len(), |t| {
        let (mut ok, mut limited) = (0, 0);
        let mut n = 0;
        while started.elapsed() < RUN {
            let r = post_signed(senders[t], "limited", &format!("rl-{t}-{n}"), &json!({}));
            n += 1;
            match r.status {
                200 => ok += 1,
                429 => {
                    assert!(retry_after(&r) >= 1);
                    limited += 1;
                }
                other => panic!("unexpected {other}: {r:?}"),
            }
            // Well above the limit, without starving the two cores.
            std::thread::sleep(Duration::from_millis(10));
        }
        (ok, limited)
    });
    let elapsed = started.elapsed().as_secs_f64();
    let passed: u64 = counts.iter().map(|c| c.0).sum();
    let refused: u64 = counts.iter().map(|c| c.1).sum();
    let expected = BURST as f64 + RATE as f64 * elapsed;
    assert!(
        refused > passed,
        "the load must exceed the limit to test it: {passed} passed, {refused} refused"
    );
    assert!(
        (passed as f64 - expected).abs() <= expected * 0.10,
        "{passed} passed in {elapsed:.1} s; the shared limit allows {expected:.0} (±10 %)"
    );
    // Both replicas took part in spending the one budget.
    assert!(
        counts[0].0 + counts[2].0 > 0 && counts[1].0 + counts[3].0 > 0,
        "{counts:?}"
    );
}

#[test]
fn a_redis_outage_follows_each_policy_and_loses_no_acknowledged_event() {
    let mut redis = RedisServer::start();
    let storage = format!("redis = \"{}\"", redis.url());
    let sources = format!(
        "{}{}",
        // Defaults: fail_open for both checks.
        signed_source("open", r#"rate_limit = { rate = "1000/s" }"#),
        signed_source(
            "strict",
            r#"dedupe = { key = "scheme", on_redis_error = "fail_closed" }"#
        ),
    );
    let (dir, hw) = start("", &storage, "out.jsonl", &sources);
    let mut acknowledged = HashSet::new();
    let mut send = |source: &str, id: &str| {
        let r = post_signed(&hw, source, id, &json!({"id": id}));
        if r.status == 200 && r.json()["status"] == "accepted" {
            acknowledged.insert(id.to_string());
        }
        r
    };
    for i in 0..20 {
        assert_eq!(send("open", &format!("before-{i}")).status, 200);
    }
    assert_eq!(send("strict", "strict-before").status, 200);

    redis.kill();
    for i in 0..20 {
        let r = send("open", &format!("during-{i}"));
        assert_eq!(r.status, 200, "fail_open keeps accepting: {r:?}");
    }
    let r = send("strict", "strict-during");
    assert_eq!(r.status, 503, "fail_closed refuses: {r:?}");
    assert_eq!(r.json()["error"], "dedupe_unavailable");
    assert!(retry_after(&r) >= 1);
    // This replica's own marks still catch copies of what it accepted.
    let r = send("open", "before-3");
    assert_eq!(r.json(), json!({"status": "duplicate", "id": "before-3"}));
    let report = intake(&hw);
    assert_eq!(report["redis"]["down"], true, "{report}");
    assert!(
        report["redis"]["dedupe_degraded"].as_u64().unwrap() >= 20,
        "{report}"
    );
    assert!(
        report["redis"]["rate_limit_degraded"].as_u64().unwrap() >= 20,
        "{report}"
    );

    redis.restart();
    let recovered = wait_for(Duration::from_secs(10), || {
        send("strict", "strict-after").status == 200
    });
    assert!(recovered, "no recovery after Redis returned:\n{}", hw.log());
    for i in 0..20 {
        assert_eq!(send("open", &format!("after-{i}")).status, 200);
    }
    assert_eq!(intake(&hw)["redis"]["down"], false);
    let log = hw.log();
    assert!(log.contains("Redis is not answering"), "{log}");
    assert!(log.contains("Redis answers again"), "{log}");

    let delivered: HashSet<String> = settled_lines(&hw, &dir.path().join("out.jsonl"))
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(acknowledged.len(), 62);
    assert_eq!(
        delivered, acknowledged,
        "every acknowledged event is delivered, once"
    );
}

#[test]
fn an_unreachable_redis_stops_start_up_with_a_clear_error() {
    let dir = workdir(&[]);
    let port = hookwall_testkit::free_port();
    let text = config(
        "",
        &format!("redis = \"redis://:pa55word@127.0.0.1:{port}\""),
        "out.jsonl",
        &signed_source("demo", ""),
    );
    let free = || format!("127.0.0.1:{}", hookwall_testkit::free_port());
    let path = write_config(dir.path(), &text, &free(), &free());
    let out = run_config("serve", &path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("cannot reach Redis at 127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(!stderr.contains("pa55word"), "{stderr}");
}
