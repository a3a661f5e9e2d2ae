//! Edge settings: `[server.tls]` (TLS termination, optional client certificates) and
//! `[server.limits]` (what one client may cost the server), plus the rule that an admin
//! listener reachable from other hosts must have a token.
//!
//! Every limit has a safe default, so a config without `[server.limits]` is already hardened;
//! the server stage ([`crate::server::edge`]) applies them.
//!
//! ```toml
//! [server.tls]
//! cert = "/etc/hookwall/tls/cert.pem"     # PEM chain, leaf first; re-read when it changes
//! key = "/etc/hookwall/tls/key.pem"       # PEM private key (PKCS#8, PKCS#1 or SEC1)
//! client_ca = "/etc/hookwall/tls/ca.pem"  # optional: require a client certificate from this CA
//!
//! [server.limits]
//! max_connections = 10000
//! header_read_timeout = "10s"
//! body_read_timeout = "60s"
//! body_min_rate = 1024
//! body_rate_grace = "5s"
//! idle_timeout = "60s"
//! max_headers = 100
//! max_header_bytes = 16384
//! h2_max_concurrent_streams = 100
//! h2_max_pending_reset_streams = 20
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{AdminConfig, ConfigError, invalid};

/// Connections served at once; more are accepted and closed at once (not queued).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Time for the TLS handshake and for a request's line and headers.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for a whole request body.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes per second a body must keep up after the grace period.
pub const DEFAULT_BODY_MIN_RATE: u64 = 1024;
/// Time a body may take before the minimum rate applies.
pub const DEFAULT_BODY_RATE_GRACE: Duration = Duration::from_secs(5);
/// A connection with no request in flight is closed after this long.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Header fields per request.
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Bytes of request line and headers (HTTP/1) or of the header list (HTTP/2).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// HTTP/2 streams one connection may have open at once.
pub const DEFAULT_H2_MAX_CONCURRENT_STREAMS: u32 = 100;
/// HTTP/2 streams a client may open and reset before they are served (rapid-reset attacks).
pub const DEFAULT_H2_MAX_PENDING_RESET_STREAMS: usize = 20;
/// More connections than this would exceed any file-descriptor limit anyway.
const MAX_CONNECTIONS_CAP: usize = 1_000_000;
/// hyper's HTTP/1 read buffer cannot be smaller than this.
const MIN_HEADER_BYTES: usize = 8192;

/// `[server.tls]`: terminate TLS (1.2 and 1.3, ALPN `h2` and `http/1.1`) on the webhook listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// `cert = "tls/cert.pem"`: certificate chain (PEM, leaf first). Re-read when it changes.
    pub cert: PathBuf,
    /// `key = "tls/key.pem"`: the certificate's private key (PEM). Re-read when it changes.
    pub key: PathBuf,
    /// `client_ca = "tls/clients.pem"`: when set, clients must present a certificate issued by
    /// one of these CAs (mutual TLS); others fail the handshake.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// `[server.limits]`: what one client may cost. See the module docs for the TOML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// `max_connections = 10000`: open connections at once; beyond it a new connection is
    /// accepted and closed immediately (not queued, so a flood cannot pile up in the backlog).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// `header_read_timeout = "10s"`: the TLS handshake, and each request's line and headers,
    /// must arrive within this (a slowloris client is cut off).
    #[serde(default = "default_header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// `body_read_timeout = "60s"`: a whole request body must arrive within this (408).
    #[serde(default = "default_body_read_timeout", with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// `body_min_rate = 1024`: after `body_rate_grace`, a body must average at least this many
    /// bytes per second (408 otherwise). 0 turns the rate check off.
    #[serde(default = "default_body_min_rate")]
    pub body_min_rate: u64,
    /// `body_rate_grace = "5s"`: how long a body may take before `body_min_rate` applies.
    #[serde(default = "default_body_rate_grace", with = "humantime_serde")]
    pub body_rate_grace: Duration,
    /// `idle_timeout = "60s"`: a connection with no request in flight is closed after this long
    /// (keep-alive connections, and connections that never send a request).
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// `max_headers = 100`: header fields per request (431 beyond).
    #[serde(default = "default_max_headers")]
    pub max_headers: usize,
    /// `max_header_bytes = 16384`: request line and headers (HTTP/1; 431 beyond) or the header
    /// list (HTTP/2). At least 8192.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// `h2_max_concurrent_streams = 100`: HTTP/2 requests in flight per connection.
    #[serde(default = "default_h2_max_concurrent_streams")]
    pub h2_max_concurrent_streams: u32,
    /// `h2_max_pending_reset_streams = 20`: HTTP/2 streams a client may reset before they are
    /// served; beyond it the connection is closed (rapid reset, CVE-2023-44487).
    #[serde(default = "default_h2_max_pending_reset_streams")]
    pub h2_max_pending_reset_streams: usize,
}

fn default_max_connections() -> usize {
    DEFAULT_MAX_CONNECTIONS
}
fn default_header_read_timeout() -> Duration {
    DEFAULT_HEADER_READ_TIMEOUT
}
fn default_body_read_timeout() -> Duration {
    DEFAULT_BODY_READ_TIMEOUT
}
fn default_body_min_rate() -> u64 {
    DEFAULT_BODY_MIN_RATE
}
fn default_body_rate_grace() -> Duration {
    DEFAULT_BODY_RATE_GRACE
}
fn default_idle_timeout() -> Duration {
    DEFAULT_IDLE_TIMEOUT
}
fn default_max_headers() -> usize {
    DEFAULT_MAX_HEADERS
}
fn default_max_header_bytes() -> usize {
    DEFAULT_MAX_HEADER_BYTES
}
fn default_h2_max_concurrent_streams() -> u32 {
    DEFAULT_H2_MAX_CONCURRENT_STREAMS
}
fn default_h2_max_pending_reset_streams() -> usize {
    DEFAULT_H2_MAX_PENDING_RESET_STREAMS
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            body_min_rate: DEFAULT_BODY_MIN_RATE,
            body_rate_grace: DEFAULT_BODY_RATE_GRACE,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_headers: DEFAULT_MAX_HEADERS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            h2_max_concurrent_streams: DEFAULT_H2_MAX_CONCURRENT_STREAMS,
            h2_max_pending_reset_streams: DEFAULT_H2_MAX_PENDING_RESET_STREAMS,
        }
    }
}

/// Checks `[server.limits]`, `[server.tls]` and the admin token rule.
pub(super) fn validate(
    limits: &LimitsConfig,
    tls: Option<&TlsConfig>,
    admin: Option<&AdminConfig>,
) -> Result<(), ConfigError> {
    let key = |k: &str| format!("server.limits.{k}");
    if limits.max_connections == 0 || limits.max_connections > MAX_CONNECTIONS_CAP {
        return Err(invalid(
            key("max_connections"),
            format!("must be between 1 and {MAX_CONNECTIONS_CAP}"),
        ));
    }
    for (name, value) in [
        ("header_read_timeout", limits.header_read_timeout),
        ("body_read_timeout", limits.body_read_timeout),
        ("idle_timeout", limits.idle_timeout),
    ] {
        if value.is_zero() {
            return Err(invalid(key(name), "must be greater than 0"));
        }
    }
    if limits.max_headers == 0 {
        return Err(invalid(key("max_headers"), "must be greater than 0"));
    }
    if limits.max_header_bytes < MIN_HEADER_BYTES {
        return Err(invalid(
            key("max_header_bytes"),
            format!("must be at least {MIN_HEADER_BYTES}"),
        ));
    }
    if limits.h2_max_concurrent_streams == 0 {
        return Err(invalid(
            key("h2_max_concurrent_streams"),
            "must be greater than 0",
        ));
    }
    if let Some(tls) = tls {
        for (name, path) in [("cert", &tls.cert), ("key", &tls.key)] {
            if path.as_os_str().is_empty() {
                return Err(invalid(format!("server.tls.{name}"), "must not be empty"));
            }
        }
    }
    // Anyone who can reach an open admin API can replay and purge events.
    if let Some(admin) = admin
        && admin.token.is_none()
        && !admin.listen.ip().is_loopback()
    {
        return Err(invalid(
            "admin.token",
            format!(
                "required when admin.listen ({}) is not a loopback address",
                admin.listen
            ),
        ));
    }
    Ok(())
}

/// Makes the TLS paths absolute against the config file's directory.
pub(super) fn resolve_paths(tls: &mut TlsConfig, base: &std::path::Path) {
    for p in [&mut tls.cert, &mut tls.key]
        .into_iter()
        .chain(tls.client_ca.as_mut())
    {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::config::{Config, ConfigError};

    const SOURCE: &str = r#"
[sources.demo]
path = "/hooks/demo"
verify = { scheme = "none" }
sinks = ["out"]
[sinks.out]
type = "stdout"
"#;

    fn parse(head: &str) -> Result<Config, ConfigError> {
        Config::parse(&format!("{head}\n{SOURCE}"), Path::new("/etc/hookwall"))
    }

    fn bad_key(head: &str) -> String {
        match parse(head) {
            Err(ConfigError::Invalid { key, .. }) => key,
            Err(ConfigError::Parse { message, .. }) => message,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn every_key_parses_and_tls_paths_are_resolved() {
        let config = parse(
            r#"
[server.tls]
cert = "tls/cert.pem"
key = "/abs/key.pem"
client_ca = "tls/ca.pem"
[server.limits]
max_connections = 500
header_read_timeout = "3s"
body_read_timeout = "20s"
body_min_rate = 0
body_rate_grace = "2s"
idle_timeout = "30s"
max_headers = 50
max_header_bytes = 8192
h2_max_concurrent_streams = 10
h2_max_pending_reset_streams = 5
"#,
        )
        .unwrap();
        let tls = config.server.tls.unwrap();
        assert_eq!(tls.cert, Path::new("/etc/hookwall/tls/cert.pem"));
        assert_eq!(tls.key, Path::new("/abs/key.pem"));
        assert_eq!(
            tls.client_ca.as_deref(),
            Some(Path::new("/etc/hookwall/tls/ca.pem"))
        );
        let l = config.server.limits;
        assert_eq!(l.max_connections, 500);
        assert_eq!(l.header_read_timeout, Duration::from_secs(3));
        assert_eq!(l.body_min_rate, 0);
        assert_eq!(l.h2_max_pending_reset_streams, 5);
    }

    #[test]
    fn defaults_without_the_tables() {
        let config = parse("").unwrap();
        assert!(config.server.tls.is_none());
        let l = config.server.limits;
        assert_eq!(l.max_connections, super::DEFAULT_MAX_CONNECTIONS);
        assert_eq!(l.header_read_timeout, super::DEFAULT_HEADER_READ_TIMEOUT);
        assert_eq!(l.max_header_bytes, super::DEFAULT_MAX_HEADER_BYTES);
    }

    #[test]
    fn bad_values_name_their_key() {
        assert_eq!(
            bad_key("[server.limits]\nmax_connections = 0"),
            "server.limits.max_connections"
        );
        assert_eq!(
            bad_key("[server.limits]\nidle_timeout = \"0s\""),
            "server.limits.idle_timeout"
        );
        assert_eq!(
            bad_key("[server.limits]\nmax_header_bytes = 1024"),
            "server.limits.max_header_bytes"
        );
        assert!(bad_key("[server.limits]\nmax_conections = 5").contains("max_conections"));
        assert!(bad_key("[server.tls]\ncert = \"c.pem\"").contains("key"));
    }

    #[test]
    fn a_public_admin_listener_needs_a_token() {
        assert_eq!(bad_key("[admin]\nlisten = \"0.0.0.0:9090\""), "admin.token");
        assert!(parse("[admin]\nlisten = \"0.0.0.0:9090\"\ntoken = \"t\"").is_ok());
        assert!(parse("[admin]\nlisten = \"127.0.0.1:9090\"").is_ok());
        assert!(parse("[admin]\nlisten = \"[::1]:9090\"").is_ok());
    }
}
