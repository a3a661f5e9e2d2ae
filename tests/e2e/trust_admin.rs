//! Who may talk to the admin listener (issue 16, items 6 and 13), through the real binary with a
//! quick-start-like config: a tokenless admin on loopback.
//!
//! - A web page the operator happens to open can send simple cross-site requests (`text/plain`
//!   bodies, an `Origin` of its own) to `127.0.0.1:9090`: state-changing routes refuse them
//!   (403 `cross_origin`, 415 `unsupported_media_type`) and the sink stays unpaused; the CLI
//!   and curl with JSON and no `Origin` still work.
//! - Without a token, a `Host` that is not one of the listener's names is refused on every
//!   route, the dashboard included (421 `misdirected_request`): DNS rebinding.
//! - With a token, a wrong token is 401 whether or not its length matches the right one.

use hookwall_testkit::{Hookwall, Reply};
use serde_json::{Value, json};

use crate::{BIN, base_config, file_sink, hmac_source, post_signed, workdir};

const PAUSE: &str = "/api/v1/sinks/orders-file/pause";

/// Hookwall in a new work dir with the quick start's shape: one HMAC source into the
/// `orders-file` sink, a tokenless admin (plus `admin_extra`).
fn quick_start(admin_extra: &str) -> (tempfile::TempDir, Hookwall) {
    let base = base_config("", "", None, admin_extra);
    let sink = file_sink("orders-file", "orders.jsonl", "");
    let source = hmac_source("demo", "", "orders-file");
    let dir = workdir(&[]);
    let hw = Hookwall::start(BIN, dir.path(), &format!("{base}{sink}{source}"));
    (dir, hw)
}

/// `POST` [`PAUSE`] with these headers and no body.
fn pause(hw: &Hookwall, headers: &[(&str, &str)]) -> Reply {
    hw.admin_request("POST", PAUSE, headers, b"")
}

/// `GET /api/v1/sinks` with these headers.
fn sinks(hw: &Hookwall, headers: &[(&str, &str)]) -> Reply {
    hw.admin_request("GET", "/api/v1/sinks", headers, b"")
}

/// `orders-file`'s `paused` flag, read through the admin API.
fn paused(hw: &Hookwall) -> bool {
    let r = hw.admin_get("/api/v1/sinks");
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    let sinks = r.json()["sinks"].as_array().cloned().unwrap_or_default();
    let sink = sinks
        .iter()
        .find(|s| s["name"] == "orders-file")
        .expect("orders-file in /api/v1/sinks");
    sink["paused"].as_bool().expect("paused is a bool")
}

fn assert_served(r: &Reply, what: &str) {
    assert_eq!(
        r.status,
        200,
        "{what}: {:?}",
        String::from_utf8_lossy(&r.body)
    );
}

fn assert_refused(r: &Reply, status: u16, code: &str, what: &str) {
    assert_eq!(
        r.status,
        status,
        "{what}: {:?}",
        String::from_utf8_lossy(&r.body)
    );
    let body: Value = r.json();
    assert_eq!(body["error"], code, "{what}: {body}");
    assert!(body["message"].is_string(), "{what}: {body}");
}

#[test]
fn a_cross_site_request_cannot_change_a_tokenless_admin() {
    let (_dir, hw) = quick_start("");
    assert!(!paused(&hw));

    // What a page on http://evil.example can send without a preflight: refused, not paused.
    let text = ("Content-Type", "text/plain");
    let r = pause(&hw, &[text, ("Origin", "http://evil.example")]);
    assert_refused(&r, 403, "cross_origin", "text/plain from evil.example");
    assert!(!paused(&hw), "a cross-site request paused the sink");
    // Each defence on its own.
    let r = pause(&hw, &[text]);
    assert_refused(&r, 415, "unsupported_media_type", "text/plain, no Origin");
    let r = pause(&hw, &[]);
    assert_refused(&r, 415, "unsupported_media_type", "no content type");
    let json_ct = ("Content-Type", "application/json");
    let r = pause(&hw, &[json_ct, ("Origin", "http://evil.example")]);
    assert_refused(&r, 403, "cross_origin", "JSON from evil.example");
    let r = pause(&hw, &[json_ct, ("Origin", "null")]);
    assert_refused(&r, 403, "cross_origin", "Origin: null");
    let r = pause(&hw, &[json_ct, ("Sec-Fetch-Site", "cross-site")]);
    assert_refused(&r, 403, "cross_origin", "Sec-Fetch-Site: cross-site");
    assert!(!paused(&hw), "a refused request paused the sink");
    // Replay and purge are guarded the same way.
    for path in ["/api/v1/replay", "/api/v1/dead-letters/purge"] {
        let r = hw.admin_request("POST", path, &[text], br#"{"all":true}"#);
        assert_refused(&r, 415, "unsupported_media_type", path);
    }

    // A non-browser client: JSON, no Origin, no body.
    let r = pause(&hw, &[json_ct]);
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json(), json!({"sink": "orders-file", "paused": true}));
    assert!(paused(&hw));
    // The dashboard: its own origin.
    let own = format!("http://{}", hw.admin);
    let resume = "/api/v1/sinks/orders-file/resume";
    let r = hw.admin_request("POST", resume, &[json_ct, ("Origin", &own)], b"");
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert!(!paused(&hw));
    // The CLI's client sends JSON.
    let (ok, out, err) = hw.cli(&["dlq", "purge", "--all"]);
    assert!(ok, "{out}{err}");
    // Intake is untouched by all this.
    assert_eq!(
        post_signed(&hw, "demo", "evt-1", &json!({"n": 1})).status,
        200
    );
}

#[test]
fn a_tokenless_admin_answers_only_to_its_own_names() {
    let (_dir, hw) = quick_start("");
    let port = hw.admin.port();
    let evil = format!("evil.example:{port}");
    // A rebound name: the attacker's page reads from 127.0.0.1 under its own Host.
    for path in [
        "/api/v1/sinks",
        "/api/v1/events/x",
        "/dashboard",
        "/",
        "/healthz",
        "/metrics",
    ] {
        let r = hw.admin_request("GET", path, &[("Host", &evil)], b"");
        assert_refused(&r, 421, "misdirected_request", path);
    }
    let r = pause(
        &hw,
        &[("Host", &evil), ("Content-Type", "application/json")],
    );
    assert_refused(&r, 421, "misdirected_request", "POST under a foreign Host");
    assert!(!paused(&hw));
    let other_port = format!("localhost:{}", port.wrapping_add(1));
    for host in ["hookwall.internal", other_port.as_str(), "localhost"] {
        let r = sinks(&hw, &[("Host", host)]);
        assert_refused(&r, 421, "misdirected_request", host);
    }

    // Its own names: the bound address (the harness's default Host) and the loopback names on
    // its port.
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("LocalHost:{port}"),
        format!("[::1]:{port}"),
    ] {
        assert_served(&sinks(&hw, &[("Host", &host)]), &host);
    }
}

#[test]
fn allowed_hosts_names_the_listener_under_more_names() {
    let (_dir, hw) = quick_start("allowed_hosts = [\"hookwall.internal\"]");
    let port = hw.admin.port();
    // No port in the entry: any port.
    for host in [
        "hookwall.internal".to_string(),
        format!("hookwall.internal:{port}"),
    ] {
        assert_served(&sinks(&hw, &[("Host", &host)]), &host);
    }
    let r = hw.admin_request("GET", "/dashboard", &[("Host", "hookwall.internal")], b"");
    assert_eq!(r.status, 200);
    let r = sinks(&hw, &[("Host", "other.internal")]);
    assert_refused(&r, 421, "misdirected_request", "a name not listed");
    // An Origin among its names is not foreign.
    let r = pause(
        &hw,
        &[
            ("Host", "hookwall.internal"),
            ("Origin", "https://hookwall.internal"),
            ("Content-Type", "application/json"),
        ],
    );
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert!(paused(&hw));
}

#[test]
fn a_wrong_admin_token_is_refused_whatever_its_length() {
    const TOKEN: &str = "trust-admin-token-0123456789";
    let (_dir, hw) = quick_start(&format!("token = {TOKEN:?}"));
    let wrong_length = "Bearer trust-admin-token";
    let same_length = format!("Bearer {}X", &TOKEN[..TOKEN.len() - 1]);
    let right = format!("Bearer {TOKEN}");
    for (auth, what) in [
        (wrong_length, "a shorter token"),
        (same_length.as_str(), "a token of the right length"),
        (&format!("{right}0"), "a longer token"),
        ("Bearer ", "an empty token"),
    ] {
        let r = sinks(&hw, &[("Authorization", auth)]);
        assert_refused(&r, 401, "unauthorized", what);
    }
    let r = sinks(&hw, &[]);
    assert_refused(&r, 401, "unauthorized", "no token");
    let auth = ("Authorization", right.as_str());
    let r = sinks(&hw, &[auth]);
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));

    // With a token, any Host is served (the token is the defence), but a state-changing
    // request from another page is still refused, token or not.
    let r = sinks(&hw, &[auth, ("Host", "evil.example")]);
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    let json_ct = ("Content-Type", "application/json");
    let r = pause(&hw, &[auth, json_ct, ("Origin", "http://evil.example")]);
    assert_refused(&r, 403, "cross_origin", "cross-site with the token");
    let r = pause(&hw, &[auth, json_ct]);
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
}
