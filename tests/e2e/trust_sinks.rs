//! Trust, sinks and storage (issue 16): a delivery counts only once its bytes are safe (file
//! sink on a full disk), a sender's credential and a sink URL's secret are stored and shown
//! nowhere, retention keeps pruning behind old open events, and an app's huge answer is not
//! buffered.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use hookwall_testkit::upstream::{Answer, Upstream};
use hookwall_testkit::{Hookwall, Tmpfs, free_port, on_threads, wait_for};
use serde_json::{Value, json};

use crate::{BIN, base_config, file_sink, hmac_source, open_source, post_signed, stored, workdir};

/// Quick retries that never give up during a test, and no circuit breaker pausing them.
const KEEP_TRYING: &str = "retry = { max_attempts = 1000, initial = \"50ms\", max_delay = \"200ms\" }\ncircuit = { failures = 0 }";

/// The event's delivery to `sink`.
fn delivery(hw: &Hookwall, id: &str, sink: &str) -> Value {
    stored(hw, id)["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["sink"] == sink)
        .unwrap_or_else(|| panic!("event {id} has no delivery to {sink}"))
        .clone()
}

/// Whether every event of `ids` has its delivery to `sink` in `state`.
fn all_in_state(hw: &Hookwall, ids: &[String], sink: &str, state: &str) -> bool {
    ids.iter()
        .all(|id| delivery(hw, id, sink)["state"] == state)
}

/// The id the 2xx answer gives (the stored id, whatever form the store uses).
fn accepted_id(reply: &hookwall_testkit::Reply) -> String {
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.json()["id"].as_str().unwrap().to_string()
}

/// The file's complete lines, asserting it holds nothing else: no partial line, every line
/// JSON.
fn complete_lines(path: &Path) -> Vec<Value> {
    let bytes = std::fs::read(path).unwrap_or_default();
    assert!(
        bytes.is_empty() || bytes.ends_with(b"\n"),
        "the file ends in a partial line: …{:?}",
        String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(80)..])
    );
    String::from_utf8(bytes)
        .expect("UTF-8")
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {:?}…", &l[..l.len().min(80)]))
        })
        .collect()
}

/// Every file's bytes under `dir`, recursively.
fn all_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(all_bytes(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path.display().to_string(), bytes));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Item 1. The file sink on a disk with room for about half of ten ~100 KB events: every
/// event shown `delivered` is a complete line in the file, the others are retried, the file
/// never holds a partial line; once space is back every event is delivered exactly once.
#[test]
fn the_file_sink_confirms_only_lines_that_reached_the_disk() {
    // 1600 KiB with a 1000 KiB filler: 600 KiB free until the filler goes.
    let disk = Tmpfs::mount("1600k");
    let filler = disk.fill("filler", 1000 * 1024);
    let out = disk.join("events.jsonl");
    let dir = workdir(&[]);
    let config = format!(
        "{}{}{}",
        base_config("max_body_bytes = 1048576", "", None, ""),
        file_sink(
            "disk",
            &out.display().to_string(),
            &format!("{KEEP_TRYING}\nbatch = {{ max_events = 1 }}")
        ),
        hmac_source("shop", "", "disk")
    );
    let hw = Hookwall::start(BIN, dir.path(), &config);
    let ids: Vec<String> = (0..10)
        .map(|i| {
            let body = json!({"i": i, "pad": "x".repeat(100_000)});
            accepted_id(&post_signed(&hw, "shop", &format!("full-{i}"), &body))
        })
        .collect();
    let tried =
        |d: &Value| d["state"] == "delivered" || !d["attempts"].as_array().unwrap().is_empty();
    assert!(
        wait_for(Duration::from_secs(30), || ids
            .iter()
            .all(|id| tried(&delivery(&hw, id, "disk")))),
        "every delivery tried once:\n{}",
        hw.log()
    );
    // States first, then the file: a delivery shown delivered must already be in it.
    let states: HashMap<&String, Value> = ids
        .iter()
        .map(|id| (id, delivery(&hw, id, "disk")))
        .collect();
    let in_file: HashSet<String> = complete_lines(&out)
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_string())
        .collect();
    let mut delivered = 0;
    for (id, d) in &states {
        match d["state"].as_str().unwrap() {
            "delivered" => {
                delivered += 1;
                assert!(
                    in_file.contains(*id),
                    "{id} shown delivered but not in the file"
                );
            }
            "pending" | "dead" => {
                let error = d["attempts"][0]["error"].as_str().unwrap_or_default();
                assert!(error.contains("cannot write"), "{id}: {d}");
            }
            other => panic!("{id}: unexpected state {other}"),
        }
    }
    assert!(
        delivered < ids.len(),
        "the disk was meant to fill up: {delivered} delivered"
    );

    std::fs::remove_file(&filler).unwrap();
    let all_delivered = || all_in_state(&hw, &ids, "disk", "delivered");
    assert!(
        wait_for(Duration::from_secs(30), all_delivered),
        "every event delivered once space is back:\n{}",
        hw.log()
    );
    let lines = complete_lines(&out);
    let mut written: Vec<&str> = lines.iter().map(|l| l["id"].as_str().unwrap()).collect();
    written.sort_unstable();
    let mut expected: Vec<&str> = ids.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(written, expected, "each event exactly once, whole");
}

/// Item 5. A bearer source's token is in neither the file sink's line, the admin API nor any
/// file of the store; a source with `forward_credentials = true` keeps its header (which also
/// shows these searches would find a token). An http sink whose URL (from `env:`) embeds a
/// secret shows it in neither the attempt records, the dead letter nor the log.
#[test]
fn credentials_and_sink_url_secrets_are_stored_and_shown_nowhere() {
    const TOKEN: &str = "s3cret-token-A";
    const FORWARDED: &str = "s3cret-token-B";
    const URL_SECRET: &str = "XXXXSECRET";
    let dir = workdir(&[]);
    let config = format!(
        r#"{}
[sources.tokened]
path = "/hooks/tokened"
verify = {{ scheme = "bearer", secrets = ["{TOKEN}"], id_header = "X-Event-Id" }}
sinks = ["disk", "app"]

[sources.forwarding]
path = "/hooks/forwarding"
verify = {{ scheme = "bearer", secrets = ["env:FWD_TOKEN"], id_header = "X-Event-Id", forward_credentials = true }}
sinks = ["disk"]
{}
[sinks.app]
type = "http"
url = "env:APP_URL"
retry = {{ max_attempts = 2, initial = "50ms", max_delay = "100ms" }}
"#,
        base_config("", "", None, ""),
        file_sink("disk", "out.jsonl", ""),
    );
    let url = format!(
        "http://127.0.0.1:{}/services/T000/B000/{URL_SECRET}",
        free_port()
    );
    let hw = Hookwall::start_with_env(
        BIN,
        dir.path(),
        &config,
        &[
            ("RUST_LOG", "debug"),
            ("APP_URL", &url),
            ("FWD_TOKEN", FORWARDED),
        ],
    );
    let post = |source: &str, token: &str| {
        let auth = format!("Bearer {token}");
        let event_id = format!("{source}-1");
        let headers = [
            ("Authorization", auth.as_str()),
            ("X-Event-Id", event_id.as_str()),
        ];
        accepted_id(&hw.post(&format!("/hooks/{source}"), &headers, br#"{"a":1}"#))
    };
    let id = post("tokened", TOKEN);
    let forwarded = post("forwarding", FORWARDED);
    let out = dir.path().join("out.jsonl");
    assert!(
        wait_for(Duration::from_secs(20), || complete_lines(&out).len() == 2
            && delivery(&hw, &id, "app")["state"] == "dead"),
        "both lines written and the app delivery dead-lettered:\n{}",
        hw.log()
    );

    // The file sink's lines.
    let lines = complete_lines(&out);
    let line = |id: &str| lines.iter().find(|l| l["id"] == id).unwrap().clone();
    assert!(
        line(&id)["headers"].get("authorization").is_none(),
        "{}",
        line(&id)
    );
    assert_eq!(
        line(&forwarded)["headers"]["authorization"],
        format!("Bearer {FORWARDED}")
    );
    assert!(!contains(&std::fs::read(&out).unwrap(), TOKEN));
    // The admin API.
    let shown = stored(&hw, &id).to_string();
    assert!(!shown.contains(TOKEN), "{shown}");
    assert!(stored(&hw, &forwarded).to_string().contains(FORWARDED));
    // The store's files, byte for byte: the forwarded token is there, the other is not.
    let data = all_bytes(&dir.path().join("data"));
    assert!(
        data.iter().any(|(_, b)| contains(b, FORWARDED)),
        "the search finds stored tokens"
    );
    for (path, bytes) in &data {
        assert!(!contains(bytes, TOKEN), "{TOKEN} in {path}");
    }

    // The sink URL's secret: attempts, the dead letter, the log.
    let app = delivery(&hw, &id, "app");
    let attempts = app["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{app}");
    for a in attempts {
        let error = a["error"].as_str().unwrap();
        assert!(
            error.contains("127.0.0.1"),
            "the error names the host: {error}"
        );
        assert!(
            !error.contains(URL_SECRET) && !error.contains("/services"),
            "{error}"
        );
    }
    let letters = hw.admin_get("/api/v1/dead-letters");
    assert_eq!(letters.status, 200);
    let letters = String::from_utf8_lossy(&letters.body).to_string();
    assert!(
        letters.contains("127.0.0.1") && !letters.contains(URL_SECRET),
        "{letters}"
    );
    let log = hw.log();
    assert!(
        log.contains("delivery attempt failed"),
        "the failures were logged"
    );
    assert!(!log.contains(URL_SECRET), "the URL's secret is in the log");
    assert!(!log.contains(TOKEN), "the token is in the log");
}

/// Item 9. More old open events than one retention step looks at (8,100 behind a paused
/// sink), then closed ones: retention (`retention = "2s"`) prunes the closed ones anyway and
/// keeps the open ones.
#[test]
fn retention_prunes_closed_events_behind_thousands_of_old_open_ones() {
    const OPEN: usize = 8_100;
    let dir = workdir(&[]);
    let id_header = ", id_header = \"X-Event-Id\"";
    let config = format!(
        "{}{}{}{}{}",
        base_config("", "retention = \"2s\"\nfsync = false", None, ""),
        open_source("backlog", id_header, "held", ""),
        open_source("shop", id_header, "disk", ""),
        file_sink("held", "held.jsonl", "paused = true"),
        file_sink("disk", "out.jsonl", ""),
    );
    let hw = Hookwall::start(BIN, dir.path(), &config);
    let started = std::time::Instant::now();
    let per_worker = on_threads(4, |w| {
        (w..OPEN)
            .step_by(4)
            .map(|i| {
                let id = format!("old-{i}");
                let headers = [("X-Event-Id", id.as_str())];
                accepted_id(&hw.post("/hooks/backlog", &headers, b"{}"))
            })
            .collect::<Vec<_>>()
    });
    let backlog: Vec<String> = per_worker.into_iter().flatten().collect();
    eprintln!("{OPEN} open events posted in {:?}", started.elapsed());
    let closed: Vec<String> = (0..20)
        .map(|i| {
            let id = format!("new-{i}");
            accepted_id(&hw.post("/hooks/shop", &[("X-Event-Id", id.as_str())], b"{}"))
        })
        .collect();
    let out = dir.path().join("out.jsonl");
    assert!(wait_for(Duration::from_secs(20), || complete_lines(&out)
        .len()
        == 20));
    let gone = |id: &String| hw.event(id).status == 404;
    assert!(
        wait_for(Duration::from_secs(30), || closed.iter().all(gone)),
        "closed events older than the retention are pruned:\n{}",
        hw.log()
    );
    for id in [&backlog[0], &backlog[OPEN / 2], &backlog[OPEN - 1]] {
        assert_eq!(
            delivery(&hw, id, "held")["state"],
            "pending",
            "{id} is kept"
        );
    }
}

/// Item 12. An app answering every delivery with a 32 MiB body, 8 at a time: the host's peak
/// RSS does not grow by anything near the bodies (it used to collect each whole), and the
/// status still decides: 200 delivers, 500 is retried and then dead-lettered with the status.
#[test]
fn a_huge_answer_body_is_not_buffered_and_the_status_decides() {
    const BODY: usize = 32 * 1024 * 1024;
    let up = Upstream::start();
    up.answer(Answer::Big(200, BODY));
    let dir = workdir(&[]);
    let config = format!(
        "{}\n[sinks.app]\ntype = \"http\"\nurl = \"{}\"\nconcurrency = 8\n\
         retry = {{ max_attempts = 2, initial = \"50ms\", max_delay = \"100ms\" }}\n{}",
        base_config("", "", None, ""),
        up.url(),
        hmac_source("shop", "", "app")
    );
    let hw = Hookwall::start(BIN, dir.path(), &config);
    let before = hw.peak_rss_kib().expect("peak RSS");
    let ids: Vec<String> = (0..16)
        .map(|i| {
            accepted_id(&post_signed(
                &hw,
                "shop",
                &format!("big-{i}"),
                &json!({"i": i}),
            ))
        })
        .collect();
    let all_delivered = || all_in_state(&hw, &ids, "app", "delivered");
    assert!(
        wait_for(Duration::from_secs(30), all_delivered),
        "a 2xx with a huge body delivers:\n{}",
        hw.log()
    );
    let peak = hw.peak_rss_kib().expect("peak RSS");
    eprintln!("peak RSS {before} KiB before, {peak} KiB after 16 answers of {BODY} bytes");
    assert!(
        peak < before + 64 * 1024,
        "peak RSS grew from {before} KiB to {peak} KiB"
    );

    up.answer(Answer::Big(500, BODY));
    let failed = accepted_id(&post_signed(&hw, "shop", "big-500", &json!({})));
    assert!(wait_for(Duration::from_secs(20), || delivery(
        &hw, &failed, "app"
    )["state"]
        == "dead"));
    let d = delivery(&hw, &failed, "app");
    for a in d["attempts"].as_array().unwrap() {
        assert_eq!(a["status"], 500, "{d}");
        assert!(
            a["error"].as_str().unwrap().len() < 512,
            "only an excerpt is kept: {d}"
        );
    }
}
