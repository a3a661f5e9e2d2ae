//! Entry points for the fuzz targets in `host/fuzz` and for the test that replays their seed
//! corpus (`host/fuzz/corpus/<target>/`) in every `cargo test`.
//!
//! Each takes arbitrary bytes, drives one header parser directly and through the verifiers
//! that use it, and asserts what must hold for every input: no panic, and no forged request
//! verifies. A failing assertion is a finding.

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

use bytes::Bytes;

use crate::config::Secret;
use crate::config::{Delimiter, HmacAlgorithm, SchemeName, SignatureEncoding};
use crate::event::InboundRequest;
use crate::verify::{ProxyTrust, Signed, Verifier, VerifyConfig, client_ip, parse};

/// A fixed "now" for the verifiers (2023-11-14T22:13:20Z).
const NOW_MS: u64 = 1_700_000_000_000;
const SECRET: &str = "fuzz-secret-c0ffee";
/// Standard Webhooks' spec example key form: base64 after `whsec_`.
const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A fuzz target's entry point.
pub type Target = fn(&[u8]);

/// The fuzz targets by name, as in `host/fuzz/fuzz_targets/<name>.rs`.
pub const TARGETS: &[(&str, Target)] = &[
    ("signature_header", signature_header),
    ("timestamp", timestamp),
    ("authorization", authorization),
    ("forwarded", forwarded),
    ("form", form),
];

fn verifier(line: &str) -> Verifier {
    let config: VerifyConfig = toml::from_str(line).expect("fuzz verifier config parses");
    config
        .validate("fuzz")
        .expect("fuzz verifier config is valid");
    let secrets = config
        .secrets
        .iter()
        .map(|s| {
            s.resolve(std::path::Path::new("."), "fuzz")
                .expect("literal")
        })
        .collect::<Vec<Secret>>();
    Verifier::new(
        &config,
        secrets,
        &ProxyTrust::proxies(vec!["10.0.0.0/8".parse().expect("net")]),
    )
    .expect("builds")
}

/// One verifier per HMAC preset, and a generic one with every knob.
fn hmac_verifiers() -> &'static [Verifier] {
    static V: OnceLock<Vec<Verifier>> = OnceLock::new();
    V.get_or_init(|| {
        let raw = [
            "github", "stripe", "slack", "shopify", "paddle", "linear", "zoom",
        ];
        let mut all: Vec<Verifier> = raw
            .iter()
            .map(|s| verifier(&format!("scheme = \"{s}\"\nsecrets = [\"{SECRET}\"]")))
            .collect();
        for s in ["standard-webhooks", "svix"] {
            all.push(verifier(&format!("scheme = \"{s}\"\nsecrets = [\"{WHSEC}\"]")));
        }
        all.push(verifier(&format!(
            "scheme = \"twilio\"\nsecrets = [\"{SECRET}\"]\npublic_url = \"https://example.com\""
        )));
        all.push(verifier(&format!(
            "scheme = \"hmac\"\nsecrets = [\"{SECRET}\"]\nheader = \"x-sig\"\ndelimiter = \"comma\"\n\
             prefix = \"s=\"\nalgorithm = \"sha512\"\nencoding = \"base64\"\n\
             timestamp_prefix = \"t=\"\nsigned = \"{{timestamp}}|{{body}}\"\ntolerance = \"1m\""
        )));
        all
    })
}

fn request(headers: Vec<(String, String)>, query: &str, body: &[u8]) -> InboundRequest {
    InboundRequest {
        source: "fuzz".into(),
        method: "POST".into(),
        path: "/hooks/fuzz".into(),
        query: query.to_string(),
        headers,
        body: Bytes::copy_from_slice(body),
        remote: SocketAddr::from(([127, 0, 0, 1], 1)),
        received_at_ms: NOW_MS,
    }
}

/// Every header name any preset reads, set to `value`; timestamps set to "now".
fn all_signature_headers(value: &str) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = [
        "x-hub-signature-256",
        "stripe-signature",
        "x-slack-signature",
        "x-shopify-hmac-sha256",
        "paddle-signature",
        "linear-signature",
        "x-zm-signature",
        "webhook-signature",
        "svix-signature",
        "x-twilio-signature",
        "x-sig",
    ]
    .iter()
    .map(|h| (h.to_string(), value.to_string()))
    .collect();
    let now = (NOW_MS / 1000).to_string();
    for h in [
        "x-slack-request-timestamp",
        "x-zm-request-timestamp",
        "webhook-timestamp",
        "svix-timestamp",
    ] {
        headers.push((h.to_string(), now.clone()));
    }
    headers.push(("webhook-id".into(), "msg_1".into()));
    headers
}

/// Signature headers: the list parser, the decoder, and every HMAC preset's verifier.
pub fn signature_header(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let formats = [
        (None, ""),
        (None, "sha256="),
        (Some(Delimiter::Space), "v1,"),
        (Some(Delimiter::Comma), "v1="),
        (Some(Delimiter::Semicolon), "h1="),
    ];
    for (delimiter, prefix) in formats {
        if let Ok(signatures) = parse::signatures(&text, delimiter, prefix) {
            assert!(!signatures.is_empty());
            for sig in signatures {
                assert!(text.contains(sig), "a signature is a slice of the header");
                for (encoding, len) in [
                    (SignatureEncoding::Hex, 32),
                    (SignatureEncoding::Base64, 20),
                ] {
                    if let Ok(bytes) = parse::decode_signature(sig, encoding, len) {
                        assert_eq!(bytes.len(), len);
                    }
                }
            }
        }
        if let Some(d) = delimiter {
            let _ = parse::entry(&text, d, "t=");
        }
    }
    let request = request(all_signature_headers(&text), "", br#"{"id":"evt_1"}"#);
    for v in hmac_verifiers() {
        assert!(
            v.verify(request.clone(), NOW_MS).is_err(),
            "{:?} accepted a forged signature header {text:?}",
            v.scheme()
        );
    }
}

/// Timestamps: the digit parser, Stripe's `t=` entry with a valid signature over it (so the
/// tolerance arithmetic runs on any value), and Linear's JSON timestamp with `data` as body.
pub fn timestamp(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Some(v) = parse::unix_time(&text) {
        assert!(v >= 0);
        assert_eq!(text.trim().parse::<i64>().ok(), Some(v));
    }
    let verifiers = hmac_verifiers();
    let (stripe, linear) = (&verifiers[1], &verifiers[5]);
    debug_assert_eq!(
        (stripe.scheme(), linear.scheme()),
        (SchemeName::Stripe, SchemeName::Linear)
    );
    let body = br#"{"id":"evt_1"}"#;
    let t = text.replace([',', '\r', '\n'], "");
    let mac = crate::verify::mac(
        HmacAlgorithm::Sha256,
        SECRET.as_bytes(),
        &[t.as_bytes(), b".", body].concat(),
    );
    let header = format!("t={t},v1={}", hex::encode(mac));
    let result = stripe.verify(
        request(vec![("stripe-signature".into(), header)], "", body),
        NOW_MS,
    );
    if result.is_ok() {
        let value = parse::unix_time(&t).expect("an accepted timestamp parses");
        assert!(value.abs_diff((NOW_MS / 1000) as i64) <= 300);
    }
    let mac = crate::verify::mac(HmacAlgorithm::Sha256, SECRET.as_bytes(), data);
    let _ = linear.verify(
        request(
            vec![("linear-signature".into(), hex::encode(mac))],
            "",
            data,
        ),
        NOW_MS,
    );
}

/// `Authorization` (and an API-key header): the parser and the credential verifiers.
pub fn authorization(data: &[u8]) {
    static V: OnceLock<Vec<Verifier>> = OnceLock::new();
    let verifiers = V.get_or_init(|| {
        vec![
            verifier(&format!("scheme = \"bearer\"\nsecrets = [\"{SECRET}\"]")),
            verifier(&format!(
                "scheme = \"basic\"\nusername = \"hooks\"\nsecrets = [\"{SECRET}\"]"
            )),
            verifier(&format!(
                "scheme = \"api-key\"\nheader = \"authorization\"\nsecrets = [\"{SECRET}\"]"
            )),
        ]
    });
    let text = String::from_utf8_lossy(data);
    if let parse::Authorization::Bearer(token) = parse::authorization(&text) {
        assert!(!token.is_empty() && text.contains(token));
    }
    let request = request(vec![("authorization".into(), text.to_string())], "", b"{}");
    for v in verifiers {
        let result = v.verify(request.clone(), NOW_MS);
        assert!(
            result.is_err() || text.contains(SECRET),
            "{:?} accepted {text:?}",
            v.scheme()
        );
    }
}

/// `Forwarded` and `X-Forwarded-For`: the parsers and the client-address resolution.
pub fn forwarded(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = parse::forwarded_for(&text);
    let hops = parse::x_forwarded_for(&text);
    assert_eq!(hops.len(), text.split(',').count());
    let trusted = ProxyTrust::proxies(vec!["10.0.0.0/8".parse().expect("net")]);
    let headers = vec![
        ("forwarded".to_string(), text.to_string()),
        ("x-forwarded-for".to_string(), text.to_string()),
    ];
    let stranger: IpAddr = [192, 0, 2, 1].into();
    assert_eq!(client_ip(stranger, &headers, &trusted), Some(stranger));
    for trust in [
        trusted.clone(),
        ProxyTrust {
            header: crate::config::ClientIpHeader::Forwarded,
            hops: Some(2),
            ..trusted
        },
    ] {
        if let Some(ip) = client_ip([10, 0, 0, 1].into(), &headers, &trust) {
            let _ = ip.is_loopback();
        }
    }
}

/// Form bodies and queries (Twilio): the parameter sorter, the query reader, and a sign →
/// verify round trip that must pass for any body and query.
pub fn form(data: &[u8]) {
    let split = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    let (query_bytes, body) = (&data[..split], data.get(split + 1..).unwrap_or(&[]));
    let query: String = String::from_utf8_lossy(query_bytes)
        .chars()
        .filter(|c| !c.is_control() && *c != '#' && *c != ' ')
        .collect();
    let _ = parse::sorted_form_params(body);
    let twilio = &hmac_verifiers()[9];
    debug_assert_eq!(twilio.scheme(), SchemeName::Twilio);
    if parse::query_param(&query, "bodySHA256").is_some() {
        return;
    }
    let signed = twilio.sign(
        Signed {
            path: "/hooks/fuzz".into(),
            query,
            body: body.to_vec(),
            ..Signed::default()
        },
        "id",
        NOW_MS,
    );
    let req = request(signed.headers.clone(), &signed.query, &signed.body);
    assert!(
        twilio.verify(req.clone(), NOW_MS).is_ok(),
        "a signed request did not verify: {signed:?}"
    );
    let mut tampered = req;
    let mut body = tampered.body.to_vec();
    body.push(b'x');
    tampered.body = body.into();
    let _ = twilio.verify(tampered, NOW_MS);
}
