//! `type = "nats"`: publish each delivery to a NATS JetStream subject, confirmed by the
//! stream's publish ack.
//!
//! Each message's payload is the delivery's raw body; its NATS headers carry the delivery's
//! stable id as `Nats-Msg-Id` (so the stream's duplicate window drops a redelivery: at-least-once
//! from Hookwall becomes exactly-once in the stream within that window), `hookwall-event-id`,
//! `hookwall-source`, `hookwall-sink`, and the routed headers (except `Nats-*` ones, which are
//! JetStream's controls, and names or values NATS cannot carry).
//!
//! A unit (one delivery or a batch) is published as a whole, then every ack is awaited: one
//! flush, one round trip. It is confirmed only if every message was acked by a stream; a
//! publish error, a subject no stream captures, or a missing ack within the sink's `timeout`
//! (default 5 s) fails the unit (retried). The connection is opened on first use and reopened until it succeeds;
//! once open, the client reconnects by itself, and while it is disconnected units fail at once
//! instead of queueing. So NATS being down at start-up or later only delays deliveries.
//! Messages published into a connection that then dropped may still reach the stream after it
//! comes back; the retry carries the same `Nats-Msg-Id`, so the stream keeps one copy.

use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::{self, message::PublishMessage};
use async_nats::{ConnectOptions, HeaderMap, HeaderName, HeaderValue, ServerAddr, Subject};
use bytes::Bytes;
use tokio::sync::Mutex;

use super::{Sink, SinkError};
use crate::config::Secret;
use crate::store::DeliveryRecord;

/// Bound on one connection attempt (inside the sink's `timeout`, when that is longer).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The client name the server shows in its connection list.
const CLIENT_NAME: &str = "hookwall";

/// Headers this sink sets itself; a routed header of the same name is not forwarded.
const OWN_HEADERS: &[&str] = &["hookwall-event-id", "hookwall-source", "hookwall-sink"];

/// Parses a `nats://` (or `tls://`) URL into the server address (without credentials) and the
/// credentials it carried. Errors never quote the URL (it may hold a password).
pub fn nats_server(url: &Secret) -> Result<(ServerAddr, Credentials), String> {
    const EXPECTED: &str = "not a nats:// URL (nats://[USER:PASSWORD@]HOST:PORT or tls://…)";
    let url = std::str::from_utf8(url.expose()).map_err(|_| "not UTF-8".to_string())?;
    let addr: ServerAddr = url.parse().map_err(|_| EXPECTED.to_string())?;
    if !matches!(addr.scheme(), "nats" | "tls") || addr.host().is_empty() {
        return Err(EXPECTED.to_string());
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| "the URL's credentials are not UTF-8".to_string())
    };
    let credentials = match (addr.username(), addr.password()) {
        (None, _) => Credentials::None,
        (Some(user), Some(pass)) => Credentials::UserPassword(decode(user)?, decode(pass)?),
        (Some(token), None) => Credentials::Token(decode(token)?),
    };
    // The client is given the credentials through its options; the address it keeps (and may
    // print) carries none.
    let mut bare = addr.into_inner();
    let _ = bare.set_username("");
    let _ = bare.set_password(None);
    let addr = ServerAddr::from_url(bare).map_err(|_| EXPECTED.to_string())?;
    Ok((addr, credentials))
}

/// How the sink authenticates, from the URL's user part.
pub enum Credentials {
    None,
    /// `nats://TOKEN@HOST`
    Token(String),
    /// `nats://USER:PASSWORD@HOST`
    UserPassword(String, String),
}

/// The `nats` sink: publishes each delivery to a JetStream subject; connects on first use.
pub struct NatsSink {
    server: ServerAddr,
    credentials: Credentials,
    subject: Subject,
    /// Bound on connecting plus publishing a unit and receiving every ack.
    timeout: Duration,
    context: Mutex<Option<jetstream::Context>>,
}

impl NatsSink {
    /// `url` is resolved (it may carry credentials; they are never printed); `timeout` bounds
    /// each unit.
    pub fn new(url: &Secret, subject: &str, timeout: Duration) -> Result<NatsSink, String> {
        let (server, credentials) = nats_server(url)?;
        Ok(NatsSink {
            server,
            credentials,
            subject: Subject::from(subject),
            timeout,
            context: Mutex::new(None),
        })
    }

    /// The JetStream context, connecting first if there is none yet.
    async fn context(&self) -> Result<jetstream::Context, SinkError> {
        let mut guard = self.context.lock().await;
        if let Some(context) = guard.as_ref() {
            return Ok(context.clone());
        }
        let options = match &self.credentials {
            Credentials::None => ConnectOptions::new(),
            Credentials::Token(t) => ConnectOptions::with_token(t.clone()),
            Credentials::UserPassword(u, p) => {
                ConnectOptions::with_user_and_password(u.clone(), p.clone())
            }
        };
        let client = options
            .name(CLIENT_NAME)
            .connection_timeout(CONNECT_TIMEOUT.min(self.timeout))
            .connect(self.server.clone())
            .await
            .map_err(|e| {
                SinkError::transient(format!(
                    "cannot connect to NATS at {}:{}: {e}",
                    self.server.host(),
                    self.server.port()
                ))
            })?;
        let context = jetstream::ContextBuilder::new()
            .timeout(self.timeout)
            // Acks of a unit that timed out are awaited in the background this long at most.
            .ack_timeout(self.timeout)
            .build(client);
        *guard = Some(context.clone());
        Ok(context)
    }
}

/// The NATS headers of one delivery's message.
fn headers(d: &DeliveryRecord) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in &d.headers {
        let lower = name.to_ascii_lowercase();
        if lower.starts_with("nats-") || OWN_HEADERS.contains(&lower.as_str()) {
            continue;
        }
        if let (Ok(n), Ok(v)) = (name.parse::<HeaderName>(), value.parse::<HeaderValue>()) {
            headers.append(n, v);
        }
    }
    for (name, value) in [
        ("hookwall-event-id", &d.event_id),
        ("hookwall-source", &d.source),
        ("hookwall-sink", &d.sink),
    ] {
        if let Ok(v) = value.parse::<HeaderValue>() {
            headers.insert(name, v);
        }
    }
    headers
}

#[async_trait::async_trait]
impl Sink for NatsSink {
    async fn deliver(&self, batch: &[DeliveryRecord]) -> Result<(), SinkError> {
        let call = async {
            let context = self.context().await?;
            if context.client().connection_state() == State::Disconnected {
                // The client would queue the messages until it reconnects and the acks would
                // time out; failing now lets the backoff and the circuit breaker do their job.
                return Err(SinkError::transient(format!(
                    "NATS at {}:{} is unreachable (reconnecting)",
                    self.server.host(),
                    self.server.port()
                )));
            }
            let mut acks = Vec::with_capacity(batch.len());
            for d in batch {
                let message = PublishMessage::build()
                    .payload(Bytes::copy_from_slice(&d.body))
                    .headers(headers(d))
                    .message_id(&d.id);
                let ack = context
                    .send_publish(self.subject.clone(), message)
                    .await
                    .map_err(|e| {
                        SinkError::transient(format!("publish to {} failed: {e}", self.subject))
                    })?;
                acks.push(ack);
            }
            let mut duplicates = 0usize;
            for ack in acks {
                let ack = ack.await.map_err(|e| {
                    SinkError::transient(format!("no JetStream ack on {}: {e}", self.subject))
                })?;
                duplicates += usize::from(ack.duplicate);
            }
            Ok::<_, SinkError>(duplicates)
        };
        let duplicates = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| {
                SinkError::transient(format!(
                    "NATS did not ack {} message(s) on {} within {:?}",
                    batch.len(),
                    self.subject,
                    self.timeout
                ))
            })??;
        if duplicates > 0 {
            // The stream had them already (an earlier attempt's messages arrived after all).
            tracing::debug!(subject = %self.subject, duplicates,
                "JetStream dropped redelivered messages by Nats-Msg-Id");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(url: &str) -> Result<(ServerAddr, Credentials), String> {
        nats_server(&Secret::new(url))
    }

    #[test]
    fn urls_give_the_address_and_credentials() {
        let (addr, creds) = server("nats://127.0.0.1:4222").unwrap();
        assert_eq!((addr.host(), addr.port()), ("127.0.0.1", 4222));
        assert!(matches!(creds, Credentials::None));

        let (addr, creds) = server("nats://svc:p%40ss@nats.internal:4333").unwrap();
        assert!(!addr.as_url_str().contains("p%40ss") && !addr.as_url_str().contains("svc"));
        let Credentials::UserPassword(user, pass) = creds else {
            panic!("user and password")
        };
        assert_eq!((user.as_str(), pass.as_str()), ("svc", "p@ss"));

        let (_, creds) = server("tls://s3cr3t@nats.internal").unwrap();
        assert!(matches!(creds, Credentials::Token(t) if t == "s3cr3t"));
    }

    #[test]
    fn bad_urls_are_refused_without_quoting_them() {
        for url in ["redis://127.0.0.1:6379", "http://x:secretpw@h/", "nats://"] {
            let e = server(url)
                .err()
                .unwrap_or_else(|| panic!("{url} accepted"));
            assert!(
                !e.contains("secretpw") && e.contains("nats://"),
                "{url}: {e}"
            );
        }
    }

    #[test]
    fn headers_carry_the_ids_and_leave_out_nats_controls() {
        let d = DeliveryRecord {
            event_id: "e1".into(),
            sink: "bus".into(),
            headers: vec![
                ("x-tenant".into(), "acme".into()),
                ("x-tenant".into(), "beta".into()),
                ("Nats-Expected-Stream".into(), "other".into()),
                ("hookwall-source".into(), "spoofed".into()),
                ("bad name".into(), "x".into()),
                ("x-bad-value".into(), "a\r\nb".into()),
            ],
            ..super::super::test_record("e1:bus:0", b"{}")
        };
        let h = headers(&d);
        let all =
            |n: &str| -> Vec<String> { h.get_all(n).map(|v| v.as_str().to_string()).collect() };
        assert_eq!(all("x-tenant"), ["acme", "beta"]);
        assert_eq!(all("hookwall-source"), ["shop"]);
        assert_eq!(all("hookwall-event-id"), ["e1"]);
        assert_eq!(all("hookwall-sink"), ["bus"]);
        assert!(h.get("Nats-Expected-Stream").is_none());
        assert!(h.get("x-bad-value").is_none());
    }
}
