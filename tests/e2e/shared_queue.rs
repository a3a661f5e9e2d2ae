//! Replicas sharing one durable queue in PostgreSQL (`[storage] backend = "postgres"`), through
//! the real binary against a real PostgreSQL the test starts on a free port: exactly-once
//! intake across replicas, a killed replica's backlog delivered by the others, a database
//! restart under load, and a dead letter replayed from any replica.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use hookwall_testkit::upstream::{Answer, Upstream};
use hookwall_testkit::{Hookwall, PostgresServer, on_threads, wait_for};
use serde_json::json;
use tempfile::TempDir;

use crate::{BIN, base_config, hmac_source, post_signed, send_signed, workdir};

/// A replica: source `shop` into the http sink `app` at `sink_url`, its queue in `pg`.
fn replica(pg: &PostgresServer, sink_url: &str, storage: &str, sink: &str) -> (TempDir, Hookwall) {
    let config = format!(
        r#"{}
[sinks.app]
type = "http"
url = "{sink_url}"
timeout = "2s"
retry = {{ max_attempts = 50, initial = "50ms", max_delay = "300ms" }}
{sink}
{}"#,
        base_config(
            "",
            &format!("backend = \"postgres\"\nurl = \"env:DATABASE_URL\"\n{storage}"),
            None,
            ""
        ),
        hmac_source("shop", "", "app")
    );
    let dir = workdir(&[]);
    let hw = Hookwall::start_with_env(BIN, dir.path(), &config, &[("DATABASE_URL", &pg.url())]);
    (dir, hw)
}

/// The ids the app has confirmed (the delivery ids are `shop:ID:app:0`).
fn delivered(up: &Upstream) -> HashSet<String> {
    up.accepted_ids()
        .into_iter()
        .filter_map(|id| {
            id.strip_prefix("shop:")
                .and_then(|s| s.strip_suffix(":app:0"))
                .map(str::to_string)
        })
        .collect()
}

#[test]
fn three_replicas_share_one_queue_and_take_each_event_once() {
    let pg = PostgresServer::start();
    let up = Upstream::start();
    let replicas: Vec<(TempDir, Hookwall)> = (0..3)
        .map(|_| replica(&pg, &up.url(), "", "concurrency = 8"))
        .collect();

    // `hookwall check` reaches the database and knows its schema.
    let check = std::process::Command::new(BIN)
        .args(["check", "--config"])
        .arg(&replicas[0].1.config_path)
        .env("DATABASE_URL", pg.url())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        out.contains("storage postgres: reachable; schema version 1 (current)"),
        "{out}"
    );

    // `hookwall store` is the embedded store's tool: it refuses, pointing elsewhere.
    let store = std::process::Command::new(BIN)
        .args(["store", "--config"])
        .arg(&replicas[0].1.config_path)
        .arg("check")
        .env("DATABASE_URL", pg.url())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&store.stderr);
    assert!(
        !store.status.success() && err.contains("the store is PostgreSQL"),
        "{err}"
    );

    // Every event goes to one replica, and a copy to the next one at the same moment.
    const EVENTS: usize = 120;
    let answers: Vec<(String, String)> = on_threads(4, |t| {
        let mut out = Vec::new();
        for i in (t..EVENTS).step_by(4) {
            let id = format!("ev-{i}");
            let body = serde_json::to_vec(&json!({"n": i})).unwrap();
            let (a, b) = (&replicas[i % 3].1, &replicas[(i + 1) % 3].1);
            let barrier = Barrier::new(2);
            let pair = on_threads(2, |k| {
                let hw = if k == 0 { a } else { b };
                barrier.wait();
                send_signed(hw.addr, "shop", &id, &body, &[]).expect("request")
            });
            for r in pair {
                assert_eq!(r.status, 200, "{r:?}");
                out.push((id.clone(), r.json()["status"].as_str().unwrap().to_string()));
            }
        }
        out
    })
    .into_iter()
    .flatten()
    .collect();
    for i in 0..EVENTS {
        let id = format!("ev-{i}");
        let mut statuses: Vec<&str> = answers
            .iter()
            .filter(|(a, _)| *a == id)
            .map(|(_, s)| s.as_str())
            .collect();
        statuses.sort();
        assert_eq!(statuses, ["accepted", "duplicate"], "{id}");
    }

    assert!(
        wait_for(Duration::from_secs(30), || delivered(&up).len() == EVENTS),
        "delivered {} of {EVENTS}",
        delivered(&up).len()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(up.accepted().len(), EVENTS, "each event delivered once");
    assert_eq!(
        pg.psql("SELECT count(*) FROM hookwall.events"),
        EVENTS.to_string()
    );
    // Every replica's admin API shows the whole fleet's events.
    for (_, hw) in &replicas {
        let event = hw.admin_get("/api/v1/events/shop/ev-7").json();
        assert_eq!(event["deliveries"][0]["state"], "delivered", "{event}");
    }
}

#[test]
fn a_killed_replica_backlog_is_delivered_by_the_others() {
    let pg = PostgresServer::start();
    let up = Upstream::start();
    // A slow app: the backlog builds up, and the first replica holds leases when it dies.
    up.delay(Duration::from_millis(150));
    let storage = "lease = \"2s\"";
    let (_d1, mut first) = replica(&pg, &up.url(), storage, "concurrency = 4");
    let (_d2, _second) = replica(&pg, &up.url(), storage, "concurrency = 4");
    let (_d3, _third) = replica(&pg, &up.url(), storage, "concurrency = 4");

    let mut acknowledged = Vec::new();
    for i in 0..60 {
        let id = format!("k-{i}");
        let r = post_signed(&first, "shop", &id, &json!({"n": i}));
        assert_eq!(r.status, 200, "{r:?}");
        acknowledged.push(id);
    }
    // Mid-delivery, with deliveries leased to it: kill -9, never restarted.
    assert!(wait_for(Duration::from_secs(10), || up.count() >= 3));
    let held = pg.psql(
        "SELECT count(*) FROM hookwall.deliveries WHERE state = 'pending' AND lease_owner IS NOT NULL",
    );
    first.kill();
    let killed = Instant::now();
    assert!(
        wait_for(Duration::from_secs(60), || {
            let got = delivered(&up);
            acknowledged.iter().all(|id| got.contains(id))
        }),
        "not delivered: {:?} (leased at the kill: {held})",
        acknowledged
            .iter()
            .filter(|id| !delivered(&up).contains(*id))
            .collect::<Vec<_>>()
    );
    eprintln!(
        "every acknowledged event delivered {:?} after the kill ({held} leased then)",
        killed.elapsed()
    );
}

#[test]
fn a_database_restart_under_load_answers_503_and_loses_no_acknowledged_event() {
    let mut pg = PostgresServer::start();
    let up = Upstream::start();
    let (_dir, hw) = replica(&pg, &up.url(), "", "concurrency = 8");

    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (acknowledged, refused, stop) = (acknowledged.clone(), refused.clone(), stop.clone());
        let addr = hw.addr;
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("r-{i}");
                i += 1;
                let body = serde_json::to_vec(&json!({"n": i})).unwrap();
                match send_signed(addr, "shop", &id, &body, &[]) {
                    Ok(r) if r.status == 200 => acknowledged.lock().unwrap().push(id),
                    Ok(r) => refused
                        .lock()
                        .unwrap()
                        .push((r.status, r.header("retry-after").map(str::to_string))),
                    Err(_) => {}
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    pg.crash();
    std::thread::sleep(Duration::from_secs(2));
    pg.restart();
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();

    let refused = refused.lock().unwrap().clone();
    assert!(
        !refused.is_empty(),
        "the database was down: some events were refused"
    );
    for (status, retry_after) in &refused {
        assert_eq!(*status, 503, "{refused:?}");
        assert!(retry_after.is_some(), "503 carries Retry-After");
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    let before = acknowledged.len();
    // Taken again after the restart, without restarting Hookwall.
    let r = post_signed(&hw, "shop", "after", &json!({"n": "after"}));
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        wait_for(Duration::from_secs(30), || {
            let got = delivered(&up);
            got.contains("after") && acknowledged.iter().all(|id| got.contains(id))
        }),
        "lost: {:?}",
        acknowledged
            .iter()
            .filter(|id| !delivered(&up).contains(*id))
            .take(10)
            .collect::<Vec<_>>()
    );
    eprintln!(
        "{before} acknowledged and delivered, {} refused with 503 while the database restarted",
        refused.len()
    );
}

#[test]
fn a_dead_letter_replayed_from_any_replica_is_delivered() {
    let pg = PostgresServer::start();
    let up = Upstream::start();
    up.answer(Answer::Status(400, None));
    let (_d1, one) = replica(&pg, &up.url(), "", "");
    let (_d2, two) = replica(&pg, &up.url(), "", "");
    let r = post_signed(&one, "shop", "dl-1", &json!({"n": 1}));
    assert_eq!(r.status, 200, "{r:?}");
    let letters = || two.admin_get("/api/v1/dead-letters").json();
    assert!(
        wait_for(Duration::from_secs(15), || letters()["dead_letters"]
            .as_array()
            .is_some_and(|l| !l.is_empty())),
        "the permanent refusal is dead-lettered: {}",
        letters()
    );
    let letter = letters()["dead_letters"][0].clone();
    assert_eq!(letter["event_id"], "dl-1", "{letter}");
    assert_eq!(letter["sink"], "app", "{letter}");

    // The app is fixed; the operator replays from the other replica's admin API.
    up.answer(Answer::Status(200, None));
    let replayed = two.admin_post("/api/v1/replay", &json!({"seq": letter["seq"]}));
    assert_eq!(replayed.status, 200, "{replayed:?}");
    assert_eq!(replayed.json()["replayed"], 1, "{}", replayed.json());
    assert!(wait_for(Duration::from_secs(15), || delivered(&up).contains("dl-1")));
    assert_eq!(letters()["dead_letters"], json!([]));
    let event = one.admin_get("/api/v1/events/shop/dl-1").json();
    let states: Vec<&str> = event["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["resolved", "delivered"], "{event}");
}

/// `order_key` and `concurrency` hold for the fleet: two replicas, a slow and flaky app, the
/// events of each order spread over both replicas. Per order the app accepts the steps in the
/// order they were sent; never more than the sink's `concurrency` requests at once across both
/// replicas (each alone would allow that many); different orders overlap.
#[test]
fn order_and_concurrency_hold_across_replicas() {
    let pg = PostgresServer::start();
    let up = Upstream::start();
    up.answer(Answer::FailEvery(4));
    up.delay(Duration::from_millis(20));
    let sink = "concurrency = 3\norder_key = \"json:/order_id\"\ncircuit = { failures = 0 }";
    let (_d1, one) = replica(&pg, &up.url(), "", sink);
    let (_d2, two) = replica(&pg, &up.url(), "", sink);
    const ORDERS: usize = 6;
    const STEPS: usize = 8;
    for step in 0..STEPS {
        for order in 0..ORDERS {
            let hw = if (order + step) % 2 == 0 { &one } else { &two };
            let r = post_signed(
                hw,
                "shop",
                &format!("o-{order}-{step}"),
                &json!({"order_id": format!("o{order}"), "step": step}),
            );
            assert_eq!(r.status, 200, "{r:?}");
        }
    }
    assert!(
        wait_for(Duration::from_secs(60), || up.accepted().len()
            >= ORDERS * STEPS),
        "accepted {} of {}",
        up.accepted().len(),
        ORDERS * STEPS
    );
    std::thread::sleep(Duration::from_millis(300));
    for (order, steps) in &crate::steps_per_order(&up) {
        let want: Vec<u64> = (0..STEPS as u64).collect();
        assert_eq!(steps, &want, "order {order} delivered out of order");
    }
    assert!(
        up.max_in_flight() > 1,
        "orders were not delivered in parallel"
    );
    assert!(
        up.max_in_flight() <= 3,
        "the fleet exceeded the sink's concurrency: {}",
        up.max_in_flight()
    );
}

/// A sink paused through one replica's admin API is paused for the fleet: events accepted by
/// another replica wait, every replica reports the sink paused, and a resume through any
/// replica lets them go.
#[test]
fn a_sink_paused_through_one_replica_is_paused_for_all() {
    let pg = PostgresServer::start();
    let up = Upstream::start();
    let (_d1, one) = replica(&pg, &up.url(), "", "");
    let (_d2, two) = replica(&pg, &up.url(), "", "");
    let paused = one.admin_post("/api/v1/sinks/app/pause", &json!({}));
    assert_eq!(paused.status, 200, "{paused:?}");
    for i in 0..5 {
        let r = post_signed(&two, "shop", &format!("p-{i}"), &json!({"n": i}));
        assert_eq!(r.status, 200, "{r:?}");
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(up.count(), 0, "nothing is sent while the sink is paused");
    for hw in [&one, &two] {
        let sinks = hw.admin_get("/api/v1/sinks").json();
        assert_eq!(sinks["sinks"][0]["paused"], true, "{sinks}");
        assert_eq!(sinks["sinks"][0]["pending"], 5, "{sinks}");
    }
    let resumed = two.admin_post("/api/v1/sinks/app/resume", &json!({}));
    assert_eq!(resumed.status, 200, "{resumed:?}");
    assert!(wait_for(Duration::from_secs(10), || delivered(&up).len() == 5));
    assert_eq!(
        one.admin_get("/api/v1/sinks").json()["sinks"][0]["paused"],
        false
    );
}

/// A database that acknowledges commits before they are durable (`synchronous_commit = off`)
/// can lose events Hookwall acknowledged: it says so at start.
#[test]
fn a_database_acknowledging_before_its_flush_is_warned_about_at_start() {
    let pg = PostgresServer::start();
    pg.psql("ALTER SYSTEM SET synchronous_commit = off");
    pg.psql("SELECT pg_reload_conf()");
    let up = Upstream::start();
    let (_dir, hw) = replica(&pg, &up.url(), "", "");
    assert!(
        wait_for(Duration::from_secs(5), || hw
            .log()
            .contains("synchronous_commit = off")),
        "{}",
        hw.log()
    );
    let r = post_signed(&hw, "shop", "w-1", &json!({}));
    assert_eq!(r.status, 200, "it still serves: {r:?}");
}

/// With `sslmode=require` the connection is TLS and the database's certificate is verified:
/// against `[storage] ca_file` it works (every connection encrypted), against the system's
/// roots alone the start is refused with the reason.
#[test]
fn sslmode_require_uses_tls_and_verifies_the_database_certificate() {
    let ca = crate::edge_tls::TestCa::new("hookwall test database CA");
    let leaf = ca.leaf("localhost");
    let pg = PostgresServer::start_with_tls(Some((&leaf.cert_pem, &leaf.key_pem)));
    let up = Upstream::start();
    let dir = workdir(&[]);
    std::fs::write(dir.path().join("db-ca.pem"), ca.pem()).unwrap();
    // 127.0.0.1, not `localhost`: the server listens there only, and `localhost` may first
    // resolve to ::1, where another test's server may hold the same port number.
    let url = format!("{}?sslmode=require", pg.url());
    let config = |ca_line: &str| {
        format!(
            r#"{}
[sinks.app]
type = "http"
url = "{}"
{}"#,
            base_config(
                "",
                &format!("backend = \"postgres\"\nurl = \"env:DATABASE_URL\"\n{ca_line}"),
                None,
                ""
            ),
            up.url(),
            hmac_source("shop", "", "app")
        )
    };
    let hw = Hookwall::start_with_env(
        BIN,
        dir.path(),
        &config("ca_file = \"db-ca.pem\""),
        &[("DATABASE_URL", &url)],
    );
    let r = post_signed(&hw, "shop", "tls-1", &json!({"n": 1}));
    assert_eq!(r.status, 200, "{r:?}");
    assert!(wait_for(Duration::from_secs(10), || delivered(&up).contains("tls-1")));
    let plain = pg.psql(
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.application_name = 'hookwall' AND NOT s.ssl",
    );
    let encrypted = pg.psql(
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.application_name = 'hookwall' AND s.ssl",
    );
    assert_eq!(plain, "0", "no plain-text connection");
    assert_ne!(encrypted, "0", "the replica's connections are TLS");
    drop(hw);

    // Without the CA the certificate cannot be verified: the start is refused, saying why.
    let dir = workdir(&[]);
    let text = config("")
        .replace("{listen}", "127.0.0.1:0")
        .replace("{admin}", "127.0.0.1:0");
    std::fs::write(dir.path().join("hookwall.toml"), text).unwrap();
    let check = std::process::Command::new(BIN)
        .args(["check", "--config"])
        .arg(dir.path().join("hookwall.toml"))
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&check.stderr);
    assert!(
        !check.status.success(),
        "an unverifiable database is refused"
    );
    assert!(err.contains("certificate"), "{err}");
}

/// A sink's `rate` holds for the fleet: two replicas sending to a sink limited to 5 units a
/// second (a bucket of 5) deliver at most about 5 + 5/s between them, where two per-replica
/// budgets would allow twice that; everything still arrives.
#[test]
fn a_sinks_rate_holds_across_replicas() {
    let pg = PostgresServer::start();
    let up = Upstream::start();
    let sink = "rate = \"5/s\"\nconcurrency = 4";
    let (_d1, one) = replica(&pg, &up.url(), "", sink);
    let (_d2, two) = replica(&pg, &up.url(), "", sink);
    const EVENTS: usize = 30;
    for i in 0..EVENTS {
        let hw = if i % 2 == 0 { &one } else { &two };
        let r = post_signed(hw, "shop", &format!("r-{i}"), &json!({"n": i}));
        assert_eq!(r.status, 200, "{r:?}");
    }
    assert!(
        wait_for(Duration::from_secs(30), || delivered(&up).len() == EVENTS),
        "delivered {} of {EVENTS}",
        delivered(&up).len()
    );
    let mut times: Vec<Instant> = up.accepted().iter().map(|r| r.at).collect();
    times.sort();
    // In any two seconds: the bucket (5) plus two seconds' refill (10), with one of slack for
    // a refill landing at the window's edge. Per replica it would be 30.
    let most = times
        .iter()
        .map(|start| {
            times
                .iter()
                .filter(|t| **t >= *start && t.duration_since(*start) < Duration::from_secs(2))
                .count()
        })
        .max()
        .unwrap();
    assert!(
        most <= 16,
        "{most} deliveries within two seconds: the rate is not shared"
    );
}
