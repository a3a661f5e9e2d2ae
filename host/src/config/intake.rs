//! Intake protection settings: per-source `dedupe` and `rate_limit`, `[server] overload`, and
//! the Redis failure policy shared by both checks.
//!
//! Values that have a small grammar of their own (`rate = "100/s"`, `key = "header:X-Id"`) are
//! parsed while the file is deserialized, so a bad value fails at load with its line and column
//! and the message says what was expected.
//!
//! ```toml
//! [server]
//! overload = { max_pending = 100000, max_commit_latency = "2s" }
//!
//! [storage]
//! redis = "env:HOOKWALL_REDIS_URL"
//!
//! [sources.demo]
//! dedupe = { key = "header:X-Delivery-Id", ttl = "48h", on_redis_error = "fail_open" }
//! rate_limit = { rate = "100/s", burst = 200, by = "client_ip", on_redis_error = "fail_open" }
//! ```

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::VerifyConfig;

/// How long a dedupe mark lasts when `ttl` is not given: providers retry for a day or two.
pub const DEFAULT_DEDUPE_TTL: Duration = Duration::from_secs(48 * 3600);

/// `dedupe = { key = "scheme", ttl = "48h", on_redis_error = "fail_open" }`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupeConfig {
    /// What identifies "the same event": `scheme` (the verify scheme's event id; the default),
    /// `header:NAME`, `json:/pointer`, `body-sha256`, or `none` (no marks).
    #[serde(default)]
    pub key: Option<DedupeKey>,
    /// `ttl = "48h"`: how long a mark makes later copies duplicates.
    #[serde(default = "default_dedupe_ttl", with = "humantime_serde")]
    pub ttl: Duration,
    /// With `[storage] redis`: what to do when Redis cannot answer. `fail_open` (default) accepts
    /// the event without the shared check (at worst a duplicate is delivered, never a loss);
    /// `fail_closed` answers 503 so the sender retries later.
    #[serde(default)]
    pub on_redis_error: OnRedisError,
}

fn default_dedupe_ttl() -> Duration {
    DEFAULT_DEDUPE_TTL
}

/// Where the dedupe key comes from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum DedupeKey {
    /// No dedupe marks (an event id that is already stored is still a duplicate).
    None,
    /// The event id the verify scheme extracted.
    Scheme,
    /// The value of a request header; the name is kept lowercase.
    Header(String),
    /// The value at a JSON pointer in the body (strings as they are, other values as JSON).
    Json(String),
    /// The SHA-256 of the raw body.
    BodySha256,
}

impl TryFrom<String> for DedupeKey {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        let expected = "expected `scheme`, `header:NAME`, `json:/pointer`, `body-sha256` or `none`";
        match text.as_str() {
            "none" => Ok(DedupeKey::None),
            "scheme" => Ok(DedupeKey::Scheme),
            "body-sha256" => Ok(DedupeKey::BodySha256),
            _ => {
                if let Some(name) = text.strip_prefix("header:") {
                    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                        return Err(format!(
                            "dedupe key `{text}`: `{name}` is not a header name"
                        ));
                    }
                    Ok(DedupeKey::Header(name.to_ascii_lowercase()))
                } else if let Some(pointer) = text.strip_prefix("json:") {
                    if !pointer.starts_with('/') {
                        return Err(format!(
                            "dedupe key `{text}`: a JSON pointer starts with '/', e.g. `json:/id`"
                        ));
                    }
                    Ok(DedupeKey::Json(pointer.to_string()))
                } else {
                    Err(format!("unknown dedupe key `{text}`: {expected}"))
                }
            }
        }
    }
}

/// `rate_limit = { rate = "100/s", burst = 200, by = "source", on_redis_error = "fail_open" }`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// `rate = "100/s"`: sustained requests per second, minute (`/m`) or hour (`/h`).
    pub rate: Rate,
    /// `burst = 200`: requests allowed at once after a quiet period [default: the rate's count].
    #[serde(default)]
    pub burst: Option<u32>,
    /// `by = "source"` (one budget for the source) or `"client_ip"` (one per sender address).
    #[serde(default)]
    pub by: LimitBy,
    /// With `[storage] redis`: `fail_open` (default) lets requests through when Redis cannot
    /// answer; `fail_closed` answers 503.
    #[serde(default)]
    pub on_redis_error: OnRedisError,
}

impl RateLimitConfig {
    /// The burst actually in force.
    pub fn burst(&self) -> u32 {
        self.burst.unwrap_or(self.rate.count)
    }
}

/// A rate such as `100/s`: `count` requests per `per`.
#[derive(Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Rate {
    /// Requests allowed per period (at least 1; the `100` of `100/s`).
    pub count: u32,
    /// The period: one second, minute or hour (`/s`, `/m`, `/h`).
    pub per: Duration,
}

impl Rate {
    /// Time between two requests at the sustained rate.
    pub fn interval(&self) -> Duration {
        self.per / self.count
    }
}

impl fmt::Debug for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "m",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

impl TryFrom<String> for Rate {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        let bad = || format!("rate `{text}`: expected COUNT/s, COUNT/m or COUNT/h, e.g. `100/s`");
        let (count, unit) = text.split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        if count == 0 {
            return Err(format!("rate `{text}`: the count must be at least 1"));
        }
        Ok(Rate { count, per })
    }
}

/// Whose budget a request spends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitBy {
    /// One budget for everything sent to the source.
    #[default]
    Source,
    /// One budget per sender IP address (the TCP peer).
    ClientIp,
}

/// What a check does when Redis does not answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnRedisError {
    /// Let the request through without the shared check (logged and counted).
    #[default]
    FailOpen,
    /// Refuse the request with 503 and `Retry-After`.
    FailClosed,
}

/// `[server] overload = { max_pending = 100000, max_commit_latency = "2s",
/// max_body_bytes_in_flight = 67108864 }`: shed load with 503 before reading a request body when
/// the store is falling behind or the bodies being read and processed would exceed their memory
/// budget. The first two bounds are optional; the body budget is on by default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverloadConfig {
    /// Request-body bytes held at once (being read or processed), at most; a request whose body
    /// would pass it is refused before it is read (its `Content-Length`, or the source's
    /// `max_body_bytes` when it has none). `0` turns the budget off.
    #[serde(default = "default_max_body_bytes_in_flight")]
    pub max_body_bytes_in_flight: u64,
    /// Deliveries waiting (for every sink together) above which new events are refused.
    #[serde(default)]
    pub max_pending: Option<u64>,
    /// A store commit slower than this (or one still running for longer) refuses new events
    /// until commits are fast again.
    #[serde(default, with = "humantime_serde")]
    pub max_commit_latency: Option<Duration>,
}

/// 64 MiB: 64 bodies at the default `max_body_bytes`, well inside a sidecar's memory request.
pub const DEFAULT_MAX_BODY_BYTES_IN_FLIGHT: u64 = 64 << 20;

fn default_max_body_bytes_in_flight() -> u64 {
    DEFAULT_MAX_BODY_BYTES_IN_FLIGHT
}

impl Default for OverloadConfig {
    fn default() -> OverloadConfig {
        OverloadConfig {
            max_body_bytes_in_flight: DEFAULT_MAX_BODY_BYTES_IN_FLIGHT,
            max_pending: None,
            max_commit_latency: None,
        }
    }
}

/// Whether the verify scheme hands the pipeline a sender's event id (it decides the default
/// dedupe key).
pub(super) fn verify_has_event_id(verify: &VerifyConfig) -> bool {
    verify.id_header.is_some()
        || verify.id_json.is_some()
        || verify.preset().is_some_and(|p| p.id.is_some())
}

impl super::SourceConfig {
    /// The dedupe settings in force: the configured ones, or `key = "scheme"` with the default
    /// TTL when the verify scheme carries an event id. `None` when dedupe is off.
    pub fn effective_dedupe(&self) -> Option<DedupeConfig> {
        let config = match &self.dedupe {
            Some(c) => c.clone(),
            None if verify_has_event_id(&self.verify) => DedupeConfig {
                key: Some(DedupeKey::Scheme),
                ttl: DEFAULT_DEDUPE_TTL,
                on_redis_error: OnRedisError::default(),
            },
            None => return None,
        };
        match config.key {
            Some(DedupeKey::None) => None,
            Some(_) => Some(config),
            None => Some(DedupeConfig {
                key: Some(DedupeKey::Scheme),
                ..config
            }),
        }
    }
}

/// Checks one source's intake settings; `key` builds the full key name for messages.
pub(super) fn validate_source(
    source: &super::SourceConfig,
    key: &dyn Fn(&str) -> String,
) -> Result<(), super::ConfigError> {
    if let Some(d) = &source.dedupe {
        if d.ttl.is_zero() {
            return Err(super::invalid(key("dedupe.ttl"), "must be greater than 0"));
        }
        let scheme = matches!(d.key, None | Some(DedupeKey::Scheme));
        if scheme && !verify_has_event_id(&source.verify) {
            return Err(super::invalid(
                key("dedupe.key"),
                "this source's verify scheme carries no event id; use `header:NAME`, \
                 `json:/pointer` or `body-sha256`",
            ));
        }
    }
    if let Some(r) = &source.rate_limit
        && r.burst == Some(0)
    {
        return Err(super::invalid(
            key("rate_limit.burst"),
            "must be at least 1",
        ));
    }
    Ok(())
}

/// Checks `[server] overload`.
pub(super) fn validate_overload(o: &OverloadConfig) -> Result<(), super::ConfigError> {
    if o.max_pending == Some(0) {
        return Err(super::invalid(
            "server.overload.max_pending",
            "must be at least 1",
        ));
    }
    if o.max_commit_latency.is_some_and(|d| d.is_zero()) {
        return Err(super::invalid(
            "server.overload.max_commit_latency",
            "must be greater than 0",
        ));
    }
    Ok(())
}
