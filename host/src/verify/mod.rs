//! Verify: authenticate the sender of a webhook before anything else looks at it.
//!
//! Verification runs on the raw body bytes, exactly as received, before any parsing (a JSON
//! body is parsed only afterwards, for a scheme's event id, JSON timestamp or handshake). Its
//! output is [`Verified`]: either a [`VerifiedRequest`], which only this module can construct —
//! later stages take that type, so an unverified request cannot reach a plugin or the store by
//! mistake — or a provider's endpoint challenge, answered here and never seen by plugins or
//! sinks.
//!
//! Schemes ([`SchemeName`]):
//! - one declarative HMAC verifier ([`hmac`]) that every provider preset ([`presets`]) and the
//!   generic `hmac` scheme compile to: signature location and list format, signed-content
//!   template, hash, encoding, key derivation, timestamp source and tolerance, event-id source;
//! - shared-secret credentials: `bearer`, `basic`, `api-key` ([`credentials`]);
//! - an explicit `none`.
//!
//! Every scheme takes several secrets (rotation: any one passes) and compares in constant time.
//! A source may also restrict client addresses (`allow_ips`, checked first; see [`ip`]).
//!
//! Time is an input: [`Verifier::verify`] takes `now_ms`, so tolerance is tested without
//! clocks or sleeps. Failures carry a [`Diagnostic`] that is always logged and, with
//! `explain = true`, returned; it never holds a secret or the expected signature.

mod credentials;

mod hmac;
mod ip;
pub mod parse;

// The `verify` table, its provider presets and signed-content templates are data of the config
// file (the ground floor); the verify stage reads them under their old names.
pub use crate::config::verify as config;
pub(crate) use crate::config::verify::{presets, template};

use std::fmt;

use serde::Serialize;

pub use self::config::{
    Delimiter, Handshake, HmacAlgorithm, SchemeName, SecretEncoding, SignatureEncoding,
    TimestampUnit, VerifyConfig,
};
pub use self::credentials::secret_eq;
pub use self::hmac::mac;
pub use self::ip::{ProxyTrust, client_ip};
use crate::config::Secret;
use crate::event::InboundRequest;

/// Ids longer than this are not used as event ids (they become store keys and log fields).
const MAX_EVENT_ID_BYTES: usize = 256;

/// Why a request was not verified. Never carries a secret or the expected signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The signature (or credential) header is absent, or a header that is signed with it.
    #[error("missing header {header}")]
    SignatureMissing {
        /// The header that was looked for.
        header: String,
    },
    /// The header is present but cannot hold a signature (wrong prefix, bad encoding, too long).
    #[error("malformed signature in header {header}: {reason}")]
    SignatureMalformed {
        /// The header the signature was read from.
        header: String,
        /// What is wrong with it (never its value).
        reason: String,
    },
    /// Well-formed, but no configured secret produces it.
    #[error("signature in header {header} does not match the {signed_bytes} signed bytes")]
    SignatureInvalid {
        /// The header the signature was read from.
        header: String,
        /// How many bytes the MAC covered.
        signed_bytes: usize,
    },
    /// A timestamped scheme's timestamp is absent or not a Unix time.
    #[error("no usable timestamp in {place}: {reason}")]
    TimestampMissing {
        /// Where the timestamp was looked for, e.g. `header x-slack-request-timestamp`.
        place: String,
        /// Absent, or why it is not a time.
        reason: String,
    },
    /// The signature is authentic but its timestamp is too old or too far in the future: a
    /// replay, or a clock off by more than the tolerance.
    #[error(
        "timestamp is {} s in the {}; this source allows {tolerance_secs} s",
        .skew_secs.unsigned_abs(),
        if *.skew_secs >= 0 { "past" } else { "future" }
    )]
    TimestampOutOfTolerance {
        /// Our time minus the sent time, in seconds (positive: in the past).
        skew_secs: i64,
        /// The source's tolerance, in seconds.
        tolerance_secs: u64,
    },
    /// The client address is not in the source's `allow_ips`.
    #[error("client address {client} is not allowed to post to this source")]
    IpNotAllowed {
        /// The client address, or why it could not be read.
        client: String,
    },
}

impl VerifyError {
    /// Stable machine-readable code for responses and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::SignatureMissing { .. } => "signature_missing",
            VerifyError::SignatureMalformed { .. } => "signature_malformed",
            VerifyError::SignatureInvalid { .. } => "signature_invalid",
            VerifyError::TimestampMissing { .. } => "timestamp_missing",
            VerifyError::TimestampOutOfTolerance { .. } => "timestamp_out_of_tolerance",
            VerifyError::IpNotAllowed { .. } => "ip_not_allowed",
        }
    }
}

/// What was checked and what was seen, to fix a misconfiguration. No secrets, no expected MACs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Diagnostic {
    /// The configured scheme.
    pub scheme: &'static str,
    /// The header the signature or credential was read from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// The length of that header's value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_bytes: Option<usize>,
    /// Well-formed signatures found in the header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signatures: Option<usize>,
    /// The signed-content template, e.g. `{timestamp}.{body}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed: Option<String>,
    /// How many bytes the MAC covered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_bytes: Option<usize>,
    /// The public URL that was signed (`{url}` schemes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_url: Option<String>,
    /// How the secrets were turned into keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_form: Option<&'static str>,
    /// How many secrets were tried.
    pub secrets: usize,
    /// The body's shape (JSON compact or not, trailing newline), after a mismatch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Our time minus the sent timestamp, in seconds (positive: the timestamp is in the past).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp_skew_secs: Option<i64>,
    /// The client address `allow_ips` was checked against.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    /// Likely causes found by re-checking variants (other secret form, re-encoded body).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hints: Vec<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match serde_json::to_string(self) {
            Ok(s) => f.write_str(&s),
            Err(_) => f.write_str("{}"),
        }
    }
}

/// A failed verification: the error, what was checked, and whether the source asked for the
/// diagnostic in the response (`explain = true`).
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct VerifyFailure {
    /// Why the request was refused.
    pub error: VerifyError,
    /// What was checked and seen (always logged).
    pub diagnostic: Box<Diagnostic>,
    /// Whether the diagnostic goes into the response (`explain = true`).
    pub explain: bool,
}

impl VerifyFailure {
    /// The error's stable code (see [`VerifyError::code`]).
    pub fn code(&self) -> &'static str {
        self.error.code()
    }
}

/// A request whose sender has been authenticated. Only [`Verifier::verify`] creates one.
#[derive(Debug)]
pub struct VerifiedRequest {
    request: InboundRequest,
    event_id: Option<String>,
}

impl VerifiedRequest {
    /// The verified request.
    pub fn request(&self) -> &InboundRequest {
        &self.request
    }

    /// The sender's event id, when the scheme carries one (the default dedupe key).
    pub fn event_id(&self) -> Option<&str> {
        self.event_id.as_deref()
    }

    /// The request and the sender's event id.
    pub fn into_parts(self) -> (InboundRequest, Option<String>) {
        (self.request, self.event_id)
    }
}

/// The answer to a provider's endpoint challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeReply {
    /// The HTTP status (200).
    pub status: u16,
    /// The response's `Content-Type`.
    pub content_type: &'static str,
    /// The response body the provider expects.
    pub body: Vec<u8>,
}

/// The outcome of a successful verification.
#[derive(Debug)]
pub enum Verified {
    /// An event, for the rest of the pipeline.
    Event(VerifiedRequest),
    /// A verified endpoint challenge (Slack `url_verification`, Zoom
    /// `endpoint.url_validation`): answer it; it is not an event.
    Challenge(ChallengeReply),
}

/// A request to be signed by [`Verifier::sign`], and the result.
#[derive(Debug, Clone, Default)]
pub struct Signed {
    /// Added by `sign`.
    pub headers: Vec<(String, String)>,
    /// The request path (signed by `{url}` schemes).
    pub path: String,
    /// Raw query without `?`; `sign` may add to it (Twilio's `bodySHA256`).
    pub query: String,
    /// `sign` may set a JSON timestamp in it (Linear's `webhookTimestamp`).
    pub body: Vec<u8>,
}

/// Where a scheme's event id comes from.
#[derive(Debug, Clone)]
pub(crate) enum IdSource {
    /// The first of these (lowercase) headers that is present.
    Headers(Vec<String>),
    /// A JSON pointer into the body.
    Json(String),
}

/// The body parsed as JSON at most once, and only when a step needs it.
pub(crate) struct BodyJson<'a> {
    body: &'a [u8],
    parsed: Option<Option<serde_json::Value>>,
}

impl<'a> BodyJson<'a> {
    fn new(body: &'a [u8]) -> Self {
        BodyJson { body, parsed: None }
    }

    pub(crate) fn get(&mut self) -> Option<&serde_json::Value> {
        let body = self.body;
        self.parsed
            .get_or_insert_with(|| serde_json::from_slice(body).ok())
            .as_ref()
    }

    pub(crate) fn pointer(&mut self, pointer: &str) -> Option<&serde_json::Value> {
        self.get()?.pointer(pointer)
    }
}

impl IdSource {
    fn extract(&self, request: &InboundRequest, json: &mut BodyJson<'_>) -> Option<String> {
        let id = match self {
            IdSource::Headers(names) => names.iter().find_map(|n| request.header(n))?.to_string(),
            IdSource::Json(pointer) => match json.pointer(pointer)? {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                _ => return None,
            },
        };
        let id = id.trim();
        (!id.is_empty() && id.len() <= MAX_EVENT_ID_BYTES && !id.contains(char::is_control))
            .then(|| id.to_string())
    }
}

enum Scheme {
    Hmac(hmac::HmacVerifier),
    Credentials(credentials::CredentialVerifier),
    None,
}

/// A source's verification, with its secrets resolved.
pub struct Verifier {
    name: SchemeName,
    scheme: Scheme,
    id: Option<IdSource>,
    ips: Option<ip::IpPolicy>,
    /// Whose forwarding headers name the client (for `allow_ips` and per-client limits).
    proxies: ProxyTrust,
    explain: bool,
    secrets: usize,
    /// The header that carried a verified credential, removed from the verified request
    /// (`None` for signature schemes, whose headers are no credential, and with
    /// `forward_credentials = true`).
    strip: Option<String>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Verifier");
        d.field("scheme", &self.name.as_str());
        match &self.scheme {
            Scheme::Hmac(h) => d.field("hmac", h),
            Scheme::Credentials(c) => d.field("credentials", c),
            Scheme::None => d.field("none", &()),
        };
        d.field("allow_ips", &self.ips.as_ref().map(|p| &p.allow))
            .finish()
    }
}

impl Verifier {
    /// Builds a verifier from a validated config, its resolved secrets (in config order) and
    /// the server's proxy trust. The error names what is wrong, never a secret's value.
    pub fn new(
        config: &VerifyConfig,
        secrets: Vec<Secret>,
        proxies: &ProxyTrust,
    ) -> Result<Verifier, String> {
        let id_header = || {
            config
                .id_header
                .as_ref()
                .map(|h| IdSource::Headers(vec![h.to_ascii_lowercase()]))
        };
        let credentials = |kind| {
            let verifier = credentials::CredentialVerifier::new(kind, &secrets);
            (Scheme::Credentials(verifier), id_header())
        };
        let (scheme, id) = match config.scheme {
            SchemeName::None => (Scheme::None, id_header()),
            SchemeName::Bearer => credentials(credentials::Kind::Bearer),
            SchemeName::Basic => credentials(credentials::Kind::Basic {
                username: config.username.clone().unwrap_or_default(),
            }),
            SchemeName::ApiKey => credentials(credentials::Kind::ApiKey {
                header: config.header.clone().unwrap_or_default(),
            }),
            _ => {
                let spec = hmac::HmacSpec::from_config(config)?;
                let id = spec.id.clone();
                (Scheme::Hmac(hmac::HmacVerifier::new(spec, &secrets)?), id)
            }
        };
        let strip = match &scheme {
            Scheme::Credentials(c) if !config.forward_credentials => Some(c.header().to_string()),
            _ => None,
        };
        let ips = (!config.allow_ips.is_empty()).then(|| ip::IpPolicy {
            allow: config.allow_ips.clone(),
            trust: proxies.clone(),
        });
        Ok(Verifier {
            name: config.scheme,
            scheme,
            id,
            ips,
            proxies: proxies.clone(),
            explain: config.explain,
            secrets: secrets.len(),
            strip,
        })
    }

    /// Builds source `source`'s verifier from `config`, resolving its secrets; the error
    /// names the key.
    pub fn for_source(
        config: &crate::config::Config,
        source: &str,
    ) -> Result<Verifier, crate::config::ConfigError> {
        let verify = &config.sources[source].verify;
        let key = format!("sources.{source}.verify.secrets");
        let secrets = verify
            .secrets
            .iter()
            .map(|s| s.resolve(&config.base_dir, &key))
            .collect::<Result<Vec<_>, _>>()?;
        let proxies = ProxyTrust {
            trusted: config.server.trusted_proxies.clone(),
            header: config.server.client_ip_header,
            hops: config.server.trusted_hops,
        };
        Verifier::new(verify, secrets, &proxies).map_err(|reason| {
            crate::config::ConfigError::Invalid {
                key: format!("sources.{source}.verify"),
                reason,
            }
        })
    }

    /// The client address of `request`: the one `allow_ips` checks, read from the trusted
    /// proxies' forwarding header when the peer is one of them. When that chain cannot be read
    /// (which `allow_ips` refuses), the peer itself: per-client rate limits then count the
    /// proxy, never an address the client chose.
    pub fn client_ip(&self, request: &InboundRequest) -> std::net::IpAddr {
        client_ip(request.remote.ip(), &request.headers, &self.proxies)
            .unwrap_or_else(|| request.remote.ip().to_canonical())
    }

    /// The configured scheme.
    pub fn scheme(&self) -> SchemeName {
        self.name
    }

    /// Authenticates `request` at time `now_ms` (Unix milliseconds; the server passes the
    /// request's receive time), consuming it.
    pub fn verify(&self, request: InboundRequest, now_ms: u64) -> Result<Verified, VerifyFailure> {
        let mut diag = Diagnostic {
            scheme: self.name.as_str(),
            secrets: self.secrets,
            ..Diagnostic::default()
        };
        self.check(request, now_ms, &mut diag)
            .map_err(|error| VerifyFailure {
                error,
                diagnostic: Box::new(diag),
                explain: self.explain,
            })
    }

    fn check(
        &self,
        request: InboundRequest,
        now_ms: u64,
        diag: &mut Diagnostic,
    ) -> Result<Verified, VerifyError> {
        if let Some(ips) = &self.ips {
            ips.check(&request, diag)?;
        }
        let mut json = BodyJson::new(&request.body);
        match &self.scheme {
            Scheme::None => {}
            Scheme::Credentials(c) => c.check(&request, diag)?,
            Scheme::Hmac(h) => {
                let matched = h.check(&request, now_ms, &mut json, diag)?;
                if let Some(reply) = h.handshake(matched, &mut json) {
                    return Ok(Verified::Challenge(reply));
                }
            }
        }
        let event_id = self
            .id
            .as_ref()
            .and_then(|id| id.extract(&request, &mut json));
        let mut request = request;
        if let Some(header) = &self.strip {
            // The credential has done its job: nothing after this stage (plugins, the store,
            // sinks, the admin API) needs the sender's token, and each could leak it.
            request.headers.retain(|(name, _)| name != header);
        }
        Ok(Verified::Event(VerifiedRequest { request, event_id }))
    }

    /// Makes `request` pass this verifier at `now_ms`, with the first secret: the headers a
    /// sender would add (and, for some schemes, the query or a JSON timestamp in the body).
    /// `event_id` fills the scheme's id header when it has one. Used by `hookwall send`,
    /// tests and benchmarks.
    pub fn sign(&self, request: Signed, event_id: &str, now_ms: u64) -> Signed {
        match &self.scheme {
            Scheme::None => request,
            Scheme::Credentials(c) => {
                let mut signed = request;
                signed.headers.push(c.sign());
                if let Some(IdSource::Headers(names)) = &self.id {
                    signed
                        .headers
                        .push((names[0].clone(), event_id.to_string()));
                }
                signed
            }
            Scheme::Hmac(h) => h.sign(request, event_id, now_ms),
        }
    }

    /// Whether this scheme signs form parameters (so a sender should post form bodies).
    pub fn signs_form_params(&self) -> bool {
        matches!(&self.scheme, Scheme::Hmac(h) if h.spec.template.uses_params())
    }
}

#[cfg(test)]
mod tests;
