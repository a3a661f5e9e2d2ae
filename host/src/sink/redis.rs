//! `type = "redis"`: append each delivery to a Redis stream (`XADD`), confirmed by the entry
//! id Redis answers with.
//!
//! A unit (one delivery or a batch) is one pipeline of `XADD`s, so a batch costs one round
//! trip. Each entry's fields: `id` (the delivery's stable id), `event_id`, `source`, `sink`,
//! `received_at_ms`, `headers` (a JSON object) and `body` (the raw bytes). With `maxlen`, each
//! `XADD` trims the stream approximately (`MAXLEN ~ N`), which Redis does cheaply.
//! The connection is opened on first use and reopened after a failure, so Redis being down at
//! start-up only delays deliveries (they are retried) instead of stopping Hookwall.
//! `timeout` (the sink's, default 5 s) bounds connecting plus one pipeline; a slower answer is
//! a retried failure.

use std::time::Duration;

use ::redis::aio::ConnectionManager;
use ::redis::{Client, Value};
use tokio::sync::Mutex;

use super::{Sink, SinkError};
use crate::config::Secret;
use crate::redis::connection_config;
use crate::store::DeliveryRecord;

/// The `redis` sink: appends each delivery to a Redis stream; connects on first use.
pub struct RedisSink {
    client: Client,
    stream: String,
    maxlen: Option<u64>,
    /// Bound on connecting plus one pipeline.
    timeout: Duration,
    conn: Mutex<Option<ConnectionManager>>,
}

impl RedisSink {
    /// `url` is resolved (it may carry a password; it is never printed); `timeout` bounds each
    /// unit.
    pub fn new(
        url: &Secret,
        stream: String,
        maxlen: Option<u64>,
        timeout: Duration,
    ) -> Result<RedisSink, String> {
        let url = std::str::from_utf8(url.expose()).map_err(|_| "not UTF-8".to_string())?;
        let client = Client::open(url)
            .map_err(|_| "not a redis:// URL (redis://[:PASSWORD@]HOST:PORT[/DB])".to_string())?;
        Ok(RedisSink {
            client,
            stream,
            maxlen,
            timeout,
            conn: Mutex::new(None),
        })
    }

    async fn connection(&self) -> Result<ConnectionManager, SinkError> {
        let mut guard = self.conn.lock().await;
        if let Some(conn) = guard.as_ref() {
            return Ok(conn.clone());
        }
        let conn = ConnectionManager::new_with_config(self.client.clone(), connection_config())
            .await
            .map_err(|e| SinkError::transient(format!("cannot connect to Redis: {e}")))?;
        *guard = Some(conn.clone());
        Ok(conn)
    }
}

#[async_trait::async_trait]
impl Sink for RedisSink {
    async fn deliver(&self, batch: &[DeliveryRecord]) -> Result<(), SinkError> {
        let mut pipe = ::redis::pipe();
        for d in batch {
            let headers: serde_json::Map<String, serde_json::Value> = d
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            let cmd = pipe.cmd("XADD").arg(&self.stream);
            if let Some(n) = self.maxlen {
                cmd.arg("MAXLEN").arg("~").arg(n);
            }
            cmd.arg("*")
                .arg("id")
                .arg(&d.id)
                .arg("event_id")
                .arg(&d.event_id)
                .arg("source")
                .arg(&d.source)
                .arg("sink")
                .arg(&d.sink)
                .arg("received_at_ms")
                .arg(d.received_at_ms)
                .arg("headers")
                .arg(serde_json::Value::Object(headers).to_string())
                .arg("body")
                .arg(&d.body[..]);
        }
        let call = async {
            let mut conn = self.connection().await?;
            pipe.query_async::<Vec<Value>>(&mut conn)
                .await
                .map_err(|e| SinkError::transient(format!("XADD to {} failed: {e}", self.stream)))
        };
        let replies = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| {
                SinkError::transient(format!("Redis did not answer within {:?}", self.timeout))
            })??;
        // Confirmed only if every XADD answered with an entry id.
        let confirmed = replies
            .iter()
            .filter(|v| matches!(v, Value::BulkString(_) | Value::SimpleString(_)))
            .count();
        if confirmed != batch.len() {
            return Err(SinkError::transient(format!(
                "XADD to {}: {confirmed} of {} entries confirmed",
                self.stream,
                batch.len()
            )));
        }
        Ok(())
    }
}
