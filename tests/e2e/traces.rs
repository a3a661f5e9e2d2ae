//! Traces over OTLP (issue #21): one webhook is one trace, from the sender's `traceparent`
//! through verify, dedupe, each plugin call and the commit, to the delivery attempt whose
//! context the app receives; exported to a collector that decodes the real protocol.

use std::collections::HashMap;
use std::time::Duration;

use hookwall_testkit::otlp::{Collector, KIND_CLIENT, KIND_SERVER, STATUS_ERROR, Span};
use hookwall_testkit::upstream::{Answer, Upstream};
use hookwall_testkit::{Hookwall, wait_for, wasm};
use serde_json::json;

use crate::{BIN, SECRET, base_config, hmac_source, post_signed, send_signed, workdir};

/// The sender's trace: a span of theirs, sampled.
const SENDER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const SENDER_SPAN: &str = "b7ad6b7169203331";
/// The collector's bearer token, passed to Hookwall as `env:OTLP_TOKEN`.
const OTLP_TOKEN: &str = "otlp-token-never-in-a-span";
/// The sink's signing secret.
const SINK_SECRET: &str = "whsec_c2luay1zZWNyZXQtbmV2ZXItaW4tYS1zcGFu";

/// Hookwall with the `upper` plugin on source `shop`, delivering to `app` over HTTP (retried
/// quickly), exporting traces to `collector` with `otlp_extra` lines.
fn start(collector: &Collector, app: &Upstream, otlp_extra: &str) -> (tempfile::TempDir, Hookwall) {
    let dir = workdir(&[("upper", wasm::UPPER)]);
    let config = format!(
        "{base}\n[telemetry.otlp]\nendpoint = \"{endpoint}\"\nheaders = {{ authorization = \"env:OTLP_TOKEN\" }}\n{otlp_extra}\n\
         [sinks.app]\ntype = \"http\"\nurl = \"{url}\"\nsecret = \"{SINK_SECRET}\"\n\
         retry = {{ max_attempts = 5, initial = \"50ms\", max_delay = \"100ms\" }}\n{source}",
        base = base_config("", "", Some(""), ""),
        endpoint = collector.endpoint(),
        url = app.url(),
        source = hmac_source("shop", "\"upper\"", "app"),
    );
    let bearer = format!("Bearer {OTLP_TOKEN}");
    let hw = Hookwall::start_with_env(BIN, dir.path(), &config, &[("OTLP_TOKEN", &bearer)]);
    (dir, hw)
}

/// The one span named `name` in `spans`.
fn one<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    let found: Vec<_> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one `{name}` span in {spans:#?}");
    found[0]
}

#[test]
fn one_webhook_is_one_trace_from_the_sender_to_the_app() {
    let collector = Collector::start();
    let app = Upstream::start();
    // The first attempt fails: two `deliver` spans, the second one reaching the app.
    app.script([Answer::Status(503, None)]);
    let (_dir, mut hw) = start(&collector, &app, "");
    let traceparent = format!("00-{SENDER_TRACE}-{SENDER_SPAN}-01");
    let body = serde_json::to_vec(&json!({"word": "private body text"})).unwrap();
    let r = send_signed(
        hw.addr,
        "shop",
        "evt-traced",
        &body,
        &[
            ("Content-Type", "application/json"),
            ("traceparent", &traceparent),
        ],
    )
    .expect("request to hookwall");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        wait_for(Duration::from_secs(15), || !app.accepted().is_empty()),
        "delivered:\n{}",
        hw.log()
    );
    // A graceful stop flushes the last spans.
    assert!(hw.stop().success(), "{}", hw.log());

    let spans = collector.spans();
    assert!(spans.iter().all(|s| s.service == "hookwall"), "{spans:#?}");
    assert!(
        spans.iter().all(|s| s.trace_id == SENDER_TRACE),
        "every span continues the sender's trace: {spans:#?}"
    );

    // The request: a server span under the sender's.
    let webhook = one(&spans, "webhook shop");
    assert_eq!(webhook.parent_span_id, SENDER_SPAN);
    assert_eq!(webhook.kind, KIND_SERVER);
    assert_eq!(webhook.attr("hookwall.source"), Some("shop"));
    assert_eq!(webhook.attr("http.request.method"), Some("POST"));
    assert_eq!(webhook.attr("http.response.status_code"), Some("200"));
    let verify = one(&spans, "verify");
    assert_eq!(verify.parent_span_id, webhook.span_id);
    assert_eq!(verify.attr("hookwall.verdict"), Some("verified"));

    // The event: dedupe, the plugin call, the commit.
    let event = one(&spans, "event");
    assert_eq!(event.parent_span_id, webhook.span_id);
    assert_eq!(event.attr("id"), Some("evt-traced"));
    assert_eq!(event.attr("source"), Some("shop"));
    for name in ["dedupe", "plugin upper", "commit"] {
        assert_eq!(one(&spans, name).parent_span_id, event.span_id, "{name}");
    }
    let plugin = one(&spans, "plugin upper");
    assert_eq!(plugin.attr("plugin.name"), Some("upper"));
    assert_eq!(plugin.attr("plugin.action"), Some("forward"));
    assert!(plugin.attr("plugin.version").is_some(), "{plugin:?}");

    // Two attempts, each a client span under the event; the app got the second one's context.
    let attempts: Vec<&Span> = spans.iter().filter(|s| s.name == "deliver app").collect();
    assert_eq!(attempts.len(), 2, "{spans:#?}");
    let by_attempt: HashMap<&str, &Span> = attempts
        .iter()
        .map(|s| (s.attr("hookwall.attempt").unwrap(), *s))
        .collect();
    let delivery_id = app.received()[0].header("webhook-id").unwrap().to_string();
    for s in &attempts {
        assert_eq!(s.parent_span_id, event.span_id);
        assert_eq!(s.kind, KIND_CLIENT);
        assert_eq!(s.attr("hookwall.sink"), Some("app"));
        assert_eq!(s.attr("hookwall.delivery_id"), Some(delivery_id.as_str()));
    }
    assert_eq!(by_attempt["1"].attr("hookwall.result"), Some("failed"));
    assert_eq!(by_attempt["1"].status_code, STATUS_ERROR);
    let second = by_attempt["2"];
    assert_eq!(second.attr("hookwall.result"), Some("delivered"));
    let delivered = app.accepted();
    assert_eq!(
        delivered[0].header("traceparent"),
        Some(format!("00-{SENDER_TRACE}-{}-01", second.span_id).as_str()),
        "the app's request carries the attempt's context"
    );
    let failed = &app.received()[0];
    assert_eq!(
        failed.header("traceparent"),
        Some(format!("00-{SENDER_TRACE}-{}-01", by_attempt["1"].span_id).as_str())
    );

    // What was exported: the token only in the export's own header, no secret and no body
    // anywhere in a span.
    let exports = collector.requests();
    assert!(!exports.is_empty());
    for export in &exports {
        assert_eq!(
            export.header("authorization"),
            Some(format!("Bearer {OTLP_TOKEN}").as_str())
        );
        let raw = String::from_utf8_lossy(&export.body);
        for secret in [
            OTLP_TOKEN,
            SECRET,
            SINK_SECRET,
            "private body text",
            "PRIVATE BODY",
        ] {
            assert!(!raw.contains(secret), "`{secret}` exported in {raw}");
        }
    }
    let log = hw.log();
    assert!(!log.contains(OTLP_TOKEN), "the token in the log:\n{log}");
}

#[test]
fn sampling_follows_the_senders_decision_else_the_ratio() {
    let collector = Collector::start();
    let app = Upstream::start();
    let (_dir, mut hw) = start(&collector, &app, "sampling = 0.0");
    // No traceparent: sampling 0.0 records nothing.
    assert_eq!(
        post_signed(&hw, "shop", "evt-unsampled", &json!({})).status,
        200
    );
    // The sender sampled its trace: Hookwall's spans join it.
    let traceparent = format!("00-{SENDER_TRACE}-{SENDER_SPAN}-01");
    let body = b"{}";
    let sampled = [("traceparent", traceparent.as_str())];
    let r = send_signed(hw.addr, "shop", "evt-sampled", body, &sampled).unwrap();
    assert_eq!(r.status, 200);
    // The sender did not sample: neither does Hookwall, and the app hears so.
    let unsampled = format!("00-{}-{SENDER_SPAN}-00", "1".repeat(32));
    let r = send_signed(
        hw.addr,
        "shop",
        "evt-declined",
        body,
        &[("traceparent", &unsampled)],
    );
    assert_eq!(r.unwrap().status, 200);
    assert!(wait_for(Duration::from_secs(15), || app.accepted().len() == 3));
    assert!(hw.stop().success(), "{}", hw.log());

    let spans = collector.spans();
    assert!(!spans.is_empty(), "the sampled trace was exported");
    assert!(
        spans.iter().all(|s| s.trace_id == SENDER_TRACE),
        "only the sender's sampled trace: {spans:#?}"
    );
    let ids: Vec<_> = spans.iter().filter_map(|s| s.attr("id")).collect();
    assert_eq!(ids, ["evt-sampled"]);
    let declined = app
        .accepted()
        .into_iter()
        .filter_map(|r| r.header("traceparent").map(str::to_string))
        .find(|t| t.contains(&"1".repeat(32)))
        .expect("the declined trace reaches the app");
    assert!(declined.ends_with("-00"), "unsampled: {declined}");
}

#[test]
fn check_resolves_the_exporter_and_a_bad_one_is_refused() {
    let dir = workdir(&[]);
    let base = format!(
        "{}\n[sinks.app]\ntype = \"file\"\npath = \"app.jsonl\"\n{}",
        base_config("", "", None, ""),
        hmac_source("shop", "", "app")
    );
    let write = |otlp: &str| {
        let text = format!("{base}\n[telemetry.otlp]\n{otlp}\n");
        crate::write_config(dir.path(), &text, "127.0.0.1:8080", "127.0.0.1:9090")
    };
    let run = |otlp: &str| {
        let out = crate::run_config("check", &write(otlp));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, text) = run("endpoint = \"http://127.0.0.1:4318\"\nsampling = 0.25");
    assert!(ok, "{text}");
    assert!(
        text.contains("traces: OTLP to http://127.0.0.1:4318/v1/traces (sampling 0.25)"),
        "{text}"
    );
    for (otlp, says) in [
        (
            "endpoint = \"grpc://127.0.0.1:4317\"",
            "telemetry.otlp.endpoint",
        ),
        (
            "endpoint = \"http://user:pw@127.0.0.1:4318\"",
            "not in the URL",
        ),
        (
            "endpoint = \"http://127.0.0.1:4318\"\nsampling = 1.5",
            "telemetry.otlp.sampling",
        ),
        (
            "endpoint = \"http://127.0.0.1:4318\"\nheaders = { authorization = \"env:HOOKWALL_NO_SUCH_VAR\" }",
            "HOOKWALL_NO_SUCH_VAR is not set",
        ),
        (
            "endpoint = \"https://127.0.0.1:4318\"\nca_file = \"missing-ca.pem\"",
            "missing-ca.pem",
        ),
    ] {
        let (ok, text) = run(otlp);
        assert!(!ok, "{otlp} passed:\n{text}");
        assert!(text.contains(says), "{otlp}: expected `{says}` in:\n{text}");
    }
}
