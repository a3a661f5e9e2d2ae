//! Verify's unit tests: published vectors per preset (`vectors`), the same negative checks for
//! every preset (`presets`), credentials, allowlists, handshakes and diagnostics (`schemes`),
//! config validation (`config`), and the fuzz corpus replay (`corpus`).

mod config;
mod presets;
mod schemes;
mod vectors;

use std::net::SocketAddr;

use bytes::Bytes;

use super::*;

/// Parses, validates and builds a verifier from one `verify` table's TOML.
pub(super) fn verifier(toml_text: &str) -> Verifier {
    try_verifier(toml_text).unwrap_or_else(|e| panic!("{toml_text}: {e}"))
}

pub(super) fn try_verifier(toml_text: &str) -> Result<Verifier, String> {
    let config: VerifyConfig = toml::from_str(toml_text).map_err(|e| e.to_string())?;
    config.validate("verify").map_err(|e| e.to_string())?;
    let secrets = config
        .secrets
        .iter()
        .map(|s| {
            let secret = s
                .resolve(std::path::Path::new("."), "verify.secrets")
                .unwrap();
            config
                .check_secret(&secret, "verify.secrets")
                .map(|()| secret)
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    Verifier::new(
        &config,
        secrets,
        &ProxyTrust::proxies(vec!["10.0.0.0/8".parse().unwrap()]),
    )
}

pub(super) fn request(headers: &[(&str, &str)], body: &[u8]) -> InboundRequest {
    request_at("/hooks/demo", "", headers, body)
}

pub(super) fn request_at(
    path: &str,
    query: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> InboundRequest {
    InboundRequest {
        source: "demo".into(),
        method: "POST".into(),
        path: path.into(),
        query: query.into(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect(),
        body: Bytes::copy_from_slice(body),
        remote: SocketAddr::from(([127, 0, 0, 1], 1)),
        received_at_ms: 0,
    }
}

/// Signs `body` with `v` at `now_ms` and returns the request a sender would make.
pub(super) fn signed(v: &Verifier, body: &[u8], id: &str, now_ms: u64) -> InboundRequest {
    let s = v.sign(
        Signed {
            path: "/hooks/demo".into(),
            query: String::new(),
            body: body.to_vec(),
            ..Signed::default()
        },
        id,
        now_ms,
    );
    let headers: Vec<(&str, &str)> = s
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    request_at(&s.path, &s.query, &headers, &s.body)
}

/// The event a successful verification produced (panics on a challenge or failure).
pub(super) fn event(v: &Verifier, request: InboundRequest, now_ms: u64) -> VerifiedRequest {
    match v.verify(request, now_ms) {
        Ok(Verified::Event(e)) => e,
        Ok(Verified::Challenge(c)) => panic!("unexpected challenge {c:?}"),
        Err(f) => panic!("{}: {} ({})", f.code(), f.error, f.diagnostic),
    }
}

/// The error code of a failed verification (panics on success).
pub(super) fn code(v: &Verifier, request: InboundRequest, now_ms: u64) -> &'static str {
    match v.verify(request, now_ms) {
        Ok(_) => panic!("verified, expected a failure"),
        Err(f) => f.code(),
    }
}

pub(super) fn failure(v: &Verifier, request: InboundRequest, now_ms: u64) -> VerifyFailure {
    match v.verify(request, now_ms) {
        Ok(_) => panic!("verified, expected a failure"),
        Err(f) => f,
    }
}

/// Seconds → milliseconds, for readability of `now_ms` arguments.
pub(super) fn secs(s: u64) -> u64 {
    s * 1000
}
