//! The one declarative HMAC verifier that every provider preset and the generic `hmac` scheme
//! compile to: an [`HmacSpec`] (where the signature is, what is signed, how the key is made,
//! where the timestamp is) plus the prepared keys.
//!
//! The MAC is fed the template's parts in order, straight from the request (no concatenated
//! copy of the body), once per key (and per URL form, for `{url}`); every signature in the
//! header is compared in constant time, and no key's loop stops early, so timing does not
//! reveal which secret or signature matched.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::Digest as _;
use subtle::ConstantTimeEq;

use super::config::{
    Delimiter, Handshake, HmacAlgorithm, SchemeName, SecretEncoding, SignatureEncoding,
    TimestampUnit, VerifyConfig, decode_base64_secret,
};
use super::presets::{self, IdFrom, TimestampFrom};
use super::template::{Part, Template, url_variants};
use super::{BodyJson, Diagnostic, IdSource, VerifyError, parse};
use crate::config::Secret;
use crate::server::InboundRequest;

/// Diagnosis after a failed signature recomputes the MAC over a few variants of the body and
/// key; above this body size it is skipped, so a flood of bad requests cannot make us hash
/// megabytes several times each.
const DIAGNOSE_MAX_BODY_BYTES: usize = 64 * 1024;
/// The query parameter in which Twilio carries the SHA-256 of a JSON body.
const BODY_SHA256_PARAM: &str = "bodySHA256";

/// Where the send time comes from.
#[derive(Debug, Clone)]
pub(crate) enum TimestampSource {
    Headers(Vec<String>),
    Entry(String),
    Json(String),
}

#[derive(Debug, Clone)]
pub(crate) struct TimestampSpec {
    pub source: TimestampSource,
    pub unit: TimestampUnit,
    pub tolerance: Duration,
}

/// A complete, resolved HMAC scheme.
#[derive(Debug, Clone)]
pub(crate) struct HmacSpec {
    /// The signature header: the first of these (lowercase) that is present.
    pub headers: Vec<String>,
    pub delimiter: Option<Delimiter>,
    pub prefix: String,
    pub algorithm: HmacAlgorithm,
    pub encoding: SignatureEncoding,
    pub template: Template,
    pub secret_encoding: SecretEncoding,
    pub timestamp: Option<TimestampSpec>,
    pub id: Option<IdSource>,
    pub public_url: Option<String>,
    pub handshake: Option<Handshake>,
}

fn lower_all(names: &[&str]) -> Vec<String> {
    names.iter().map(|h| h.to_ascii_lowercase()).collect()
}

impl HmacSpec {
    /// The spec for a validated config: its preset, with the overrides the config may set
    /// (`tolerance`, the id source, `public_url`), or the generic knobs for `hmac`.
    pub(crate) fn from_config(c: &VerifyConfig) -> Result<HmacSpec, String> {
        let p = match c.scheme {
            SchemeName::Hmac => presets::base(),
            other => presets::preset(other)
                .ok_or_else(|| format!("scheme `{}` is not an HMAC scheme", other.as_str()))?,
        };
        let generic = c.scheme == SchemeName::Hmac;
        let preset_timestamp = p
            .timestamp
            .as_ref()
            .map(|(from, unit, tolerance)| TimestampSpec {
                source: match from {
                    TimestampFrom::Headers(h) => TimestampSource::Headers(lower_all(h)),
                    TimestampFrom::Entry(e) => TimestampSource::Entry(e.to_string()),
                    TimestampFrom::Json(j) => TimestampSource::Json(j.to_string()),
                },
                unit: *unit,
                tolerance: *tolerance,
            });
        let timestamp = if generic {
            let source = if let Some(h) = &c.timestamp_header {
                Some(TimestampSource::Headers(vec![h.to_ascii_lowercase()]))
            } else if let Some(e) = &c.timestamp_prefix {
                Some(TimestampSource::Entry(e.clone()))
            } else {
                c.timestamp_json.clone().map(TimestampSource::Json)
            };
            source.map(|source| TimestampSpec {
                source,
                unit: c.timestamp_unit.unwrap_or_default(),
                tolerance: c.tolerance.unwrap_or(presets::DEFAULT_TOLERANCE),
            })
        } else {
            preset_timestamp.map(|t| TimestampSpec {
                tolerance: c.tolerance.unwrap_or(t.tolerance),
                ..t
            })
        };
        let id = if let Some(h) = &c.id_header {
            Some(IdSource::Headers(vec![h.to_ascii_lowercase()]))
        } else if let Some(j) = &c.id_json {
            Some(IdSource::Json(j.clone()))
        } else {
            p.id.as_ref().map(|id| match id {
                IdFrom::Headers(h) => IdSource::Headers(lower_all(h)),
                IdFrom::Json(j) => IdSource::Json(j.to_string()),
            })
        };
        let pick = |knob: &Option<String>, preset: &str| match (generic, knob) {
            (true, Some(v)) => v.clone(),
            _ => preset.to_string(),
        };
        let headers = match (&c.header, generic) {
            (Some(h), true) => vec![h.to_ascii_lowercase()],
            _ => lower_all(p.headers),
        };
        let template = Template::parse(&pick(&c.signed, p.signed))?;
        Ok(HmacSpec {
            headers,
            delimiter: if generic { c.delimiter } else { p.delimiter },
            prefix: pick(&c.prefix, p.prefix),
            algorithm: c.algorithm.filter(|_| generic).unwrap_or(p.algorithm),
            encoding: c.encoding.filter(|_| generic).unwrap_or(p.encoding),
            template,
            secret_encoding: c
                .secret_encoding
                .filter(|_| generic)
                .unwrap_or(p.secret_encoding),
            timestamp,
            id,
            public_url: c.public_url.clone(),
            handshake: c.handshake.filter(|_| generic).or(p.handshake),
        })
    }
}

/// A MAC in progress, keyed once at start-up and cloned per request (saves re-hashing the key).
#[derive(Clone)]
enum MacState {
    Sha1(Hmac<sha1::Sha1>),
    Sha256(Hmac<sha2::Sha256>),
    Sha512(Hmac<sha2::Sha512>),
}

impl MacState {
    fn new(algorithm: HmacAlgorithm, key: &[u8]) -> MacState {
        // HMAC takes keys of any length, so these cannot fail.
        match algorithm {
            HmacAlgorithm::Sha1 => MacState::Sha1(Mac::new_from_slice(key).expect("any key")),
            HmacAlgorithm::Sha256 => MacState::Sha256(Mac::new_from_slice(key).expect("any key")),
            HmacAlgorithm::Sha512 => MacState::Sha512(Mac::new_from_slice(key).expect("any key")),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            MacState::Sha1(m) => m.update(data),
            MacState::Sha256(m) => m.update(data),
            MacState::Sha512(m) => m.update(data),
        }
    }

    fn finalize(self) -> Vec<u8> {
        match self {
            MacState::Sha1(m) => m.finalize().into_bytes().to_vec(),
            MacState::Sha256(m) => m.finalize().into_bytes().to_vec(),
            MacState::Sha512(m) => m.finalize().into_bytes().to_vec(),
        }
    }
}

/// HMAC of `data` under `key`.
pub fn mac(algorithm: HmacAlgorithm, key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = MacState::new(algorithm, key);
    m.update(data);
    m.finalize()
}

/// One configured secret, ready to MAC with.
struct Key {
    state: MacState,
    /// The key bytes (the Zoom handshake MACs its token with them).
    bytes: Secret,
    /// The other secret form (decoded `whsec_` vs raw), only to diagnose a mismatch.
    other_form: Option<MacState>,
}

/// Everything the template needs from one request.
struct Inputs<'a> {
    body: &'a [u8],
    id: &'a [u8],
    timestamp: &'a [u8],
    params: Vec<u8>,
    urls: Vec<String>,
}

impl Inputs<'_> {
    /// The MAC of the template over these inputs, for URL form `url` (an index into `urls`),
    /// with `body` in place of the request body.
    fn mac(&self, template: &Template, mut state: MacState, url: usize, body: &[u8]) -> Vec<u8> {
        for part in template.parts() {
            match part {
                Part::Literal(l) => state.update(l),
                Part::Body => state.update(body),
                Part::Id => state.update(self.id),
                Part::Timestamp => state.update(self.timestamp),
                Part::Url => state.update(self.urls.get(url).map_or(&[][..], |u| u.as_bytes())),
                Part::Params => state.update(&self.params),
            }
        }
        state.finalize()
    }

    fn signed_len(&self, template: &Template) -> usize {
        template
            .parts()
            .iter()
            .map(|part| match part {
                Part::Literal(l) => l.len(),
                Part::Body => self.body.len(),
                Part::Id => self.id.len(),
                Part::Timestamp => self.timestamp.len(),
                Part::Url => self.urls.first().map_or(0, String::len),
                Part::Params => self.params.len(),
            })
            .sum()
    }
}

/// The secret that verified a request (its index in config order).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Matched(usize);

/// A spec with its keys: verifies and signs.
pub(crate) struct HmacVerifier {
    pub spec: HmacSpec,
    keys: Vec<Key>,
}

impl std::fmt::Debug for HmacVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HmacVerifier")
            .field("spec", &self.spec)
            .field("keys", &format_args!("[{} redacted]", self.keys.len()))
            .finish()
    }
}

/// The first of `names` present in `request`: (name, value).
fn first_header<'r, 'n>(
    request: &'r InboundRequest,
    names: &'n [String],
) -> Option<(&'n str, &'r str)> {
    names
        .iter()
        .find_map(|n| request.header(n).map(|v| (n.as_str(), v)))
}

impl HmacVerifier {
    /// Prepares the keys. Secrets were checked at load (`VerifyConfig::check_secret`); one that
    /// still does not decode is an error naming only its position.
    pub(crate) fn new(spec: HmacSpec, secrets: &[Secret]) -> Result<HmacVerifier, String> {
        let mut keys = Vec::with_capacity(secrets.len());
        for (i, secret) in secrets.iter().enumerate() {
            let raw = secret.expose();
            let (bytes, other): (Vec<u8>, Option<Vec<u8>>) = match spec.secret_encoding {
                SecretEncoding::Raw => (
                    raw.to_vec(),
                    raw.starts_with(b"whsec_")
                        .then(|| decode_base64_secret(raw))
                        .flatten(),
                ),
                SecretEncoding::Base64 => (
                    decode_base64_secret(raw)
                        .ok_or_else(|| format!("secret #{} is not base64", i + 1))?,
                    Some(raw.to_vec()),
                ),
            };
            keys.push(Key {
                state: MacState::new(spec.algorithm, &bytes),
                other_form: other.map(|o| MacState::new(spec.algorithm, &o)),
                bytes: Secret::new(bytes),
            });
        }
        Ok(HmacVerifier { spec, keys })
    }

    fn signature_header_name(&self) -> String {
        self.spec.headers.first().cloned().unwrap_or_default()
    }

    /// Checks the signature and the timestamp's tolerance.
    pub(crate) fn check(
        &self,
        request: &InboundRequest,
        now_ms: u64,
        json: &mut BodyJson<'_>,
        diag: &mut Diagnostic,
    ) -> Result<Matched, VerifyError> {
        let spec = &self.spec;
        diag.signed = Some(spec.template.as_str().to_string());
        diag.key_form = Some(self.key_form());
        let (header, value) =
            first_header(request, &spec.headers).ok_or_else(|| VerifyError::SignatureMissing {
                header: self.signature_header_name(),
            })?;
        diag.header = Some(header.to_string());
        diag.header_bytes = Some(value.len());
        let malformed = |reason: String| VerifyError::SignatureMalformed {
            header: header.to_string(),
            reason,
        };
        let encoded = parse::signatures(value, spec.delimiter, &spec.prefix)
            .map_err(|m| malformed(m.to_string()))?;
        let mut given = Vec::with_capacity(encoded.len());
        let mut first_error = None;
        for text in encoded {
            match parse::decode_signature(text, spec.encoding, spec.algorithm.output_len()) {
                Ok(sig) => given.push(sig),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if given.is_empty() {
            return Err(malformed(first_error.unwrap_or_default()));
        }
        diag.signatures = Some(given.len());

        let timestamp = self.timestamp_text(request, value)?;
        let id = match (&spec.id, spec.template.uses_id()) {
            (Some(IdSource::Headers(names)), true) => first_header(request, names)
                .map(|(_, v)| v)
                .ok_or_else(|| VerifyError::SignatureMissing {
                    header: names.first().cloned().unwrap_or_default(),
                })?,
            _ => "",
        };
        let body = request.body.as_ref();
        let mut params = Vec::new();
        let mut urls = Vec::new();
        if spec.template.uses_url() || spec.template.uses_params() {
            let body_sha = parse::query_param(&request.query, BODY_SHA256_PARAM);
            match body_sha {
                // A JSON body is signed through its hash in the URL; the hash must match.
                Some(expected) => {
                    let actual = hex::encode(sha2::Sha256::digest(body));
                    if !bool::from(
                        actual
                            .as_bytes()
                            .ct_eq(expected.to_ascii_lowercase().as_bytes()),
                    ) {
                        diag.hints.push(format!(
                            "the body's SHA-256 differs from the URL's {BODY_SHA256_PARAM}"
                        ));
                        return Err(VerifyError::SignatureInvalid {
                            header: header.to_string(),
                            signed_bytes: body.len(),
                        });
                    }
                }
                None if spec.template.uses_params() => params = parse::sorted_form_params(body),
                None => {}
            }
            if let Some(public) = &spec.public_url {
                urls = url_variants(public, &request.path, &request.query);
                diag.signed_url = urls.first().cloned();
            }
        }
        let inputs = Inputs {
            body,
            id: id.as_bytes(),
            timestamp: timestamp.map_or(&[][..], |(t, _)| t.as_bytes()),
            params,
            urls,
        };
        diag.signed_bytes = Some(inputs.signed_len(&spec.template));
        let url_forms = inputs.urls.len().max(1);
        let mut matched = None;
        for (i, key) in self.keys.iter().enumerate() {
            for url in 0..url_forms {
                let mac = inputs.mac(&spec.template, key.state.clone(), url, body);
                let mut hit = subtle::Choice::from(0);
                for sig in &given {
                    hit |= mac.ct_eq(sig);
                }
                if bool::from(hit) && matched.is_none() {
                    matched = Some(Matched(i));
                }
            }
        }
        let Some(matched) = matched else {
            self.diagnose(&inputs, &given, diag);
            return Err(VerifyError::SignatureInvalid {
                header: header.to_string(),
                signed_bytes: diag.signed_bytes.unwrap_or(0),
            });
        };
        self.check_tolerance(timestamp.map(|(_, v)| v), now_ms, json, diag)?;
        Ok(matched)
    }

    /// The timestamp as sent (it is signed byte for byte) and its value, when it comes from a
    /// header or the signature header; JSON timestamps are read after the signature passes.
    fn timestamp_text<'r>(
        &self,
        request: &'r InboundRequest,
        signature_value: &'r str,
    ) -> Result<Option<(&'r str, i64)>, VerifyError> {
        let Some(ts) = &self.spec.timestamp else {
            return Ok(None);
        };
        let (place, text) = match &ts.source {
            TimestampSource::Json(_) => return Ok(None),
            TimestampSource::Headers(names) => (
                format!("header {}", names.first().map_or("", String::as_str)),
                first_header(request, names).map(|(_, v)| v),
            ),
            TimestampSource::Entry(prefix) => (
                format!(
                    "the `{prefix}` entry of header {}",
                    self.signature_header_name()
                ),
                self.spec
                    .delimiter
                    .and_then(|d| parse::entry(signature_value, d, prefix)),
            ),
        };
        let text = text.ok_or_else(|| VerifyError::TimestampMissing {
            place: place.clone(),
            reason: "absent".into(),
        })?;
        let value = parse::unix_time(text).ok_or_else(|| VerifyError::TimestampMissing {
            place,
            reason: "not a Unix time in decimal digits".into(),
        })?;
        Ok(Some((text, value)))
    }

    fn check_tolerance(
        &self,
        header_value: Option<i64>,
        now_ms: u64,
        json: &mut BodyJson<'_>,
        diag: &mut Diagnostic,
    ) -> Result<(), VerifyError> {
        let Some(ts) = &self.spec.timestamp else {
            return Ok(());
        };
        let value = match (&ts.source, header_value) {
            (_, Some(v)) => v,
            (TimestampSource::Json(pointer), None) => json
                .pointer(pointer)
                .and_then(|v| match v {
                    serde_json::Value::Number(n) => n.as_i64(),
                    serde_json::Value::String(s) => parse::unix_time(s),
                    _ => None,
                })
                .filter(|v| *v >= 0)
                .ok_or_else(|| VerifyError::TimestampMissing {
                    place: format!("JSON field {pointer} of the body"),
                    reason: "absent or not a Unix time".into(),
                })?,
            (_, None) => return Ok(()),
        };
        let sent_ms = match ts.unit {
            TimestampUnit::Seconds => i128::from(value) * 1000,
            TimestampUnit::Millis => i128::from(value),
        };
        let skew_ms = i128::from(now_ms) - sent_ms;
        let skew_secs = i64::try_from(skew_ms / 1000).unwrap_or(i64::MAX);
        diag.timestamp_skew_secs = Some(skew_secs);
        if skew_ms.unsigned_abs() > ts.tolerance.as_millis() {
            return Err(VerifyError::TimestampOutOfTolerance {
                skew_secs,
                tolerance_secs: ts.tolerance.as_secs(),
            });
        }
        Ok(())
    }

    fn key_form(&self) -> &'static str {
        match self.spec.secret_encoding {
            SecretEncoding::Raw => "raw: the secret's UTF-8 bytes, whole",
            SecretEncoding::Base64 => "base64: the decoded text after an optional `whsec_`",
        }
    }

    /// After a mismatch, looks for the usual reasons: the other secret form, or a body that
    /// something re-encoded on the way. Only hints; never the expected signature.
    fn diagnose(&self, inputs: &Inputs<'_>, given: &[Vec<u8>], diag: &mut Diagnostic) {
        if inputs.body.len() > DIAGNOSE_MAX_BODY_BYTES {
            diag.body = Some(format!("{} bytes, not examined", inputs.body.len()));
            return;
        }
        diag.body = Some(describe_body(inputs.body));
        let template = &self.spec.template;
        let matches = |state: &MacState, body: &[u8]| {
            (0..inputs.urls.len().max(1)).any(|url| {
                let mac = inputs.mac(template, state.clone(), url, body);
                given.iter().any(|sig| bool::from(mac.ct_eq(sig)))
            })
        };
        if self
            .keys
            .iter()
            .filter_map(|k| k.other_form.as_ref())
            .any(|state| matches(state, inputs.body))
        {
            diag.hints.push(match self.spec.secret_encoding {
                SecretEncoding::Raw => "the signature matches when the secret is base64-decoded \
                    after `whsec_`: this sender uses Standard Webhooks keys (scheme \
                    standard-webhooks / svix, or secret_encoding = \"base64\")"
                    .into(),
                SecretEncoding::Base64 => "the signature matches when the secret is used as \
                    raw text: this sender uses the whole string as the key (e.g. Stripe; \
                    secret_encoding = \"raw\")"
                    .into(),
            });
            return;
        }
        if !template.parts().contains(&Part::Body) {
            return;
        }
        for (name, variant) in body_variants(inputs.body) {
            if self.keys.iter().any(|k| matches(&k.state, &variant)) {
                diag.hints.push(format!(
                    "the signature matches the body {name}: something between the sender and \
                     Hookwall changed the body bytes (e.g. a proxy parsed and re-serialised \
                     JSON); the body must arrive byte for byte"
                ));
                return;
            }
        }
        if diag.signed_url.is_some() {
            diag.hints.push(
                "check that public_url is exactly the scheme and host the sender posts to".into(),
            );
        }
    }

    /// The Zoom/Slack handshake reply, when the verified body is that provider's challenge.
    pub(crate) fn handshake(
        &self,
        matched: Matched,
        json: &mut BodyJson<'_>,
    ) -> Option<super::ChallengeReply> {
        let kind = self.spec.handshake?;
        let value = json.get()?;
        let body = match kind {
            Handshake::Slack => {
                if value.get("type")?.as_str()? != "url_verification" {
                    return None;
                }
                serde_json::json!({ "challenge": value.get("challenge")?.as_str()? })
            }
            Handshake::Zoom => {
                if value.get("event")?.as_str()? != "endpoint.url_validation" {
                    return None;
                }
                let token = value.pointer("/payload/plainToken")?.as_str()?;
                let key = self.keys.get(matched.0)?;
                let encrypted = hex::encode(mac(
                    HmacAlgorithm::Sha256,
                    key.bytes.expose(),
                    token.as_bytes(),
                ));
                serde_json::json!({ "plainToken": token, "encryptedToken": encrypted })
            }
        };
        Some(super::ChallengeReply {
            status: 200,
            content_type: "application/json",
            body: body.to_string().into_bytes(),
        })
    }

    /// Headers (and, for `{url}` schemes with a JSON body, the query; for a JSON-body
    /// timestamp, the body) that make a request pass, signed with the first secret.
    pub(crate) fn sign(
        &self,
        mut signed: super::Signed,
        event_id: &str,
        now_ms: u64,
    ) -> super::Signed {
        let spec = &self.spec;
        let ts_value = match spec.timestamp.as_ref().map(|t| t.unit) {
            Some(TimestampUnit::Millis) => now_ms,
            _ => now_ms / 1000,
        };
        let timestamp = ts_value.to_string();
        if let Some(TimestampSpec {
            source: TimestampSource::Json(pointer),
            ..
        }) = &spec.timestamp
        {
            signed.body = set_json_number(&signed.body, pointer, ts_value);
        }
        let mut params = Vec::new();
        if spec.template.uses_url() || spec.template.uses_params() {
            if serde_json::from_slice::<serde::de::IgnoredAny>(&signed.body).is_ok() {
                let hash = hex::encode(sha2::Sha256::digest(&signed.body));
                let sep = if signed.query.is_empty() { "" } else { "&" };
                signed.query = format!("{}{sep}{BODY_SHA256_PARAM}={hash}", signed.query);
            } else if spec.template.uses_params() {
                params = parse::sorted_form_params(&signed.body);
            }
        }
        let urls = spec
            .public_url
            .as_deref()
            .map(|u| url_variants(u, &signed.path, &signed.query))
            .unwrap_or_default();
        let inputs = Inputs {
            body: &signed.body,
            id: event_id.as_bytes(),
            timestamp: timestamp.as_bytes(),
            params,
            urls,
        };
        let Some(key) = self.keys.first() else {
            return signed;
        };
        let mac = inputs.mac(&spec.template, key.state.clone(), 0, inputs.body);
        let encoded = match spec.encoding {
            SignatureEncoding::Hex => hex::encode(mac),
            SignatureEncoding::Base64 => BASE64.encode(mac),
        };
        let mut value = format!("{}{encoded}", spec.prefix);
        let mut headers = Vec::new();
        match spec.timestamp.as_ref().map(|t| &t.source) {
            Some(TimestampSource::Headers(names)) => {
                headers.push((names[0].clone(), timestamp.clone()));
            }
            Some(TimestampSource::Entry(prefix)) => {
                let d = spec.delimiter.map_or(',', Delimiter::char);
                value = format!("{prefix}{timestamp}{d}{value}");
            }
            _ => {}
        }
        headers.insert(0, (self.signature_header_name(), value));
        if let Some(IdSource::Headers(names)) = &spec.id {
            headers.push((names[0].clone(), event_id.to_string()));
        }
        signed.headers.extend(headers);
        signed
    }
}

/// `body` with the JSON number at `pointer` set to `value` (created when the parent object
/// exists); unchanged when the body is not JSON.
fn set_json_number(body: &[u8], pointer: &str, value: u64) -> Vec<u8> {
    let Ok(mut doc) = serde_json::from_slice::<serde_json::Value>(body) else {
        return body.to_vec();
    };
    if let Some(slot) = doc.pointer_mut(pointer) {
        *slot = value.into();
    } else if let Some((parent, name)) = pointer.rsplit_once('/')
        && let Some(serde_json::Value::Object(map)) = doc.pointer_mut(parent)
    {
        map.insert(name.to_string(), value.into());
    }
    serde_json::to_vec(&doc).unwrap_or_else(|_| body.to_vec())
}

/// A short description of the body's shape, for the diagnostic.
fn describe_body(body: &[u8]) -> String {
    let shape = if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
        if json_whitespace(body, false) == body {
            "JSON, compact"
        } else {
            "JSON, with whitespace between tokens"
        }
    } else if std::str::from_utf8(body)
        .is_ok_and(|s| s.contains('=') && !s.contains(char::is_whitespace))
    {
        "form-encoded"
    } else {
        "not JSON"
    };
    let newline = if body.ends_with(b"\n") {
        ", ends with a newline"
    } else {
        ""
    };
    format!("{shape}{newline}")
}

/// Bodies the sender may have signed before something re-encoded ours.
fn body_variants(body: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let mut variants = Vec::new();
    if let Some(trimmed) = body.strip_suffix(b"\n") {
        variants.push(("without its trailing newline", trimmed.to_vec()));
    } else {
        variants.push(("with a trailing newline", [body, b"\n"].concat()));
    }
    if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
        for (name, spaced) in [
            ("as compact JSON", false),
            ("as JSON with a space after `,` and `:`", true),
        ] {
            let v = json_whitespace(body, spaced);
            if v != body {
                variants.push((name, v));
            }
        }
    }
    variants
}

/// Re-writes JSON's whitespace without re-parsing (so key order and number spelling stay):
/// drops insignificant whitespace, then with `spaced` puts one space after `,` and `:` as
/// Python's `json.dumps` does.
fn json_whitespace(body: &[u8], spaced: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 8);
    let (mut in_string, mut escaped) = (false, false);
    for &b in body {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b' ' | b'\n' | b'\r' | b'\t' => {}
            b'"' => {
                in_string = true;
                out.push(b);
            }
            b',' | b':' => {
                out.push(b);
                if spaced {
                    out.push(b' ');
                }
            }
            _ => out.push(b),
        }
    }
    out
}
