//! `type = "http"`: send each delivery (or batch) to the app over HTTP, re-signed.
//!
//! One pooled client per sink (hyper-util, HTTP/1.1 and HTTP/2: negotiated by ALPN over
//! TLS, or h2c with `http2 = "prior-knowledge"`). Every request carries the delivery's stable
//! id as `webhook-id` and `Idempotency-Key`, and, with `secret`, Standard Webhooks signature
//! headers computed by the verify stage's signer with the sink's own key, so the app can trust
//! Hookwall without re-verifying the provider.
//!
//! Classification: a 2xx confirms; a status in `retry_on` (default 408, 425, 429, 5xx),
//! a connection error or a timeout is retried (429 and 503 with `Retry-After` wait as asked);
//! any other answer is permanent and dead-letters the unit at once.
//!
//! A batch is one `application/json` request whose body is
//! `{"batch": [ENVELOPE, …]}`, each element as [`super::envelope`] describes. Its `webhook-id`
//! and `Idempotency-Key` (and so the id its signature covers) is the batch id ([`batch_id`]):
//! `batch:` and the hex SHA-256 of exactly its items' delivery ids, in the body's order. A retry
//! regroups failed deliveries with whatever else is due, so an id made of the first item and a
//! count (`batch:FIRST+N`, before) could come back on a different set of items, and a receiver
//! deduping on it (as Standard Webhooks tells it to) silently dropped the new ones; a digest of
//! the ids is the same only for the same items.
//!
//! The URL is a secret (Slack-style URLs carry their token in the path): it is resolved like
//! other secrets (`env:`, `file:`), and attempt errors and logs show only its scheme, host and
//! port ([`redacted`]). The answer's body is read up to [`MAX_ANSWER_BODY_BYTES`] and then the
//! connection is dropped, so a huge or endless answer costs neither memory nor the timeout.
//! `timeout` (the sink's, shared by every kind) bounds the whole request.

use std::path::Path;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest, Sha256};

use super::{Sink, SinkError, envelope};
use crate::config::{ConfigError, Http2Mode, HttpSinkConfig, StatusMatch, signing_scheme};
use crate::store::DeliveryRecord;
use crate::verify::{Signed, Verifier};

/// A `Retry-After` longer than this is treated as this: a receiver cannot park a delivery
/// for days.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// Idle pooled connections are closed after this.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes of an error answer's body kept for the attempt's record.
const ERROR_BODY_BYTES: usize = 256;
/// An answer's body is read (and discarded past [`ERROR_BODY_BYTES`]) up to this many bytes, so
/// a short body is consumed and the connection goes back to the pool; past it the connection is
/// dropped instead. Bounds what an app can make us read per request: 64 KiB × `concurrency`,
/// where the whole body used to be collected (an app answering 32 MiB 200s pushed the RSS past
/// 1 GiB at 16 in flight).
const MAX_ANSWER_BODY_BYTES: usize = 64 * 1024;

/// Headers that describe one hop or one body, never forwarded from the routed delivery.
const HOP_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "proxy-authorization",
    "expect",
    // Set by this sink; the provider's own must not leak through.
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "idempotency-key",
];

/// The `http` sink: one pooled client sending each unit to the app's URL, signed with the
/// sink's own key when it has one.
pub struct HttpSink {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    uri: Uri,
    /// The URL as errors show it: [`redacted`].
    shown: String,
    method: Method,
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
    signer: Option<Verifier>,
    retry_on: Vec<StatusMatch>,
}

impl HttpSink {
    /// Builds sink `name` from its config: resolves the URL and `secret` (relative `file:`
    /// paths against `base_dir`) and checks the URL and headers; nothing is connected yet.
    /// `timeout` bounds each request (the sink's shared `timeout`).
    pub fn new(
        name: &str,
        c: &HttpSinkConfig,
        timeout: Duration,
        base_dir: &Path,
    ) -> Result<HttpSink, ConfigError> {
        let key = |field: &str| format!("sinks.{name}.{field}");
        let invalid = |field: &str, reason: String| ConfigError::Invalid {
            key: key(field),
            reason,
        };
        let signer = match &c.secret {
            Some(secret) => {
                let secret = secret.resolve(base_dir, &key("secret"))?;
                Some(
                    Verifier::new(&signing_scheme(), vec![secret], &Default::default())
                        .map_err(|e| invalid("secret", e))?,
                )
            }
            None => None,
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1();
        let connector = builder.enable_http2().wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .http2_only(c.http2 == Http2Mode::PriorKnowledge)
            .build(connector);
        let headers = c
            .headers
            .iter()
            .map(|(k, v)| {
                Ok((
                    HeaderName::from_bytes(k.as_bytes())
                        .map_err(|e| invalid(&format!("headers.{k}"), e.to_string()))?,
                    HeaderValue::from_str(v)
                        .map_err(|e| invalid(&format!("headers.{k}"), e.to_string()))?,
                ))
            })
            .collect::<Result<_, ConfigError>>()?;
        let uri = parse_url(&c.url.resolve(base_dir, &key("url"))?)
            .map_err(|reason| invalid("url", reason.to_string()))?;
        Ok(HttpSink {
            client,
            shown: redacted(&uri),
            uri,
            method: Method::from_bytes(c.method.as_bytes())
                .map_err(|e| invalid("method", e.to_string()))?,
            headers,
            timeout,
            signer,
            retry_on: c.retry_on.clone(),
        })
    }

    /// The request for one unit.
    fn request(&self, batch: &[DeliveryRecord]) -> Result<Request<Full<Bytes>>, SinkError> {
        let mut headers = HeaderMap::new();
        let (id, body) = match batch {
            [one] => {
                for (k, v) in &one.headers {
                    if HOP_HEADERS.iter().any(|h| k.eq_ignore_ascii_case(h)) {
                        continue;
                    }
                    if let (Ok(k), Ok(v)) = (
                        HeaderName::from_bytes(k.as_bytes()),
                        HeaderValue::from_str(v),
                    ) {
                        headers.append(k, v);
                    }
                }
                (one.id.clone(), one.body.clone())
            }
            _ => {
                let items: Vec<_> = batch.iter().map(envelope).collect();
                let body = serde_json::to_vec(&serde_json::json!({ "batch": items }))
                    .map_err(|e| SinkError::transient(format!("cannot encode batch: {e}")))?;
                headers.insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                (batch_id(batch.iter().map(|d| d.id.as_str())), body)
            }
        };
        for (k, v) in &self.headers {
            headers.insert(k.clone(), v.clone());
        }
        if let Some(signer) = &self.signer {
            let unsigned = Signed {
                path: self.uri.path().to_string(),
                query: self.uri.query().unwrap_or_default().to_string(),
                body,
                ..Signed::default()
            };
            let signed = signer.sign(unsigned, &id, crate::clock::now_ms());
            for (k, v) in &signed.headers {
                if let (Ok(k), Ok(v)) = (
                    HeaderName::from_bytes(k.as_bytes()),
                    HeaderValue::from_str(v),
                ) {
                    headers.insert(k, v);
                }
            }
            return self.finish(headers, &id, signed.body);
        }
        self.finish(headers, &id, body)
    }

    fn finish(
        &self,
        mut headers: HeaderMap,
        id: &str,
        body: Vec<u8>,
    ) -> Result<Request<Full<Bytes>>, SinkError> {
        let id = HeaderValue::from_str(id)
            .map_err(|_| SinkError::permanent(format!("delivery id {id:?} is not a header")))?;
        headers.insert("webhook-id", id.clone());
        headers.insert("idempotency-key", id);
        let mut req = Request::builder()
            .method(self.method.clone())
            .uri(self.uri.clone())
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| SinkError::permanent(format!("cannot build request: {e}")))?;
        *req.headers_mut() = headers;
        Ok(req)
    }

    fn retryable(&self, status: u16) -> bool {
        self.retry_on.iter().any(|m| m.matches(status))
    }
}

#[async_trait::async_trait]
impl Sink for HttpSink {
    async fn deliver(&self, batch: &[DeliveryRecord]) -> Result<(), SinkError> {
        let req = self.request(batch)?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        let resp = tokio::time::timeout_at(deadline, self.client.request(req))
            .await
            .map_err(|_| {
                SinkError::transient(format!(
                    "{} did not answer within {:?}",
                    self.shown, self.timeout
                ))
            })?
            .map_err(|e| {
                let chain = self.scrub(&error_chain(&e));
                SinkError::transient(format!("cannot reach {}: {chain}", self.shown))
            })?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        // The status decides. The body is read (until the deadline at most) only so a short one
        // frees the connection for reuse, and for an excerpt in the attempt's record.
        let body = tokio::time::timeout_at(deadline, read_capped(resp.into_body()))
            .await
            .unwrap_or_default();
        if status.is_success() {
            return Ok(());
        }
        let code = status.as_u16();
        let excerpt = String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY_BYTES)])
            .trim()
            .to_string();
        let message = if excerpt.is_empty() {
            format!("{} answered {status}", self.shown)
        } else {
            format!("{} answered {status}: {}", self.shown, self.scrub(&excerpt))
        };
        Err(SinkError {
            message,
            permanent: !self.retryable(code),
            retry_after: retry_after
                .filter(|_| code == 429 || code == 503)
                .map(|d| d.min(MAX_RETRY_AFTER)),
            status: Some(code),
        })
    }
}

/// The id of a batch whose items have these delivery ids, in order: `batch:` and the lowercase
/// hex SHA-256 over each id as its length in bytes (8 bytes, big-endian) followed by its bytes.
/// The length prefix keeps it unambiguous whatever an id contains; the same items in the same
/// order always give the same id, any other items another one.
pub fn batch_id(delivery_ids: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    let mut digest = Sha256::new();
    for id in delivery_ids {
        let id = id.as_ref();
        digest.update((id.len() as u64).to_be_bytes());
        digest.update(id.as_bytes());
    }
    format!("batch:{}", hex::encode(digest.finalize()))
}

/// Parses a resolved `url` secret. The reason never quotes the URL.
pub fn parse_url(url: &crate::config::Secret) -> Result<Uri, &'static str> {
    let uri: Uri = std::str::from_utf8(url.expose())
        .ok()
        .and_then(|u| u.parse().ok())
        .ok_or("not a URL")?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err("must be an http:// or https:// URL");
    }
    Ok(uri)
}

/// The URL as errors and logs show it: scheme, host and port; a path or query (where
/// Slack-style URLs keep their token) and any user info become `/…`.
fn redacted(uri: &Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("http");
    let host = uri.host().unwrap_or_default();
    let port = uri.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
    let hidden = uri.path_and_query().is_some_and(|p| p.as_str() != "/")
        || uri.authority().is_some_and(|a| a.as_str().contains('@'));
    format!("{scheme}://{host}{port}{}", if hidden { "/…" } else { "" })
}

impl HttpSink {
    /// `text` (an error from the client or the app) without the URL's secret parts, should a
    /// library or the app have echoed them.
    fn scrub(&self, text: &str) -> String {
        let mut out = text.replace(&self.uri.to_string(), &self.shown);
        if let Some(pq) = self.uri.path_and_query().filter(|p| p.as_str().len() > 1) {
            out = out.replace(pq.as_str(), "/…");
        }
        if let Some((userinfo, _)) = self
            .uri
            .authority()
            .and_then(|a| a.as_str().split_once('@'))
        {
            out = out.replace(userinfo, "…");
        }
        out
    }
}

/// Reads up to [`MAX_ANSWER_BODY_BYTES`] of an answer's body and keeps the first
/// [`ERROR_BODY_BYTES`]; a longer body is left unread (dropping it closes the connection).
async fn read_capped(mut body: hyper::body::Incoming) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut read = 0usize;
    while read < MAX_ANSWER_BODY_BYTES {
        let Some(Ok(frame)) = body.frame().await else {
            break;
        };
        if let Ok(data) = frame.into_data() {
            read += data.len();
            let room = ERROR_BODY_BYTES.saturating_sub(kept.len());
            kept.extend_from_slice(&data[..data.len().min(room)]);
        }
    }
    kept
}

/// `Retry-After: 120` or `Retry-After: Wed, 21 Oct 2015 07:28:00 GMT`.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate_parse(value)?;
    let now = std::time::UNIX_EPOCH + Duration::from_millis(crate::clock::now_ms());
    Some(at.duration_since(now).unwrap_or_default())
}

fn httpdate_parse(value: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(value).ok().or_else(|| {
        // IMF-fixdate (RFC 9110 §5.6.7): "Sun, 06 Nov 1994 08:49:37 GMT".
        let rest = value.split_once(", ")?.1.strip_suffix(" GMT")?;
        let mut parts = rest.split(' ');
        let (day, month, year, time) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let month = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ]
        .iter()
        .position(|m| *m == month)?
            + 1;
        humantime::parse_rfc3339(&format!("{year}-{month:02}-{day:0>2}T{time}Z")).ok()
    })
}

/// An error with its causes, for the attempt's record ("connection refused" is a cause).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        // A date in the past means "now".
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        let later = parse_retry_after("Fri, 01 Jan 2100 00:00:00 GMT").unwrap();
        assert!(later > Duration::from_secs(3600 * 24 * 365));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn urls_are_shown_without_path_query_or_user_info() {
        let shown = |url: &str| redacted(&url.parse().unwrap());
        assert_eq!(
            shown("https://hooks.slack.com/services/T0/B0/XSECRET"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(shown("http://127.0.0.1:9/"), "http://127.0.0.1:9");
        assert_eq!(shown("http://127.0.0.1:9"), "http://127.0.0.1:9");
        assert_eq!(shown("http://h/?token=XSECRET"), "http://h/…");
        assert_eq!(shown("http://user:XSECRET@h:8080/"), "http://h:8080/…");

        let config: HttpSinkConfig =
            toml::from_str("url = \"http://u:XPASS@h:1/services/XSECRET?k=XKEY\"").unwrap();
        let sink = HttpSink::new("app", &config, Duration::from_secs(1), Path::new("/")).unwrap();
        let echoed =
            "error for http://u:XPASS@h:1/services/XSECRET?k=XKEY and /services/XSECRET?k=XKEY";
        let scrubbed = sink.scrub(echoed);
        assert!(
            !["XPASS", "XSECRET", "XKEY"]
                .iter()
                .any(|s| scrubbed.contains(s)),
            "{scrubbed}"
        );
    }

    fn record(id: &str, body: &[u8]) -> DeliveryRecord {
        super::super::test_record(id, body)
    }

    #[test]
    fn a_batch_id_names_exactly_its_items() {
        let id = |ids: &[&str]| batch_id(ids);
        let ab = id(&["shop:a:app:0", "shop:b:app:0"]);
        // batch: + 64 hex digits, a valid header value.
        assert!(ab.starts_with("batch:") && ab.len() == 6 + 64, "{ab}");
        assert!(
            ab[6..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(ab, id(&["shop:a:app:0", "shop:b:app:0"]), "stable");
        // The same first item and count, other items: another id (it used to be the same).
        assert_ne!(ab, id(&["shop:a:app:0", "shop:c:app:0"]));
        assert_ne!(ab, id(&["shop:a:app:0"]));
        assert_ne!(ab, id(&["shop:a:app:0", "shop:b:app:0", "shop:c:app:0"]));
        // Unambiguous: moving bytes between ids changes the id.
        assert_ne!(id(&["ab", "c"]), id(&["a", "bc"]));
        assert_ne!(id(&["a\nb"]), id(&["a", "b"]));
        assert_ne!(id(&[]), id(&[""]));
        // The documented construction, computed independently.
        let mut data = Vec::new();
        for part in ["shop:a:app:0", "shop:b:app:0"] {
            data.extend_from_slice(&(part.len() as u64).to_be_bytes());
            data.extend_from_slice(part.as_bytes());
        }
        assert_eq!(ab, format!("batch:{}", hex::encode(Sha256::digest(&data))));
    }

    #[test]
    fn a_request_carries_the_batch_id_or_the_delivery_id_and_signs_it() {
        let config: HttpSinkConfig = toml::from_str(
            "url = \"http://127.0.0.1:9/hook\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"",
        )
        .unwrap();
        let sink = HttpSink::new("app", &config, Duration::from_secs(1), Path::new("/")).unwrap();
        let header = |req: &Request<Full<Bytes>>, name: &str| {
            req.headers()[name].to_str().unwrap().to_string()
        };
        let one = sink.request(&[record("shop:a:app:0", b"{}")]).unwrap();
        assert_eq!(header(&one, "webhook-id"), "shop:a:app:0");
        assert_eq!(header(&one, "idempotency-key"), "shop:a:app:0");

        let items = [record("shop:a:app:0", b"{}"), record("shop:b:app:0", b"{}")];
        let batch = sink.request(&items).unwrap();
        let expected = batch_id(["shop:a:app:0", "shop:b:app:0"]);
        assert_eq!(header(&batch, "webhook-id"), expected);
        assert_eq!(header(&batch, "idempotency-key"), expected);
        assert!(batch.headers().contains_key("webhook-signature"));
        let regrouped = sink
            .request(&[record("shop:a:app:0", b"{}"), record("shop:c:app:0", b"{}")])
            .unwrap();
        assert_ne!(header(&regrouped, "webhook-id"), expected);
    }

    #[test]
    fn status_classes_match() {
        let class = StatusMatch::Class("5xx".into());
        assert!(class.matches(503) && class.matches(500) && !class.matches(404));
        assert!(StatusMatch::Code(429).matches(429));
    }
}
