//! The nouns every stage shares, on the ground floor: the request that reached a source
//! ([`InboundRequest`], made by the server, read by verify, dedupe and the pipeline), the
//! verified [`Event`] the plugins are given, what a chain decides (a [`Routed`] message, a
//! [`Rejection`], a direct [`Reply`]), and a delivery's [`Priority`] (set by plugins, kept by
//! the store, honoured by delivery). A noun lives here when more than one stage speaks it, so
//! no stage imports another for a type.

use std::net::SocketAddr;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A request that reached a source, before verification.
#[derive(Debug, Clone)]
pub struct InboundRequest {
    /// The name of the source (`[sources.NAME]`) whose path it reached.
    pub source: String,
    /// The HTTP method (the server passes on only `POST`).
    pub method: String,
    /// The URI path, without the query.
    pub path: String,
    /// Raw query string without `?`.
    pub query: String,
    /// Header names are lowercase; values are decoded lossily as UTF-8.
    pub headers: Vec<(String, String)>,
    /// The raw body, as received.
    pub body: Bytes,
    /// The TCP peer's address (a proxy's, behind one).
    pub remote: SocketAddr,
    /// When it was received, in milliseconds since the Unix epoch.
    pub received_at_ms: u64,
}

impl InboundRequest {
    /// First value of header `name` (which must be lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Dispatch priority of a delivery within its sink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Priority {
    /// Dispatched before any normal delivery of the sink, and never batched.
    High,
    /// The default: dispatched in turn, and batched when the sink batches.
    #[default]
    Normal,
}

impl Priority {
    /// Sort rank in the pending index: lower is dispatched first.
    pub fn rank(self) -> u8 {
        match self {
            Priority::High => 0,
            Priority::Normal => 1,
        }
    }

    /// The priority of a stored rank ([`Priority::rank`]); an unknown rank reads as normal.
    pub fn from_rank(rank: u8) -> Priority {
        if rank == 0 {
            Priority::High
        } else {
            Priority::Normal
        }
    }
}

/// A verified event as plugins see it.
#[derive(Debug, Clone)]
pub struct Event {
    /// The event's id (the sender's, or a UUIDv7 at intake), kept by every delivery made
    /// from it.
    pub id: String,
    /// The source it arrived on.
    pub source: String,
    /// When it arrived, in ms since the Unix epoch.
    pub received_at_ms: u64,
    /// The request's method.
    pub method: String,
    /// The request's path.
    pub path: String,
    /// The raw query string, without `?`.
    pub query: String,
    /// Header names are lowercase.
    pub headers: Vec<(String, String)>,
    /// The request body (for a later plugin of a chain: the previous plugin's output).
    pub body: Vec<u8>,
}

/// One message routed to a named sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// The sink it goes to.
    pub sink: String,
    /// The headers it is delivered with.
    pub headers: Vec<(String, String)>,
    /// The body it is delivered with.
    pub body: Vec<u8>,
    /// Its dispatch priority within the sink.
    pub priority: Priority,
}

/// A plugin's refusal, answered to the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// A client error (4xx); anything else is answered as 422.
    pub status: u16,
    /// A machine-readable reason.
    pub code: String,
    /// A human-readable reason.
    pub message: String,
    /// The request field at fault, if any.
    pub field: Option<String>,
}

/// A plugin's direct answer to the sender (a provider handshake).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// A success (2xx); anything else is answered as 200.
    pub status: u16,
    /// The reply's headers.
    pub headers: Vec<(String, String)>,
    /// The reply's body.
    pub body: Vec<u8>,
}

/// The order key of a delivery's body: the string or number at `pointer` (from a sink's
/// `order_key = "json:/…"`); `None` when the body is not JSON or has no such value. Delivery
/// orders by it; the shared store keeps it with each delivery so every replica orders alike.
pub fn order_key(pointer: &str, body: &[u8]) -> Option<String> {
    let body: serde_json::Value = serde_json::from_slice(body).ok()?;
    match body.pointer(pointer)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}
