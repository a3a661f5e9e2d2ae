//! `type = "amqp"`: publish each delivery to a RabbitMQ (AMQP 0-9-1) exchange, confirmed by the
//! broker (publisher confirms).
//!
//! Each message's body is the delivery's raw body. It is published `persistent`
//! (`delivery_mode = 2`) and `mandatory`, with the delivery's stable id as `message_id` (for
//! consumer-side dedupe: a redelivery carries the same id) and as the header
//! `hookwall-delivery-id`, plus `hookwall-event-id`, `hookwall-source`, `hookwall-sink`, the
//! routed headers (`content-type` becomes the message's content type) and the event's receipt
//! time as `timestamp`. The routing key is the sink's template with `{source}`, `{sink}` and
//! `{event_id}` filled in.
//!
//! A unit (one delivery or a batch) is published as a whole, then every confirm is awaited: one
//! round trip for the batch. It counts as delivered only if the broker acked every message
//! and routed it to a queue: a nack, a message returned as unroutable (no queue bound for its
//! routing key: `mandatory`), a closed channel or no confirm within the sink's `timeout`
//! (default 5 s) fails the unit, which is retried with the sink's backoff and dead-lettered
//! like every sink's. The connection and its confirm-mode channel are opened on first use and
//! again after any failure, so the broker being down at start-up or later only delays
//! deliveries.

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::sync::Mutex;

use super::{Sink, SinkError};
use crate::config::Secret;
use crate::store::DeliveryRecord;

/// Bound on opening the connection and its channel (inside the sink's `timeout`, when shorter).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Headers this sink sets itself; a routed header of the same name is not forwarded.
const OWN_HEADERS: &[&str] = &[
    "hookwall-delivery-id",
    "hookwall-event-id",
    "hookwall-source",
    "hookwall-sink",
];

/// Checks an `amqp://` / `amqps://` URL; returns it and where it points (`HOST:PORT`, for
/// errors). Errors never quote the URL (it may hold a password).
pub fn amqp_server(url: &Secret) -> Result<(String, String), String> {
    const EXPECTED: &str =
        "not an AMQP URL (amqp://[USER:PASSWORD@]HOST:PORT[/VHOST] or amqps://…)";
    let url = std::str::from_utf8(url.expose()).map_err(|_| "not UTF-8".to_string())?;
    let parsed: AMQPUri = url.parse().map_err(|_| EXPECTED.to_string())?;
    let authority = url.split_once("://").map_or("", |(_, rest)| rest);
    if parsed.authority.host.is_empty()
        || !(url.starts_with("amqp://") || url.starts_with("amqps://"))
        || authority.is_empty()
        || authority.starts_with('/')
    {
        return Err(EXPECTED.to_string());
    }
    let scheme = match parsed.scheme {
        AMQPScheme::AMQP => "amqp",
        AMQPScheme::AMQPS => "amqps",
    };
    let place = format!(
        "{scheme}://{}:{}",
        parsed.authority.host, parsed.authority.port
    );
    Ok((url.to_string(), place))
}

/// The `amqp` sink: publishes each delivery to an exchange; connects on first use.
pub struct AmqpSink {
    /// The resolved URL (never printed).
    url: String,
    /// `amqp://HOST:PORT`, for errors and logs.
    place: String,
    exchange: String,
    routing_key: String,
    timeout: Duration,
    open: Mutex<Option<(Connection, Channel)>>,
}

impl AmqpSink {
    /// `url` is resolved (it may carry credentials; they are never printed); `timeout` bounds
    /// each unit.
    pub fn new(
        url: &Secret,
        exchange: &str,
        routing_key: &str,
        timeout: Duration,
    ) -> Result<AmqpSink, String> {
        let (url, place) = amqp_server(url)?;
        Ok(AmqpSink {
            url,
            place,
            exchange: exchange.to_string(),
            routing_key: routing_key.to_string(),
            timeout,
            open: Mutex::new(None),
        })
    }

    /// The confirm-mode channel, opening the connection first if there is none (or it broke).
    async fn channel(&self) -> Result<Channel, SinkError> {
        let mut open = self.open.lock().await;
        if let Some((connection, channel)) = open.as_ref()
            && connection.status().connected()
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        *open = None;
        let connect = async {
            let connection = Connection::connect(&self.url, ConnectionProperties::default())
                .await
                .map_err(|e| format!("cannot connect to {}: {e}", self.place))?;
            let channel = connection
                .create_channel()
                .await
                .map_err(|e| format!("cannot open a channel on {}: {e}", self.place))?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| format!("{} refused publisher confirms: {e}", self.place))?;
            Ok::<_, String>((connection, channel))
        };
        let (connection, channel) =
            tokio::time::timeout(CONNECT_TIMEOUT.min(self.timeout), connect)
                .await
                .map_err(|_| {
                    SinkError::transient(format!("cannot connect to {} in time", self.place))
                })?
                .map_err(SinkError::transient)?;
        *open = Some((connection, channel.clone()));
        Ok(channel)
    }

    /// Forgets the connection after a failure: the next unit opens a new one.
    async fn reset(&self) {
        if let Some((connection, _)) = self.open.lock().await.take() {
            let _ = connection.close(0, "hookwall: reconnecting".into()).await;
        }
    }

    /// Publishes `batch` and awaits every confirm.
    async fn publish(&self, batch: &[DeliveryRecord]) -> Result<(), SinkError> {
        let channel = self.channel().await?;
        let mut confirms = Vec::with_capacity(batch.len());
        for d in batch {
            let key = routing_key(&self.routing_key, d);
            let key = ShortString::try_new(key).map_err(|_| {
                SinkError::permanent(
                    "the routing key is longer than AMQP's 255 bytes for this event".to_string(),
                )
            })?;
            let confirm = channel
                .basic_publish(
                    self.exchange.as_str().into(),
                    key,
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    &d.body,
                    properties(d),
                )
                .await
                .map_err(|e| {
                    SinkError::transient(format!("publish to {} failed: {e}", self.place))
                })?;
            confirms.push(confirm);
        }
        for confirm in confirms {
            let confirmation = confirm.await.map_err(|e| {
                SinkError::transient(format!("no confirm from {}: {e}", self.place))
            })?;
            if confirmation.is_nack() {
                return Err(SinkError::transient(format!(
                    "{} refused (nacked) a message",
                    self.place
                )));
            }
            if let Some(returned) = confirmation.take_message() {
                return Err(SinkError::transient(format!(
                    "{} returned a message as unroutable ({} {}): no queue is bound to exchange \
                     {:?} for routing key {:?}",
                    self.place,
                    returned.reply_code,
                    returned.reply_text,
                    self.exchange,
                    returned.delivery.routing_key.as_str()
                )));
            }
        }
        Ok(())
    }
}

/// The routing key of `d`: the template with its placeholders filled in.
fn routing_key(template: &str, d: &DeliveryRecord) -> String {
    template
        .replace("{source}", &d.source)
        .replace("{sink}", &d.sink)
        .replace("{event_id}", &d.event_id)
}

/// The message properties of one delivery: persistent, its ids, its headers.
fn properties(d: &DeliveryRecord) -> BasicProperties {
    let mut headers = FieldTable::default();
    let mut content_type = None;
    for (name, value) in &d.headers {
        let lower = name.to_ascii_lowercase();
        if lower == "content-type" {
            content_type = ShortString::try_new(value.as_str()).ok();
            continue;
        }
        if OWN_HEADERS.contains(&lower.as_str()) {
            continue;
        }
        if let Ok(n) = ShortString::try_new(name.as_str()) {
            headers.insert(n, AMQPValue::LongString(LongString::from(value.as_str())));
        }
    }
    for (name, value) in [
        ("hookwall-delivery-id", &d.id),
        ("hookwall-event-id", &d.event_id),
        ("hookwall-source", &d.source),
        ("hookwall-sink", &d.sink),
    ] {
        headers.insert(
            name.into(),
            AMQPValue::LongString(LongString::from(value.as_str())),
        );
    }
    let mut props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_app_id("hookwall".into())
        .with_timestamp(d.received_at_ms / 1000)
        .with_headers(headers);
    if let Ok(id) = ShortString::try_new(d.id.as_str()) {
        props = props.with_message_id(id);
    }
    if let Some(ct) = content_type {
        props = props.with_content_type(ct);
    }
    props
}

#[async_trait::async_trait]
impl Sink for AmqpSink {
    async fn deliver(&self, batch: &[DeliveryRecord]) -> Result<(), SinkError> {
        let result = match tokio::time::timeout(self.timeout, self.publish(batch)).await {
            Ok(r) => r,
            Err(_) => Err(SinkError::transient(format!(
                "{} did not confirm {} message(s) within {:?}",
                self.place,
                batch.len(),
                self.timeout
            ))),
        };
        if result.is_err() {
            // A broken or timed-out channel is not reused; messages it sent may still arrive,
            // and their retry carries the same message_id.
            self.reset().await;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_never_quoted() {
        let (_, place) =
            amqp_server(&Secret::new("amqp://guest:guest@127.0.0.1:5672/%2f")).unwrap();
        assert_eq!(place, "amqp://127.0.0.1:5672");
        let (_, place) = amqp_server(&Secret::new("amqps://u:p@mq.internal/vh")).unwrap();
        assert_eq!(place, "amqps://mq.internal:5671");
        for bad in ["redis://u:hunter2@h/", "http://x:hunter2@h/", "amqp://"] {
            let e = amqp_server(&Secret::new(bad)).unwrap_err();
            assert!(
                !e.contains("hunter2") && e.contains("amqp://"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn a_message_carries_the_ids_persistently_and_the_routed_headers() {
        let d = DeliveryRecord {
            event_id: "e1".into(),
            sink: "mq".into(),
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("x-tenant".into(), "acme".into()),
                ("hookwall-source".into(), "spoofed".into()),
            ],
            ..super::super::test_record("shop:e1:mq:0", b"{}")
        };
        let p = properties(&d);
        assert_eq!(p.delivery_mode(), &Some(2));
        assert_eq!(
            p.message_id().as_ref().map(|m| m.as_str()),
            Some("shop:e1:mq:0")
        );
        assert_eq!(
            p.content_type().as_ref().map(|c| c.as_str()),
            Some("application/json")
        );
        let headers = p.headers().clone().unwrap();
        let get = |k: &str| match headers.inner().get(k) {
            Some(AMQPValue::LongString(s)) => Some(s.to_string()),
            _ => None,
        };
        assert_eq!(get("x-tenant").as_deref(), Some("acme"));
        assert_eq!(get("hookwall-source").as_deref(), Some("shop"));
        assert_eq!(get("hookwall-delivery-id").as_deref(), Some("shop:e1:mq:0"));
        assert_eq!(get("content-type"), None);
        assert_eq!(
            routing_key("hooks.{source}.{sink}.{event_id}", &d),
            "hooks.shop.mq.e1"
        );
    }
}
