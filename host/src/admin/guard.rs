//! The admin listener's guard against browsers: checks every request passes before any route.
//!
//! A browser lets any page it shows send requests to `127.0.0.1:9090`, and a page whose DNS
//! name has been rebound to 127.0.0.1 can even read the answers. So, in this order:
//!
//! - Without `[admin] token`, the `Host` must be one of the listener's own names ([`Names`]:
//!   its bound address, `localhost`/`127.0.0.1`/`[::1]` on its port, `[admin] allowed_hosts`),
//!   on every route, the dashboard included: 421 `misdirected_request` otherwise. A rebound
//!   name arrives as the attacker's own `Host`. With a token, the token is what protects the
//!   listener (a page cannot attach it), and any `Host` is served.
//! - A state-changing request (any method but GET and HEAD) must not come from another page:
//!   an `Origin` that is neither one of the names nor the request's own `Host` (same origin),
//!   or `Sec-Fetch-Site: cross-site | same-site`, is 403 `cross_origin`. Non-browser clients
//!   (the CLI, curl) send neither header and pass.
//! - A state-changing request must say `Content-Type: application/json`, body or not: 415
//!   `unsupported_media_type` otherwise. A page can send `text/plain`, form and multipart
//!   bodies without a CORS preflight, but not JSON, and this listener grants no preflight.
//!
//! The checks are pure functions of the method and headers, so they are unit-tested here; the
//! end-to-end test is `tests/e2e/trust_admin.rs`.

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, ORIGIN};
use http::uri::Authority;
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::Full;

use crate::server::respond;

/// The port a `Host` without one means: the admin listener speaks plain HTTP.
const DEFAULT_HOST_PORT: u16 = 80;

/// Names every loopback listener answers to, on its own port.
const LOOPBACK_NAMES: &[&str] = &["localhost", "127.0.0.1", "[::1]"];

/// Why the guard refused a request before any route saw it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No token is set and the `Host` is not one of the listener's names (DNS rebinding).
    #[error("the Host header does not name this admin listener")]
    HostNotAllowed,
    /// A state-changing request from another page (`Origin` or `Sec-Fetch-Site`).
    #[error("state-changing admin requests are refused from another site")]
    CrossOrigin,
    /// A state-changing request without `Content-Type: application/json`.
    #[error("state-changing admin requests need Content-Type: application/json")]
    NotJson,
}

impl Refusal {
    /// Stable machine-readable code for the response.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::HostNotAllowed => "misdirected_request",
            Refusal::CrossOrigin => "cross_origin",
            Refusal::NotJson => "unsupported_media_type",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Refusal::HostNotAllowed => StatusCode::MISDIRECTED_REQUEST,
            Refusal::CrossOrigin => StatusCode::FORBIDDEN,
            Refusal::NotJson => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        }
    }

    /// `{"error": code, "message": …}` with the refusal's status.
    pub fn response(&self) -> Response<Full<Bytes>> {
        respond::error(self.status(), self.code(), &self.to_string())
    }
}

/// One name the listener answers to: a lowercase host (IPv6 in brackets) and a port, `None`
/// for any port.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Name {
    host: String,
    port: Option<u16>,
}

impl Name {
    fn matches(&self, host: &str, port: u16) -> bool {
        self.host.eq_ignore_ascii_case(host) && self.port.is_none_or(|p| p == port)
    }
}

/// The listener's own names; empty (every `Host` refused without a token) until
/// [`Names::new`] is given the bound address.
#[derive(Debug, Clone, Default)]
pub struct Names(Vec<Name>);

impl Names {
    /// `bound` and the loopback names on its port, then `allowed` (`host` or `host:port`,
    /// checked by the config; an entry that does not parse is skipped).
    pub fn new(bound: SocketAddr, allowed: &[String]) -> Names {
        let port = bound.port();
        let mut names: Vec<Name> = LOOPBACK_NAMES
            .iter()
            .map(|h| h.to_string())
            .chain([bound.to_string()])
            .filter_map(|a| parse_authority(&a))
            .map(|(host, _)| Name {
                host,
                port: Some(port),
            })
            .collect();
        names.extend(allowed.iter().filter_map(|a| {
            let (host, port) = parse_authority(a)?;
            Some(Name { host, port })
        }));
        names.dedup();
        Names(names)
    }

    fn contains(&self, host: &str, port: u16) -> bool {
        self.0.iter().any(|n| n.matches(host, port))
    }

    /// Runs the checks in the module's order; `check_host` is true when no token is set.
    pub fn check(
        &self,
        method: &Method,
        headers: &HeaderMap,
        check_host: bool,
    ) -> Result<(), Refusal> {
        let host = headers.get(HOST).and_then(|v| v.to_str().ok());
        if check_host && !host.is_some_and(|h| self.host_allowed(h)) {
            return Err(Refusal::HostNotAllowed);
        }
        if *method == Method::GET || *method == Method::HEAD {
            return Ok(());
        }
        let fetch_site = headers.get("sec-fetch-site").map(|v| v.as_bytes());
        if matches!(fetch_site, Some(b"cross-site" | b"same-site")) {
            return Err(Refusal::CrossOrigin);
        }
        if let Some(origin) = headers.get(ORIGIN)
            && !self.origin_allowed(origin.to_str().unwrap_or(""), host)
        {
            return Err(Refusal::CrossOrigin);
        }
        let json = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_json);
        if json { Ok(()) } else { Err(Refusal::NotJson) }
    }

    fn host_allowed(&self, host: &str) -> bool {
        parse_authority(host)
            .is_some_and(|(h, port)| self.contains(&h, port.unwrap_or(DEFAULT_HOST_PORT)))
    }

    /// `origin` (`scheme://host[:port]`, as browsers send it) is one of the names, or the
    /// same authority as the request's `host`. `null` and anything unparsable are foreign.
    fn origin_allowed(&self, origin: &str, host: Option<&str>) -> bool {
        let (default_port, authority) = if let Some(a) = origin.strip_prefix("http://") {
            (80, a)
        } else if let Some(a) = origin.strip_prefix("https://") {
            (443, a)
        } else {
            return false;
        };
        let Some((h, port)) = parse_authority(authority) else {
            return false;
        };
        host.is_some_and(|host| host.eq_ignore_ascii_case(authority))
            || self.contains(&h, port.unwrap_or(default_port))
    }
}

/// `host[:port]` as `(lowercase host, port)`; `None` for anything else (a path, user info).
fn parse_authority(text: &str) -> Option<(String, Option<u16>)> {
    if text.contains(['@', '/']) {
        return None;
    }
    let authority: Authority = text.parse().ok()?;
    let host = authority.host();
    // A port, when given, is a number (`http` accepts `host:x`).
    let port_ok = authority.as_str().len() == host.len() || authority.port_u16().is_some();
    if host.is_empty() || !port_ok {
        return None;
    }
    Some((host.to_ascii_lowercase(), authority.port_u16()))
}

/// `application/json`, with or without parameters (`; charset=utf-8`).
fn is_json(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

#[cfg(test)]
mod tests;
