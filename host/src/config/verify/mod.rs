//! The `verify` table of a source: which scheme authenticates the sender, and its knobs.
//!
//! One flat table for every scheme, so a provider preset is one line
//! (`verify = { scheme = "stripe", secrets = ["env:STRIPE_WHSEC"] }`) and the generic `hmac`
//! scheme spells out the same knobs a preset fixes. Unknown keys are refused by serde; keys that
//! exist but mean nothing for the chosen scheme are refused by [`VerifyConfig::validate`], naming
//! the key, so a knob can never be silently ignored.

use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

pub mod presets;
pub mod template;

use self::presets::Preset;
use self::template::Template;
use crate::config::{ConfigError, Secret, SecretRef};

/// `verify = { scheme = "...", ... }`: how a source's sender is authenticated.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyConfig {
    /// `scheme = "github"`: a provider preset, `hmac` (generic), `bearer`, `basic`, `api-key`,
    /// or `none`.
    pub scheme: SchemeName,
    /// `secrets = ["env:NEW", "env:OLD"]`: any of them may have signed (rotation). For `bearer`
    /// and `api-key` these are the accepted tokens, for `basic` the accepted passwords.
    #[serde(default)]
    pub secrets: Vec<SecretRef>,
    /// `header = "X-Signature"`: header carrying the signature (`hmac`) or the key (`api-key`).
    #[serde(default)]
    pub header: Option<String>,
    /// `prefix = "sha256="`: text before each signature, matched case-insensitively. With a
    /// `delimiter`, entries without it are skipped (e.g. `t=` or `v0=` beside `v1=`).
    #[serde(default)]
    pub prefix: Option<String>,
    /// `delimiter = "space" | "comma" | "semicolon"`: the header holds several entries.
    #[serde(default)]
    pub delimiter: Option<Delimiter>,
    /// `algorithm = "sha256"` (default), `"sha1"` or `"sha512"`.
    #[serde(default)]
    pub algorithm: Option<HmacAlgorithm>,
    /// `encoding = "hex"` (default) or `"base64"`: how the MAC is written.
    #[serde(default)]
    pub encoding: Option<SignatureEncoding>,
    /// `signed = "{timestamp}.{body}"`: what the MAC covers; placeholders `{body}`, `{id}`,
    /// `{timestamp}`, `{url}`, `{params}`. Default `{body}`.
    #[serde(default)]
    pub signed: Option<String>,
    /// `secret_encoding = "raw"` (default: the secret's UTF-8 bytes are the key) or `"base64"`
    /// (the key is the base64 decoding of the secret, after an optional `whsec_` prefix).
    #[serde(default)]
    pub secret_encoding: Option<SecretEncoding>,
    /// `timestamp_header = "X-Timestamp"`: the send time is in this header.
    #[serde(default)]
    pub timestamp_header: Option<String>,
    /// `timestamp_prefix = "t="`: the send time is the signature header's entry with this prefix.
    #[serde(default)]
    pub timestamp_prefix: Option<String>,
    /// `timestamp_json = "/sent_at"`: the send time is this JSON pointer into the body.
    #[serde(default)]
    pub timestamp_json: Option<String>,
    /// `timestamp_unit = "s"` (default) or `"ms"`.
    #[serde(default)]
    pub timestamp_unit: Option<TimestampUnit>,
    /// `tolerance = "5m"`: how far the send time may be from ours, either way.
    #[serde(default, with = "humantime_serde")]
    pub tolerance: Option<Duration>,
    /// `id_header = "X-Event-Id"`: header carrying the sender's event id.
    #[serde(default)]
    pub id_header: Option<String>,
    /// `id_json = "/id"`: JSON pointer to the sender's event id in the body.
    #[serde(default)]
    pub id_json: Option<String>,
    /// `public_url = "https://hooks.example.com"`: the scheme, host and optional path prefix the
    /// sender posts to; `{url}` is this plus the request's path and query.
    #[serde(default)]
    pub public_url: Option<String>,
    /// `handshake = "slack" | "zoom"`: answer that provider's endpoint challenge.
    #[serde(default)]
    pub handshake: Option<Handshake>,
    /// `username = "hooks"`: the user name `basic` expects.
    #[serde(default)]
    pub username: Option<String>,
    /// `explain = true`: add the diagnostic (never a secret or the expected signature) to the 401
    /// body. The log always has it.
    #[serde(default)]
    pub explain: bool,
    /// `allow_ips = ["192.0.2.0/24", "2001:db8::/32"]`: only these client addresses may post
    /// (403 `ip_not_allowed` otherwise). See `[server] trusted_proxies`.
    #[serde(default)]
    pub allow_ips: Vec<IpNet>,
    /// `forward_credentials = true` (`bearer`, `basic`, `api-key` only): keep the header that
    /// carried the verified credential (`Authorization`, or the api-key header) on the event.
    /// By default it is removed once verified, before plugins, the store and sinks see the
    /// event, so the sender's token never lands on disk, in sinks or in admin answers.
    #[serde(default)]
    pub forward_credentials: bool,
}

/// `scheme = "..."`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SchemeName {
    /// The generic scheme: every knob set in the table.
    Hmac,
    /// Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
    StandardWebhooks,
    /// Svix: Standard Webhooks under `svix-*` headers (`webhook-*` are read too).
    Svix,
    /// GitHub: `X-Hub-Signature-256`.
    Github,
    /// Stripe: `Stripe-Signature` with a `t=` timestamp entry.
    Stripe,
    /// Slack: `X-Slack-Signature` over `v0:{timestamp}:{body}`; answers `url_verification`.
    Slack,
    /// Shopify: base64 `X-Shopify-Hmac-Sha256`.
    Shopify,
    /// Twilio: `X-Twilio-Signature` over the public URL (and form parameters).
    Twilio,
    /// Paddle: `Paddle-Signature` with `ts=` and `h1=` entries.
    Paddle,
    /// Linear: `Linear-Signature`, with the timestamp in the JSON body (`webhookTimestamp`).
    Linear,
    /// Zoom: `x-zm-signature`; answers `endpoint.url_validation`.
    Zoom,
    /// `Authorization: Bearer <secret>`.
    Bearer,
    /// `Authorization: Basic` with `username` and a secret as password.
    Basic,
    /// A secret in the header named by `header`.
    ApiKey,
    /// No verification (explicit).
    None,
}

impl SchemeName {
    /// Every scheme, for tables and tests.
    pub const ALL: [SchemeName; 15] = [
        SchemeName::Hmac,
        SchemeName::StandardWebhooks,
        SchemeName::Svix,
        SchemeName::Github,
        SchemeName::Stripe,
        SchemeName::Slack,
        SchemeName::Shopify,
        SchemeName::Twilio,
        SchemeName::Paddle,
        SchemeName::Linear,
        SchemeName::Zoom,
        SchemeName::Bearer,
        SchemeName::Basic,
        SchemeName::ApiKey,
        SchemeName::None,
    ];

    /// The name as written in config.
    pub fn as_str(self) -> &'static str {
        match self {
            SchemeName::Hmac => "hmac",
            SchemeName::StandardWebhooks => "standard-webhooks",
            SchemeName::Svix => "svix",
            SchemeName::Github => "github",
            SchemeName::Stripe => "stripe",
            SchemeName::Slack => "slack",
            SchemeName::Shopify => "shopify",
            SchemeName::Twilio => "twilio",
            SchemeName::Paddle => "paddle",
            SchemeName::Linear => "linear",
            SchemeName::Zoom => "zoom",
            SchemeName::Bearer => "bearer",
            SchemeName::Basic => "basic",
            SchemeName::ApiKey => "api-key",
            SchemeName::None => "none",
        }
    }
}

/// `algorithm = "sha256"`: the hash inside the HMAC.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HmacAlgorithm {
    /// HMAC-SHA1 (Twilio).
    Sha1,
    /// HMAC-SHA256 (most providers).
    #[default]
    Sha256,
    /// HMAC-SHA512.
    Sha512,
}

impl HmacAlgorithm {
    /// MAC length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            HmacAlgorithm::Sha1 => 20,
            HmacAlgorithm::Sha256 => 32,
            HmacAlgorithm::Sha512 => 64,
        }
    }
}

/// `encoding = "hex"`: how the signature is written in its header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureEncoding {
    /// Hexadecimal, either case.
    #[default]
    Hex,
    /// Standard base64 with padding.
    Base64,
}

/// How entries are separated in a multi-signature header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delimiter {
    /// `delimiter = "space"`.
    Space,
    /// `delimiter = "comma"`.
    Comma,
    /// `delimiter = "semicolon"`.
    Semicolon,
}

impl Delimiter {
    /// The separator character.
    pub fn char(self) -> char {
        match self {
            Delimiter::Space => ' ',
            Delimiter::Comma => ',',
            Delimiter::Semicolon => ';',
        }
    }
}

/// How a configured secret becomes the MAC key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecretEncoding {
    /// The secret's UTF-8 bytes, whatever they look like (Stripe's whole `whsec_…` string).
    #[default]
    Raw,
    /// Base64 of the text after an optional `whsec_` prefix (Standard Webhooks, Svix).
    Base64,
}

/// `timestamp_unit = "s"`: what a timestamp counts since the Unix epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum TimestampUnit {
    /// `"s"`: seconds.
    #[default]
    #[serde(rename = "s")]
    Seconds,
    /// `"ms"`: milliseconds.
    #[serde(rename = "ms")]
    Millis,
}

/// A provider's endpoint challenge that the verifier answers itself, after verifying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Handshake {
    /// Slack Events API `url_verification`: echo `challenge`.
    Slack,
    /// Zoom `endpoint.url_validation`: reply `plainToken` and its HMAC-SHA256 (`encryptedToken`).
    Zoom,
}

/// The `base64` secret form: an optional `whsec_` prefix, then standard base64.
pub(crate) fn decode_base64_secret(secret: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let text = secret.strip_prefix(b"whsec_").unwrap_or(secret);
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()
        .filter(|k| !k.is_empty())
}

fn invalid(key: String, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// Knobs a preset lets a source override (Twilio's `public_url` is required, not optional).
const PRESET_OVERRIDES: &[&str] = &["tolerance", "id_header", "id_json", "public_url"];

/// Knobs only the generic `hmac` scheme may set; presets fix them.
const HMAC_ONLY: &[&str] = &[
    "header",
    "prefix",
    "delimiter",
    "algorithm",
    "encoding",
    "signed",
    "secret_encoding",
    "timestamp_header",
    "timestamp_prefix",
    "timestamp_json",
    "timestamp_unit",
    "handshake",
];

impl VerifyConfig {
    /// The knobs this table sets, by config name.
    fn set_knobs(&self) -> Vec<&'static str> {
        let knobs = [
            ("header", self.header.is_some()),
            ("prefix", self.prefix.is_some()),
            ("delimiter", self.delimiter.is_some()),
            ("algorithm", self.algorithm.is_some()),
            ("encoding", self.encoding.is_some()),
            ("signed", self.signed.is_some()),
            ("secret_encoding", self.secret_encoding.is_some()),
            ("timestamp_header", self.timestamp_header.is_some()),
            ("timestamp_prefix", self.timestamp_prefix.is_some()),
            ("timestamp_json", self.timestamp_json.is_some()),
            ("timestamp_unit", self.timestamp_unit.is_some()),
            ("tolerance", self.tolerance.is_some()),
            ("id_header", self.id_header.is_some()),
            ("id_json", self.id_json.is_some()),
            ("public_url", self.public_url.is_some()),
            ("handshake", self.handshake.is_some()),
            ("username", self.username.is_some()),
            ("forward_credentials", self.forward_credentials),
        ];
        knobs
            .into_iter()
            .filter(|(_, set)| *set)
            .map(|(k, _)| k)
            .collect()
    }

    /// The preset this scheme starts from (`hmac` starts from an empty one).
    pub(crate) fn preset(&self) -> Option<&'static Preset> {
        presets::preset(self.scheme)
    }

    /// Checks that every key set means something for the scheme and that values are usable.
    /// `key` is the table's path, e.g. `sources.demo.verify`.
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let k = |field: &str| format!("{key}.{field}");
        self.validate_knobs(&k)?;
        self.validate_secrets(&k)?;
        self.validate_values(&k)?;
        self.validate_scheme_needs(&k)
    }

    /// Every key set is one the scheme reads (a preset's fixed knobs say how to change them).
    fn validate_knobs(&self, k: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        let scheme = self.scheme.as_str();
        let hmac_knobs = [HMAC_ONLY, PRESET_OVERRIDES].concat();
        let allowed: &[&str] = match self.scheme {
            SchemeName::Hmac => &hmac_knobs,
            SchemeName::Bearer => &["id_header", "forward_credentials"],
            SchemeName::None => &["id_header"],
            SchemeName::Basic => &["username", "id_header", "forward_credentials"],
            SchemeName::ApiKey => &["header", "id_header", "forward_credentials"],
            SchemeName::Twilio => &["public_url", "id_header", "id_json"],
            _ if self.preset().is_some_and(|p| p.timestamp.is_some()) => {
                &["tolerance", "id_header", "id_json"]
            }
            _ => &["id_header", "id_json"],
        };
        for knob in self.set_knobs() {
            if !allowed.contains(&knob) {
                let why = if HMAC_ONLY.contains(&knob) && self.preset().is_some() {
                    format!("fixed by scheme `{scheme}`; use scheme = \"hmac\" to change it")
                } else {
                    format!("not used by scheme `{scheme}`")
                };
                return Err(invalid(k(knob), why));
            }
        }
        Ok(())
    }

    /// `none` takes no secrets; every other scheme needs at least one.
    fn validate_secrets(&self, k: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        match self.scheme {
            SchemeName::None if !self.secrets.is_empty() => {
                Err(invalid(k("secrets"), "scheme `none` takes no secrets"))
            }
            SchemeName::None => Ok(()),
            _ if self.secrets.is_empty() => {
                Err(invalid(k("secrets"), "at least one secret is required"))
            }
            _ => Ok(()),
        }
    }

    /// The values' own forms: one id source, JSON pointers, header names, a non-zero
    /// tolerance, a usable public URL.
    fn validate_values(&self, k: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        if self.id_header.is_some() && self.id_json.is_some() {
            return Err(invalid(
                k("id_json"),
                "set `id_header` or `id_json`, not both",
            ));
        }
        for (name, value) in [
            ("id_json", &self.id_json),
            ("timestamp_json", &self.timestamp_json),
        ] {
            if value.as_deref().is_some_and(|p| !p.starts_with('/')) {
                return Err(invalid(
                    k(name),
                    "a JSON pointer starts with '/', e.g. \"/id\"",
                ));
            }
        }
        for (name, value) in [
            ("header", &self.header),
            ("id_header", &self.id_header),
            ("timestamp_header", &self.timestamp_header),
        ] {
            if let Some(h) = value
                && http::HeaderName::from_bytes(h.as_bytes()).is_err()
            {
                return Err(invalid(
                    k(name),
                    format!("{h:?} is not a valid header name"),
                ));
            }
        }
        if self.tolerance.is_some_and(|t| t.is_zero()) {
            return Err(invalid(k("tolerance"), "must be greater than 0"));
        }
        if let Some(url) = &self.public_url {
            template::check_public_url(url).map_err(|r| invalid(k("public_url"), r))?;
        }
        Ok(())
    }

    /// What a scheme cannot work without (`hmac`'s are checked by `validate_hmac`).
    fn validate_scheme_needs(&self, k: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        match self.scheme {
            SchemeName::Hmac => self.validate_hmac(k),
            SchemeName::Twilio if self.public_url.is_none() => Err(invalid(
                k("public_url"),
                "scheme `twilio` signs the public URL: set the scheme and host the provider \
                 posts to, e.g. \"https://hooks.example.com\"",
            )),
            SchemeName::Basic if self.username.as_deref().is_none_or(str::is_empty) => {
                Err(invalid(k("username"), "scheme `basic` needs a username"))
            }
            SchemeName::ApiKey if self.header.is_none() => Err(invalid(
                k("header"),
                "scheme `api-key` needs the header name",
            )),
            _ => Ok(()),
        }
    }

    fn validate_hmac(&self, k: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        if self.header.as_deref().is_none_or(|h| h.trim().is_empty()) {
            return Err(invalid(
                k("header"),
                "scheme `hmac` needs the signature header",
            ));
        }
        let sources = [
            self.timestamp_header.is_some(),
            self.timestamp_prefix.is_some(),
            self.timestamp_json.is_some(),
        ];
        let timestamped = sources.iter().filter(|s| **s).count();
        if timestamped > 1 {
            return Err(invalid(
                k("timestamp_header"),
                "set one of `timestamp_header`, `timestamp_prefix`, `timestamp_json`",
            ));
        }
        if timestamped == 0 && (self.tolerance.is_some() || self.timestamp_unit.is_some()) {
            return Err(invalid(
                k("tolerance"),
                "needs a timestamp source (`timestamp_header`, `timestamp_prefix` or `timestamp_json`)",
            ));
        }
        if self.timestamp_prefix.is_some() && self.delimiter.is_none() {
            return Err(invalid(
                k("timestamp_prefix"),
                "the timestamp is an entry of the signature header: set `delimiter` too",
            ));
        }
        let template = Template::parse(self.signed.as_deref().unwrap_or("{body}"))
            .map_err(|r| invalid(k("signed"), r))?;
        if template.uses_timestamp()
            && self.timestamp_header.is_none()
            && self.timestamp_prefix.is_none()
        {
            return Err(invalid(
                k("signed"),
                "`{timestamp}` needs `timestamp_header` or `timestamp_prefix` (a timestamp in \
                 the body cannot be part of what is signed)",
            ));
        }
        if !template.uses_timestamp()
            && (self.timestamp_header.is_some() || self.timestamp_prefix.is_some())
        {
            return Err(invalid(
                k("signed"),
                "the timestamp is not signed, so it protects nothing against replay: add \
                 `{timestamp}` to `signed`",
            ));
        }
        if template.uses_id() && self.id_header.is_none() {
            return Err(invalid(k("signed"), "`{id}` needs `id_header`"));
        }
        if template.uses_url() && self.public_url.is_none() {
            return Err(invalid(k("public_url"), "`{url}` needs `public_url`"));
        }
        if self.handshake == Some(Handshake::Zoom)
            && self.secret_encoding == Some(SecretEncoding::Base64)
        {
            return Err(invalid(
                k("handshake"),
                "the zoom handshake keys its answer with the raw secret",
            ));
        }
        Ok(())
    }

    /// Checks one resolved secret's form, e.g. that a `base64` secret decodes. Never echoes it.
    pub fn check_secret(&self, secret: &Secret, key: &str) -> Result<(), ConfigError> {
        let encoding = match self.scheme {
            SchemeName::Hmac => self.secret_encoding.unwrap_or_default(),
            _ => self.preset().map(|p| p.secret_encoding).unwrap_or_default(),
        };
        if encoding == SecretEncoding::Base64 && decode_base64_secret(secret.expose()).is_none() {
            return Err(invalid(
                key.to_string(),
                "not a base64 key (optionally after `whsec_`), as this scheme needs",
            ));
        }
        Ok(())
    }
}
