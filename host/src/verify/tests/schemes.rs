//! Credentials, allowlists, handshakes, diagnostics and the generic scheme's compatibility.

use super::*;

const NOW: u64 = 1_700_000_000_000;

/// Today's (pre-presets) `hmac` keys keep working unchanged.
const LEGACY: &str = r#"
scheme = "hmac"
algorithm = "sha256"
header = "X-Signature"
prefix = "sha256="
encoding = "hex"
secrets = ["It's a Secret to Everybody"]
id_header = "X-Event-Id"
"#;

#[test]
fn legacy_hmac_config_is_unchanged() {
    let v = verifier(LEGACY);
    let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    let e = event(
        &v,
        request(
            &[("X-Signature", sig), ("X-Event-Id", "e-1")],
            b"Hello, World!",
        ),
        NOW,
    );
    assert_eq!(e.event_id(), Some("e-1"));
    assert_eq!(e.request().body.as_ref(), b"Hello, World!");
    for algorithm in ["sha1", "sha256", "sha512"] {
        for encoding in ["hex", "base64"] {
            let v = verifier(&format!(
                "scheme = \"hmac\"\nalgorithm = \"{algorithm}\"\nencoding = \"{encoding}\"\n\
                 header = \"X-Sig\"\nsecrets = [\"k1\"]\nid_header = \"X-Id\"\n"
            ));
            let e = event(&v, signed(&v, b"{\"a\":1}", "evt-1", NOW), NOW);
            assert_eq!(e.event_id(), Some("evt-1"), "{algorithm}/{encoding}");
        }
    }
}

#[test]
fn bearer_basic_and_api_key_compare_every_secret() {
    let bearer = verifier("scheme = \"bearer\"\nsecrets = [\"tok-new\", \"tok-old\"]");
    for (value, expected) in [
        ("Bearer tok-old", None),
        ("bearer tok-new", None),
        ("Bearer tok-older", Some("signature_invalid")),
        ("Bearer tok", Some("signature_invalid")),
        ("Basic dG9rLW9sZA==", Some("signature_malformed")),
        ("tok-old", Some("signature_malformed")),
    ] {
        let r = request(&[("Authorization", value)], b"{}");
        match expected {
            None => drop(event(&bearer, r, NOW)),
            Some(c) => assert_eq!(code(&bearer, r, NOW), c, "{value}"),
        }
    }
    assert_eq!(code(&bearer, request(&[], b"{}"), NOW), "signature_missing");

    let basic = verifier("scheme = \"basic\"\nusername = \"hooks\"\nsecrets = [\"pa:ss\"]");
    let auth = |user: &str, pass: &str| {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        )
    };
    event(
        &basic,
        request(&[("Authorization", &auth("hooks", "pa:ss"))], b"{}"),
        NOW,
    );
    for (user, pass) in [("hook", "pa:ss"), ("hooks", "pa:s"), ("", "")] {
        let r = request(&[("Authorization", &auth(user, pass))], b"{}");
        assert_eq!(code(&basic, r, NOW), "signature_invalid");
    }
    let r = request(&[("Authorization", "Bearer pa:ss")], b"{}");
    assert_eq!(code(&basic, r, NOW), "signature_malformed");

    let key = verifier(
        "scheme = \"api-key\"\nheader = \"X-Api-Key\"\nsecrets = [\"k-1\"]\nid_header = \"X-Id\"",
    );
    let e = event(
        &key,
        request(&[("X-Api-Key", "k-1"), ("X-Id", "i-9")], b"{}"),
        NOW,
    );
    assert_eq!(e.event_id(), Some("i-9"));
    assert_eq!(
        code(&key, request(&[("X-Api-Key", "k-2")], b"{}"), NOW),
        "signature_invalid"
    );
    assert_eq!(
        code(&key, request(&[("X-Api-Key", " ")], b"{}"), NOW),
        "signature_malformed"
    );

    // `hookwall send` attaches what each expects.
    for v in [&bearer, &basic, &key] {
        event(v, signed(v, b"{}", "i-1", NOW), NOW);
    }
}

#[test]
fn a_verified_credential_header_is_dropped_unless_forwarded() {
    let headers = |v: &Verifier, r: InboundRequest| -> Vec<String> {
        let e = event(v, r, NOW);
        e.request().headers.iter().map(|(k, _)| k.clone()).collect()
    };
    let bearer = verifier("scheme = \"bearer\"\nsecrets = [\"tok\"]");
    let sent = [("Authorization", "Bearer tok"), ("X-Other", "kept")];
    assert_eq!(headers(&bearer, request(&sent, b"{}")), ["x-other"]);
    let basic = verifier("scheme = \"basic\"\nusername = \"u\"\nsecrets = [\"tok\"]");
    assert_eq!(
        headers(&basic, signed(&basic, b"{}", "i", NOW)),
        Vec::<String>::new()
    );
    let key = verifier("scheme = \"api-key\"\nheader = \"X-Api-Key\"\nsecrets = [\"k\"]");
    let sent = [
        ("X-Api-Key", "k"),
        ("x-api-key", "k2"),
        ("Authorization", "x"),
    ];
    assert_eq!(headers(&key, request(&sent, b"{}")), ["authorization"]);

    let forwarding =
        verifier("scheme = \"bearer\"\nsecrets = [\"tok\"]\nforward_credentials = true");
    let sent = [("Authorization", "Bearer tok")];
    assert_eq!(
        headers(&forwarding, request(&sent, b"{}")),
        ["authorization"]
    );
    // Signature headers are no credential: they stay.
    let v = verifier(LEGACY);
    let r = signed(&v, b"{}", "e-1", NOW);
    assert!(headers(&v, r).contains(&"x-signature".to_string()));
    // The option means nothing for other schemes, and says so.
    let e = try_verifier("scheme = \"github\"\nsecrets = [\"s\"]\nforward_credentials = true")
        .unwrap_err();
    assert!(e.contains("verify.forward_credentials"), "{e}");
}

#[test]
fn allow_ips_checks_the_client_behind_trusted_proxies_first() {
    let v = verifier(
        "scheme = \"bearer\"\nsecrets = [\"t\"]\nallow_ips = [\"203.0.113.0/24\", \"2001:db8::/32\"]",
    );
    let from = |peer: [u8; 4], headers: &[(&str, &str)]| {
        let mut r = request(headers, b"{}");
        r.remote = SocketAddr::from((peer, 5000));
        r
    };
    let auth = ("Authorization", "Bearer t");
    event(&v, from([203, 0, 113, 5], &[auth]), NOW);
    // Checked before the credentials: a stranger learns nothing about them.
    let f = failure(&v, from([198, 51, 100, 1], &[]), NOW);
    assert_eq!(f.code(), "ip_not_allowed");
    assert_eq!(f.diagnostic.client_ip.as_deref(), Some("198.51.100.1"));
    // A forwarded address counts only from a trusted proxy (10.0.0.0/8 in these tests).
    let xff = ("X-Forwarded-For", "203.0.113.9");
    assert_eq!(
        code(&v, from([198, 51, 100, 1], &[auth, xff]), NOW),
        "ip_not_allowed"
    );
    event(&v, from([10, 1, 2, 3], &[auth, xff]), NOW);
    // Only the header the proxies write (X-Forwarded-For by default) names the client: a
    // `Forwarded` alone is the client's own claim, so the client is the proxy itself.
    let fwd = ("Forwarded", "for=\"[2001:db8::5]:443\"");
    assert_eq!(
        code(&v, from([10, 1, 2, 3], &[auth, fwd]), NOW),
        "ip_not_allowed"
    );
    let spoofed = ("X-Forwarded-For", "203.0.113.9, 198.51.100.1");
    assert_eq!(
        code(&v, from([10, 1, 2, 3], &[auth, spoofed]), NOW),
        "ip_not_allowed"
    );
    let broken = ("X-Forwarded-For", "unknown");
    assert_eq!(
        code(&v, from([10, 1, 2, 3], &[auth, broken]), NOW),
        "ip_not_allowed"
    );
}

#[test]
fn slack_url_verification_is_answered_only_when_verified() {
    let v = verifier("scheme = \"slack\"\nsecrets = [\"slack-secret\"]");
    // Slack docs, "url_verification event": the challenge body.
    let body = br#"{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let r = signed(&v, body, "", NOW);
    let Ok(Verified::Challenge(reply)) = v.verify(r.clone(), NOW) else {
        panic!("expected the challenge to be answered")
    };
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&reply.body).unwrap(),
        serde_json::json!({"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"})
    );
    let other = verifier("scheme = \"slack\"\nsecrets = [\"not-slack\"]");
    assert_eq!(code(&other, r, NOW), "signature_invalid");
    // The generic scheme without `handshake` treats it as an ordinary event.
    let plain = verifier(
        "scheme = \"hmac\"\nheader = \"X-Slack-Signature\"\nprefix = \"v0=\"\nsigned = \"v0:{timestamp}:{body}\"\n\
         timestamp_header = \"X-Slack-Request-Timestamp\"\nsecrets = [\"slack-secret\"]",
    );
    event(&plain, signed(&v, body, "", NOW), NOW);
}

#[test]
fn diagnostics_explain_without_revealing_secrets() {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let sender = verifier(&format!(
        "scheme = \"standard-webhooks\"\nsecrets = [\"{secret}\"]"
    ));
    // Configured as raw text: the whsec_ key used undecoded.
    let raw = verifier(&format!(
        "scheme = \"hmac\"\nheader = \"webhook-signature\"\ndelimiter = \"space\"\nprefix = \"v1,\"\n\
         encoding = \"base64\"\nsigned = \"{{id}}.{{timestamp}}.{{body}}\"\n\
         timestamp_header = \"webhook-timestamp\"\nid_header = \"webhook-id\"\nsecrets = [\"{secret}\"]\nexplain = true"
    ));
    let r = signed(&sender, b"{\"a\":1}", "msg_1", NOW);
    let expected_sig = r.header("webhook-signature").unwrap().to_string();
    let f = failure(&raw, r, NOW);
    assert_eq!(f.code(), "signature_invalid");
    assert!(f.explain);
    let d = &f.diagnostic;
    assert_eq!(d.header.as_deref(), Some("webhook-signature"));
    assert_eq!(d.signatures, Some(1));
    assert_eq!(d.signed_bytes, Some("msg_1.1700000000.{\"a\":1}".len()));
    assert!(d.hints[0].contains("base64-decoded"), "{d}");
    let text = format!("{d} {}", f.error);
    let sig = expected_sig.trim_start_matches("v1,");
    for leak in [secret, "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", sig] {
        assert!(!text.contains(leak), "{text} leaks {leak}");
    }
}

#[test]
fn diagnostics_spot_a_re_encoded_body() {
    let v = verifier("scheme = \"github\"\nsecrets = [\"s\"]");
    // The sender signed Python-style JSON; a proxy re-serialised it compactly.
    let sent = br#"{"action": "opened", "number": 7, "labels": ["a", "b"]}"#;
    let mut r = signed(&v, sent, "d-1", NOW);
    r.body = Bytes::from_static(br#"{"action":"opened","number":7,"labels":["a","b"]}"#);
    let f = failure(&v, r.clone(), NOW);
    assert!(
        f.diagnostic.hints[0].contains("space after"),
        "{}",
        f.diagnostic
    );
    assert_eq!(f.diagnostic.body.as_deref(), Some("JSON, compact"));
    // And the other way round, plus a trailing newline added by an editor.
    let mut r2 = signed(&v, b"{\"a\":1}", "d-2", NOW);
    r2.body = Bytes::from_static(b"{\"a\":1}\n");
    let f = failure(&v, r2, NOW);
    assert!(
        f.diagnostic.hints[0].contains("trailing newline"),
        "{}",
        f.diagnostic
    );
}

#[test]
fn event_ids_are_bounded_and_none_may_read_one() {
    let v = verifier("scheme = \"none\"\nid_header = \"X-Id\"");
    assert_eq!(
        event(&v, request(&[("X-Id", "abc")], b""), NOW).event_id(),
        Some("abc")
    );
    let long = "x".repeat(300);
    assert_eq!(
        event(&v, request(&[("X-Id", &long)], b""), NOW).event_id(),
        None
    );
    assert_eq!(
        event(&v, request(&[("X-Id", " ")], b""), NOW).event_id(),
        None
    );
    let stripe = verifier("scheme = \"stripe\"\nsecrets = [\"whsec_x\"]");
    // A number id is used as its text; a body that is not JSON has none.
    assert_eq!(
        event(&stripe, signed(&stripe, br#"{"id":17}"#, "", NOW), NOW).event_id(),
        Some("17")
    );
    assert_eq!(
        event(&stripe, signed(&stripe, b"not json", "", NOW), NOW).event_id(),
        None
    );
}

#[test]
fn debug_output_never_shows_secrets() {
    for line in [
        "scheme = \"stripe\"\nsecrets = [\"whsec_TOPSECRETVALUE\"]",
        "scheme = \"bearer\"\nsecrets = [\"TOPSECRETVALUE\"]",
        "scheme = \"basic\"\nusername = \"u\"\nsecrets = [\"TOPSECRETVALUE\"]",
    ] {
        let v = verifier(line);
        let debug = format!("{v:?}");
        assert!(!debug.contains("TOPSECRETVALUE"), "{debug}");
    }
}
