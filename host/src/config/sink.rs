//! `[sinks.NAME]`: where accepted events are delivered, and how hard to try.
//!
//! A sink table holds two sets of keys: the delivery policy every kind shares (`retry`,
//! `paused`, `concurrency`, `batch`, `rate`, `order_key`, `circuit`, `timeout`) and the keys of
//! its `type`. Both sets refuse unknown keys;
//! because serde cannot combine `flatten` with `deny_unknown_fields`, [`SinkConfig`]'s
//! `Deserialize` splits the table by key name and parses each half strictly.
//!
//! ```toml
//! [sinks.app]
//! type = "http"
//! url = "http://127.0.0.1:3000/webhooks"  # a secret: "env:APP_URL", "file:…" also work
//! secret = "env:APP_WEBHOOK_SECRET"      # whsec_… (Standard Webhooks)
//! headers = { "x-tenant" = "acme" }
//! timeout = "10s"                        # every kind: the bound on one attempt
//! retry = { max_attempts = 12, initial = "500ms", max_delay = "5m", max_age = "24h" }
//! retry_on = [408, 425, 429, "5xx"]
//! concurrency = 16
//!
//! [sinks.stream]
//! type = "redis"
//! url = "env:REDIS_URL"
//! stream = "hookwall:events"
//! maxlen = 100000
//! batch = { max_events = 100 }
//!
//! [sinks.mq]
//! type = "amqp"
//! url = "env:AMQP_URL"                   # amqp://[USER:PASSWORD@]HOST:PORT[/VHOST] or amqps://…
//! exchange = "hookwall"                  # "" (default): the default exchange, routing key = queue
//! routing_key = "hooks.{source}"         # {source}, {sink}, {event_id}
//!
//! [sinks.bus]
//! type = "nats"
//! url = "env:NATS_URL"                   # nats://[USER:PASSWORD@]HOST:PORT
//! subject = "hookwall.events"            # a JetStream stream must capture it
//! batch = { max_events = 100, max_wait = "200ms" }
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, de::Error as _};

use super::{ConfigError, Rate, SecretRef, invalid};

/// Keys of a sink table that belong to the shared delivery policy, not to the kind.
const COMMON_KEYS: &[&str] = &[
    "retry",
    "paused",
    "concurrency",
    "batch",
    "rate",
    "order_key",
    "circuit",
    "timeout",
];

/// `[sinks.NAME]`: the shared delivery policy and the kind.
#[derive(Debug)]
pub struct SinkConfig {
    /// `retry = { max_attempts = 12, initial = "500ms", max_delay = "5m", max_age = "24h" }`
    pub retry: RetryConfig,
    /// `paused = true`: deliveries to this sink are stored but not sent (e.g. during an app's
    /// maintenance window) until the sink is resumed through the admin API or a restart
    /// without the flag.
    pub paused: bool,
    /// `concurrency = 16`: units (deliveries or batches) in flight at once. Default: 16 for
    /// `http`, 1 for the others (they write in order).
    pub concurrency: usize,
    /// `batch = { max_events = 100, max_bytes = 1048576, max_wait = "200ms" }`: group
    /// deliveries into one unit.
    pub batch: Option<BatchConfig>,
    /// `rate = "50/s"`: at most this many units per second (respect the app's capacity).
    pub rate: Option<Rate>,
    /// `order_key = "json:/order_id"`: deliveries with the same key go one at a time, in
    /// arrival order; different keys in parallel.
    pub order_key: Option<String>,
    /// `circuit = { failures = 5, cooldown = "5s", max_cooldown = "1m" }` (the defaults):
    /// the circuit breaker; `failures = 0` turns it off.
    pub circuit: CircuitConfig,
    /// `timeout = "30s"`: the bound on one attempt of every kind, after which it is a
    /// transient failure (retried). For `http` the whole request (connect, send, the answer's
    /// status and the bounded read of its body); `redis` connecting plus the pipeline; `nats`
    /// connecting, publishing and every ack; `file` waiting for the file plus the write and
    /// fsync; `stdout` waiting for the descriptor plus the write. Default: 10 s for `http`, 5 s
    /// for `redis` and `nats` (their bounds before the key was shared), 30 s for `file` and
    /// `stdout` ([`SinkKind::default_timeout`]).
    pub timeout: Duration,
    /// `type = "…"` and its keys.
    pub kind: SinkKind,
}

/// The shared half of a sink table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Common {
    #[serde(default)]
    retry: RetryConfig,
    #[serde(default)]
    paused: bool,
    #[serde(default)]
    concurrency: Option<usize>,
    #[serde(default)]
    batch: Option<BatchConfig>,
    #[serde(default)]
    rate: Option<Rate>,
    #[serde(default)]
    order_key: Option<String>,
    #[serde(default)]
    circuit: CircuitConfig,
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
}

impl<'de> Deserialize<'de> for SinkConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut table = toml::Table::deserialize(d)?;
        let mut common = toml::Table::new();
        for key in COMMON_KEYS {
            if let Some(value) = table.remove(*key) {
                common.insert((*key).to_string(), value);
            }
        }
        let common: Common = toml::Value::Table(common)
            .try_into()
            .map_err(|e: toml::de::Error| D::Error::custom(e.message().trim().to_string()))?;
        let kind: SinkKind = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| D::Error::custom(e.message().trim().to_string()))?;
        let concurrency = common.concurrency.unwrap_or(match &kind {
            SinkKind::Http(_) => DEFAULT_HTTP_CONCURRENCY,
            _ => 1,
        });
        Ok(SinkConfig {
            retry: common.retry,
            paused: common.paused,
            concurrency,
            batch: common.batch,
            rate: common.rate,
            order_key: common.order_key,
            circuit: common.circuit,
            timeout: common.timeout.unwrap_or_else(|| kind.default_timeout()),
            kind,
        })
    }
}

/// Units in flight per `http` sink unless `concurrency` says otherwise.
const DEFAULT_HTTP_CONCURRENCY: usize = 16;

/// The kind of a sink, tagged by `type`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SinkKind {
    /// Appends one JSON line per delivery, fsynced before the delivery counts as done.
    File(FileSinkConfig),
    /// Prints one JSON line per delivery to standard output.
    Stdout(StdoutSinkConfig),
    /// Sends each delivery (or batch) to an HTTP endpoint, re-signed.
    Http(HttpSinkConfig),
    /// Appends each delivery to a Redis stream (`XADD`).
    Redis(RedisSinkConfig),
    /// Publishes each delivery to a NATS JetStream subject, confirmed by the publish ack.
    Nats(NatsSinkConfig),
    /// Publishes each delivery to a RabbitMQ exchange, confirmed by the broker.
    Amqp(AmqpSinkConfig),
}

impl SinkKind {
    /// The kind's `type` value: `"file"`, `"stdout"`, `"http"`, `"redis"` or `"nats"`.
    pub fn name(&self) -> &'static str {
        match self {
            SinkKind::File(_) => "file",
            SinkKind::Stdout(_) => "stdout",
            SinkKind::Http(_) => "http",
            SinkKind::Redis(_) => "redis",
            SinkKind::Nats(_) => "nats",
            SinkKind::Amqp(_) => "amqp",
        }
    }

    /// `timeout` when the table has none: what each kind was bounded by before the key was
    /// shared (`http` 10 s, `redis` and `nats` 5 s), and 30 s for `file` and `stdout`.
    pub fn default_timeout(&self) -> Duration {
        match self {
            SinkKind::Http(_) => Duration::from_secs(10),
            SinkKind::Redis(_) | SinkKind::Nats(_) | SinkKind::Amqp(_) => Duration::from_secs(5),
            SinkKind::File(_) | SinkKind::Stdout(_) => Duration::from_secs(30),
        }
    }
}

/// `type = "file"`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// `path = "./data/events.jsonl"`. The parent directory must exist: it is not created, so a
    /// missing mount shows up as failed deliveries (retried) rather than a file in the wrong place.
    pub path: PathBuf,
}

/// `type = "stdout"`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutSinkConfig {}

/// `type = "redis"`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSinkConfig {
    /// `url = "env:REDIS_URL"`: a `redis://[:PASSWORD@]HOST:PORT[/DB]` URL (a secret reference,
    /// since it may carry a password).
    pub url: SecretRef,
    /// `stream = "hookwall:events"`: the stream key entries are appended to.
    pub stream: String,
    /// `maxlen = 100000`: trim the stream to about this many entries (`XADD … MAXLEN ~ N`).
    #[serde(default)]
    pub maxlen: Option<u64>,
}

/// `type = "nats"`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSinkConfig {
    /// `url = "env:NATS_URL"`: a `nats://[USER:PASSWORD@]HOST:PORT` URL (`nats://TOKEN@HOST:PORT`
    /// for token auth, `tls://` for TLS); a secret reference, since it may carry credentials.
    pub url: SecretRef,
    /// `subject = "hookwall.events"`: the subject every delivery is published to. A JetStream
    /// stream must capture it (Hookwall does not create streams: their limits and replicas are
    /// the operator's choice); until one does, deliveries are retried.
    pub subject: String,
}

/// `type = "amqp"`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSinkConfig {
    /// `url = "env:AMQP_URL"`: an `amqp://[USER:PASSWORD@]HOST:PORT[/VHOST]` URL (`amqps://` for
    /// TLS; the vhost `/` is written `%2f`); a secret reference, since it may carry a password.
    pub url: SecretRef,
    /// `exchange = "hookwall"`: the exchange messages are published to; `""` (the default) is the
    /// broker's default exchange, which routes to the queue named by the routing key. Hookwall
    /// does not declare exchanges or queues: their durability and bindings are the operator's.
    #[serde(default)]
    pub exchange: String,
    /// `routing_key = "hooks.{source}"`: each message's routing key; `{source}`, `{sink}` and
    /// `{event_id}` are filled in from its event. A message no queue is bound for is returned by
    /// the broker and retried.
    pub routing_key: String,
}

/// `type = "http"`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkConfig {
    /// `url = "https://app.internal/webhooks"` (`http` or `https`): a secret reference
    /// (`env:APP_URL`, `file:…` or a literal), since URLs such as Slack's carry their token in
    /// the path. Checked at start-up; never printed (errors show only scheme, host and port).
    pub url: SecretRef,
    /// `method = "POST"` (default), `PUT` or `PATCH`.
    #[serde(default = "default_method")]
    pub method: String,
    /// `headers = { "x-tenant" = "acme" }`: added to every request, replacing a routed header
    /// of the same name.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `secret = "env:APP_WEBHOOK_SECRET"`: a Standard Webhooks key (`whsec_` + base64) that
    /// signs every request (`webhook-id`, `webhook-timestamp`, `webhook-signature`), so the
    /// app trusts Hookwall without re-verifying the provider. Without it requests are unsigned.
    #[serde(default)]
    pub secret: Option<SecretRef>,
    /// `retry_on = [408, 425, 429, "5xx"]` (the default): answers worth retrying; any other
    /// non-2xx answer dead-letters the delivery at once. Connection errors and timeouts are
    /// always retried.
    #[serde(default = "default_retry_on")]
    pub retry_on: Vec<StatusMatch>,
    /// `http2 = "auto"` (default: HTTP/2 when TLS negotiates it, else HTTP/1.1) or
    /// `"prior-knowledge"` (cleartext HTTP/2, h2c, for apps that speak it).
    #[serde(default)]
    pub http2: Http2Mode,
}

fn default_method() -> String {
    "POST".into()
}
fn default_retry_on() -> Vec<StatusMatch> {
    vec![
        StatusMatch::Code(408),
        StatusMatch::Code(425),
        StatusMatch::Code(429),
        StatusMatch::Class("5xx".into()),
    ]
}

/// How the `http` sink chooses between HTTP/1.1 and HTTP/2.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Http2Mode {
    /// `"auto"`: HTTP/2 when TLS negotiates it (ALPN), else HTTP/1.1.
    #[default]
    Auto,
    /// `"prior-knowledge"`: always HTTP/2, without negotiating it (h2c over cleartext).
    PriorKnowledge,
}

/// An entry of `retry_on`: a status code (`503`) or a class (`"5xx"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum StatusMatch {
    /// One status code, `503` (100 to 599).
    Code(u16),
    /// A class of codes, `"5xx"` (`1xx` to `5xx`).
    Class(String),
}

impl StatusMatch {
    /// Whether `status` is this code, or falls in this class.
    pub fn matches(&self, status: u16) -> bool {
        match self {
            StatusMatch::Code(c) => *c == status,
            StatusMatch::Class(c) => c
                .as_bytes()
                .first()
                .is_some_and(|d| u16::from(d.wrapping_sub(b'0')) == status / 100),
        }
    }

    fn valid(&self) -> bool {
        match self {
            StatusMatch::Code(c) => (100..=599).contains(c),
            StatusMatch::Class(c) => {
                let b = c.as_bytes();
                b.len() == 3 && (b'1'..=b'5').contains(&b[0]) && &b[1..] == b"xx"
            }
        }
    }
}

/// `retry = { max_attempts = 12, initial = "500ms", max_delay = "5m", max_age = "24h" }`:
/// exponential backoff with full jitter; after `max_attempts`, or once the event is older than
/// `max_age`, the delivery is dead-lettered.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// `max_attempts = 12`: attempts in all, the first included (at least 1).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// `initial = "500ms"`: the first retry's delay, and the floor of every later one.
    #[serde(default = "default_retry_initial", with = "humantime_serde")]
    pub initial: Duration,
    /// `max_delay = "5m"`: the cap on the doubling delay between retries.
    #[serde(default = "default_retry_max_delay", with = "humantime_serde")]
    pub max_delay: Duration,
    /// No retry is scheduled past this age (time since the event was received).
    #[serde(default = "default_max_age", with = "humantime_serde")]
    pub max_age: Duration,
}

fn default_max_attempts() -> u32 {
    12
}
fn default_retry_initial() -> Duration {
    Duration::from_millis(500)
}
fn default_retry_max_delay() -> Duration {
    Duration::from_secs(300)
}
fn default_max_age() -> Duration {
    Duration::from_secs(24 * 3600)
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: default_max_attempts(),
            initial: default_retry_initial(),
            max_delay: default_retry_max_delay(),
            max_age: default_max_age(),
        }
    }
}

/// `batch = { max_events = 100, max_bytes = 1048576, max_wait = "200ms" }`: deliveries due
/// together are sent as one unit of at most `max_events` deliveries and `max_bytes` of bodies
/// (high-priority deliveries always go alone).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// `max_events = 100`: the most deliveries in one batch (at least 1).
    #[serde(default = "default_batch_events")]
    pub max_events: usize,
    /// `max_bytes = 1048576` (1 MiB): the most body bytes in one batch; a delivery larger than
    /// this goes alone.
    #[serde(default = "default_batch_bytes")]
    pub max_bytes: usize,
    /// A partial batch of normal-priority deliveries is held until its oldest delivery has
    /// been due this long, so a trickle of events goes in fuller batches. Default `"0s"`: send
    /// what is due at once. A full batch never waits; high-priority deliveries never wait.
    #[serde(default, with = "humantime_serde")]
    pub max_wait: Duration,
}

/// `batch.max_wait` must stay below this: a longer hold is a schedule, not a batch.
const MAX_BATCH_WAIT: Duration = Duration::from_secs(3600);

fn default_batch_events() -> usize {
    100
}
fn default_batch_bytes() -> usize {
    1024 * 1024
}

/// `circuit = { failures = 5, cooldown = "5s", max_cooldown = "1m" }`: after `failures`
/// consecutive failed units the sink pauses for `cooldown` (doubling per failed probe, up to
/// `max_cooldown`), then one probe decides whether it resumes.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitConfig {
    /// `failures = 5`: consecutive failed units that open the circuit; `0` turns it off.
    #[serde(default = "default_circuit_failures")]
    pub failures: u32,
    /// `cooldown = "5s"`: the first pause before a probe.
    #[serde(default = "default_circuit_cooldown", with = "humantime_serde")]
    pub cooldown: Duration,
    /// `max_cooldown = "1m"`: the cap on the pause, which doubles per failed probe.
    #[serde(default = "default_circuit_max_cooldown", with = "humantime_serde")]
    pub max_cooldown: Duration,
}

fn default_circuit_failures() -> u32 {
    5
}
fn default_circuit_cooldown() -> Duration {
    Duration::from_secs(5)
}
fn default_circuit_max_cooldown() -> Duration {
    Duration::from_secs(60)
}

impl Default for CircuitConfig {
    fn default() -> Self {
        CircuitConfig {
            failures: default_circuit_failures(),
            cooldown: default_circuit_cooldown(),
            max_cooldown: default_circuit_max_cooldown(),
        }
    }
}

/// Checks one `[sinks.NAME]` table; errors name the key.
pub(super) fn validate(name: &str, sink: &SinkConfig) -> Result<(), ConfigError> {
    let key = |field: &str| format!("sinks.{name}.{field}");
    let retry = &sink.retry;
    if retry.max_attempts == 0 {
        return Err(invalid(key("retry.max_attempts"), "must be at least 1"));
    }
    if retry.initial.is_zero() || retry.max_delay < retry.initial {
        return Err(invalid(key("retry"), "need 0 < initial <= max_delay"));
    }
    if retry.max_age.is_zero() {
        return Err(invalid(key("retry.max_age"), "must be greater than 0"));
    }
    if sink.concurrency == 0 || sink.concurrency > 1024 {
        return Err(invalid(key("concurrency"), "must be between 1 and 1024"));
    }
    if let Some(k) = &sink.order_key
        && !k.starts_with("json:/")
    {
        return Err(invalid(
            key("order_key"),
            "must be a JSON pointer into the body: \"json:/field\"",
        ));
    }
    if sink.timeout.is_zero() {
        return Err(invalid(key("timeout"), "must be greater than 0"));
    }
    let c = &sink.circuit;
    if c.failures > 0 && (c.cooldown.is_zero() || c.max_cooldown < c.cooldown) {
        return Err(invalid(key("circuit"), "need 0 < cooldown <= max_cooldown"));
    }
    if let Some(batch) = &sink.batch {
        if batch.max_events == 0 {
            return Err(invalid(key("batch.max_events"), "must be at least 1"));
        }
        if batch.max_bytes == 0 {
            return Err(invalid(key("batch.max_bytes"), "must be greater than 0"));
        }
        if batch.max_wait >= MAX_BATCH_WAIT {
            return Err(invalid(key("batch.max_wait"), "must be less than 1h"));
        }
    }
    if let SinkKind::Redis(r) = &sink.kind {
        if r.stream.trim().is_empty() {
            return Err(invalid(key("stream"), "must not be empty"));
        }
        if r.maxlen == Some(0) {
            return Err(invalid(key("maxlen"), "must be greater than 0"));
        }
    }
    if let SinkKind::Nats(n) = &sink.kind
        && let Err(reason) = check_nats_subject(&n.subject)
    {
        return Err(invalid(key("subject"), reason));
    }
    if let SinkKind::Amqp(a) = &sink.kind
        && let Err(reason) = check_routing_key(&a.routing_key)
    {
        return Err(invalid(key("routing_key"), reason));
    }
    if let SinkKind::Http(http) = &sink.kind {
        // The URL is a secret, checked once resolved (`check_secrets`).
        if !["POST", "PUT", "PATCH"].contains(&http.method.as_str()) {
            return Err(invalid(key("method"), "must be POST, PUT or PATCH"));
        }
        for (h, v) in &http.headers {
            if http::HeaderName::from_bytes(h.as_bytes()).is_err()
                || http::HeaderValue::from_str(v).is_err()
            {
                return Err(invalid(key(&format!("headers.{h}")), "not a valid header"));
            }
        }
        if let Some(bad) = http.retry_on.iter().find(|m| !m.valid()) {
            return Err(invalid(
                key("retry_on"),
                format!("{bad:?} is not a status (100-599) or a class like \"5xx\""),
            ));
        }
    }
    Ok(())
}

/// A subject a message can be published to: dot-separated tokens, none empty, no whitespace,
/// no wildcards (`*`, `>`: those are for subscribers).
fn check_nats_subject(subject: &str) -> Result<(), &'static str> {
    if subject.is_empty() {
        return Err("must not be empty");
    }
    if subject.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace");
    }
    for token in subject.split('.') {
        if token.is_empty() {
            return Err("has an empty token (a leading, trailing or doubled '.')");
        }
        if token == "*" || token == ">" {
            return Err(
                "must not contain wildcards (`*`, `>`): messages are published to one subject",
            );
        }
    }
    Ok(())
}

/// A routing key template: at most AMQP's 255 bytes before its fields are filled in, and no
/// placeholder but `{source}`, `{sink}` and `{event_id}`.
fn check_routing_key(template: &str) -> Result<(), String> {
    if template.len() > 255 {
        return Err("is longer than AMQP's 255 bytes".into());
    }
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            return Err("has a `{` without its `}`".into());
        };
        let field = &rest[open..open + close + 1];
        if !["{source}", "{sink}", "{event_id}"].contains(&field) {
            return Err(format!(
                "{field} is not a field: use {{source}}, {{sink}} or {{event_id}}"
            ));
        }
        rest = &rest[open + close + 1..];
    }
    Ok(())
}

/// The verify table that describes how sinks sign: Standard Webhooks. Signing reuses the
/// verify stage's HMAC code through it, so there is one implementation of the scheme.
pub fn signing_scheme() -> super::VerifyConfig {
    toml::from_str("scheme = \"standard-webhooks\"").expect("a valid verify table")
}

/// Resolves a sink's secrets at start-up, so a missing variable or a malformed key fails
/// before any port is bound.
pub(super) fn check_secrets(
    name: &str,
    sink: &SinkConfig,
    base_dir: &std::path::Path,
) -> Result<(), ConfigError> {
    // A URL's shape is the sink kind's to check (`sink::build`, before any port is bound);
    // here only that each secret resolves.
    if let SinkKind::Http(http) = &sink.kind {
        http.url.resolve(base_dir, &format!("sinks.{name}.url"))?;
    }
    if let SinkKind::Http(HttpSinkConfig {
        secret: Some(secret),
        ..
    }) = &sink.kind
    {
        let key = format!("sinks.{name}.secret");
        let resolved = secret.resolve(base_dir, &key)?;
        signing_scheme().check_secret(&resolved, &key)?;
    }
    if let SinkKind::Redis(r) = &sink.kind {
        r.url.resolve(base_dir, &format!("sinks.{name}.url"))?;
    }
    if let SinkKind::Nats(n) = &sink.kind {
        n.url.resolve(base_dir, &format!("sinks.{name}.url"))?;
    }
    if let SinkKind::Amqp(a) = &sink.kind {
        a.url.resolve(base_dir, &format!("sinks.{name}.url"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::Config;
    use super::*;

    fn with_sink(sink: &str) -> String {
        format!(
            "[sources.s]\npath = \"/s\"\nverify = {{ scheme = \"none\" }}\nsinks = [\"app\"]\n\n[sinks.app]\n{sink}\n"
        )
    }

    fn err(sink: &str) -> String {
        Config::parse(&with_sink(sink), Path::new("/"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn an_http_sink_parses_with_its_policy() {
        let c = Config::parse(
            &with_sink(
                "type = \"http\"\nurl = \"http://127.0.0.1:9/x\"\nheaders = { \"x-a\" = \"b\" }\n\
                 retry = { max_attempts = 3, initial = \"1s\", max_delay = \"1m\", max_age = \"1h\" }\n\
                 retry_on = [500, \"4xx\"]\nbatch = { max_events = 10 }\nhttp2 = \"prior-knowledge\"",
            ),
            Path::new("/"),
        )
        .unwrap();
        let sink = &c.sinks["app"];
        assert_eq!(sink.retry.max_age, Duration::from_secs(3600));
        assert_eq!(sink.concurrency, DEFAULT_HTTP_CONCURRENCY);
        assert_eq!(sink.batch.as_ref().unwrap().max_events, 10);
        let SinkKind::Http(http) = &sink.kind else {
            panic!("an http sink")
        };
        assert_eq!(http.method, "POST");
        assert_eq!(http.http2, Http2Mode::PriorKnowledge);
        assert!(http.retry_on[1].matches(404) && !http.retry_on[1].matches(503));
        let defaults = default_retry_on();
        assert!(
            [408, 425, 429, 500, 599]
                .iter()
                .all(|s| defaults.iter().any(|m| m.matches(*s)))
        );
        assert!(
            ![400, 404, 422]
                .iter()
                .any(|s| defaults.iter().any(|m| m.matches(*s)))
        );
    }

    #[test]
    fn bad_sink_keys_are_named() {
        let e = err("type = \"http\"\nurl = \"http://x/\"\ntimout = \"1s\"");
        assert!(e.contains("timout"), "{e}");
        let e = err("type = \"file\"\npath = \"x\"\nretry = { max_tries = 3 }");
        assert!(e.contains("max_tries"), "{e}");
        let e = err("type = \"http\"\nurl = \"http://x/\"\nretry_on = [\"6xx\"]");
        assert!(e.contains("sinks.app.retry_on"), "{e}");
        let e = err("type = \"http\"\nurl = \"http://x/\"\nmethod = \"GET\"");
        assert!(e.contains("sinks.app.method"), "{e}");
        let e = err("type = \"stdout\"\nconcurrency = 0");
        assert!(e.contains("sinks.app.concurrency"), "{e}");
    }

    #[test]
    fn an_amqp_sink_parses_and_its_routing_key_template_is_checked() {
        let c = Config::parse(
            &with_sink(
                "type = \"amqp\"\nurl = \"amqp://127.0.0.1:5672/%2f\"\nexchange = \"hw\"\n\
                 routing_key = \"hooks.{source}.{event_id}\"",
            ),
            Path::new("/"),
        )
        .unwrap();
        c.check_secrets().unwrap();
        let sink = &c.sinks["app"];
        assert_eq!(sink.concurrency, 1, "in order, like the other queues");
        assert_eq!(sink.timeout, Duration::from_secs(5));
        let SinkKind::Amqp(a) = &sink.kind else {
            panic!("an amqp sink")
        };
        assert_eq!(
            (a.exchange.as_str(), a.routing_key.as_str()),
            ("hw", "hooks.{source}.{event_id}")
        );
        let amqp = |extra: &str| err(&format!("type = \"amqp\"\nurl = \"amqp://h\"\n{extra}"));
        assert!(amqp("").contains("routing_key"), "the key is required");
        let e = amqp("routing_key = \"a.{tenant}\"");
        assert!(
            e.contains("sinks.app.routing_key") && e.contains("{tenant}"),
            "{e}"
        );
        let e = amqp("routing_key = \"a.{source\"");
        assert!(e.contains("without its"), "{e}");
        let e = amqp(&format!("routing_key = \"{}\"", "k".repeat(256)));
        assert!(e.contains("255"), "{e}");
        let e = amqp("routing_key = \"k\"\nqueue = \"x\"");
        assert!(e.contains("queue"), "{e}");
    }

    #[test]
    fn a_nats_sink_parses_and_its_bad_keys_are_named() {
        let c = Config::parse(
            &with_sink(
                "type = \"nats\"\nurl = \"nats://127.0.0.1:4222\"\nsubject = \"hw.events\"\n\
                 batch = { max_events = 10, max_wait = \"200ms\" }",
            ),
            Path::new("/"),
        )
        .unwrap();
        c.check_secrets().unwrap();
        let sink = &c.sinks["app"];
        assert_eq!(sink.concurrency, 1, "in order, like redis");
        let batch = sink.batch.as_ref().unwrap();
        assert_eq!(batch.max_wait, Duration::from_millis(200));
        assert_eq!(batch.max_bytes, default_batch_bytes());
        let SinkKind::Nats(n) = &sink.kind else {
            panic!("a nats sink")
        };
        assert_eq!(n.subject, "hw.events");

        let nats = |extra: &str| {
            err(&format!(
                "type = \"nats\"\nurl = \"nats://h:4222\"\n{extra}"
            ))
        };
        let e = nats("");
        assert!(e.contains("subject"), "{e}");
        let e = nats("subject = \"a\"\nstream = \"x\"");
        assert!(e.contains("stream"), "{e}");
        for bad in ["", "a..b", "a.*", "events.>", "a b", ".a"] {
            let e = nats(&format!("subject = \"{bad}\""));
            assert!(e.contains("sinks.app.subject"), "{bad:?}: {e}");
        }
        let e = nats("subject = \"a\"\nbatch = { max_wait = \"2h\" }");
        assert!(e.contains("sinks.app.batch.max_wait"), "{e}");
        let e = nats("subject = \"a\"\nbatch = { max_wiat = \"2s\" }");
        assert!(e.contains("max_wiat"), "{e}");
    }

    #[test]
    fn every_kind_takes_a_timeout_with_its_own_default() {
        let timeout = |sink: &str| {
            Config::parse(&with_sink(sink), Path::new("/"))
                .map(|c| c.sinks["app"].timeout)
                .map_err(|e| e.to_string())
        };
        let kinds = [
            ("type = \"http\"\nurl = \"http://x/\"", 10),
            ("type = \"redis\"\nurl = \"redis://h/\"\nstream = \"s\"", 5),
            (
                "type = \"nats\"\nurl = \"nats://h:4222\"\nsubject = \"s\"",
                5,
            ),
            ("type = \"file\"\npath = \"x\"", 30),
            ("type = \"stdout\"", 30),
        ];
        for (kind, default) in kinds {
            assert_eq!(timeout(kind), Ok(Duration::from_secs(default)), "{kind}");
            assert_eq!(
                timeout(&format!("{kind}\ntimeout = \"1500ms\"")),
                Ok(Duration::from_millis(1500)),
                "{kind}"
            );
            let e = timeout(&format!("{kind}\ntimeout = \"0s\"")).unwrap_err();
            assert!(e.contains("sinks.app.timeout"), "{kind}: {e}");
            let e = timeout(&format!("{kind}\ntimeout = \"soon\"")).unwrap_err();
            assert!(e.contains("timeout") || e.contains("soon"), "{kind}: {e}");
        }
    }

    #[test]
    fn a_bad_signing_key_is_named() {
        let c = Config::parse(
            &with_sink("type = \"http\"\nurl = \"http://x/\"\nsecret = \"not base64!\""),
            Path::new("/"),
        )
        .unwrap();
        let e = c.check_secrets().unwrap_err().to_string();
        assert!(e.contains("sinks.app.secret"), "{e}");
    }
}
