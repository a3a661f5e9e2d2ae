//! Sender allowlists: `allow_ips` per source, with the client address taken from
//! `Forwarded` / `X-Forwarded-For` only when the direct peer is a trusted proxy.
//!
//! Forwarding headers are written by whoever sent the request, so they are believed only as
//! far as trusted proxies appended to them: the chain is walked from the right (the hop
//! nearest to us), skipping trusted proxies; the first other hop is the client. A hop that is
//! not an address (`unknown`, an obfuscated node, garbage) means the client cannot be known,
//! and the request is refused rather than guessed at.

use std::net::IpAddr;

use ipnet::IpNet;

use super::{Diagnostic, VerifyError, parse};
use crate::server::InboundRequest;

/// The client address of a request that arrived from `peer` with `headers`.
/// `None` when a trusted proxy forwarded a client address that cannot be parsed.
pub fn client_ip(peer: IpAddr, headers: &[(String, String)], trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let values = |name: &'static str| {
        headers
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    // RFC 7239 `Forwarded` when present; else the de-facto `X-Forwarded-For`. Repeated
    // headers are one list, in order.
    let mut hops: Vec<Option<IpAddr>> =
        values("forwarded").flat_map(parse::forwarded_for).collect();
    if hops.is_empty() {
        hops = values("x-forwarded-for")
            .flat_map(parse::x_forwarded_for)
            .collect();
    }
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop {
            None => return None,
            Some(ip) if is_trusted(ip) => client = *ip,
            Some(ip) => return Some(*ip),
        }
    }
    Some(client)
}

/// A source's `allow_ips`, with the server's trusted proxies.
#[derive(Debug, Clone)]
pub(crate) struct IpPolicy {
    pub allow: Vec<IpNet>,
    pub trusted: Vec<IpNet>,
}

impl IpPolicy {
    pub(crate) fn check(
        &self,
        request: &InboundRequest,
        diag: &mut Diagnostic,
    ) -> Result<(), VerifyError> {
        let client = client_ip(request.remote.ip(), &request.headers, &self.trusted);
        diag.client_ip = client.map(|ip| ip.to_string());
        match client {
            Some(ip) if self.allow.iter().any(|net| net.contains(&ip)) => Ok(()),
            Some(ip) => Err(VerifyError::IpNotAllowed {
                client: ip.to_string(),
            }),
            None => Err(VerifyError::IpNotAllowed {
                client: "unknown (a trusted proxy forwarded an unparseable address)".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn forwarding_headers_count_only_from_trusted_proxies() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let trusted = nets(&["10.0.0.0/8"]);
        let xff = h(&[("x-forwarded-for", "198.51.100.1, 203.0.113.9, 10.0.0.2")]);
        // An untrusted peer's headers are ignored.
        assert_eq!(
            client_ip(ip("192.0.2.1"), &xff, &trusted),
            Some(ip("192.0.2.1"))
        );
        // From a trusted proxy: the rightmost untrusted hop, not the spoofable leftmost.
        assert_eq!(
            client_ip(ip("10.0.0.3"), &xff, &trusted),
            Some(ip("203.0.113.9"))
        );
        let fwd = h(&[
            ("forwarded", "for=198.51.100.1"),
            ("forwarded", "for=\"[2001:db8::7]:1234\";proto=https"),
            ("x-forwarded-for", "192.0.2.200"),
        ]);
        assert_eq!(
            client_ip(ip("10.0.0.3"), &fwd, &trusted),
            Some(ip("2001:db8::7"))
        );
        let broken = h(&[("x-forwarded-for", "203.0.113.9, unknown")]);
        assert_eq!(client_ip(ip("10.0.0.3"), &broken, &trusted), None);
        let all_trusted = h(&[("x-forwarded-for", "10.1.1.1, 10.2.2.2")]);
        assert_eq!(
            client_ip(ip("10.0.0.3"), &all_trusted, &trusted),
            Some(ip("10.1.1.1"))
        );
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.3"), &[], &trusted),
            Some(ip("10.0.0.3"))
        );
    }
}
