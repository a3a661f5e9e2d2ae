//! Plugins against the trust promise (issue 16): a manifest cannot hand its plugin host files
//! from outside the plugins directory (item 7); a plugin at capacity answers 503 with
//! `Retry-After` and never turns an event into a dead letter (item 8); a pooled plugin's stderr
//! is per call, so printing never traps it (item 10).

use std::path::Path;
use std::time::Duration;

use hookwall_testkit::{on_threads, read_jsonl, wait_for, wait_for_lines, wasm};
use serde_json::{Value, json};

use crate::{
    config, dead_letters, plugin_status, post_signed, run_config, serve, start_demo, stored,
    workdir, write_config, write_manifest,
};

/// What the secret file outside the plugins directory holds: it must never reach a plugin.
const SECRET_TEXT: &str = "host-secret-never-for-plugins";

/// `hookwall check` on `dir`'s config: (ok, stderr).
fn check(dir: &Path) -> (bool, String) {
    let out = run_config("check", &dir.join("hookwall.toml"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn manifest_file_values_outside_the_plugins_directory_refuse_to_load() {
    let dir = workdir(&[("echo", wasm::ECHO)]);
    let secret = dir.path().join("secret.txt");
    std::fs::write(&secret, SECRET_TEXT).unwrap();
    std::fs::create_dir(dir.path().join("plugins/sub")).unwrap();
    std::os::unix::fs::symlink("../secret.txt", dir.path().join("plugins/link.txt")).unwrap();
    std::fs::write(dir.path().join("plugins/inside.txt"), "hello").unwrap();
    let text = config(&[("demo", "\"echo\"")], "");
    write_config(dir.path(), &text, "127.0.0.1:0", "127.0.0.1:0");
    let absolute = secret.to_str().unwrap();
    for value in [
        absolute,
        "../secret.txt",
        "sub/../../secret.txt",
        "link.txt",
    ] {
        let manifest = format!("[config]\ngreeting_file = {value:?}\n");
        write_manifest(dir.path(), "echo", &manifest);
        let (ok, stderr) = check(dir.path());
        assert!(!ok, "{value}: the plugin loaded:\n{stderr}");
        assert!(
            stderr.contains("config `greeting_file`") && stderr.contains("plugins directory"),
            "{value}: {stderr}"
        );
        assert!(!stderr.contains(SECRET_TEXT), "{stderr}");
    }
    // A file inside the directory (also through `..` that stays inside) is fine.
    for value in ["inside.txt", "sub/../inside.txt"] {
        let manifest = format!("[config]\ngreeting_file = {value:?}\n");
        write_manifest(dir.path(), "echo", &manifest);
        let (ok, stderr) = check(dir.path());
        assert!(ok, "{value}: {stderr}");
    }
}

#[test]
fn a_reloaded_manifest_cannot_reach_outside_and_value_files_still_reload() {
    let dir = workdir(&[("echo", wasm::ECHO)]);
    std::fs::write(dir.path().join("secret.txt"), SECRET_TEXT).unwrap();
    std::fs::write(dir.path().join("plugins/greeting.txt"), "hello").unwrap();
    write_manifest(
        dir.path(),
        "echo",
        "[config]\ngreeting_file = \"greeting.txt\"\n",
    );
    let hw = serve(&dir, &[("demo", "\"echo\"")], "");
    let orders = dir.path().join("orders.jsonl");
    let greetings = || -> Vec<Value> {
        read_jsonl(&orders)
            .iter()
            .map(|l| l["headers"]["x-echo-config"].clone())
            .collect()
    };
    assert_eq!(post_signed(&hw, "demo", "v-0", &json!({})).status, 200);
    assert!(wait_for(Duration::from_secs(5), || greetings() == [json!("hello")]));

    // Editing the value file (write, then rename, as editors do) reloads the plugin.
    let tmp = dir.path().join("plugins/.greeting.txt.tmp");
    std::fs::write(&tmp, "hello again").unwrap();
    std::fs::rename(&tmp, dir.path().join("plugins/greeting.txt")).unwrap();
    assert!(wait_for(Duration::from_secs(10), || {
        let id = format!("v-{}", greetings().len());
        assert_eq!(post_signed(&hw, "demo", &id, &json!({})).status, 200);
        std::thread::sleep(Duration::from_millis(100));
        greetings().last() == Some(&json!("hello again"))
    }));

    // A manifest that reaches outside is refused, naming the key; the last good version stays.
    write_manifest(
        dir.path(),
        "echo",
        "[config]\ngreeting_file = \"../secret.txt\"\n",
    );
    assert!(wait_for(Duration::from_secs(5), || plugin_status(
        &hw, "echo"
    )["last_error"]
        .as_str()
        .is_some_and(|e| e.contains("config `greeting_file`"))));
    let before = greetings().len();
    assert_eq!(post_signed(&hw, "demo", "v-last", &json!({})).status, 200);
    assert!(wait_for(Duration::from_secs(5), || greetings().len() == before + 1));
    assert_eq!(greetings().last(), Some(&json!("hello again")));
    let all = std::fs::read_to_string(&orders).unwrap();
    assert!(!all.contains(SECRET_TEXT), "the secret reached the plugin");
    assert!(!hw.log().contains(SECRET_TEXT));
}

#[test]
fn a_plugin_at_capacity_answers_503_and_dead_letters_nothing() {
    // The `statics` plugin for source `demo`, at most 2 calls at once, each given 2 s.
    let manifest = "[limits]\nmax_concurrent_calls = 2\ndeadline = \"2s\"\n";
    let (dir, hw) = start_demo("statics", wasm::STATICS, Some(manifest));
    // Eight calls of 1.5 s against a bound of 2 and a 2 s wait: two run at once, two more get a
    // permit after 1.5 s, and the rest wait 2 s and are refused.
    let body = json!({"busy_ms": 1500});
    let replies = on_threads(8, |i| {
        let id = format!("c-{i}");
        (id.clone(), post_signed(&hw, "demo", &id, &body))
    });
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    for (id, r) in &replies {
        match r.status {
            200 => accepted.push(id.clone()),
            503 => {
                let secs: u64 = r
                    .header("retry-after")
                    .expect("Retry-After")
                    .parse()
                    .unwrap();
                assert!(secs >= 1, "{r:?}");
                assert_eq!(r.json()["error"], "plugin_busy", "{r:?}");
                assert!(r.json()["message"].is_string());
                refused.push(id.clone());
            }
            other => panic!("{id}: unexpected status {other}: {r:?}"),
        }
    }
    assert!(accepted.len() >= 2, "accepted {accepted:?}");
    assert!(!refused.is_empty(), "nothing was refused: {replies:?}");

    // Nothing dead-lettered, nothing stored for a refusal, every accepted one delivered.
    assert!(dead_letters(&hw).is_empty(), "{:?}", dead_letters(&hw));
    let orders = dir.path().join("orders.jsonl");
    assert!(wait_for_lines(
        &orders,
        accepted.len(),
        Duration::from_secs(10)
    ));
    let events = hw.admin_get("/api/v1/events?limit=100").json();
    assert_eq!(
        events["events"].as_array().unwrap().len(),
        accepted.len(),
        "{events}"
    );
    // The file sink writes the line, then its outcome is recorded: wait for the record.
    for id in &accepted {
        let delivered = || stored(&hw, id)["deliveries"][0]["state"] == "delivered";
        assert!(
            wait_for(Duration::from_secs(5), delivered),
            "{id}: {}",
            stored(&hw, id)
        );
    }

    // No dedupe mark was kept for a refusal: the sender's retry is processed, not a duplicate.
    let retry = post_signed(&hw, "demo", &refused[0], &json!({}));
    assert_eq!(retry.status, 200, "{retry:?}");
    assert_eq!(retry.json()["status"], "accepted", "{retry:?}");
    assert!(wait_for_lines(
        &orders,
        accepted.len() + 1,
        Duration::from_secs(10)
    ));
    assert!(dead_letters(&hw).is_empty());
}

/// The case, with no bound configured: a burst of 1 s calls far beyond what the engine's
/// instance pool holds (256). Before, the calls past the pool were "traps": dead-lettered and
/// answered 202, so the sender never retried. Now the default bound (16) admits what fits and
/// refuses the rest with 503, and nothing is dead-lettered.
#[test]
fn a_burst_beyond_capacity_is_refused_never_dead_lettered() {
    let manifest = "[limits]\ndeadline = \"2s\"\n";
    let (dir, hw) = start_demo("statics", wasm::STATICS, Some(manifest));
    let replies = on_threads(260, |i| {
        let r = post_signed(&hw, "demo", &format!("b-{i}"), &json!({"busy_ms": 1000}));
        (r.status, r.header("retry-after").map(str::to_string))
    });
    let accepted = replies.iter().filter(|(s, _)| *s == 200).count();
    let refused = replies.iter().filter(|(s, _)| *s == 503).count();
    assert_eq!(
        accepted + refused,
        replies.len(),
        "only 200 or 503: {replies:?}"
    );
    assert!(accepted >= 16, "accepted {accepted}");
    assert!(refused > 0, "refused none");
    assert!(
        replies
            .iter()
            .all(|(s, after)| *s == 200 || after.is_some())
    );
    assert!(dead_letters(&hw).is_empty(), "{:?}", dead_letters(&hw));
    let orders = dir.path().join("orders.jsonl");
    assert!(wait_for_lines(&orders, accepted, Duration::from_secs(20)));
}

#[test]
fn a_pooled_plugin_printing_on_every_call_never_traps() {
    let manifest = "instances = \"pooled\"\npool_size = 1\n";
    let (dir, hw) = start_demo("statics", wasm::STATICS, Some(manifest));
    // 50 × 100 B of stderr from one warm instance: far past the 2 KiB a call may keep.
    for i in 0..50 {
        let r = post_signed(&hw, "demo", &format!("s-{i}"), &json!({"stderr": 100}));
        assert_eq!(r.status, 200, "event {i}: {r:?}");
    }
    let orders = dir.path().join("orders.jsonl");
    assert!(wait_for_lines(&orders, 50, Duration::from_secs(10)));
    // One instance served them all (the call count went up to 50).
    let calls: Vec<String> = read_jsonl(&orders)
        .iter()
        .map(|l| l["headers"]["x-calls"].as_str().unwrap().to_string())
        .collect();
    assert!(calls.contains(&"50".to_string()), "{calls:?}");
    assert!(dead_letters(&hw).is_empty(), "{:?}", dead_letters(&hw));

    // A trap's reason carries that call's stderr (the panic), not earlier events' output.
    let r = post_signed(&hw, "demo", "s-panic", &json!({"panic": true}));
    assert_eq!(r.status, 202, "{r:?}");
    let event = stored(&hw, "s-panic");
    let reason = event["reason"].as_str().unwrap();
    assert!(reason.contains("asked to panic"), "{reason}");
    assert!(!reason.contains("eeee"), "{reason}");
}
