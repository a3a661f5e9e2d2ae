//! Sender allowlists: `allow_ips` per source, with the client address taken from the one
//! forwarding header the trusted proxies write, and only when the direct peer is one of them.
//!
//! Forwarding headers are written by whoever sent the request, so they are believed only as
//! far as trusted proxies appended to them. A proxy appends to the header it writes
//! (`X-Forwarded-For` by default, `Forwarded` with `client_ip_header = "forwarded"`) and passes
//! the other through untouched, so only the configured header is read: a client's own
//! `Forwarded: for=<allowed address>` behind a proxy that appends `X-Forwarded-For` is ignored.
//! The chain is read from the right (the hop nearest to us): with `trusted_hops = N` the client
//! is the entry N places from the right (Envoy's `xff_num_trusted_hops`), else the first entry
//! that is not a trusted proxy (nginx's `real_ip_recursive`). A hop that is not an address
//! (`unknown`, an obfuscated node, garbage, an element with two `for=`), or fewer entries than
//! `trusted_hops`, means the client cannot be known, and the request is refused rather than
//! guessed at.

use std::net::IpAddr;

use ipnet::IpNet;

use super::{Diagnostic, VerifyError, parse};
use crate::config::ClientIpHeader;
use crate::event::InboundRequest;

/// Which peers' forwarding headers are believed, and how (`[server] trusted_proxies`,
/// `client_ip_header`, `trusted_hops`).
#[derive(Debug, Clone, Default)]
pub struct ProxyTrust {
    /// `trusted_proxies`: peers whose forwarding header is believed.
    pub trusted: Vec<IpNet>,
    /// `client_ip_header`: `X-Forwarded-For` or `Forwarded`.
    pub header: ClientIpHeader,
    /// `trusted_hops`: take the address this many hops from the end of the chain instead of
    /// walking past trusted addresses.
    pub hops: Option<usize>,
}

impl ProxyTrust {
    /// Trusts `trusted`'s `X-Forwarded-For`, walking past every trusted hop.
    pub fn proxies(trusted: Vec<IpNet>) -> ProxyTrust {
        ProxyTrust {
            trusted,
            ..ProxyTrust::default()
        }
    }

    fn is_trusted(&self, ip: &IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(ip))
    }
}

/// The client address of a request that arrived from `peer` with `headers`.
/// `None` when a trusted proxy forwarded a chain the client cannot be read from.
pub fn client_ip(peer: IpAddr, headers: &[(String, String)], trust: &ProxyTrust) -> Option<IpAddr> {
    let peer = peer.to_canonical();
    if !trust.is_trusted(&peer) {
        return Some(peer);
    }
    let values = |name: &'static str| {
        headers
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    // Repeated headers are one list, in order.
    let hops: Vec<Option<IpAddr>> = match trust.header {
        ClientIpHeader::XForwardedFor => values("x-forwarded-for")
            .flat_map(parse::x_forwarded_for)
            .collect(),
        ClientIpHeader::Forwarded => values("forwarded").flat_map(parse::forwarded_for).collect(),
    };
    if let Some(n) = trust.hops {
        return match n {
            0 => Some(peer),
            n if n > hops.len() => None,
            n => hops[hops.len() - n],
        };
    }
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop {
            None => return None,
            Some(ip) if trust.is_trusted(ip) => client = *ip,
            Some(ip) => return Some(*ip),
        }
    }
    Some(client)
}

/// A source's `allow_ips`, with the server's trusted proxies.
#[derive(Debug, Clone)]
pub(crate) struct IpPolicy {
    pub allow: Vec<IpNet>,
    pub trust: ProxyTrust,
}

impl IpPolicy {
    pub(crate) fn check(
        &self,
        request: &InboundRequest,
        diag: &mut Diagnostic,
    ) -> Result<(), VerifyError> {
        let client = client_ip(request.remote.ip(), &request.headers, &self.trust);
        diag.client_ip = client.map(|ip| ip.to_string());
        match client {
            Some(ip) if self.allow.iter().any(|net| net.contains(&ip)) => Ok(()),
            Some(ip) => Err(VerifyError::IpNotAllowed {
                client: ip.to_string(),
            }),
            None => Err(VerifyError::IpNotAllowed {
                client:
                    "unknown (a trusted proxy forwarded a chain the client cannot be read from)"
                        .into(),
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

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarding_headers_count_only_from_trusted_proxies() {
        let trusted = ProxyTrust::proxies(nets(&["10.0.0.0/8"]));
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

    #[test]
    fn only_the_configured_header_is_read() {
        // The bypass: the proxy appends X-Forwarded-For and passes the client's own
        // Forwarded through. The Forwarded value must not be believed.
        let forged = h(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("forwarded", "for=192.0.2.5"),
        ]);
        let xff = ProxyTrust::proxies(nets(&["127.0.0.1/32"]));
        assert_eq!(
            client_ip(ip("127.0.0.1"), &forged, &xff),
            Some(ip("203.0.113.9"))
        );
        let fwd = ProxyTrust {
            header: ClientIpHeader::Forwarded,
            ..ProxyTrust::proxies(nets(&["10.0.0.0/8"]))
        };
        let both = h(&[
            ("forwarded", "for=198.51.100.1"),
            ("forwarded", "for=\"[2001:db8::7]:1234\";proto=https"),
            ("x-forwarded-for", "192.0.2.200"),
        ]);
        assert_eq!(
            client_ip(ip("10.0.0.3"), &both, &fwd),
            Some(ip("2001:db8::7"))
        );
        // An element naming two clients is ambiguous: refused.
        let twice = h(&[("forwarded", "for=192.0.2.5;for=198.51.100.1")]);
        assert_eq!(client_ip(ip("10.0.0.3"), &twice, &fwd), None);
    }

    #[test]
    fn trusted_hops_count_entries_from_the_right() {
        let trust = |hops| ProxyTrust {
            hops: Some(hops),
            ..ProxyTrust::proxies(nets(&["127.0.0.1/32"]))
        };
        let chain = h(&[("x-forwarded-for", "192.0.2.5, 203.0.113.9, 198.51.100.7")]);
        // One proxy in front: it appended the address it saw, the rightmost entry.
        assert_eq!(
            client_ip(ip("127.0.0.1"), &chain, &trust(1)),
            Some(ip("198.51.100.7"))
        );
        assert_eq!(
            client_ip(ip("127.0.0.1"), &chain, &trust(2)),
            Some(ip("203.0.113.9"))
        );
        assert_eq!(
            client_ip(ip("127.0.0.1"), &chain, &trust(0)),
            Some(ip("127.0.0.1"))
        );
        // Fewer entries than trusted proxies wrote: something is wrong, refuse.
        assert_eq!(client_ip(ip("127.0.0.1"), &chain, &trust(4)), None);
        assert_eq!(client_ip(ip("127.0.0.1"), &[], &trust(1)), None);
    }
}
