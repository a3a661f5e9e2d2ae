//! Issue #16's holes that live in intake and the store, each reproduced through the binary:
//! the forwarding-header allowlist bypass (2), one source swallowing another's event ids (3),
//! a full disk that disabled intake until restart and a writer panic (4), and a `reject`ed
//! event holding its dedupe mark (11). Each test failed on ca17fcd.

use std::time::Duration;

use hookwall_testkit::{Hookwall, Tmpfs, read_jsonl, wait_for, wait_for_lines, wasm};
use serde_json::{Value, json};

use crate::{BIN, base_config, file_sink, open_source, post_signed, workdir};

/// Two unsigned sources with the id in `X-Id`, both into the file sink `all`; `source_extra`
/// goes into `a`'s `verify`.
fn two_sources(server_extra: &str, storage_extra: &str, source_extra: &str) -> String {
    let base = base_config(server_extra, storage_extra, None, "");
    let retry = "retry = { max_attempts = 50, initial = \"50ms\", max_delay = \"200ms\" }";
    format!(
        "{base}{}{}{}",
        file_sink("all", "all.jsonl", retry),
        open_source(
            "a",
            &format!(", id_header = \"X-Id\"{source_extra}"),
            "all",
            ""
        ),
        open_source("b", ", id_header = \"X-Id\"", "all", ""),
    )
}

/// [`two_sources`] behind the trusted proxy 127.0.0.1 (with `server_extra` lines), source `a`
/// allowing only 192.0.2.0/24.
fn behind_proxy(server_extra: &str) -> String {
    let server = format!("trusted_proxies = [\"127.0.0.1/32\"]\n{server_extra}");
    two_sources(&server, "", r#", allow_ips = ["192.0.2.0/24"]"#)
}

/// The status of event `id` posted to source `a` with these `X-Forwarded-For` and (when not
/// empty) `Forwarded` headers.
fn status_via(hw: &Hookwall, id: &str, xff: &str, forwarded: &str) -> u16 {
    let mut headers = vec![("X-Forwarded-For", xff)];
    if !forwarded.is_empty() {
        headers.insert(0, ("Forwarded", forwarded));
    }
    post_id(hw, "a", id, &headers).status
}

fn post_id(
    hw: &Hookwall,
    source: &str,
    id: &str,
    headers: &[(&str, &str)],
) -> hookwall_testkit::Reply {
    let mut all = vec![("X-Id", id), ("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    hw.post(&format!("/hooks/{source}"), &all, br#"{"n":1}"#)
}

#[test]
fn a_forged_forwarded_header_does_not_pass_the_allowlist() {
    let dir = workdir(&[]);
    let mut hw = Hookwall::start(BIN, dir.path(), &behind_proxy(""));
    // The issue's request: the proxy appended X-Forwarded-For with the real client; the
    // client's own Forwarded names an allowed address.
    let forged = post_id(
        &hw,
        "a",
        "f-1",
        &[
            ("X-Forwarded-For", "203.0.113.9"),
            ("Forwarded", "for=192.0.2.5"),
        ],
    );
    assert_eq!(
        forged.status,
        403,
        "{:?}",
        String::from_utf8_lossy(&forged.body)
    );
    assert_eq!(forged.json()["error"], "ip_not_allowed");
    // A client behind the proxy that is allowed still gets in; one in front of it does not.
    assert_eq!(status_via(&hw, "f-2", "192.0.2.5", ""), 200);
    assert_eq!(status_via(&hw, "f-3", "192.0.2.5, 203.0.113.9", ""), 403);
    hw.stop();

    // `trusted_hops = 1`: exactly one proxy writes; what the client put in front is ignored,
    // and a request without the proxy's entry is refused, not trusted.
    let config = behind_proxy("trusted_hops = 1");
    std::fs::write(dir.path().join("hookwall.toml"), &config).unwrap();
    let mut hw = Hookwall::start(BIN, dir.path(), &config);
    assert_eq!(status_via(&hw, "h-1", "192.0.2.5, 203.0.113.9", ""), 403);
    assert_eq!(status_via(&hw, "h-2", "203.0.113.9, 192.0.2.5", ""), 200);
    let none = post_id(&hw, "a", "h-3", &[]);
    assert_eq!(none.status, 403);
    assert!(none.json()["error"].is_string());
    hw.stop();

    // `client_ip_header = "forwarded"`: a proxy that writes RFC 7239; X-Forwarded-For is then
    // the client's own and is ignored.
    let hw = Hookwall::start(
        BIN,
        dir.path(),
        &behind_proxy("client_ip_header = \"forwarded\""),
    );
    assert_eq!(status_via(&hw, "r-1", "203.0.113.9", "for=192.0.2.5"), 200);
    assert_eq!(status_via(&hw, "r-2", "192.0.2.5", "for=203.0.113.9"), 403);
}

#[test]
fn two_sources_with_the_same_ids_do_not_swallow_each_other() {
    let dir = workdir(&[]);
    let mut hw = Hookwall::start(BIN, dir.path(), &two_sources("", "", ""));
    let a = post_id(&hw, "a", "42", &[]);
    let b = post_id(&hw, "b", "42", &[]);
    assert_eq!(a.json()["status"], "accepted", "{:?}", a.json());
    assert_eq!(b.json()["status"], "accepted", "{:?}", b.json());
    // Each is its own event, found by source and the sender's id, which it keeps.
    for source in ["a", "b"] {
        let r = hw.event(&format!("{source}/42"));
        assert_eq!(r.status, 200, "{source}");
        assert_eq!(r.json()["source"], source);
        assert_eq!(r.json()["id"], "42");
        assert_eq!(
            r.json()["deliveries"][0]["id"],
            format!("{source}:42:all:0")
        );
    }
    // The bare provider id is ambiguous now: refused with the candidates, not guessed.
    let bare = hw.admin_get("/api/v1/events/42");
    assert_eq!(bare.status, 409);
    assert_eq!(bare.json()["error"], "ambiguous_event_id");
    assert_eq!(bare.json()["candidates"].as_array().unwrap().len(), 2);
    // Both are delivered, under different delivery ids (a receiver dedupes on them).
    let sink = dir.path().join("all.jsonl");
    assert!(wait_for_lines(&sink, 2, Duration::from_secs(10)));
    let lines = read_jsonl(&sink);
    assert_ne!(lines[0]["delivery_id"], lines[1]["delivery_id"]);
    // Within one source an id is still deduplicated, also after a restart.
    hw.stop();
    hw.restart();
    assert_eq!(post_id(&hw, "b", "42", &[]).json()["status"], "duplicate");
    assert_eq!(post_id(&hw, "a", "43", &[]).json()["status"], "accepted");
    assert_eq!(hw.event("43").json()["source"], "a");
}

/// Posts one ~48 KB event with id `id` to source `a`.
fn post_big(hw: &Hookwall, id: &str) -> hookwall_testkit::Reply {
    let body = json!({"pad": "x".repeat(48 * 1024)}).to_string();
    hw.post(
        "/hooks/a",
        &[("X-Id", id), ("Content-Type", "application/json")],
        body.as_bytes(),
    )
}

/// Posts ~48 KB events to source `a` until one is refused; returns the ids answered 2xx.
fn post_until_refused(
    hw: &Hookwall,
    prefix: &str,
) -> (Vec<String>, Option<hookwall_testkit::Reply>) {
    let mut acked = Vec::new();
    for i in 0..600 {
        let r = post_big(hw, &format!("{prefix}-{i}"));
        if r.status >= 300 {
            return (acked, Some(r));
        }
        acked.push(r.json()["id"].as_str().unwrap().to_string());
    }
    (acked, None)
}

#[test]
fn a_full_disk_refuses_events_then_recovers_by_itself() {
    let disk = Tmpfs::mount("24m");
    let dir = workdir(&[]);
    let store = disk.join("store");
    let config = two_sources("", "", "").replace(
        "path = \"data\"",
        &format!("path = {:?}", store.display().to_string()),
    );
    let hw = Hookwall::start(BIN, dir.path(), &config);
    assert_eq!(hw.admin_get("/readyz").status, 200);
    // Leave the store little room, then send until it is full.
    let free = fs_free(disk.path());
    let filler = disk.fill("filler", free.saturating_sub(3 << 20) as usize);
    let (mut acked, refused) = post_until_refused(&hw, "full");
    let refused = refused.expect("the disk never filled");
    assert_eq!(
        refused.status,
        503,
        "{:?}",
        String::from_utf8_lossy(&refused.body)
    );
    assert!(refused.json()["error"].is_string());
    // Readiness says why while the store cannot be written; a metric too. Both are read in one
    // look: the writer probes the store every second, and on a nearly full disk an empty probe
    // commit (or a delivery's small outcome) may pass before the next event fails again. So each
    // look follows one more event, which fails again while the disk is full: on a loaded machine
    // the window after a single failure can close before the first look.
    let mut seen = String::new();
    let mut n = 0;
    assert!(
        wait_for(Duration::from_secs(10), || {
            n += 1;
            let r = post_big(&hw, &format!("again-{n}"));
            if r.status < 300 {
                acked.push(r.json()["id"].as_str().unwrap().to_string());
            }
            let ready = hw.admin_get("/readyz");
            let metrics = String::from_utf8_lossy(&hw.admin_get("/metrics").body).to_string();
            seen = format!("{}\n{metrics}", String::from_utf8_lossy(&ready.body));
            ready.status == 503
                && ready.json()["checks"]["store"]["writable"] == false
                && metrics.contains("hookwall_store_writable 0")
        }),
        "{seen}"
    );
    assert!(hw.log().contains("store commit failed"));

    // Space is back: intake recovers without a restart.
    std::fs::remove_file(&filler).unwrap();
    assert!(
        wait_for(Duration::from_secs(15), || hw.admin_get("/readyz").status
            == 200),
        "{}",
        hw.log()
    );
    let after = post_id(&hw, "a", "after-1", &[]);
    assert_eq!(
        after.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&after.body)
    );
    // Nothing acknowledged was lost: every 2xx is stored and delivered.
    let sink = dir.path().join("all.jsonl");
    assert!(wait_for(Duration::from_secs(20), || read_jsonl(&sink)
        .len()
        > acked.len()));
    let delivered: Vec<Value> = read_jsonl(&sink);
    for id in &acked {
        assert_eq!(hw.event(id).status, 200, "{id}");
        assert!(
            delivered.iter().any(|l| l["id"] == id.as_str()),
            "{id} not delivered"
        );
    }
}

/// Bytes free on the filesystem holding `path` (`df`).
pub(crate) fn fs_free(path: &std::path::Path) -> u64 {
    let out = std::process::Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(path)
        .output()
        .expect("df");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df output")
}

#[test]
fn a_store_writer_panic_ends_the_process_and_a_restart_loses_nothing() {
    let dir = workdir(&[]);
    let config = two_sources("", "", "");
    let mut hw = Hookwall::start(BIN, dir.path(), &config);
    assert_eq!(post_id(&hw, "a", "before", &[]).status, 200);
    hw.stop();
    let mut hw = Hookwall::start_with_env(
        BIN,
        dir.path(),
        &config,
        &[("HOOKWALL_FAILPOINT", "store-writer-panic")],
    );
    // The process may end before it answers; either way the sender hears no 2xx.
    if let Ok(r) = hookwall_testkit::http(hw.addr, "POST", "/hooks/a", &[("X-Id", "boom")], b"{}") {
        assert!(
            r.status >= 500,
            "a request the writer never took is not acknowledged"
        );
    }
    let status = hw
        .wait_exit(Duration::from_secs(10))
        .expect("the process kept running");
    assert_eq!(status.code(), Some(70), "{}", hw.log());
    assert!(hw.log().contains("store writer panicked"));
    let hw = Hookwall::start(BIN, dir.path(), &config);
    assert_eq!(hw.event("a/before").status, 200);
    assert_eq!(post_id(&hw, "a", "boom", &[]).json()["status"], "accepted");
}

#[test]
fn a_rejected_event_holds_no_dedupe_mark() {
    let dir = workdir(&[("gate", wasm::FAIL)]);
    let config = crate::config(&[("shop", "\"gate\"")], "").replace(
        "plugins = [\"gate\"]",
        "plugins = [\"gate\"]\non_plugin_error = \"reject\"",
    );
    let hw = Hookwall::start(BIN, dir.path(), &config);
    let event = json!({"order": 7});
    let first = post_signed(&hw, "shop", "r-1", &event);
    assert_eq!(first.status, 500);
    assert_eq!(first.json()["error"], "plugin_failed");
    // The provider retries: processed again (and refused again), not `duplicate`.
    let again = post_signed(&hw, "shop", "r-1", &event);
    assert_eq!(again.status, 500, "{:?}", again.json());
    // The plugin is fixed; the next retry is accepted and delivered.
    std::fs::copy(wasm::ECHO, dir.path().join("plugins/gate.wasm")).unwrap();
    let mut last = Value::Null;
    assert!(
        wait_for(Duration::from_secs(15), || {
            last = post_signed(&hw, "shop", "r-1", &event).json();
            last["status"] != Value::Null
        }),
        "{}",
        hw.log()
    );
    assert_eq!(last["status"], "accepted", "{last}");
    let sink = dir.path().join("orders.jsonl");
    assert!(wait_for(Duration::from_secs(10), || !read_jsonl(&sink).is_empty()));
    assert_eq!(read_jsonl(&sink)[0]["body"]["order"], 7);
    // The failed copies stay in the dead-letter queue for the operator.
    let letters = hw.admin_get("/api/v1/dead-letters").json();
    assert!(
        letters.to_string().contains("fail plugin always fails"),
        "{letters}"
    );
}

/// The same class as the allowlist bypass: per-client rate limits counted the proxy, so behind
/// a trusted proxy every sender shared one budget (and one sender could spend everyone's).
#[test]
fn per_client_rate_limits_count_the_client_behind_a_trusted_proxy() {
    let dir = workdir(&[]);
    let config = two_sources(r#"trusted_proxies = ["127.0.0.1/32"]"#, "", "").replace(
        "[sources.b]",
        "rate_limit = { rate = \"1/m\", burst = 2, by = \"client_ip\" }\n\n[sources.b]",
    );
    let hw = Hookwall::start(BIN, dir.path(), &config);
    let from = |client: &str, id: &str| status_via(&hw, id, client, "");
    assert_eq!(from("198.51.100.1", "c-1"), 200);
    assert_eq!(from("198.51.100.1", "c-2"), 200);
    let limited = post_id(&hw, "a", "c-3", &[("X-Forwarded-For", "198.51.100.1")]);
    assert_eq!(limited.status, 429);
    assert!(limited.header("retry-after").is_some());
    // Another client behind the same proxy has its own budget.
    assert_eq!(from("198.51.100.2", "c-4"), 200);
}
