//! What an HMAC scheme is, resolved once at start-up: the [`HmacSpec`] built from a source's
//! `verify` table (its preset, with the overrides the config may set, or the generic `hmac`
//! knobs), and the [`HmacVerifier`] that pairs it with the keyed MACs made from the secrets.
//!
//! Everything here can fail only at load; the per-request files (`check`, `diagnose`, `sign`)
//! read these types and never build them.

use std::time::Duration;

use hmac::{Hmac, Mac};

use super::super::IdSource;
use super::super::config::{
    Delimiter, Handshake, HmacAlgorithm, SchemeName, SecretEncoding, SignatureEncoding,
    TimestampUnit, VerifyConfig, decode_base64_secret,
};
use super::super::presets::{self, IdFrom, Preset, TimestampFrom};
use super::super::template::Template;
use crate::config::Secret;

/// The query parameter in which Twilio carries the SHA-256 of a JSON body.
pub(super) const BODY_SHA256_PARAM: &str = "bodySHA256";

/// Where the send time comes from.
#[derive(Debug, Clone)]
pub(crate) enum TimestampSource {
    /// The first of these (lowercase) headers that is present.
    Headers(Vec<String>),
    /// An entry of the signature header with this prefix (e.g. Stripe's `t=`).
    Entry(String),
    /// A JSON pointer into the body (read only after the signature passes).
    Json(String),
}

/// A scheme's timestamp: where it is, its unit, and how far from our clock it may be.
#[derive(Debug, Clone)]
pub(crate) struct TimestampSpec {
    /// Where the timestamp is read from.
    pub source: TimestampSource,
    /// Seconds or milliseconds since the Unix epoch.
    pub unit: TimestampUnit,
    /// The largest accepted difference from our clock, either way.
    pub tolerance: Duration,
}

/// A complete, resolved HMAC scheme.
#[derive(Debug, Clone)]
pub(crate) struct HmacSpec {
    /// The signature header: the first of these (lowercase) that is present.
    pub headers: Vec<String>,
    /// How several signatures (or a timestamp entry) are separated in that header.
    pub delimiter: Option<Delimiter>,
    /// The text before each signature (e.g. `sha256=`).
    pub prefix: String,
    /// The hash the MAC uses.
    pub algorithm: HmacAlgorithm,
    /// How the signature is written (hex or base64).
    pub encoding: SignatureEncoding,
    /// What is signed, e.g. `{timestamp}.{body}`.
    pub template: Template,
    /// How a secret becomes the key.
    pub secret_encoding: SecretEncoding,
    /// The timestamp, for schemes that carry one.
    pub timestamp: Option<TimestampSpec>,
    /// Where the event id comes from, when the scheme carries one.
    pub id: Option<IdSource>,
    /// The scheme and host the sender posts to (`{url}` schemes).
    pub public_url: Option<String>,
    /// The endpoint challenge this scheme answers, if any.
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
            timestamp: timestamp_spec(c, p, generic),
            id: id_source(c, p),
            public_url: c.public_url.clone(),
            handshake: c.handshake.filter(|_| generic).or(p.handshake),
        })
    }
}

/// The timestamp of `generic` (`hmac`) from its knobs, or the preset's with the config's
/// `tolerance` when set.
fn timestamp_spec(c: &VerifyConfig, p: &Preset, generic: bool) -> Option<TimestampSpec> {
    if generic {
        let source = if let Some(h) = &c.timestamp_header {
            Some(TimestampSource::Headers(vec![h.to_ascii_lowercase()]))
        } else if let Some(e) = &c.timestamp_prefix {
            Some(TimestampSource::Entry(e.clone()))
        } else {
            c.timestamp_json.clone().map(TimestampSource::Json)
        };
        return source.map(|source| TimestampSpec {
            source,
            unit: c.timestamp_unit.unwrap_or_default(),
            tolerance: c.tolerance.unwrap_or(presets::DEFAULT_TOLERANCE),
        });
    }
    p.timestamp
        .as_ref()
        .map(|(from, unit, tolerance)| TimestampSpec {
            source: match from {
                TimestampFrom::Headers(h) => TimestampSource::Headers(lower_all(h)),
                TimestampFrom::Entry(e) => TimestampSource::Entry(e.to_string()),
                TimestampFrom::Json(j) => TimestampSource::Json(j.to_string()),
            },
            unit: *unit,
            tolerance: c.tolerance.unwrap_or(*tolerance),
        })
}

/// The event id source: the config's `id_header` or `id_json`, else the preset's.
fn id_source(c: &VerifyConfig, p: &Preset) -> Option<IdSource> {
    if let Some(h) = &c.id_header {
        Some(IdSource::Headers(vec![h.to_ascii_lowercase()]))
    } else if let Some(j) = &c.id_json {
        Some(IdSource::Json(j.clone()))
    } else {
        p.id.as_ref().map(|id| match id {
            IdFrom::Headers(h) => IdSource::Headers(lower_all(h)),
            IdFrom::Json(j) => IdSource::Json(j.to_string()),
        })
    }
}

/// A MAC in progress, keyed once at start-up and cloned per request (saves re-hashing the key).
#[derive(Clone)]
pub(super) enum MacState {
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

    pub(super) fn update(&mut self, data: &[u8]) {
        match self {
            MacState::Sha1(m) => m.update(data),
            MacState::Sha256(m) => m.update(data),
            MacState::Sha512(m) => m.update(data),
        }
    }

    pub(super) fn finalize(self) -> Vec<u8> {
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
pub(super) struct Key {
    /// The keyed MAC, cloned for each message.
    pub(super) state: MacState,
    /// The key bytes (the Zoom handshake MACs its token with them).
    pub(super) bytes: Secret,
    /// The other secret form (decoded `whsec_` vs raw), only to diagnose a mismatch.
    pub(super) other_form: Option<MacState>,
}

impl Key {
    /// The key for secret number `index` (0-based) under `spec`'s key form. A `base64` secret
    /// that does not decode is an error naming only its position.
    fn new(spec: &HmacSpec, index: usize, secret: &Secret) -> Result<Key, String> {
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
                    .ok_or_else(|| format!("secret #{} is not base64", index + 1))?,
                Some(raw.to_vec()),
            ),
        };
        Ok(Key {
            state: MacState::new(spec.algorithm, &bytes),
            other_form: other.map(|o| MacState::new(spec.algorithm, &o)),
            bytes: Secret::new(bytes),
        })
    }
}

/// A spec with its keys: verifies and signs.
pub(crate) struct HmacVerifier {
    /// The resolved scheme.
    pub spec: HmacSpec,
    /// One per configured secret, in config order.
    pub(super) keys: Vec<Key>,
}

impl std::fmt::Debug for HmacVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HmacVerifier")
            .field("spec", &self.spec)
            .field("keys", &format_args!("[{} redacted]", self.keys.len()))
            .finish()
    }
}

impl HmacVerifier {
    /// Prepares the keys. Secrets were checked at load (`VerifyConfig::check_secret`); one that
    /// still does not decode is an error naming only its position.
    pub(crate) fn new(spec: HmacSpec, secrets: &[Secret]) -> Result<HmacVerifier, String> {
        let keys = secrets
            .iter()
            .enumerate()
            .map(|(i, secret)| Key::new(&spec, i, secret))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(HmacVerifier { spec, keys })
    }

    /// The signature header's name as configured (the first of its names), for errors and
    /// for signing.
    pub(super) fn signature_header_name(&self) -> String {
        self.spec.headers.first().cloned().unwrap_or_default()
    }
}
