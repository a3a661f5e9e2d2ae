//! Header parsers: pure functions from untrusted text to values, each a fuzz target
//! (`host/fuzz`). None of them allocates in proportion to anything but its input, and none
//! panics on any input (the fuzz targets and the corpus replay test hold them to that).

use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::config::{Delimiter, SignatureEncoding};

/// A signature header longer than this is refused unread: no scheme needs more, and parsing
/// a megabyte of hex per request is a cheap way to burn our CPU.
pub const MAX_SIGNATURE_HEADER_BYTES: usize = 8 * 1024;
/// Unix times with more digits than this are not times (and would overflow in milliseconds).
const MAX_TIMESTAMP_DIGITS: usize = 16;

/// Why a signature header cannot hold a signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Malformed {
    /// Longer than [`MAX_SIGNATURE_HEADER_BYTES`] (its length).
    TooLong(usize),
    /// Empty or only whitespace, or nothing after the prefix.
    Empty,
    /// A single signature without the scheme's prefix (the prefix).
    MissingPrefix(String),
    /// A list in which no entry has the signature's prefix.
    NoEntry {
        /// The prefix looked for.
        prefix: String,
        /// How many entries the list had.
        entries: usize,
    },
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Malformed::TooLong(n) => write!(
                f,
                "{n} bytes, longer than the {MAX_SIGNATURE_HEADER_BYTES} a signature header may have"
            ),
            Malformed::Empty => f.write_str("empty"),
            Malformed::MissingPrefix(p) => write!(f, "expected it to start with {p:?}"),
            Malformed::NoEntry { prefix, entries } => {
                write!(f, "none of its {entries} entries starts with {prefix:?}")
            }
        }
    }
}

fn strip_prefix_ignore_case<'a>(value: &'a str, prefix: &str) -> Option<&'a str> {
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &value[prefix.len()..])
}

fn entries(value: &str, delimiter: Delimiter) -> impl Iterator<Item = &str> {
    value
        .split(delimiter.char())
        .map(str::trim)
        .filter(|e| !e.is_empty())
}

/// The signatures in a signature header, still encoded.
///
/// Without a delimiter the whole value (after `prefix`) is one signature. With one, the value
/// is a list of entries; those starting with `prefix` are signatures and the others (other
/// versions, `t=` timestamps) are skipped, as every provider's reference library does.
pub fn signatures<'a>(
    value: &'a str,
    delimiter: Option<Delimiter>,
    prefix: &str,
) -> Result<Vec<&'a str>, Malformed> {
    if value.len() > MAX_SIGNATURE_HEADER_BYTES {
        return Err(Malformed::TooLong(value.len()));
    }
    let value = value.trim();
    if value.is_empty() {
        return Err(Malformed::Empty);
    }
    match delimiter {
        None => match strip_prefix_ignore_case(value, prefix) {
            Some("") => Err(Malformed::Empty),
            Some(sig) => Ok(vec![sig.trim()]),
            None => Err(Malformed::MissingPrefix(prefix.to_string())),
        },
        Some(d) => {
            let mut count = 0;
            let found: Vec<&str> = entries(value, d)
                .inspect(|_| count += 1)
                .filter_map(|e| strip_prefix_ignore_case(e, prefix))
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            if found.is_empty() {
                Err(Malformed::NoEntry {
                    prefix: prefix.to_string(),
                    entries: count,
                })
            } else {
                Ok(found)
            }
        }
    }
}

/// The first entry of a delimited header that starts with `prefix`, without the prefix
/// (Stripe's `t=`, Paddle's `ts=`).
pub fn entry<'a>(value: &'a str, delimiter: Delimiter, prefix: &str) -> Option<&'a str> {
    if value.len() > MAX_SIGNATURE_HEADER_BYTES {
        return None;
    }
    entries(value, delimiter).find_map(|e| strip_prefix_ignore_case(e, prefix))
}

/// Decodes one signature; `len` is the MAC length the algorithm produces.
pub fn decode_signature(
    text: &str,
    encoding: SignatureEncoding,
    len: usize,
) -> Result<Vec<u8>, String> {
    let bytes = match encoding {
        SignatureEncoding::Hex => hex::decode(text).map_err(|_| "not hex".to_string())?,
        SignatureEncoding::Base64 => BASE64.decode(text).map_err(|_| "not base64".to_string())?,
    };
    if bytes.len() != len {
        return Err(format!("{} bytes where the MAC has {len}", bytes.len()));
    }
    Ok(bytes)
}

/// A Unix time written as decimal digits, as providers send it (no sign, no fraction).
pub fn unix_time(text: &str) -> Option<i64> {
    let text = text.trim();
    if text.is_empty()
        || text.len() > MAX_TIMESTAMP_DIGITS
        || !text.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    text.parse().ok()
}

/// Credentials in an `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization<'a> {
    /// `Bearer <token>`: the token.
    Bearer(&'a str),
    /// User and password; both may be any bytes (RFC 7617 leaves the charset to the server).
    Basic(Vec<u8>, Vec<u8>),
    /// Another scheme, or a Basic value that is not base64 of `user:password`.
    Other,
}

/// Parses `Authorization: <scheme> <credentials>`; the scheme name is case-insensitive.
pub fn authorization(value: &str) -> Authorization<'_> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
        Authorization::Bearer(rest)
    } else if scheme.eq_ignore_ascii_case("basic") {
        let Ok(decoded) = BASE64.decode(rest) else {
            return Authorization::Other;
        };
        match decoded.iter().position(|b| *b == b':') {
            Some(i) => Authorization::Basic(decoded[..i].to_vec(), decoded[i + 1..].to_vec()),
            None => Authorization::Other,
        }
    } else {
        Authorization::Other
    }
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]:80`,
/// optionally quoted. IPv4-mapped IPv6 addresses become IPv4.
pub fn node_address(text: &str) -> Option<IpAddr> {
    let text = text.trim().trim_matches('"');
    let ip = if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        inside.parse().ok()?
    } else if let Ok(ip) = text.parse::<IpAddr>() {
        ip
    } else {
        let (host, port) = text.rsplit_once(':')?;
        if !is_port(port) {
            return None;
        }
        IpAddr::V4(host.parse().ok()?)
    };
    Some(ip.to_canonical())
}

fn is_port(text: &str) -> bool {
    !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit())
}

/// The hops of an `X-Forwarded-For` value, client first. An element that is not an address
/// (`unknown`, garbage) is `None`: the chain is broken there.
pub fn x_forwarded_for(value: &str) -> Vec<Option<IpAddr>> {
    value.split(',').map(node_address).collect()
}

/// The `for=` of each element of a `Forwarded` value (RFC 7239), client first. An element
/// without exactly one `for=`, or with an obfuscated or unknown node, is `None`.
pub fn forwarded_for(value: &str) -> Vec<Option<IpAddr>> {
    split_outside_quotes(value, ',')
        .into_iter()
        .map(|element| {
            let mut fors = split_outside_quotes(element, ';')
                .into_iter()
                .filter_map(|pair| pair.split_once('='))
                .filter(|(k, _)| k.trim().eq_ignore_ascii_case("for"));
            // Two `for=` in one element name two clients: ambiguous, so no address.
            match (fors.next(), fors.next()) {
                (Some((_, v)), None) => node_address(v),
                _ => None,
            }
        })
        .collect()
}

/// Splits on `sep` except inside double quotes (RFC 7239 quotes IPv6 nodes: `"[::1]:80"`).
fn split_outside_quotes(value: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    for (i, c) in value.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&value[start..]);
    parts
}

/// The body's `application/x-www-form-urlencoded` parameters, sorted by name then value (byte
/// order, i.e. Unicode code point order), each written as name followed by value: Twilio's
/// signed parameter string.
pub fn sorted_form_params(body: &[u8]) -> Vec<u8> {
    let mut params: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
    params.sort();
    let mut out = Vec::with_capacity(body.len());
    for (k, v) in params {
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    out
}

/// The value of query parameter `name` (decoded), if present.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_lists_skip_other_versions() {
        assert_eq!(
            signatures(
                "v1a,xyz v1,abc  v2,def v1,ghi",
                Some(Delimiter::Space),
                "v1,"
            ),
            Ok(vec!["abc", "ghi"])
        );
        assert_eq!(
            signatures("t=1,v1=aa,v0=bb,v1=cc", Some(Delimiter::Comma), "v1="),
            Ok(vec!["aa", "cc"])
        );
        assert_eq!(
            entry("ts=1671552777;h1=ab", Delimiter::Semicolon, "ts="),
            Some("1671552777")
        );
        assert_eq!(
            signatures("v2,abc", Some(Delimiter::Space), "v1,"),
            Err(Malformed::NoEntry {
                prefix: "v1,".into(),
                entries: 1
            })
        );
        assert_eq!(signatures("  ", None, ""), Err(Malformed::Empty));
        assert_eq!(signatures("SHA256=ab", None, "sha256="), Ok(vec!["ab"]));
        assert!(matches!(
            signatures(&"a".repeat(100_000), None, ""),
            Err(Malformed::TooLong(100_000))
        ));
    }

    #[test]
    fn timestamps_are_plain_digits() {
        assert_eq!(unix_time("1614265330"), Some(1_614_265_330));
        for bad in ["", "-1", "1.5", "1e9", "12345678901234567", "0x10", "１"] {
            assert_eq!(unix_time(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn authorization_schemes() {
        assert_eq!(authorization("Bearer abc"), Authorization::Bearer("abc"));
        assert_eq!(authorization("bearer  abc "), Authorization::Bearer("abc"));
        assert_eq!(
            authorization("Basic dXNlcjpwYTpzcw=="),
            Authorization::Basic(b"user".to_vec(), b"pa:ss".to_vec())
        );
        assert_eq!(authorization("Basic dXNlcg=="), Authorization::Other);
        assert_eq!(authorization("Basic !!"), Authorization::Other);
        assert_eq!(authorization("Token x"), Authorization::Other);
        assert_eq!(authorization("Bearer"), Authorization::Other);
    }

    #[test]
    fn forwarding_headers() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(
            x_forwarded_for("203.0.113.7, 10.0.0.1:8080 ,unknown, [2001:db8::1]:443"),
            vec![ip("203.0.113.7"), ip("10.0.0.1"), None, ip("2001:db8::1")]
        );
        assert_eq!(
            forwarded_for(
                "for=192.0.2.60;proto=http;by=203.0.113.43, For=\"[2001:db8:cafe::17]:4711\", for=_hidden, proto=https"
            ),
            vec![ip("192.0.2.60"), ip("2001:db8:cafe::17"), None, None]
        );
        assert_eq!(node_address("::ffff:192.0.2.1"), ip("192.0.2.1"));
        assert_eq!(node_address("[::1]x"), None);
    }

    #[test]
    fn form_params_sort_by_name_then_value() {
        assert_eq!(
            sorted_form_params(b"To=%2B1800&From=%2B1234&A=2&A=1&Body=hi+there"),
            b"A1A2Bodyhi thereFrom+1234To+1800".to_vec()
        );
        assert_eq!(
            query_param("a=1&bodySHA256=ab%63", "bodySHA256"),
            Some("abc".into())
        );
    }
}
