//! What an HMAC covers: a template such as `{id}.{timestamp}.{body}`, parsed once at load.
//!
//! Placeholders: `{body}` (the raw body), `{id}` (the id header's value), `{timestamp}` (the
//! timestamp exactly as sent, not re-formatted), `{url}` (the public URL of the request:
//! `public_url` + path + `?query`), `{params}` (the body's form parameters sorted by name, each
//! name followed by its value, Twilio-style; empty when the URL carries `bodySHA256`).

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Part {
    Literal(Box<[u8]>),
    Body,
    Id,
    Timestamp,
    Url,
    Params,
}

/// A parsed signed-content template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    text: String,
    parts: Vec<Part>,
}

impl Template {
    pub(crate) fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            match rest.find('{') {
                Some(0) => {
                    let end = rest
                        .find('}')
                        .ok_or_else(|| format!("unclosed `{{` in {text:?}"))?;
                    parts.push(match &rest[1..end] {
                        "body" => Part::Body,
                        "id" => Part::Id,
                        "timestamp" => Part::Timestamp,
                        "url" => Part::Url,
                        "params" => Part::Params,
                        other => {
                            return Err(format!(
                                "unknown placeholder `{{{other}}}` (have {{body}}, {{id}}, \
                                 {{timestamp}}, {{url}}, {{params}})"
                            ));
                        }
                    });
                    rest = &rest[end + 1..];
                }
                Some(i) => {
                    parts.push(Part::Literal(rest.as_bytes()[..i].into()));
                    rest = &rest[i..];
                }
                None => {
                    if rest.contains('}') {
                        return Err(format!("stray `}}` in {text:?}"));
                    }
                    parts.push(Part::Literal(rest.as_bytes().into()));
                    rest = "";
                }
            }
        }
        if parts.iter().all(|p| matches!(p, Part::Literal(_))) {
            return Err(format!("{text:?} signs nothing of the request"));
        }
        Ok(Template {
            text: text.to_string(),
            parts,
        })
    }

    pub(crate) fn parts(&self) -> &[Part] {
        &self.parts
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    fn uses(&self, part: &Part) -> bool {
        self.parts.contains(part)
    }

    pub(crate) fn uses_timestamp(&self) -> bool {
        self.uses(&Part::Timestamp)
    }

    pub(crate) fn uses_id(&self) -> bool {
        self.uses(&Part::Id)
    }

    pub(crate) fn uses_url(&self) -> bool {
        self.uses(&Part::Url)
    }

    pub(crate) fn uses_params(&self) -> bool {
        self.uses(&Part::Params)
    }
}

/// `public_url` must be an absolute http(s) URL without query or fragment.
pub(crate) fn check_public_url(url: &str) -> Result<(), String> {
    let Some((_, rest)) = url
        .split_once("://")
        .filter(|(scheme, _)| matches!(*scheme, "http" | "https"))
    else {
        return Err(format!("{url:?} is not an http:// or https:// URL"));
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("{url:?} has no host"));
    }
    if url.contains(['?', '#']) || url.contains(char::is_whitespace) {
        return Err(format!(
            "{url:?}: give the scheme, host and optional path prefix only (the request's path \
             and query are appended)"
        ));
    }
    Ok(())
}

/// The URL a sender signed, as `public_url` + `path` + `?query`, and the same URL with the
/// scheme's default port toggled: providers (Twilio) may sign either form, so both are accepted.
pub(crate) fn url_variants(public_url: &str, path: &str, query: &str) -> Vec<String> {
    let base = public_url.trim_end_matches('/');
    let tail = if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    };
    let mut variants = vec![format!("{base}{tail}")];
    let Some((scheme, rest)) = base.split_once("://") else {
        return variants;
    };
    let default_port = match scheme {
        "https" => "443",
        "http" => "80",
        _ => return variants,
    };
    let (authority, prefix) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    // A port follows the last ':' that comes after any IPv6 literal's ']'.
    let host_end = authority.rfind(']').map_or(0, |i| i + 1);
    let toggled = match authority[host_end..].rfind(':') {
        Some(i) if &authority[host_end + i + 1..] == default_port => {
            authority[..host_end + i].to_string()
        }
        Some(_) => return variants,
        None => format!("{authority}:{default_port}"),
    };
    variants.push(format!("{scheme}://{toggled}{prefix}{tail}"));
    variants
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_and_name_bad_placeholders() {
        let t = Template::parse("v0:{timestamp}:{body}").unwrap();
        assert_eq!(
            t.parts(),
            &[
                Part::Literal(b"v0:"[..].into()),
                Part::Timestamp,
                Part::Literal(b":"[..].into()),
                Part::Body
            ]
        );
        assert!(Template::parse("{bdy}").unwrap_err().contains("{bdy}"));
        assert!(Template::parse("{body").is_err());
        assert!(Template::parse("body}").is_err());
        assert!(Template::parse("constant").is_err());
    }

    #[test]
    fn url_variants_toggle_the_default_port() {
        assert_eq!(
            url_variants("https://example.com/", "/sms", "a=1"),
            [
                "https://example.com/sms?a=1",
                "https://example.com:443/sms?a=1"
            ]
        );
        assert_eq!(
            url_variants("http://example.com:80/base", "/x", ""),
            ["http://example.com:80/base/x", "http://example.com/base/x"]
        );
        assert_eq!(
            url_variants("https://[::1]:8443", "/x", ""),
            ["https://[::1]:8443/x"]
        );
        assert_eq!(
            url_variants("https://[::1]", "/x", ""),
            ["https://[::1]/x", "https://[::1]:443/x"]
        );
    }
}
