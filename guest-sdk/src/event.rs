//! The event a plugin receives.

use serde::de::DeserializeOwned;

use crate::{Delivery, Error, bindings::hookwall::plugin::types as wit};

/// A verified webhook request, as the sender sent it, or as the previous plugin of the source's
/// chain reshaped it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Stable event id: the provider's id when the verify scheme has one, else generated.
    pub id: String,
    /// Name of the configured source that received the request.
    pub source: String,
    /// When Hookwall received the request, in milliseconds since the Unix epoch.
    pub received_at_ms: u64,
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// Request path, e.g. `/hooks/github`.
    pub path: String,
    /// Raw query string without the leading `?` (empty when absent).
    pub query: String,
    /// Headers as `(name, value)`, names lowercase, in the order received.
    pub headers: Vec<(String, String)>,
    /// The raw body.
    pub body: Vec<u8>,
}

impl Event {
    /// The first value of header `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The body as UTF-8 text.
    pub fn body_str(&self) -> Result<&str, Error> {
        std::str::from_utf8(&self.body)
            .map_err(|e| Error::new(format!("body is not valid UTF-8: {e}")))
    }

    /// The body parsed as JSON into `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::new(format!("invalid JSON body: {e}")))
    }

    /// The body parsed as an untyped JSON value.
    pub fn json_value(&self) -> Result<serde_json::Value, Error> {
        self.json()
    }

    /// An unrouted [`Delivery`] carrying this event's headers and body unchanged: the usual start
    /// of a plugin that only adds or changes a little.
    pub fn into_delivery(self) -> Delivery {
        Delivery {
            headers: self.headers,
            body: self.body,
            ..Delivery::unrouted()
        }
    }
}

impl From<wit::Event> for Event {
    fn from(event: wit::Event) -> Self {
        Self {
            id: event.id,
            source: event.source,
            received_at_ms: event.received_at_ms,
            method: event.method,
            path: event.path,
            query: event.query,
            headers: event.headers,
            body: event.body,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(headers: &[(&str, &str)], body: &str) -> Event {
        Event {
            id: "evt_1".into(),
            source: "shop".into(),
            received_at_ms: 1,
            method: "POST".into(),
            path: "/hooks/shop".into(),
            query: String::new(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn header_lookup_ignores_case_and_takes_the_first() {
        let e = event(&[("x-event-type", "a"), ("x-event-type", "b")], "");
        assert_eq!(e.header("X-Event-Type"), Some("a"));
        assert_eq!(e.header("x-missing"), None);
    }

    #[test]
    fn json_parses_typed_and_untyped() {
        let e = event(&[], r#"{"type":"order.created","n":2}"#);
        assert_eq!(e.json_value().unwrap()["n"], 2);
        #[derive(serde::Deserialize)]
        struct Body {
            r#type: String,
        }
        assert_eq!(e.json::<Body>().unwrap().r#type, "order.created");
    }

    #[test]
    fn invalid_json_and_utf8_are_errors() {
        let err = event(&[], "{nope").json_value().unwrap_err();
        assert!(err.message().starts_with("invalid JSON body:"), "{err}");
        let mut e = event(&[], "");
        e.body = vec![0xff];
        assert!(e.body_str().is_err());
    }

    #[test]
    fn into_delivery_keeps_headers_and_body_unrouted() {
        let d = event(&[("a", "1")], "hi").into_delivery();
        assert_eq!(d.sink, None);
        assert_eq!(d.headers, vec![("a".to_string(), "1".to_string())]);
        assert_eq!(d.body, b"hi");
    }
}
