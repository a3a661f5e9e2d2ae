//! Operating it: `/metrics` after a scripted run, the admin token, `/readyz`, the events API.

use std::collections::HashMap;
use std::time::Duration;

use hookwall_testkit::{Hookwall, Reply, http, sign_sha256_hex, wait_for, wait_for_lines, wasm};
use serde_json::json;

use crate::{
    BIN, base_config, file_sink, hmac_source, post_signed, run_config, workdir, write_config,
};

pub const TOKEN: &str = "admin-token-for-tests";

/// Sources: `demo` (no plugins), `broken` (the `fail` plugin), `panicky` (the `panic` plugin),
/// all to the `orders` file sink. `admin_extra` goes into `[admin]`.
pub fn operate_config(admin_extra: &str, extra: &str) -> String {
    let source = |name: &str, plugins: &str| hmac_source(name, plugins, "orders");
    let base = base_config(
        "max_body_bytes = 4096",
        "",
        Some("deadline = \"200ms\""),
        &format!("token = \"file:admin.token\"\n{admin_extra}"),
    );
    format!(
        "{base}{}{}{}{}",
        file_sink("orders", "orders.jsonl", extra),
        source("demo", ""),
        source("broken", "\"fail\""),
        source("panicky", "\"panic\""),
    )
}

/// A work dir with the `fail` and `panic` plugins and the admin token file.
pub fn operate_dir() -> tempfile::TempDir {
    let dir = workdir(&[("fail", wasm::FAIL), ("panic", wasm::PANIC)]);
    std::fs::write(dir.path().join("admin.token"), TOKEN).unwrap();
    dir
}

/// Hookwall in a new [`operate_dir`] on `config`.
fn start(config: &str) -> (tempfile::TempDir, Hookwall) {
    let dir = operate_dir();
    let hw = Hookwall::start(BIN, dir.path(), config);
    (dir, hw)
}

/// `GET path` on the admin listener with `token` as a bearer token, if any.
pub fn admin(hw: &Hookwall, path: &str, token: Option<&str>) -> Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    hw.admin_request("GET", path, &headers, b"")
}

/// `/metrics`, parsed by a Prometheus text-format parser.
fn scrape(hw: &Hookwall, token: Option<&str>) -> prometheus_parse::Scrape {
    let r = admin(hw, "/metrics", token);
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        "{r:?}"
    );
    let text = String::from_utf8(r.body).expect("UTF-8 metrics");
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("/metrics does not parse ({e}):\n{text}"))
}

/// The values of metric `name` by the values of its labels `keys`: `by(v1, v2)` is
/// [`value`] with `(keys[0], v1)` and `(keys[1], v2)`.
fn labelled<'a>(
    scrape: &'a prometheus_parse::Scrape,
    name: &'a str,
    keys: [&'a str; 2],
) -> impl Fn(&str, &str) -> f64 + 'a {
    move |a: &str, b: &str| value(scrape, name, &[(keys[0], a), (keys[1], b)])
}

/// The samples of metric `name` whose labels include all of `labels`.
fn samples<'a>(
    scrape: &'a prometheus_parse::Scrape,
    name: &'a str,
    labels: &'a [(&str, &str)],
) -> impl Iterator<Item = &'a prometheus_parse::Sample> {
    scrape
        .samples
        .iter()
        .filter(move |s| s.metric == name)
        .filter(move |s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
}

/// The value of the sample `name` whose labels include all of `labels` (0 if none).
fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let matching: Vec<_> = samples(scrape, name, labels).collect();
    assert!(matching.len() <= 1, "{name} {labels:?}: {matching:?}");
    matching.first().map_or(0.0, |s| match &s.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => *v,
        other => panic!("{name}: not a single value: {other:?}"),
    })
}

/// Total observations of histogram `name` with `labels` (its `+Inf` bucket).
fn observations(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(scrape, name, labels)
        .map(|s| match &s.value {
            prometheus_parse::Value::Histogram(buckets) => buckets
                .iter()
                .find(|b| b.less_than.is_infinite())
                .map_or(0.0, |b| b.count),
            other => panic!("{name}: not a histogram: {other:?}"),
        })
        .sum()
}

#[test]
fn metrics_count_a_scripted_run_exactly_and_parse_as_prometheus_text() {
    let (dir, hw) = start(&operate_config("public = [\"/metrics\"]", ""));

    // 3 accepted, then 2 copies of them: duplicates.
    for id in ["m-1", "m-2", "m-3", "m-1", "m-2"] {
        let r = post_signed(&hw, "demo", id, &json!({"n": id}));
        assert_eq!(r.status, 200, "{r:?}");
    }
    // 2 with a wrong signature, 1 unsigned: unauthorized, by verification reason.
    for _ in 0..2 {
        let body = br#"{"n":"forged"}"#;
        let sig = sign_sha256_hex("wrong-secret", body);
        let r = hw.post("/hooks/demo", &[("X-Signature", &sig)], body);
        assert_eq!(r.status, 401);
    }
    assert_eq!(hw.post("/hooks/demo", &[], b"{}").status, 401);
    // Rejected before verification: too large, wrong method.
    assert_eq!(hw.post("/hooks/demo", &[], &vec![b'x'; 5000]).status, 413);
    let r = http(hw.addr, "GET", "/hooks/demo", &[], b"").unwrap();
    assert_eq!(r.status, 405);
    // Plugin failures: 2 errors and 1 trap, each dead-lettered (and answered 202).
    for id in ["b-1", "b-2"] {
        assert_eq!(post_signed(&hw, "broken", id, &json!({})).status, 202);
    }
    assert_eq!(post_signed(&hw, "panicky", "p-1", &json!({})).status, 202);

    let orders = dir.path().join("orders.jsonl");
    assert!(wait_for_lines(&orders, 3, Duration::from_secs(10)));

    // `/metrics` is public here: no token needed.
    let s = scrape(&hw, None);
    let req = labelled(&s, "hookwall_requests_total", ["source", "outcome"]);
    assert_eq!(req("demo", "accepted"), 3.0);
    assert_eq!(req("demo", "duplicate"), 2.0);
    assert_eq!(req("demo", "unauthorized"), 3.0);
    assert_eq!(req("demo", "rejected"), 2.0);
    assert_eq!(req("broken", "dead_lettered"), 2.0);
    assert_eq!(req("panicky", "dead_lettered"), 1.0);
    assert_eq!(req("broken", "accepted"), 0.0);
    let rejected = labelled(&s, "hookwall_requests_rejected_total", ["source", "reason"]);
    assert_eq!(rejected("demo", "body_too_large"), 1.0);
    assert_eq!(rejected("demo", "method_not_allowed"), 1.0);
    let verify = labelled(&s, "hookwall_verify_failures_total", ["source", "reason"]);
    assert_eq!(verify("demo", "signature_invalid"), 2.0, "{s:?}");
    assert_eq!(verify("demo", "signature_missing"), 1.0);
    let plugin_failures = labelled(&s, "hookwall_plugin_failures_total", ["plugin", "kind"]);
    assert_eq!(plugin_failures("fail", "error"), 2.0);
    assert_eq!(plugin_failures("panic", "trap"), 1.0);
    assert_eq!(
        observations(&s, "hookwall_plugin_call_seconds", &[("plugin", "fail")]),
        2.0
    );
    // 3 + 3 events committed at least, in some number of group commits.
    assert!(observations(&s, "hookwall_store_commit_seconds", &[]) >= 1.0);
    // Gauges sampled at scrape: nothing left pending; three dead letters queued.
    assert!(wait_for(Duration::from_secs(5), || {
        value(
            &scrape(&hw, None),
            "hookwall_sink_backlog",
            &[("sink", "orders")],
        ) == 0.0
    }));
    assert_eq!(value(&s, "hookwall_dead_letters", &[]), 3.0);
    // Labels never carry event ids.
    let ids: HashMap<_, _> = s
        .samples
        .iter()
        .flat_map(|x| {
            x.labels
                .values()
                .cloned()
                .map(move |v| (v, x.metric.clone()))
        })
        .collect();
    for id in ["m-1", "b-1", "p-1"] {
        assert!(!ids.contains_key(id), "{id} is a label value: {ids:?}");
    }
}

#[test]
fn admin_api_wants_the_token_except_on_public_paths() {
    let (_dir, hw) = start(&operate_config("", ""));
    for path in ["/api/v1/events", "/api/v1/sinks", "/metrics", "/readyz"] {
        for token in [None, Some("wrong-token"), Some("")] {
            let r = admin(&hw, path, token);
            assert_eq!(r.status, 401, "{path} {token:?}: {r:?}");
            assert_eq!(r.json()["error"], "unauthorized", "{path}");
            assert!(r.json()["message"].is_string());
        }
    }
    assert_eq!(admin(&hw, "/healthz", None).status, 200);
    assert_eq!(admin(&hw, "/metrics", Some(TOKEN)).status, 200);
    let ready = admin(&hw, "/readyz", Some(TOKEN));
    assert_eq!(ready.status, 200, "{ready:?}");
    assert_eq!(ready.json()["status"], "ready");
    assert_eq!(ready.json()["checks"]["plugins"]["ok"], true);
}

#[test]
fn readyz_reports_an_unreachable_redis() {
    let mut redis = hookwall_testkit::RedisServer::start();
    let storage = format!("redis = \"{}\"\n", redis.url());
    let config = operate_config("", "").replace(
        "[storage]\npath = \"data\"\n",
        &format!("[storage]\npath = \"data\"\n{storage}"),
    );
    let (_dir, hw) = start(&config);
    let r = admin(&hw, "/readyz", Some(TOKEN));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["checks"]["redis"]["ok"], true);
    redis.kill();
    assert!(
        wait_for(Duration::from_secs(10), || admin(
            &hw,
            "/readyz",
            Some(TOKEN)
        )
        .status
            == 503),
        "readyz stayed ready with Redis gone"
    );
    let r = admin(&hw, "/readyz", Some(TOKEN));
    assert_eq!(r.json()["error"], "not_ready");
    assert_eq!(r.json()["checks"]["redis"]["ok"], false);
    assert_eq!(r.json()["checks"]["store"]["ok"], true);
}

#[test]
fn a_public_path_outside_the_allowed_set_is_a_config_error() {
    let dir = operate_dir();
    let config = operate_config("public = [\"/api/v1/events\"]", "");
    let path = write_config(dir.path(), &config, "127.0.0.1:1", "127.0.0.1:2");
    let out = run_config("check", &path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("admin.public"), "{stderr}");
}

#[test]
fn events_api_pages_filters_and_the_cli_lists_them() {
    let (_dir, hw) = start(&operate_config("", ""));
    let ids = ["e-1", "e-2", "e-3", "e-4", "e-5"];
    for id in ids {
        assert_eq!(post_signed(&hw, "demo", id, &json!({"id": id})).status, 200);
    }
    assert_eq!(post_signed(&hw, "broken", "b-1", &json!({})).status, 202);
    let list = |query: &str| {
        let r = admin(&hw, &format!("/api/v1/events?{query}"), Some(TOKEN));
        assert_eq!(r.status, 200, "{query}: {r:?}");
        r.json()
    };
    assert!(wait_for(Duration::from_secs(10), || {
        list("status=delivered")["events"].as_array().unwrap().len() == 5
    }));

    // Paging: every event exactly once, newest first.
    let mut seen = Vec::new();
    let mut query = "limit=2".to_string();
    loop {
        let page = list(&query);
        let events = page["events"].as_array().unwrap();
        assert!(events.len() <= 2);
        for e in events {
            seen.push((
                e["received_at_ms"].as_u64().unwrap(),
                e["id"].as_str().unwrap().to_string(),
            ));
        }
        match page["next_cursor"].as_str() {
            Some(c) => query = format!("limit=2&cursor={c}"),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "not newest first");
    let mut got: Vec<_> = seen.iter().map(|(_, id)| id.as_str()).collect();
    got.sort();
    assert_eq!(got, ["b-1", "e-1", "e-2", "e-3", "e-4", "e-5"]);

    // Filters.
    let broken = list("source=broken");
    assert_eq!(broken["events"].as_array().unwrap().len(), 1);
    assert_eq!(broken["events"][0]["id"], "b-1");
    assert_eq!(broken["events"][0]["status"], "failed");
    assert!(
        broken["events"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("fail plugin always fails")
    );
    assert_eq!(list("status=failed")["events"].as_array().unwrap().len(), 1);
    assert_eq!(
        list("status=pending")["events"].as_array().unwrap().len(),
        0
    );
    let newest = seen[0].0;
    assert_eq!(
        list(&format!("since={}", newest + 1))["events"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        list("until=2000-01-01T00:00:00Z")["events"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let r = admin(&hw, "/api/v1/events?status=lost", Some(TOKEN));
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "bad_request");
    assert!(r.json()["message"].as_str().unwrap().starts_with("status:"));

    // One event: raw request, the plugins' result, every attempt.
    let e = admin(&hw, "/api/v1/events/e-1", Some(TOKEN)).json();
    assert_eq!(e["outcome"], "delivered");
    assert_eq!(e["request"]["method"], "POST");
    assert_eq!(e["request"]["body"], json!({"id": "e-1"}));
    assert!(e["request"]["headers"].as_array().unwrap().len() >= 2);
    assert_eq!(e["deliveries"][0]["sink"], "orders");
    assert_eq!(e["deliveries"][0]["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(e["deliveries"][0]["attempts"][0]["error"], json!(null));

    // The CLI, through the same API.
    let (ok, stdout, stderr) = hw.cli(&["events", "--source", "broken"]);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("b-1") && stdout.contains("failed"),
        "{stdout}"
    );
    assert!(!stdout.contains("e-1"), "{stdout}");
    let (_, stdout, _) = hw.cli(&["events", "--json", "--limit", "3"]);
    assert_eq!(stdout.lines().count(), 3);

    // One span per event: the plugin's failure is logged inside the event's span, and the
    // signature never reaches the log.
    let log = hw.log();
    assert!(
        log.lines()
            .any(|l| l.contains("event{id=b-1 source=broken}") && l.contains("dead-lettered")),
        "{log}"
    );
    assert!(!log.contains("sha256="), "a signature was logged:\n{log}");
    assert!(!log.contains(crate::SECRET));
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleGroup {
    name: String,
    rules: Vec<Rule>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    alert: String,
    expr: String,
    #[serde(rename = "for", default)]
    for_: Option<String>,
    labels: HashMap<String, String>,
    annotations: HashMap<String, String>,
}

#[test]
fn example_alerts_parse_and_use_only_documented_metrics() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("examples/alerts.yml")).unwrap();
    let file: RuleFile = serde_yaml_ng::from_str(&text).expect("alerts.yml is valid YAML");
    let readme = std::fs::read_to_string(root.join("docs/operating.md")).unwrap();
    let documented: Vec<&str> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `hookwall_"))
        .filter_map(|l| l.split('`').next())
        .collect();
    assert!(documented.len() >= 10, "{documented:?}");
    let mut alerts = Vec::new();
    for group in &file.groups {
        assert!(!group.name.is_empty());
        for rule in &group.rules {
            alerts.push(rule.alert.as_str());
            assert!(rule.labels.contains_key("severity"), "{}", rule.alert);
            assert!(rule.annotations.contains_key("summary"), "{}", rule.alert);
            if let Some(f) = &rule.for_ {
                assert!(
                    f.ends_with('m') || f.ends_with('s'),
                    "{}: for {f}",
                    rule.alert
                );
            }
            assert_eq!(
                rule.expr.matches('(').count(),
                rule.expr.matches(')').count(),
                "{}",
                rule.alert
            );
            for word in rule
                .expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            {
                let Some(name) = word.strip_prefix("hookwall_") else {
                    continue;
                };
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .filter(|b| documented.contains(b))
                    .unwrap_or(name);
                assert!(
                    documented.contains(&base),
                    "{}: hookwall_{name} is not in docs/operating.md's metrics table",
                    rule.alert
                );
            }
        }
    }
    for wanted in [
        "HookwallFirstAttemptSuccessLow",
        "HookwallDeliveryLatencyHigh",
        "HookwallSinkFailureRatioHigh",
        "HookwallDeadLettersGrowing",
        "HookwallPluginLoadErrors",
    ] {
        assert!(alerts.contains(&wanted), "{wanted} missing: {alerts:?}");
    }
}

#[test]
fn a_dead_lettered_delivery_is_logged_in_its_event_span() {
    let dir = operate_dir();
    // The sink's directory is a file: every attempt fails.
    std::fs::write(dir.path().join("out"), b"not a directory").unwrap();
    let config = operate_config("", "").replace(
        "path = \"orders.jsonl\"",
        "path = \"out/orders.jsonl\"\nretry = { max_attempts = 2, initial = \"50ms\", max_delay = \"50ms\" }",
    );
    let hw = Hookwall::start(BIN, dir.path(), &config);
    assert_eq!(post_signed(&hw, "demo", "d-1", &json!({})).status, 200);
    let in_span = |log: &str| {
        log.lines().any(|l| {
            l.contains("event{id=d-1 source=demo}")
                && l.contains("delivery dead-lettered")
                && l.contains("attempt=2")
        })
    };
    assert!(
        wait_for(Duration::from_secs(10), || in_span(&hw.log())),
        "{}",
        hw.log()
    );
}
