//! Verification through the real binary: every preset signed by an independent signer written
//! here from the providers' docs (not Hookwall's), the same via `hookwall send`, both built-in
//! handshakes, a plugin handshake verified first, `allow_ips` behind a trusted proxy,
//! `explain`, and per-source response control.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use hookwall_testkit::{Hookwall, Reply, wasm};
use serde_json::{Value, json};

use crate::{BIN, base_config, file_sink, source, workdir};

const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const STRIPE: &str = "whsec_stripe_whole_string_is_the_key";
const PLAIN: &str = "e2e-shared-secret";
const PUBLIC_URL: &str = "https://hooks.example.com";

/// The presets and other schemes under test: (source name = scheme, extra verify knobs, secret).
const SCHEMES: &[(&str, &str, &str)] = &[
    ("standard-webhooks", "", WHSEC),
    ("svix", "", WHSEC),
    ("github", "", PLAIN),
    ("stripe", "", STRIPE),
    ("slack", "", PLAIN),
    ("shopify", "", PLAIN),
    (
        "twilio",
        ", public_url = \"https://hooks.example.com\"",
        PLAIN,
    ),
    ("paddle", "", PLAIN),
    ("linear", "", PLAIN),
    ("zoom", "", PLAIN),
    ("bearer", "", PLAIN),
    ("basic", ", username = \"hooks\"", PLAIN),
    ("api-key", ", header = \"X-Api-Key\"", PLAIN),
];

/// The presets in [`SCHEMES`], each at `/hooks/SCHEME`, and five GitHub-signed sources for the
/// plugin handshake, `explain`, `allow_ips` and custom responses, all into `events.jsonl`.
fn config() -> String {
    let base = base_config("trusted_proxies = [\"127.0.0.1/32\"]", "", Some(""), "");
    let mut text = format!("{base}{}", file_sink("events", "events.jsonl", ""));
    let github = |extra: &str| format!("{{ scheme = \"github\", secrets = [\"{PLAIN}\"]{extra} }}");
    let mut add = |name: &str, verify: &str, plugins: &str, extra: &str| {
        text.push_str(&source(name, verify, plugins, "events", extra));
    };
    add("plugin-handshake", &github(""), "\"handshake\"", "");
    add("explained", &github(", explain = true"), "", "");
    let allow = github(", allow_ips = [\"203.0.113.0/24\"]");
    add("ipguard", &allow, "", "");
    add("quiet", &github(""), "", "respond = { status = 204 }");
    let ok = "respond = { status = 202, body = \"ok\" }";
    add("plain-ok", &github(""), "", ok);
    for (scheme, extra, secret) in SCHEMES {
        let verify = format!("{{ scheme = \"{scheme}\", secrets = [\"{secret}\"]{extra} }}");
        add(scheme, &verify, "", "");
    }
    text
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Slack's and Zoom's `v0=<hex>` over `v0:<timestamp>:<body>`.
fn v0_signature(ts: &str, body: &[u8]) -> String {
    let mac = hmac256(PLAIN.as_bytes(), &[b"v0:", ts.as_bytes(), b":", body]);
    format!("v0={}", hex::encode(mac))
}

fn hmac256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

/// A request as the provider would send it: (path with query, headers, body).
struct Sent {
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Signs like the provider does, from its docs; `ts` is the send time in seconds.
fn provider_request(scheme: &str, id: &str, ts: u64) -> Sent {
    let body_json = json!({"id": id, "event_id": id, "type": "thing.happened", "n": 1});
    let mut body = serde_json::to_vec(&body_json).unwrap();
    let t = ts.to_string();
    let h = |k: &str, v: String| (k.to_string(), v);
    let mut path = format!("/hooks/{scheme}");
    let headers = match scheme {
        "standard-webhooks" | "svix" => {
            let key = B64.decode(WHSEC.trim_start_matches("whsec_")).unwrap();
            let sig = B64.encode(hmac256(
                &key,
                &[id.as_bytes(), b".", t.as_bytes(), b".", &body],
            ));
            let p = if scheme == "svix" { "svix" } else { "webhook" };
            vec![
                h(&format!("{p}-id"), id.into()),
                h(&format!("{p}-timestamp"), t),
                h(&format!("{p}-signature"), format!("v1a,AAAA v1,{sig}")),
            ]
        }
        "github" => vec![
            h(
                "X-Hub-Signature-256",
                format!(
                    "sha256={}",
                    hex::encode(hmac256(PLAIN.as_bytes(), &[&body]))
                ),
            ),
            h("X-GitHub-Delivery", id.into()),
        ],
        "stripe" => {
            let sig = hex::encode(hmac256(STRIPE.as_bytes(), &[t.as_bytes(), b".", &body]));
            vec![h("Stripe-Signature", format!("t={t},v1={sig}"))]
        }
        "slack" => vec![
            h("X-Slack-Signature", v0_signature(&t, &body)),
            h("X-Slack-Request-Timestamp", t),
        ],
        "zoom" => vec![
            h("x-zm-signature", v0_signature(&t, &body)),
            h("x-zm-request-timestamp", t),
        ],
        "shopify" => vec![
            h(
                "X-Shopify-Hmac-Sha256",
                B64.encode(hmac256(PLAIN.as_bytes(), &[&body])),
            ),
            h("X-Shopify-Webhook-Id", id.into()),
        ],
        "twilio" => {
            // A form post: URL then each parameter name and value, sorted by name.
            body = format!("To=%2B18005551212&From=%2B12349013030&Body=hi+there&MessageSid={id}")
                .into_bytes();
            let mut params: Vec<(String, String)> =
                form_urlencoded::parse(&body).into_owned().collect();
            params.sort();
            let mut signed = format!("{PUBLIC_URL}/hooks/twilio?x=1");
            for (k, v) in params {
                signed.push_str(&k);
                signed.push_str(&v);
            }
            let mut m = Hmac::<sha1::Sha1>::new_from_slice(PLAIN.as_bytes()).unwrap();
            m.update(signed.as_bytes());
            path.push_str("?x=1");
            vec![
                h("X-Twilio-Signature", B64.encode(m.finalize().into_bytes())),
                h("I-Twilio-Idempotency-Token", id.into()),
                h("Content-Type", "application/x-www-form-urlencoded".into()),
            ]
        }
        "paddle" => {
            let sig = hex::encode(hmac256(PLAIN.as_bytes(), &[t.as_bytes(), b":", &body]));
            vec![h("Paddle-Signature", format!("ts={t};h1={sig}"))]
        }
        "linear" => {
            let mut v = body_json.clone();
            v["webhookTimestamp"] = json!(ts * 1000);
            body = serde_json::to_vec(&v).unwrap();
            vec![
                h(
                    "Linear-Signature",
                    hex::encode(hmac256(PLAIN.as_bytes(), &[&body])),
                ),
                h("Linear-Delivery", id.into()),
            ]
        }
        "bearer" => vec![h("Authorization", format!("Bearer {PLAIN}"))],
        "basic" => vec![h(
            "Authorization",
            format!("Basic {}", B64.encode(format!("hooks:{PLAIN}"))),
        )],
        "api-key" => vec![h("X-Api-Key", PLAIN.into())],
        other => panic!("no signer for {other}"),
    };
    Sent {
        path,
        headers,
        body,
    }
}

/// Hookwall on [`config`] in a new work dir with the `handshake` plugin.
fn start() -> (tempfile::TempDir, Hookwall) {
    let dir = workdir(&[("handshake", wasm::HANDSHAKE)]);
    let hw = Hookwall::start(BIN, dir.path(), &config());
    (dir, hw)
}

fn post(hw: &Hookwall, sent: &Sent) -> Reply {
    let headers: Vec<(&str, &str)> = sent
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    hw.post(&sent.path, &headers, &sent.body)
}

/// The id each scheme's sender gives the event (None: Hookwall makes one).
fn scheme_carries_id(scheme: &str) -> bool {
    !matches!(scheme, "zoom" | "bearer" | "basic" | "api-key")
}

#[test]
fn every_scheme_verifies_through_the_binary_and_tampering_is_refused() {
    let (_dir, hw) = start();
    for (i, (scheme, _, _)) in SCHEMES.iter().enumerate() {
        let id = format!("evt-{i}-{scheme}");
        let sent = provider_request(scheme, &id, now_secs());
        let r = post(&hw, &sent);
        assert_eq!(r.status, 200, "{scheme}: {r:?}\n{}", hw.log());
        assert_eq!(r.json()["status"], "accepted", "{scheme}");
        if scheme_carries_id(scheme) {
            assert_eq!(
                r.json()["id"],
                id.as_str(),
                "{scheme}: the scheme's id is the event id"
            );
            let again = post(&hw, &sent);
            assert_eq!(again.json()["status"], "duplicate", "{scheme}");
        }

        // A flipped body byte.
        let mut tampered = provider_request(scheme, &format!("{id}-t"), now_secs());
        tampered.body[3] ^= 0x01;
        let r = post(&hw, &tampered);
        let expected = if matches!(*scheme, "bearer" | "basic" | "api-key") {
            200
        } else {
            401
        };
        assert_eq!(r.status, expected, "{scheme}: {r:?}");
        if expected == 401 {
            assert_eq!(r.json()["error"], "signature_invalid", "{scheme}");
        }
    }
    // Replay windows: a send time ten minutes ago is refused by every timestamped preset.
    for scheme in [
        "standard-webhooks",
        "svix",
        "stripe",
        "slack",
        "paddle",
        "linear",
        "zoom",
    ] {
        let r = post(&hw, &provider_request(scheme, "old", now_secs() - 600));
        assert_eq!(r.status, 401, "{scheme}: {r:?}");
        assert_eq!(r.json()["error"], "timestamp_out_of_tolerance", "{scheme}");
    }
    let r = hw.post("/hooks/stripe", &[("Stripe-Signature", "v1=zz")], b"{}");
    assert_eq!(r.json()["error"], "signature_malformed");
    // The error never carries a diagnostic unless the source asks for it.
    assert!(r.json().get("explain").is_none());
    // The log always has it.
    assert!(hw.log().contains("diagnostic"), "{}", hw.log());
}

#[test]
fn send_signs_for_every_scheme() {
    let (dir, hw) = start();
    let file = dir.path().join("event.json");
    std::fs::write(
        &file,
        br#"{"id":"evt_send","event_id":"evt_send","type":"x"}"#,
    )
    .unwrap();
    let file = file.to_str().unwrap();
    for (scheme, _, _) in SCHEMES {
        let id = format!("send-{scheme}");
        let (ok, stdout, stderr) = hw.cli(&["send", "--source", scheme, "--id", &id, file]);
        assert!(
            ok && stdout.starts_with("200 "),
            "{scheme}: {stdout}{stderr}\n{}",
            hw.log()
        );
    }
}

#[test]
fn built_in_handshakes_answer_and_never_reach_sinks() {
    let (dir, hw) = start();
    let t = now_secs().to_string();

    // Slack Events API url_verification (Slack docs' example body).
    let body = br#"{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let sig = v0_signature(&t, body);
    let r = hw.post(
        "/hooks/slack",
        &[
            ("X-Slack-Request-Timestamp", &t),
            ("X-Slack-Signature", &sig),
        ],
        body,
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json(),
        json!({"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"})
    );
    // Unsigned, it is an ordinary refusal.
    let r = hw.post("/hooks/slack", &[("X-Slack-Request-Timestamp", &t)], body);
    assert_eq!(r.status, 401);

    // Zoom endpoint.url_validation.
    let body = br#"{"payload":{"plainToken":"qgg8vlvZRS6UYooatFL8Aw"},"event_ts":1654503849680,"event":"endpoint.url_validation"}"#;
    let sig = v0_signature(&t, body);
    let r = hw.post(
        "/hooks/zoom",
        &[("x-zm-request-timestamp", &t), ("x-zm-signature", &sig)],
        body,
    );
    assert_eq!(r.status, 200, "{r:?}");
    let expected = hex::encode(hmac256(PLAIN.as_bytes(), &[b"qgg8vlvZRS6UYooatFL8Aw"]));
    assert_eq!(
        r.json(),
        json!({"plainToken": "qgg8vlvZRS6UYooatFL8Aw", "encryptedToken": expected})
    );

    // Neither was stored or delivered: only a real event afterwards shows up.
    let r = post(
        &hw,
        &provider_request("github", "after-handshakes", now_secs()),
    );
    assert_eq!(r.status, 200);
    let events = dir.path().join("events.jsonl");
    assert!(hookwall_testkit::wait_for(
        std::time::Duration::from_secs(10),
        || { !hookwall_testkit::read_jsonl(&events).is_empty() }
    ));
    let lines = hookwall_testkit::read_jsonl(&events);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["id"], "after-handshakes");
}

#[test]
fn a_plugin_handshake_is_verified_first() {
    let (_dir, hw) = start();
    let body = br#"{"type":"challenge","challenge":"c-1"}"#;
    let r = hw.post(
        "/hooks/plugin-handshake",
        &[(
            "X-Hub-Signature-256",
            "sha256=00000000000000000000000000000000000000000000000000000000000000ff",
        )],
        body,
    );
    assert_eq!(
        r.status, 401,
        "an unverified challenge must not reach the plugin: {r:?}"
    );
    let sig = format!("sha256={}", hex::encode(hmac256(PLAIN.as_bytes(), &[body])));
    let r = hw.post(
        "/hooks/plugin-handshake",
        &[("X-Hub-Signature-256", &sig)],
        body,
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json(), json!({"challenge": "c-1"}));
}

#[test]
fn explain_allow_ips_and_custom_responses() {
    let (_dir, hw) = start();
    let body = br#"{"a": 1}"#;
    let sig = format!("sha256={}", hex::encode(hmac256(PLAIN.as_bytes(), &[body])));

    // explain: a body re-serialised on the way is spotted, and nothing secret is echoed.
    let r = hw.post(
        "/hooks/explained",
        &[("X-Hub-Signature-256", &sig)],
        br#"{"a":1}"#,
    );
    assert_eq!(r.status, 401);
    let v: Value = r.json();
    assert_eq!(v["error"], "signature_invalid");
    assert_eq!(v["explain"]["header"], "x-hub-signature-256");
    assert_eq!(v["explain"]["signed_bytes"], 7);
    let hints = v["explain"]["hints"].to_string();
    assert!(hints.contains("re-serialised"), "{v}");
    let text = String::from_utf8_lossy(&r.body);
    assert!(!text.contains(PLAIN) && !text.contains(&sig[7..]), "{text}");

    // allow_ips behind the trusted proxy (the test's 127.0.0.1).
    let xff = |value: &str| {
        hw.post(
            "/hooks/ipguard",
            &[("X-Hub-Signature-256", &sig), ("X-Forwarded-For", value)],
            body,
        )
    };
    let r = hw.post("/hooks/ipguard", &[("X-Hub-Signature-256", &sig)], body);
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (403, json!("ip_not_allowed"))
    );
    assert_eq!(xff("203.0.113.9").status, 200);
    assert_eq!(xff("203.0.113.9, 198.51.100.1").status, 403);
    assert_eq!(xff("garbage").status, 403);

    // Per-source answers to accepted events.
    let r = hw.post("/hooks/quiet", &[("X-Hub-Signature-256", &sig)], body);
    assert_eq!((r.status, r.body.len()), (204, 0), "{r:?}");
    let r = hw.post("/hooks/plain-ok", &[("X-Hub-Signature-256", &sig)], body);
    assert_eq!((r.status, r.body.as_slice()), (202, &b"ok"[..]), "{r:?}");
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    // Refusals keep their usual form.
    let r = hw.post(
        "/hooks/plain-ok",
        &[("X-Hub-Signature-256", "sha256=00")],
        body,
    );
    assert_eq!(r.json()["error"], "signature_malformed");
}
