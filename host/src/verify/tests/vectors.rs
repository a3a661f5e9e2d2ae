//! One known-answer vector per preset. Where the provider publishes one, it is cited; where it
//! does not, the expected value was computed once, independently of this code, with Python's
//! `hmac` module (the snippet is in the comment) and pasted here.

use super::*;

/// Standard Webhooks spec example, also the reference libraries' test vector
/// (standard-webhooks/standard-webhooks `libraries/*` tests, svix-webhooks `rust/src/webhooks.rs`
/// tests): secret `whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw`, id `msg_p5jXN8AQM9LWM0D4loKWxJek`,
/// timestamp 1614265330, payload `{"test": 2432232314}`.
const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SW_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const SW_TS: &str = "1614265330";
const SW_BODY: &[u8] = br#"{"test": 2432232314}"#;
const SW_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

#[test]
fn standard_webhooks_spec_vector() {
    let v = verifier(&format!(
        "scheme = \"standard-webhooks\"\nsecrets = [\"{SW_SECRET}\"]"
    ));
    let now = secs(1_614_265_330);
    let headers = [
        ("webhook-id", SW_ID),
        ("webhook-timestamp", SW_TS),
        ("webhook-signature", SW_SIG),
    ];
    let e = event(&v, request(&headers, SW_BODY), now);
    assert_eq!(e.event_id(), Some(SW_ID));
    // Several entries, unknown versions skipped, any v1 match passes.
    let several = format!(
        "v1a,c2lnbmF0dXJl v2,AAAA v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= {SW_SIG}"
    );
    let headers = [
        ("webhook-id", SW_ID),
        ("webhook-timestamp", SW_TS),
        ("webhook-signature", several.as_str()),
    ];
    event(&v, request(&headers, SW_BODY), now);
    // The `whsec_` prefix is optional.
    let bare = verifier(&format!(
        "scheme = \"standard-webhooks\"\nsecrets = [\"{}\"]",
        SW_SECRET.trim_start_matches("whsec_")
    ));
    event(&bare, request(&headers, SW_BODY), now);
}

#[test]
fn svix_reads_svix_and_webhook_headers() {
    let v = verifier(&format!("scheme = \"svix\"\nsecrets = [\"{SW_SECRET}\"]"));
    let now = secs(1_614_265_330);
    let svix = [
        ("svix-id", SW_ID),
        ("svix-timestamp", SW_TS),
        ("svix-signature", SW_SIG),
    ];
    assert_eq!(
        event(&v, request(&svix, SW_BODY), now).event_id(),
        Some(SW_ID)
    );
    let unbranded = [
        ("webhook-id", SW_ID),
        ("webhook-timestamp", SW_TS),
        ("webhook-signature", SW_SIG),
    ];
    event(&v, request(&unbranded, SW_BODY), now);
}

/// GitHub docs, "Validating webhook deliveries" → "Testing the webhook payload validation":
/// secret "It's a Secret to Everybody", payload "Hello, World!".
#[test]
fn github_docs_vector() {
    let v = verifier("scheme = \"github\"\nsecrets = [\"It's a Secret to Everybody\"]");
    let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    let e = event(
        &v,
        request(
            &[
                ("X-Hub-Signature-256", sig),
                ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
            ],
            b"Hello, World!",
        ),
        0,
    );
    assert_eq!(e.event_id(), Some("72d3162e-cc78-11e3-81ab-4c9367dc0958"));
}

/// Stripe publishes the algorithm ("Verify manually"), not a vector. Computed independently:
/// `hmac.new(b"whsec_zXu1vG6cS0pJkF0cQ1X8m2Vd3dY7hL4T", b"1700000000." + body,
/// hashlib.sha256).hexdigest()` — note the key is the whole `whsec_` string, not decoded.
#[test]
fn stripe_vector_keys_with_the_whole_whsec_string() {
    let body = br#"{"id":"evt_1NqUoG2eZvKYlo2CzZwBcR7b","object":"event","type":"payment_intent.succeeded"}"#;
    let header = "t=1700000000,v1=ab4892846edaf2953a140d9504646142569f7ba4aefe9d8e684af2b293582674,v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39";
    let v = verifier("scheme = \"stripe\"\nsecrets = [\"whsec_zXu1vG6cS0pJkF0cQ1X8m2Vd3dY7hL4T\"]");
    let e = event(
        &v,
        request(&[("Stripe-Signature", header)], body),
        secs(1_700_000_000),
    );
    assert_eq!(e.event_id(), Some("evt_1NqUoG2eZvKYlo2CzZwBcR7b"));
    // The classic trap: decoding the secret (Standard Webhooks style) does not verify.
    let decoded = verifier(
        "scheme = \"hmac\"\nheader = \"Stripe-Signature\"\ndelimiter = \"comma\"\nprefix = \"v1=\"\n\
         timestamp_prefix = \"t=\"\nsigned = \"{timestamp}.{body}\"\nsecret_encoding = \"base64\"\n\
         secrets = [\"whsec_zXu1vG6cS0pJkF0cQ1X8m2Vd3dY7hL4T\"]",
    );
    let f = failure(
        &decoded,
        request(&[("Stripe-Signature", header)], body),
        secs(1_700_000_000),
    );
    assert_eq!(f.code(), "signature_invalid");
    assert!(
        f.diagnostic.hints[0].contains("raw text"),
        "{}",
        f.diagnostic
    );
}

/// Slack docs, "Verifying requests from Slack" → the worked example (signing secret
/// `8f742231b10e8888abcd99yyyzzz85a5`, timestamp 1531420618, a slash-command form body).
#[test]
fn slack_docs_vector() {
    let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    let v = verifier("scheme = \"slack\"\nsecrets = [\"8f742231b10e8888abcd99yyyzzz85a5\"]");
    let headers = [
        ("X-Slack-Request-Timestamp", "1531420618"),
        (
            "X-Slack-Signature",
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
        ),
    ];
    let e = event(&v, request(&headers, body), secs(1_531_420_618));
    assert_eq!(e.event_id(), None, "a form body has no event_id");
}

/// Shopify publishes the algorithm, not a vector. Computed independently:
/// `base64.b64encode(hmac.new(b"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", body,
/// hashlib.sha256).digest())`.
#[test]
fn shopify_vector() {
    let body = br##"{"id":820982911946154508,"email":"jon@example.com","name":"#9999"}"##;
    let v =
        verifier("scheme = \"shopify\"\nsecrets = [\"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\"]");
    let headers = [
        (
            "X-Shopify-Hmac-Sha256",
            "XkrreIZluvcOm85X5bbKlkqjxM+Ku5Hfy/iTXFwbCFg=",
        ),
        (
            "X-Shopify-Webhook-Id",
            "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
        ),
    ];
    let e = event(&v, request(&headers, body), 0);
    assert_eq!(e.event_id(), Some("b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"));
}

/// Twilio docs, "Webhooks security" → "Validating signatures from Twilio" (auth token
/// `12345`, URL `https://mycompany.com/myapp.php?foo=1&bar=2`, five POST parameters), the same
/// vector as twilio-python's `tests/unit/test_request_validator.py`.
#[test]
fn twilio_docs_vector_with_and_without_default_port() {
    let form = "CallSid=CA1234567890ABCDE&Caller=%2B12349013030&Digits=1234&From=%2B12349013030&To=%2B18005551212";
    let headers = [("X-Twilio-Signature", "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")];
    for public_url in [
        "https://mycompany.com",
        "https://mycompany.com:443",
        "https://mycompany.com/",
    ] {
        let v = verifier(&format!(
            "scheme = \"twilio\"\nsecrets = [\"12345\"]\npublic_url = \"{public_url}\""
        ));
        let r = request_at("/myapp.php", "foo=1&bar=2", &headers, form.as_bytes());
        event(&v, r, 0);
    }
    let wrong_host = verifier(
        "scheme = \"twilio\"\nsecrets = [\"12345\"]\npublic_url = \"https://example.com\"",
    );
    let r = request_at("/myapp.php", "foo=1&bar=2", &headers, form.as_bytes());
    let f = failure(&wrong_host, r, 0);
    assert_eq!(f.code(), "signature_invalid");
    assert_eq!(
        f.diagnostic.signed_url.as_deref(),
        Some("https://example.com/myapp.php?foo=1&bar=2")
    );
}

/// twilio-python `tests/unit/test_request_validator.py` (`test_validate_request_with_body`):
/// JSON body `{"property": "value", "boolean": true}`, its SHA-256 in `bodySHA256`, no params.
#[test]
fn twilio_json_body_vector() {
    let body = br#"{"property": "value", "boolean": true}"#;
    let query =
        "foo=1&bar=2&bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
    let v = verifier(
        "scheme = \"twilio\"\nsecrets = [\"12345\"]\npublic_url = \"https://mycompany.com\"",
    );
    let headers = [("X-Twilio-Signature", "a9nBmqA0ju/hNViExpshrM61xv4=")];
    event(&v, request_at("/myapp.php", query, &headers, body), 0);
    // The URL's hash binds the body: a different body fails even with the same URL.
    let r = request_at(
        "/myapp.php",
        query,
        &headers,
        br#"{"property": "other", "boolean": true}"#,
    );
    assert_eq!(code(&v, r, 0), "signature_invalid");
}

/// Paddle publishes the algorithm (`ts:body`, HMAC-SHA256 hex), not a secret with a vector.
/// Computed independently: `hmac.new(secret, b"1671552777:" + body, hashlib.sha256).hexdigest()`.
#[test]
fn paddle_vector_with_rotation_entries() {
    let body = br#"{"event_id":"evt_01hv8wptq8987qeep44cyrewp9","event_type":"transaction.completed","occurred_at":"2024-04-12T10:18:49.621022Z"}"#;
    let v = verifier(
        "scheme = \"paddle\"\nsecrets = [\"pdl_ntfset_01gkpjp8bkh3ay7aap3brrjsd6_4Ld7ZwBbbGqCZ5Dlh7O\"]",
    );
    let good = "0319a2587051a914cff61e74e7cf7426e60a873050e2b71e40b4d2746936c046";
    let header = format!("ts=1671552777;h1={};h1={good}", "0".repeat(64));
    let e = event(
        &v,
        request(&[("Paddle-Signature", &header)], body),
        secs(1_671_552_777) + 4_000,
    );
    assert_eq!(e.event_id(), Some("evt_01hv8wptq8987qeep44cyrewp9"));
    // Paddle's default tolerance is 5 s.
    let r = request(&[("Paddle-Signature", &header)], body);
    assert_eq!(
        code(&v, r, secs(1_671_552_777 + 6)),
        "timestamp_out_of_tolerance"
    );
}

/// Linear publishes the algorithm (hex HMAC-SHA256 of the body; `webhookTimestamp` in ms
/// within a minute), not a vector. Computed independently:
/// `hmac.new(b"lin_wh_9f8e7d6c5b4a39281706f5e4d3c2b1a0", body, hashlib.sha256).hexdigest()`.
#[test]
fn linear_vector_with_body_timestamp() {
    let body = br#"{"action":"create","type":"Issue","data":{"id":"2174add1-f7c8-44e3-bbf3-2d60b5ea8bc9","title":"Bug"},"webhookTimestamp":1700000000000}"#;
    let v =
        verifier("scheme = \"linear\"\nsecrets = [\"lin_wh_9f8e7d6c5b4a39281706f5e4d3c2b1a0\"]");
    let headers = [
        (
            "Linear-Signature",
            "eeade7d7088939d2d37a3bda070b49d913664c7728e12a1c6572763c1640abb0",
        ),
        ("Linear-Delivery", "234d1a4e-b617-4388-90fe-adc3633d6b72"),
    ];
    let e = event(&v, request(&headers, body), 1_700_000_059_000);
    assert_eq!(e.event_id(), Some("234d1a4e-b617-4388-90fe-adc3633d6b72"));
    assert_eq!(
        code(&v, request(&headers, body), 1_700_000_061_000),
        "timestamp_out_of_tolerance"
    );
}

/// Zoom publishes the algorithm (`v0:{ts}:{body}`; `encryptedToken` = hex HMAC-SHA256 of
/// `plainToken`), not a secret with a vector. Computed independently with Python's `hmac`:
/// signature `hmac.new(key, b"v0:1700000000:" + body, sha256)`, token `hmac.new(key,
/// b"qgg8vlvZRS6UYooatFL8Aw", sha256)` (the plainToken is the docs' example).
#[test]
fn zoom_vector_and_url_validation() {
    let v = verifier("scheme = \"zoom\"\nsecrets = [\"zm_secret_token_5mKq2n7Lp0\"]");
    let body = br#"{"event":"meeting.started","event_ts":1700000000000,"payload":{"account_id":"AAAAAA","object":{"id":"85651234567"}}}"#;
    let headers = [
        ("x-zm-request-timestamp", "1700000000"),
        (
            "x-zm-signature",
            "v0=9676813a9495ffeaab68d3bcfcbd67f3edb4d67cb7b551c828abe22aa4073e75",
        ),
    ];
    event(&v, request(&headers, body), secs(1_700_000_000));

    let challenge = br#"{"payload":{"plainToken":"qgg8vlvZRS6UYooatFL8Aw"},"event_ts":1700000000000,"event":"endpoint.url_validation"}"#;
    // Rotation: the answer is keyed with the secret that verified the challenge.
    let rotated =
        verifier("scheme = \"zoom\"\nsecrets = [\"new-token\", \"zm_secret_token_5mKq2n7Lp0\"]");
    let old = verifier("scheme = \"zoom\"\nsecrets = [\"zm_secret_token_5mKq2n7Lp0\"]");
    let r = signed(&old, challenge, "", secs(1_700_000_000));
    let Ok(Verified::Challenge(reply)) = rotated.verify(r, secs(1_700_000_000)) else {
        panic!("expected the Zoom challenge to be answered");
    };
    let answer: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(
        answer,
        serde_json::json!({
            "plainToken": "qgg8vlvZRS6UYooatFL8Aw",
            "encryptedToken": "a504a58ae54f46daee36f562b58d8ef7317f2d7e815f111f280303779c80a812"
        })
    );
    assert_eq!(reply.content_type, "application/json");
}
