//! Configuration: one TOML file, parsed into plain structs, validated before any port is bound.
//!
//! Every struct rejects unknown keys (`deny_unknown_fields`), so a typo fails at load with the
//! key's name and line instead of being silently ignored. Defaults live in `default_*` functions
//! next to the field that uses them. Relative paths are resolved against the config file's
//! directory, so a config works the same from any working directory.
//!
//! ```toml
//! [server]
//! listen = "127.0.0.1:8080"
//!
//! [sources.demo]
//! path = "/hooks/demo"
//! verify = { scheme = "hmac", header = "X-Signature", prefix = "sha256=", secrets = ["env:DEMO_SECRET"] }
//! plugins = ["router"]
//! sinks = ["events-file"]
//!
//! [sinks.events-file]
//! type = "file"
//! path = "./data/events.jsonl"
//! ```

mod edge;
mod intake;
mod secret;
mod sink;
pub mod verify;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use edge::{LimitsConfig, TlsConfig};
pub use intake::{
    DEFAULT_DEDUPE_TTL, DedupeConfig, DedupeKey, LimitBy, OnRedisError, OverloadConfig, Rate,
    RateLimitConfig,
};
pub use secret::{Secret, SecretRef};
pub use sink::{
    AmqpSinkConfig, BatchConfig, CircuitConfig, FileSinkConfig, Http2Mode, HttpSinkConfig,
    NatsSinkConfig, RedisSinkConfig, RetryConfig, SinkConfig, SinkKind, StatusMatch,
    StdoutSinkConfig, signing_scheme,
};
pub use verify::{
    Delimiter, Handshake, HmacAlgorithm, SchemeName, SecretEncoding, SignatureEncoding,
    TimestampUnit, VerifyConfig,
};

/// Why a configuration could not be loaded. Messages name the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The config file's path.
        path: PathBuf,
        /// The read error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema (unknown key, wrong type).
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The config file's path (empty when [`Config::parse`] was given text).
        path: PathBuf,
        /// What is wrong, prefixed with its line and column when known.
        message: String,
    },
    /// A value is well-formed but not acceptable.
    #[error("invalid config: `{key}`: {reason}")]
    Invalid {
        /// The offending key, dotted (`server.max_body_bytes`).
        key: String,
        /// Why its value is refused.
        reason: String,
    },
    /// A secret reference could not be resolved. Never includes the secret's value.
    #[error("invalid config: `{key}`: cannot resolve secret {reference}: {reason}")]
    Secret {
        /// The key that names the secret (`admin.token`).
        key: String,
        /// The reference as written (`env:NAME`, `file:PATH`; a literal is redacted).
        reference: String,
        /// Why it could not be resolved.
        reason: String,
    },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// The whole configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[server]`: the webhook listener.
    #[serde(default)]
    pub server: ServerConfig,
    /// `[storage]`: where accepted events are kept.
    #[serde(default)]
    pub storage: StorageConfig,
    /// `[plugins]`: where plugins are loaded from and their default limits.
    #[serde(default)]
    pub plugins: PluginsConfig,
    /// `[admin]`: the optional operator API listener.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// `[telemetry]`: metrics on/off, body logging, trace export.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// `[sources.NAME]`: one per webhook endpoint.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceConfig>,
    /// `[sinks.NAME]`: where accepted events are delivered.
    #[serde(default)]
    pub sinks: BTreeMap<String, SinkConfig>,
    /// Directory of the config file; relative paths are resolved against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// `[server]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// `listen = "127.0.0.1:8080"`
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// `max_body_bytes = 1048576`: larger bodies are refused with 413 before being read whole.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// `shutdown_grace = "10s"`: how long in-flight requests may take to finish on shutdown.
    #[serde(default = "default_shutdown_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// `trusted_proxies = ["10.0.0.0/8"]`: peers whose `Forwarded` / `X-Forwarded-For` headers
    /// are believed when a source checks `allow_ips`. Default: none.
    #[serde(default)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `client_ip_header = "x-forwarded-for"` (default) or `"forwarded"` (RFC 7239): the one
    /// header the trusted proxies write. Only that header is read; the other is the client's
    /// own and is ignored, so a forged `Forwarded` cannot ride through a proxy that appends
    /// `X-Forwarded-For`.
    #[serde(default)]
    pub client_ip_header: ClientIpHeader,
    /// `trusted_hops = 1`: how many entries the trusted proxies append to that header (Envoy's
    /// `xff_num_trusted_hops`). The client is the entry that many places from the right; a
    /// request with fewer entries is refused. Unset: walk from the right past every address in
    /// `trusted_proxies` and take the first other one (nginx's `real_ip_recursive`).
    #[serde(default)]
    pub trusted_hops: Option<usize>,
    /// `overload = { max_pending = 100000, max_commit_latency = "2s" }`: answer 503 before
    /// reading a body while the store is behind (off unless set).
    #[serde(default)]
    pub overload: OverloadConfig,
    /// `[server.tls]`: terminate TLS on this listener (off unless set).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// `[server.limits]`: connection, header, body and HTTP/2 limits (safe defaults).
    #[serde(default)]
    pub limits: LimitsConfig,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_max_body_bytes() -> usize {
    1024 * 1024
}
fn default_shutdown_grace() -> Duration {
    Duration::from_secs(10)
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            max_body_bytes: default_max_body_bytes(),
            shutdown_grace: default_shutdown_grace(),
            trusted_proxies: Vec::new(),
            client_ip_header: ClientIpHeader::default(),
            trusted_hops: None,
            overload: OverloadConfig::default(),
            tls: None,
            limits: LimitsConfig::default(),
        }
    }
}

/// `[storage]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// `path = "./data"`: directory of the embedded store (created if missing).
    #[serde(default = "default_storage_path")]
    pub path: PathBuf,
    /// `fsync = true`: every commit reaches the disk before the sender hears 2xx. `false`
    /// makes commits durable lazily, at least once a second (faster, but a crash can lose the
    /// last second of acknowledged events): for benchmarks and development only.
    #[serde(default = "default_true")]
    pub fsync: bool,
    /// `redis = "env:HOOKWALL_REDIS_URL"`: a `redis://` URL (a secret reference, since it may
    /// carry a password). Dedupe marks and rate limits are then shared by every replica that
    /// uses the same Redis and prefix.
    #[serde(default)]
    pub redis: Option<SecretRef>,
    /// `redis_prefix = "hookwall"`: prefix of every key Hookwall writes to Redis.
    #[serde(default = "default_redis_prefix")]
    pub redis_prefix: String,
    /// `retention = "7d"`: delivered events (and their deliveries) are pruned this long after
    /// they were received; dead letters and pending deliveries are kept until replayed or
    /// purged. `"0s"` keeps everything.
    #[serde(default = "default_retention", with = "humantime_serde")]
    pub retention: Duration,
    /// `backend = "embedded"` (the default: redb and a log under `path`, one process) or
    /// `"postgres"`: the inbox, outbox, dead letters and dedupe marks live in PostgreSQL at
    /// `url`, shared by every replica that uses it.
    #[serde(default)]
    pub backend: StorageBackend,
    /// `url = "env:DATABASE_URL"`: the PostgreSQL connection URL (`postgres://user:pass@host/db`,
    /// a secret reference, since it may carry a password). Only with `backend = "postgres"`.
    #[serde(default)]
    pub url: Option<SecretRef>,
    /// `lease = "30s"`: with `backend = "postgres"`, how long a replica holds the deliveries it
    /// claimed without renewing them (it renews every third of it while it works). A replica
    /// that dies leaves its deliveries to the others once this has passed.
    #[serde(default = "default_lease", with = "humantime_serde")]
    pub lease: Duration,
    /// `pool_size = 16`: with `backend = "postgres"`, connections this replica opens at most.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// `ca_file = "/etc/ssl/db-ca.pem"`: with `backend = "postgres"` and `sslmode=require` in the
    /// URL, the CA certificates (PEM) the database's certificate must chain to, instead of the
    /// system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// `[storage] backend`: which engine keeps the queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// redb and the log under `[storage] path`: one process, no server to run.
    #[default]
    Embedded,
    /// PostgreSQL at `[storage] url`, shared by replicas.
    Postgres,
}

fn default_lease() -> Duration {
    Duration::from_secs(30)
}

fn default_pool_size() -> usize {
    16
}

fn default_retention() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

fn default_redis_prefix() -> String {
    "hookwall".into()
}

fn default_true() -> bool {
    true
}

fn default_storage_path() -> PathBuf {
    PathBuf::from("data")
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            path: default_storage_path(),
            fsync: true,
            redis: None,
            redis_prefix: default_redis_prefix(),
            retention: default_retention(),
            backend: StorageBackend::Embedded,
            url: None,
            lease: default_lease(),
            pool_size: default_pool_size(),
            ca_file: None,
        }
    }
}

/// `[plugins]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginsConfig {
    /// `dir = "./plugins"`: plugin `NAME` is loaded from `DIR/NAME.wasm`.
    #[serde(default = "default_plugins_dir")]
    pub dir: PathBuf,
    /// `max_memory_bytes = 16777216`: linear memory one plugin call may use.
    #[serde(default = "default_plugin_memory")]
    pub max_memory_bytes: usize,
    /// `deadline = "50ms"`: wall-clock time one plugin call may take.
    #[serde(default = "default_plugin_deadline", with = "humantime_serde")]
    pub deadline: Duration,
    /// `max_concurrent_calls = 16`: calls of one plugin that may run at once; more wait up to
    /// the plugin's deadline for a running call to end, then are answered 503. Default: as
    /// many as the plugin engine's instance pool holds of the largest component (16).
    #[serde(default)]
    pub max_concurrent_calls: Option<usize>,
    /// `max_deliveries = 100`: deliveries one plugin call may return.
    #[serde(default = "default_max_deliveries")]
    pub max_deliveries: usize,
    /// `max_output_bytes = 16777216`: bodies and headers one call may return, in total.
    #[serde(default = "default_max_output_bytes")]
    pub max_output_bytes: usize,
    /// `max_headers = 64`: headers per delivery.
    #[serde(default = "default_max_headers")]
    pub max_headers: usize,
    /// `max_header_bytes = 8192`: bytes of one header (name and value).
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// `[plugins.config.NAME]`: values returned by the `config` import to plugin `NAME`.
    /// Strings are passed as they are; other TOML values as JSON text. They override the
    /// plugin manifest's `[config]`.
    #[serde(default)]
    pub config: BTreeMap<String, BTreeMap<String, toml::Value>>,
}

fn default_plugins_dir() -> PathBuf {
    PathBuf::from("plugins")
}
fn default_plugin_memory() -> usize {
    16 * 1024 * 1024
}
fn default_plugin_deadline() -> Duration {
    Duration::from_millis(50)
}
fn default_max_deliveries() -> usize {
    100
}
fn default_max_output_bytes() -> usize {
    16 * 1024 * 1024
}
fn default_max_headers() -> usize {
    64
}
fn default_max_header_bytes() -> usize {
    8 * 1024
}

impl Default for PluginsConfig {
    fn default() -> Self {
        PluginsConfig {
            dir: default_plugins_dir(),
            max_memory_bytes: default_plugin_memory(),
            deadline: default_plugin_deadline(),
            max_concurrent_calls: None,
            max_deliveries: default_max_deliveries(),
            max_output_bytes: default_max_output_bytes(),
            max_headers: default_max_headers(),
            max_header_bytes: default_max_header_bytes(),
            config: BTreeMap::new(),
        }
    }
}

impl PluginsConfig {
    /// The host config's `config` import values for plugin `name`.
    pub fn values_for(&self, name: &str) -> BTreeMap<String, String> {
        self.config.get(name).map(config_values).unwrap_or_default()
    }
}

/// `[telemetry]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `metrics = true`: record metrics and serve them at the admin listener's `/metrics`.
    /// `false` installs no recorder (every metric macro becomes a no-op).
    #[serde(default = "default_metrics")]
    pub metrics: bool,
    /// `log_bodies = false`: with `true`, request bodies are logged at `trace` level (they may
    /// hold personal data; off by default).
    #[serde(default)]
    pub log_bodies: bool,
    /// `[telemetry.otlp]`: export traces over OTLP/HTTP. Absent (the default): no traces.
    #[serde(default)]
    pub otlp: Option<OtlpConfig>,
}

/// `[telemetry.otlp]`: where and how traces are exported (OTLP over HTTP, protobuf).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// `endpoint = "http://127.0.0.1:4318"`: the collector's OTLP/HTTP receiver. A URL without
    /// a path gets the traces path `/v1/traces`; a URL with one is used as written.
    pub endpoint: String,
    /// `headers = { authorization = "env:OTLP_TOKEN" }`: sent with every export; values are
    /// secrets (`env:`, `file:` or a literal) and are never logged.
    #[serde(default)]
    pub headers: BTreeMap<String, SecretRef>,
    /// `sampling = 1.0`: the share of new traces recorded (0.0–1.0). A request that carries a
    /// W3C `traceparent` follows its sender's decision instead.
    #[serde(default = "default_sampling")]
    pub sampling: f64,
    /// `service_name = "hookwall"`: the `service.name` of the exported resource.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// `ca_file = "collector-ca.pem"`: CA certificates (PEM) an `https` collector is checked
    /// against, instead of the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// `timeout = "10s"`: the bound on one export request.
    #[serde(default = "default_otlp_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_sampling() -> f64 {
    1.0
}

fn default_service_name() -> String {
    "hookwall".into()
}

fn default_otlp_timeout() -> Duration {
    Duration::from_secs(10)
}

impl OtlpConfig {
    /// The URL spans are posted to: `endpoint`, with `/v1/traces` when it has no path.
    pub fn traces_url(&self) -> String {
        let endpoint = self.endpoint.trim_end_matches('/');
        let has_path = endpoint
            .split_once("://")
            .is_some_and(|(_, rest)| rest.contains('/'));
        if has_path {
            self.endpoint.clone()
        } else {
            format!("{endpoint}/v1/traces")
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let key = |k: &str| format!("telemetry.otlp.{k}");
        let uri: http::Uri = self
            .traces_url()
            .parse()
            .map_err(|e| invalid(key("endpoint"), format!("not a URL: {e}")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(invalid(
                key("endpoint"),
                "use an http:// or https:// URL with a host (OTLP over HTTP, e.g. http://127.0.0.1:4318)",
            ));
        }
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(invalid(
                key("endpoint"),
                "put credentials in headers (secrets), not in the URL",
            ));
        }
        if !(0.0..=1.0).contains(&self.sampling) {
            return Err(invalid(key("sampling"), "use a ratio from 0.0 to 1.0"));
        }
        if self.service_name.trim().is_empty() {
            return Err(invalid(key("service_name"), "must not be empty"));
        }
        for name in self.headers.keys() {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(invalid(
                    key(&format!("headers.{name}")),
                    "not a valid header name",
                ));
            }
        }
        if self.timeout.is_zero() {
            return Err(invalid(key("timeout"), "must be greater than 0"));
        }
        Ok(())
    }
}

fn default_metrics() -> bool {
    true
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            metrics: default_metrics(),
            log_bodies: false,
            otlp: None,
        }
    }
}

/// Config values as a plugin's `config` import hands them out: strings as they are, anything
/// else as JSON text.
pub fn config_values(table: &BTreeMap<String, toml::Value>) -> BTreeMap<String, String> {
    table
        .iter()
        .map(|(k, v)| {
            let text = match v {
                toml::Value::String(s) => s.clone(),
                other => serde_json::to_string(other).unwrap_or_default(),
            };
            (k.clone(), text)
        })
        .collect()
}

/// `[admin]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `listen = "127.0.0.1:9090"`
    pub listen: SocketAddr,
    /// `token = "env:HOOKWALL_ADMIN_TOKEN"`: bearer token required on `/api/*`.
    #[serde(default)]
    pub token: Option<SecretRef>,
    /// `public = ["/metrics"]`: paths served without the token. Only `/healthz` (always
    /// public), `/metrics` and `/readyz` (for an orchestrator's readiness probe, which cannot
    /// send a secret) may be listed.
    #[serde(default)]
    pub public: Vec<String>,
    /// `allowed_hosts = ["hookwall.internal:9090"]`: more names (`host` or `host:port`; without
    /// a port, any port) the listener answers to besides its bound address and
    /// `localhost`/`127.0.0.1`/`[::1]` on its port. Without `token`, a request whose `Host` is
    /// not one of them is refused (DNS rebinding); a state-changing request whose `Origin` is
    /// not one of them is refused either way.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

/// Admin paths that `[admin] public` may open.
pub const ADMIN_PUBLIC_ALLOWED: &[&str] = &["/healthz", "/metrics", "/readyz"];

impl AdminConfig {
    /// The `public` paths are ones that may be opened, and every `allowed_hosts` entry is a
    /// bare `host[:port]` (no scheme, path or user).
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(bad) = self
            .public
            .iter()
            .find(|p| !ADMIN_PUBLIC_ALLOWED.contains(&p.as_str()))
        {
            return Err(invalid(
                "admin.public",
                format!("{bad:?} cannot be public; only {ADMIN_PUBLIC_ALLOWED:?} may be"),
            ));
        }
        for name in &self.allowed_hosts {
            let ok = !name.contains(['@', '/'])
                && name.parse::<http::uri::Authority>().is_ok_and(|a| {
                    // A port, when given, is a number (`http` accepts `host:x`).
                    let port_ok = a.as_str().len() == a.host().len() || a.port_u16().is_some();
                    !a.host().is_empty() && port_ok
                });
            if !ok {
                return Err(invalid(
                    "admin.allowed_hosts",
                    format!("{name:?} is not a `host` or `host:port`"),
                ));
            }
        }
        Ok(())
    }
}

/// `[sources.NAME]`: one webhook endpoint.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `path = "/hooks/demo"`: the request path this source answers on (POST only).
    pub path: String,
    /// `verify = { scheme = "hmac", ... }`: how the sender is authenticated.
    pub verify: VerifyConfig,
    /// `plugins = ["router"]`: plugins run in this order on every accepted event.
    #[serde(default)]
    pub plugins: Vec<String>,
    /// `sinks = ["events-file"]`: where unrouted output goes after the last plugin.
    #[serde(default)]
    pub sinks: Vec<String>,
    /// `on_plugin_error = "accept"`: answer when a plugin fails (the event is dead-lettered either
    /// way). `accept` answers 202 so the provider does not retry; `reject` answers 500.
    #[serde(default)]
    pub on_plugin_error: OnPluginError,
    /// `max_body_bytes = 65536`: overrides `[server] max_body_bytes` for this source.
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
    /// `respond = { status = 202, body = "ok" }`: the answer to an accepted (or duplicate, or
    /// dropped) event, for providers that want a particular one.
    #[serde(default)]
    pub respond: Option<RespondConfig>,
    /// `dedupe = { key = "scheme", ttl = "48h" }`: copies of an event within `ttl` are answered
    /// `duplicate` and not delivered again. Default: `key = "scheme"` when the verify scheme
    /// carries an event id, else off.
    #[serde(default)]
    pub dedupe: Option<DedupeConfig>,
    /// `rate_limit = { rate = "100/s", burst = 200, by = "source" }`: over the limit → 429.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
}

/// `respond = { status = 204 }` or `respond = { status = 200, body = "OK", content_type = "text/plain" }`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RespondConfig {
    /// `status = 200` (default), `202` or `204`.
    #[serde(default = "default_respond_status")]
    pub status: u16,
    /// `body = "..."`: a static body instead of `{"status":…,"id":…}`. Not with 204.
    #[serde(default)]
    pub body: Option<String>,
    /// `content_type = "text/plain"` (the default with `body`).
    #[serde(default)]
    pub content_type: Option<String>,
}

fn default_respond_status() -> u16 {
    200
}

/// The header trusted proxies put the client's address in (`[server] client_ip_header`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientIpHeader {
    /// `X-Forwarded-For: client, proxy1, …` (nginx, Envoy, HAProxy, cloud load balancers).
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    Forwarded,
}

/// What the sender hears when a plugin fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnPluginError {
    /// `"accept"`: answer 202, so the provider does not retry.
    #[default]
    Accept,
    /// `"reject"`: answer 500, so the provider retries.
    Reject,
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        // Absolute, so paths stay right whatever the process's working directory becomes.
        let base_dir = std::path::absolute(&base_dir).unwrap_or(base_dir);
        Config::parse(&text, &base_dir).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates config text; relative paths are resolved against `base_dir`.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: describe_toml_error(text, &e),
        })?;
        config.base_dir = base_dir.to_path_buf();
        config.resolve_paths();
        config.validate()?;
        Ok(config)
    }

    fn resolve_paths(&mut self) {
        let base = self.base_dir.clone();
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        abs(&mut self.storage.path);
        if let Some(ca) = &mut self.storage.ca_file {
            abs(ca);
        }
        if let Some(ca) = self
            .telemetry
            .otlp
            .as_mut()
            .and_then(|o| o.ca_file.as_mut())
        {
            abs(ca);
        }
        abs(&mut self.plugins.dir);
        if let Some(tls) = &mut self.server.tls {
            edge::resolve_paths(tls, &base);
        }
        for sink in self.sinks.values_mut() {
            if let SinkKind::File(f) = &mut sink.kind {
                abs(&mut f.path);
            }
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.sources.is_empty() {
            return Err(invalid(
                "sources",
                "at least one [sources.NAME] is required",
            ));
        }
        if self.server.max_body_bytes == 0 {
            return Err(invalid("server.max_body_bytes", "must be greater than 0"));
        }
        Self::validate_plugin_limits(&self.plugins)?;
        intake::validate_overload(&self.server.overload)?;
        edge::validate(
            &self.server.limits,
            self.server.tls.as_ref(),
            self.admin.as_ref(),
        )?;
        if let Some(admin) = &self.admin {
            admin.validate()?;
        }
        if !self
            .storage
            .redis_prefix
            .chars()
            .all(|c| c.is_ascii_graphic())
        {
            return Err(invalid(
                "storage.redis_prefix",
                "use printable ASCII without spaces",
            ));
        }
        self.validate_storage_backend()?;
        if let Some(otlp) = &self.telemetry.otlp {
            otlp.validate()?;
        }
        self.validate_sources()?;
        self.validate_sinks()
    }

    /// `[storage] backend`, `url`, `lease` and `pool_size` agree.
    fn validate_storage_backend(&self) -> Result<(), ConfigError> {
        let storage = &self.storage;
        match (storage.backend, &storage.url) {
            (StorageBackend::Postgres, None) => {
                return Err(invalid(
                    "storage.url",
                    "backend = \"postgres\" needs url = \"env:DATABASE_URL\" (a postgres:// URL)",
                ));
            }
            (StorageBackend::Embedded, Some(_)) => {
                return Err(invalid(
                    "storage.url",
                    "url is the PostgreSQL URL of backend = \"postgres\"; set the backend too, or remove it",
                ));
            }
            _ => {}
        }
        if storage.ca_file.is_some() && storage.backend != StorageBackend::Postgres {
            return Err(invalid(
                "storage.ca_file",
                "ca_file is the PostgreSQL server's CA, for backend = \"postgres\"",
            ));
        }
        if storage.lease < Duration::from_secs(1) {
            return Err(invalid("storage.lease", "use at least 1s"));
        }
        if storage.pool_size < 2 {
            return Err(invalid(
                "storage.pool_size",
                "use at least 2 (intake and delivery each hold a connection)",
            ));
        }
        Ok(())
    }

    /// `[plugins]`: the per-call limits leave a plugin room to run.
    fn validate_plugin_limits(plugins: &PluginsConfig) -> Result<(), ConfigError> {
        if plugins.max_memory_bytes < 1024 * 1024 {
            return Err(invalid(
                "plugins.max_memory_bytes",
                "must be at least 1 MiB",
            ));
        }
        if plugins.deadline.is_zero() {
            return Err(invalid("plugins.deadline", "must be greater than 0"));
        }
        if plugins.max_concurrent_calls == Some(0) {
            return Err(invalid(
                "plugins.max_concurrent_calls",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// Every `[sources.NAME]`, in name order; no two sources share a path.
    fn validate_sources(&self) -> Result<(), ConfigError> {
        let mut paths = HashSet::new();
        for (name, source) in &self.sources {
            self.validate_source(name, source, &mut paths)?;
        }
        Ok(())
    }

    /// One `[sources.NAME]`: its name, path (not in `paths`, which it joins), verify, respond,
    /// plugin names and sinks (each one defined in `[sinks]`).
    fn validate_source<'a>(
        &self,
        name: &str,
        source: &'a SourceConfig,
        paths: &mut HashSet<&'a str>,
    ) -> Result<(), ConfigError> {
        let key = |field: &str| format!("sources.{name}.{field}");
        check_name(name, &format!("sources.{name}"))?;
        if !source.path.starts_with('/') {
            return Err(invalid(key("path"), "must start with '/'"));
        }
        if !paths.insert(source.path.as_str()) {
            return Err(invalid(
                key("path"),
                format!("{} is used by another source", source.path),
            ));
        }
        source.verify.validate(&key("verify"))?;
        if let Some(respond) = &source.respond {
            Self::validate_respond(respond, &key)?;
        }
        for plugin in &source.plugins {
            check_name(plugin, &key("plugins"))?;
        }
        if let Some(sink) = source.sinks.iter().find(|s| !self.sinks.contains_key(*s)) {
            return Err(invalid(
                key("sinks"),
                format!("no sink named `{sink}` in [sinks]"),
            ));
        }
        if source.sinks.is_empty() && source.plugins.is_empty() {
            return Err(invalid(
                key("sinks"),
                "a source without plugins needs at least one sink",
            ));
        }
        if source.max_body_bytes == Some(0) {
            return Err(invalid(key("max_body_bytes"), "must be greater than 0"));
        }
        intake::validate_source(source, &key)
    }

    /// A source's `respond`: an answer a webhook provider accepts, whose parts fit together.
    fn validate_respond(
        respond: &RespondConfig,
        key: &dyn Fn(&str) -> String,
    ) -> Result<(), ConfigError> {
        if ![200, 202, 204].contains(&respond.status) {
            return Err(invalid(key("respond.status"), "must be 200, 202 or 204"));
        }
        if respond.status == 204 && respond.body.is_some() {
            return Err(invalid(key("respond.body"), "a 204 answer has no body"));
        }
        if respond.content_type.is_some() && respond.body.is_none() {
            return Err(invalid(key("respond.content_type"), "needs `body`"));
        }
        if let Some(ct) = &respond.content_type
            && http::HeaderValue::from_str(ct).is_err()
        {
            return Err(invalid(key("respond.content_type"), "not a header value"));
        }
        Ok(())
    }

    /// Every `[sinks.NAME]`: a safe name, then the kind's own checks.
    fn validate_sinks(&self) -> Result<(), ConfigError> {
        for (name, sink) in &self.sinks {
            check_name(name, &format!("sinks.{name}"))?;
            sink::validate(name, sink)?;
        }
        Ok(())
    }

    /// Resolves every secret once, so a missing variable or file fails at start-up.
    pub fn check_secrets(&self) -> Result<(), ConfigError> {
        for (name, source) in &self.sources {
            let key = format!("sources.{name}.verify.secrets");
            for s in &source.verify.secrets {
                let secret = s.resolve(&self.base_dir, &key)?;
                source.verify.check_secret(&secret, &key)?;
            }
        }
        if let Some(AdminConfig { token: Some(t), .. }) = &self.admin {
            t.resolve(&self.base_dir, "admin.token")?;
        }
        if let Some(url) = &self.storage.redis {
            url.resolve(&self.base_dir, "storage.redis")?;
        }
        if let Some(url) = &self.storage.url {
            url.resolve(&self.base_dir, "storage.url")?;
        }
        for (name, sink) in &self.sinks {
            sink::check_secrets(name, sink, &self.base_dir)?;
        }
        Ok(())
    }

    /// Every plugin name used by some source, in a stable order.
    pub fn plugin_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .sources
            .values()
            .flat_map(|s| s.plugins.iter().cloned())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

/// "line L, column C: message" — without toml's source excerpt, which would echo a literal
/// secret written on the offending line.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message.to_string(),
    }
}

/// Names become file names and metric labels: keep them to a safe alphabet.
fn check_name(name: &str, key: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("`{name}` is not a valid name (use 1-64 of a-z, A-Z, 0-9, '-', '_')"),
        ))
    }
}

#[cfg(test)]
mod tests;
