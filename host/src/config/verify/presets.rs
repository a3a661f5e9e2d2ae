//! Provider presets: each provider's signing rules, as data for the one HMAC verifier.
//!
//! Adding a provider means adding an entry here (and its name to
//! [`SchemeName`](super::SchemeName)), not code. Each entry cites the provider's spec; the
//! generic `hmac` scheme exposes the same knobs (docs/providers.md lists each preset as its
//! equivalent `hmac` line).

use std::time::Duration;

use super::{
    Delimiter, Handshake, HmacAlgorithm, SchemeName, SecretEncoding, SignatureEncoding,
    TimestampUnit,
};

/// Five minutes: Standard Webhooks' and Stripe's replay window, and our default.
pub(crate) const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);
/// Paddle's SDKs reject signatures older than five seconds.
const PADDLE_TOLERANCE: Duration = Duration::from_secs(5);
/// Linear's docs ask receivers to reject deliveries more than a minute old.
const LINEAR_TOLERANCE: Duration = Duration::from_secs(60);

/// Where the send time comes from.
#[derive(Debug)]
pub(crate) enum TimestampFrom {
    /// The first of these headers that is present.
    Headers(&'static [&'static str]),
    /// The signature header's entry with this prefix (e.g. Stripe's `t=`).
    Entry(&'static str),
    /// A JSON pointer into the body.
    Json(&'static str),
}

/// Where the sender's event id comes from.
#[derive(Debug)]
pub(crate) enum IdFrom {
    Headers(&'static [&'static str]),
    Json(&'static str),
}

/// One provider's signing rules.
#[derive(Debug)]
pub(crate) struct Preset {
    pub scheme: SchemeName,
    /// The signature header: the first of these that is present.
    pub headers: &'static [&'static str],
    pub delimiter: Option<Delimiter>,
    pub prefix: &'static str,
    pub algorithm: HmacAlgorithm,
    pub encoding: SignatureEncoding,
    /// The signed-content template (see `template`).
    pub signed: &'static str,
    pub secret_encoding: SecretEncoding,
    pub timestamp: Option<(TimestampFrom, TimestampUnit, Duration)>,
    pub id: Option<IdFrom>,
    pub handshake: Option<Handshake>,
}

/// The generic scheme's starting point: every knob at its default.
const BASE: Preset = Preset {
    scheme: SchemeName::Hmac,
    headers: &[],
    delimiter: None,
    prefix: "",
    algorithm: HmacAlgorithm::Sha256,
    encoding: SignatureEncoding::Hex,
    signed: "{body}",
    secret_encoding: SecretEncoding::Raw,
    timestamp: None,
    id: None,
    handshake: None,
};

/// Standard Webhooks spec (standardwebhooks.com, "Verifying webhook authenticity"):
/// `webhook-signature: v1,<base64> v1,<base64>` over `id.timestamp.body`; the key is the
/// base64 after `whsec_`; unknown versions (`v1a,` asymmetric) are skipped; 5 min either way.
const STANDARD_WEBHOOKS: Preset = Preset {
    scheme: SchemeName::StandardWebhooks,
    headers: &["webhook-signature"],
    delimiter: Some(Delimiter::Space),
    prefix: "v1,",
    encoding: SignatureEncoding::Base64,
    signed: "{id}.{timestamp}.{body}",
    secret_encoding: SecretEncoding::Base64,
    timestamp: Some((
        TimestampFrom::Headers(&["webhook-timestamp"]),
        TimestampUnit::Seconds,
        DEFAULT_TOLERANCE,
    )),
    id: Some(IdFrom::Headers(&["webhook-id"])),
    ..BASE
};

pub(crate) static PRESETS: &[Preset] = &[
    STANDARD_WEBHOOKS,
    // Svix (docs.svix.com, "Verifying payloads manually"): Standard Webhooks with `svix-*`
    // headers; `webhook-*` are accepted too (Svix sends both for unbranded endpoints).
    Preset {
        scheme: SchemeName::Svix,
        headers: &["svix-signature", "webhook-signature"],
        timestamp: Some((
            TimestampFrom::Headers(&["svix-timestamp", "webhook-timestamp"]),
            TimestampUnit::Seconds,
            DEFAULT_TOLERANCE,
        )),
        id: Some(IdFrom::Headers(&["svix-id", "webhook-id"])),
        ..STANDARD_WEBHOOKS
    },
    // GitHub ("Validating webhook deliveries"): `X-Hub-Signature-256: sha256=<hex>` of the raw
    // body; `X-GitHub-Delivery` is the delivery's GUID (kept across redeliveries).
    Preset {
        scheme: SchemeName::Github,
        headers: &["x-hub-signature-256"],
        prefix: "sha256=",
        id: Some(IdFrom::Headers(&["x-github-delivery"])),
        ..BASE
    },
    // Stripe ("Check the webhook signatures" → "Verify manually"): `Stripe-Signature:
    // t=<unix>,v1=<hex>[,v1=…][,v0=…]` over `t.body`; the key is the whole `whsec_…` string as
    // given (not decoded); 300 s tolerance; the event's `id` is in the body.
    Preset {
        scheme: SchemeName::Stripe,
        headers: &["stripe-signature"],
        delimiter: Some(Delimiter::Comma),
        prefix: "v1=",
        signed: "{timestamp}.{body}",
        timestamp: Some((
            TimestampFrom::Entry("t="),
            TimestampUnit::Seconds,
            DEFAULT_TOLERANCE,
        )),
        id: Some(IdFrom::Json("/id")),
        ..BASE
    },
    // Slack ("Verifying requests from Slack"): `X-Slack-Signature: v0=<hex>` over
    // `v0:<X-Slack-Request-Timestamp>:<body>`; 5 min. Events API bodies carry `event_id`.
    Preset {
        scheme: SchemeName::Slack,
        headers: &["x-slack-signature"],
        prefix: "v0=",
        signed: "v0:{timestamp}:{body}",
        timestamp: Some((
            TimestampFrom::Headers(&["x-slack-request-timestamp"]),
            TimestampUnit::Seconds,
            DEFAULT_TOLERANCE,
        )),
        id: Some(IdFrom::Json("/event_id")),
        handshake: Some(Handshake::Slack),
        ..BASE
    },
    // Shopify ("About webhooks" → "Verify a webhook"): `X-Shopify-Hmac-Sha256: <base64>` of the
    // raw body; `X-Shopify-Webhook-Id` identifies the webhook across retries.
    Preset {
        scheme: SchemeName::Shopify,
        headers: &["x-shopify-hmac-sha256"],
        encoding: SignatureEncoding::Base64,
        id: Some(IdFrom::Headers(&["x-shopify-webhook-id"])),
        ..BASE
    },
    // Twilio ("Webhooks security"): `X-Twilio-Signature: <base64 HMAC-SHA1>` of the full URL
    // followed by the sorted POST parameters (name then value); JSON bodies instead put
    // `bodySHA256=<hex>` in the URL. `I-Twilio-Idempotency-Token` is stable across retries.
    Preset {
        scheme: SchemeName::Twilio,
        headers: &["x-twilio-signature"],
        algorithm: HmacAlgorithm::Sha1,
        encoding: SignatureEncoding::Base64,
        signed: "{url}{params}",
        id: Some(IdFrom::Headers(&["i-twilio-idempotency-token"])),
        ..BASE
    },
    // Paddle Billing ("Verify webhook signatures"): `Paddle-Signature: ts=<unix>;h1=<hex>` over
    // `ts:body`; several `h1=` during secret rotation; SDKs allow 5 s. Bodies carry `event_id`.
    Preset {
        scheme: SchemeName::Paddle,
        headers: &["paddle-signature"],
        delimiter: Some(Delimiter::Semicolon),
        prefix: "h1=",
        signed: "{timestamp}:{body}",
        timestamp: Some((
            TimestampFrom::Entry("ts="),
            TimestampUnit::Seconds,
            PADDLE_TOLERANCE,
        )),
        id: Some(IdFrom::Json("/event_id")),
        ..BASE
    },
    // Linear ("Webhooks" → "Securing webhooks"): `Linear-Signature: <hex>` of the raw body; the
    // body's `webhookTimestamp` (ms) must be within a minute; `Linear-Delivery` is a UUID.
    Preset {
        scheme: SchemeName::Linear,
        headers: &["linear-signature"],
        timestamp: Some((
            TimestampFrom::Json("/webhookTimestamp"),
            TimestampUnit::Millis,
            LINEAR_TOLERANCE,
        )),
        id: Some(IdFrom::Headers(&["linear-delivery"])),
        ..BASE
    },
    // Zoom ("Using webhooks" → "Verify webhook events"): `x-zm-signature: v0=<hex>` over
    // `v0:<x-zm-request-timestamp>:<body>`; `endpoint.url_validation` is answered with
    // `plainToken` and its hex HMAC-SHA256 under the secret token.
    Preset {
        scheme: SchemeName::Zoom,
        headers: &["x-zm-signature"],
        prefix: "v0=",
        signed: "v0:{timestamp}:{body}",
        timestamp: Some((
            TimestampFrom::Headers(&["x-zm-request-timestamp"]),
            TimestampUnit::Seconds,
            DEFAULT_TOLERANCE,
        )),
        handshake: Some(Handshake::Zoom),
        ..BASE
    },
];

/// The preset for `scheme`; `None` for schemes that are not HMAC presets (`hmac` itself,
/// `bearer`, `basic`, `api-key`, `none`).
pub(crate) fn preset(scheme: SchemeName) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.scheme == scheme)
}

/// The generic scheme's defaults.
pub(crate) fn base() -> &'static Preset {
    &BASE
}
