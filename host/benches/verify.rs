//! Verification cost per request, per scheme, for a 1 KiB JSON body: `cargo bench --bench verify`.
//!
//! Each case signs one request with the scheme's own signer, then measures `Verifier::verify`
//! on a fresh copy (the copy is made outside the timed section). Stripe, Slack, Paddle and
//! Linear also parse the body as JSON for their event id or timestamp, which shows in their
//! numbers. The last case measures a failed signature with its diagnosis (re-checks against
//! body and key variants), the cost a stream of forged requests imposes.

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use hookwall::config::{Secret, VerifyConfig};
use hookwall::server::InboundRequest;
use hookwall::verify::{Signed, Verifier};

/// A fixed "now" (2023-11-14T22:13:20Z), so signatures stay within tolerance.
const NOW_MS: u64 = 1_700_000_000_000;
const BODY_BYTES: usize = 1024;

/// `(scheme, secret, extra config lines)`; the scheme is also the bench's name.
const SCHEMES: &[(&str, &str, &str)] = &[
    ("none", "", ""),
    ("bearer", "bench-token", ""),
    ("basic", "bench-password", r#"username = "hooks""#),
    ("api-key", "bench-key", r#"header = "X-Api-Key""#),
    (
        "hmac",
        "bench-secret",
        r#"header = "X-Signature"
prefix = "sha256="
id_header = "X-Event-Id""#,
    ),
    (
        "standard-webhooks",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "",
    ),
    ("svix", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", ""),
    ("github", "bench-secret", ""),
    ("stripe", "whsec_bench", ""),
    ("slack", "bench-secret", ""),
    ("shopify", "bench-secret", ""),
    (
        "twilio",
        "bench-secret",
        r#"public_url = "https://hooks.example.com""#,
    ),
    ("paddle", "bench-secret", ""),
    ("linear", "bench-secret", ""),
    ("zoom", "bench-secret", ""),
];

/// The `verify` config of one `SCHEMES` row (no `secrets` line when `secret` is empty).
fn config_text(scheme: &str, secret: &str, extra: &str) -> String {
    let secrets = if secret.is_empty() {
        String::new()
    } else {
        format!("secrets = [\"{secret}\"]\n")
    };
    format!("scheme = \"{scheme}\"\n{secrets}{extra}")
}

fn verifier(text: &str) -> Verifier {
    let config: VerifyConfig = toml::from_str(text).expect("bench config parses");
    config.validate("bench").expect("bench config is valid");
    let secrets: Vec<Secret> = config
        .secrets
        .iter()
        .map(|s| {
            s.resolve(std::path::Path::new("."), "bench")
                .expect("literal")
        })
        .collect();
    Verifier::new(&config, secrets, &Default::default()).expect("bench verifier builds")
}

/// A JSON event of exactly `BODY_BYTES` bytes, with the ids presets read.
fn body() -> Vec<u8> {
    let head = r#"{"id":"evt_bench","event_id":"evt_bench","type":"order.created","pad":""#;
    let tail = r#""}"#;
    let pad = "x".repeat(BODY_BYTES - head.len() - tail.len());
    let body = format!("{head}{pad}{tail}").into_bytes();
    assert_eq!(body.len(), BODY_BYTES);
    body
}

fn signed_request(v: &Verifier) -> InboundRequest {
    let s = v.sign(
        Signed {
            path: "/hooks/bench".into(),
            body: body(),
            ..Signed::default()
        },
        "evt_bench",
        NOW_MS,
    );
    InboundRequest {
        source: "bench".into(),
        method: "POST".into(),
        path: s.path,
        query: s.query,
        headers: s.headers,
        body: s.body.into(),
        remote: SocketAddr::from(([127, 0, 0, 1], 1)),
        received_at_ms: NOW_MS,
    }
}

fn verify(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify_1KiB");
    for (name, secret, extra) in SCHEMES {
        let v = verifier(&config_text(name, secret, extra));
        let request = signed_request(&v);
        assert!(
            v.verify(request.clone(), NOW_MS).is_ok(),
            "{name} does not verify"
        );
        group.bench_function(*name, |b| {
            b.iter_batched(
                || request.clone(),
                |r| black_box(v.verify(r, NOW_MS)).is_ok(),
                BatchSize::SmallInput,
            )
        });
    }
    let v = verifier(&config_text("github", "bench-secret", ""));
    let mut forged = signed_request(&v);
    let mut body = forged.body.to_vec();
    body[10] ^= 1;
    forged.body = body.into();
    assert!(v.verify(forged.clone(), NOW_MS).is_err());
    group.bench_function("github_forged_with_diagnosis", |b| {
        b.iter_batched(
            || forged.clone(),
            |r| black_box(v.verify(r, NOW_MS)).is_err(),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
