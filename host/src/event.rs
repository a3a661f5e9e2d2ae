//! The nouns every stage shares, on the ground floor: the request that reached a source
//! ([`InboundRequest`], made by the server, read by verify, dedupe and the pipeline) and a
//! delivery's [`Priority`] (set by plugins, kept by the store, honoured by delivery). A noun
//! lives here when more than one stage speaks it, so no stage imports another for a type.

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
}
