//! The dashboard, as an operator uses it: Debian's headless chromium, driven by playwright-core
//! (`tests/browser`), sees a dead letter, clicks Replay and sees the event delivered.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hookwall_testkit::{Hookwall, read_jsonl, wait_for};
use serde_json::json;

use crate::operate::{TOKEN, admin, operate_config, operate_dir};
use crate::{BIN, post_signed};

const CHROMIUM: &str = "/usr/bin/chromium";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// `target/test-artifacts/NAME`, emptied: where a test leaves files for people to look at.
fn artifact_dir(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let dir = target.join("test-artifacts").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("artifact dir");
    dir
}

/// `tests/browser` with its locked npm dependencies installed (`npm ci`, once).
fn browser_kit() -> PathBuf {
    let kit = repo_root().join("tests/browser");
    if !kit
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&kit)
            .output()
            .expect("npm (Node.js) is needed for the browser test: apt-get install nodejs npm");
        assert!(
            out.status.success(),
            "npm ci in {} failed:\n{}{}",
            kit.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    kit
}

#[test]
fn dashboard_page_and_assets_are_served_without_a_token_and_hold_no_data() {
    let dir = operate_dir();
    let hw = Hookwall::start(BIN, dir.path(), &operate_config("", ""));
    for (path, kind) in [
        ("/", "text/html"),
        ("/dashboard", "text/html"),
        ("/dashboard.js", "text/javascript"),
        ("/dashboard.css", "text/css"),
    ] {
        let r = hw.admin_get(path);
        assert_eq!(r.status, 200, "{path}");
        assert!(
            r.header("content-type").unwrap().starts_with(kind),
            "{path}"
        );
        assert!(
            r.header("content-security-policy")
                .unwrap()
                .contains("script-src 'self'"),
            "{path}"
        );
    }
    let page = hw.admin_get("/dashboard");
    let page = String::from_utf8_lossy(&page.body);
    assert!(page.contains("id=\"dead-letters\""), "{page}");
    // The data behind it still needs the token.
    assert_eq!(admin(&hw, "/api/v1/dead-letters", None).status, 401);
}

#[test]
fn browser_sees_a_dead_letter_replays_it_and_sees_it_delivered() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "the browser test needs Debian's chromium at {CHROMIUM}: apt-get install chromium \
         (.ci/run installs it)"
    );
    let kit = browser_kit();
    let artifacts = artifact_dir("dashboard");

    // The sink's directory is a file at first, so every delivery fails and, with one attempt
    // allowed, is dead-lettered at once.
    let dir = operate_dir();
    std::fs::write(dir.path().join("out"), b"not a directory").unwrap();
    let config = operate_config("", "")
        .replace("path = \"orders.jsonl\"", "path = \"out/orders.jsonl\"\nretry = { max_attempts = 1, initial = \"50ms\", max_delay = \"50ms\" }");
    let hw = Hookwall::start(BIN, dir.path(), &config);
    let r = post_signed(&hw, "demo", "dash-1", &json!({"order": 7}));
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        wait_for(Duration::from_secs(15), || {
            admin(&hw, "/api/v1/dead-letters", Some(TOKEN)).json()["dead_letters"]
                .as_array()
                .is_some_and(|l| l.iter().any(|x| x["event_id"] == "dash-1"))
        }),
        "the delivery was not dead-lettered:\n{}",
        hw.log()
    );
    // The operator fixes the sink, then replays from the dashboard.
    std::fs::remove_file(dir.path().join("out")).unwrap();
    std::fs::create_dir(dir.path().join("out")).unwrap();

    let out = Command::new("node")
        .arg("replay.mjs")
        .current_dir(&kit)
        .env(
            "DASHBOARD_URL",
            format!("http://{}/dashboard?refresh=500#token={TOKEN}", hw.admin),
        )
        .env("EVENT_ID", "dash-1")
        .env("ARTIFACT_DIR", &artifacts)
        .env("CHROMIUM", CHROMIUM)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser run failed (screenshots in {}):\n{stdout}\n{stderr}\nserver log:\n{}",
        artifacts.display(),
        hw.log()
    );
    let report: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("a JSON report");
    assert_eq!(report["before"], "failed", "{report}");
    assert_eq!(report["after"], "delivered");
    // Delivered for real: the sink has it.
    let lines = read_jsonl(&dir.path().join("out/orders.jsonl"));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["id"], "dash-1");
    for shot in ["1-dead-letter.png", "2-delivered.png"] {
        let meta = std::fs::metadata(artifacts.join(shot)).expect(shot);
        assert!(meta.len() > 1000, "{shot} is empty");
    }
}
