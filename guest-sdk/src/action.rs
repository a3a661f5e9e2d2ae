//! What a plugin returns: forward deliveries, drop the event, or reject it.

use serde::Serialize;

use crate::{Error, bindings::hookwall::plugin::types as wit};

/// What the host should do with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Accept the event and emit these deliveries (possibly none).
    Forward(Vec<Delivery>),
    /// Accept the event but deliver nothing; the string says why (logged, stored).
    Drop(String),
    /// Refuse the event: nothing is stored or delivered, the sender gets the rejection.
    Reject(Rejection),
    /// Answer the sender directly (a provider's endpoint challenge): nothing is stored or
    /// delivered.
    Respond(Reply),
}

impl Action {
    /// Accept the event and emit `deliveries`.
    pub fn forward(deliveries: impl IntoIterator<Item = Delivery>) -> Self {
        Self::Forward(deliveries.into_iter().collect())
    }

    /// Accept the event but deliver nothing, for `reason`.
    pub fn drop(reason: impl Into<String>) -> Self {
        Self::Drop(reason.into())
    }

    /// Refuse the event with HTTP `status` (must be 4xx; the host answers anything else as
    /// 422), a machine-readable `code` such as `missing_field`, and a human `message`.
    pub fn reject(status: u16, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Reject(Rejection {
            status,
            code: code.into(),
            message: message.into(),
            field: None,
        })
    }

    /// Answer the sender with `status` (2xx) and a JSON `body`, for a provider's handshake.
    pub fn respond_json<T: Serialize + ?Sized>(status: u16, body: &T) -> Result<Self, Error> {
        Ok(Self::Respond(Reply {
            status,
            headers: vec![("content-type".to_owned(), "application/json".to_owned())],
            body: serde_json::to_vec(body)
                .map_err(|e| Error::new(format!("cannot serialize reply body: {e}")))?,
        }))
    }

    /// Names the offending field of a rejection (e.g. the JSON pointer `/customer/id`).
    /// Other actions are returned unchanged.
    pub fn field(mut self, field: impl Into<String>) -> Self {
        if let Self::Reject(rejection) = &mut self {
            rejection.field = Some(field.into());
        }
        self
    }
}

/// A structured refusal, answered to the sender as `status` with a JSON error body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// HTTP status; must be 4xx (anything else is answered as 422).
    pub status: u16,
    /// Machine-readable error code, e.g. `missing_field`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// The offending field (e.g. a JSON pointer), when there is one.
    pub field: Option<String>,
}

/// A direct answer to the sender (see [`Action::Respond`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status; must be 2xx (the host answers anything else as 200).
    pub status: u16,
    /// Response headers as `(name, value)`.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Dispatch priority of a delivery within its sink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// The default.
    #[default]
    Normal,
    /// Dispatched before normal deliveries of the same sink.
    High,
}

/// One message for one sink, built with [`Delivery::to`] or [`Delivery::unrouted`] and the
/// builder methods.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Target sink. `None` means "not routed yet": it goes to the next plugin of the source's
    /// chain, or to the source's configured sinks after the last plugin. A named sink is final.
    pub sink: Option<String>,
    /// Headers as `(name, value)`, names lowercase.
    pub headers: Vec<(String, String)>,
    /// The body to deliver.
    pub body: Vec<u8>,
    /// Dispatch priority within the sink.
    pub priority: Priority,
}

impl Delivery {
    /// A delivery to the sink named `sink`, with no headers and an empty body yet.
    pub fn to(sink: impl Into<String>) -> Self {
        Self {
            sink: Some(sink.into()),
            ..Self::default()
        }
    }

    /// A delivery not routed yet (see [`Delivery::sink`]), with no headers and an empty body yet.
    pub fn unrouted() -> Self {
        Self::default()
    }

    /// Appends a header; the name is lowercased.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((lowercase(name.into()), value.into()));
        self
    }

    /// Sets a header, replacing every existing header of that name (compared
    /// case-insensitively); the name is lowercased.
    pub fn set_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let name = lowercase(name.into());
        self.headers
            .retain(|(key, _)| !key.eq_ignore_ascii_case(&name));
        self.headers.push((name, value.into()));
        self
    }

    /// Appends headers, e.g. the event's own; names are lowercased.
    pub fn headers<K, V>(mut self, headers: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        self.headers.extend(
            headers
                .into_iter()
                .map(|(name, value)| (lowercase(name.into()), value.into())),
        );
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets the body to `value` serialized as JSON and the `content-type` header to
    /// `application/json`.
    pub fn json<T: Serialize + ?Sized>(self, value: &T) -> Result<Self, Error> {
        let body = serde_json::to_vec(value)
            .map_err(|e| Error::new(format!("cannot serialize delivery body: {e}")))?;
        Ok(self
            .set_header("content-type", "application/json")
            .body(body))
    }

    /// Dispatches this delivery before normal ones of the same sink.
    pub fn high_priority(mut self) -> Self {
        self.priority = Priority::High;
        self
    }
}

fn lowercase(mut name: String) -> String {
    name.make_ascii_lowercase();
    name
}

impl From<Action> for wit::Action {
    fn from(action: Action) -> Self {
        match action {
            Action::Forward(deliveries) => {
                Self::Forward(deliveries.into_iter().map(Into::into).collect())
            }
            Action::Drop(reason) => Self::Drop(reason),
            Action::Reject(r) => Self::Reject(wit::Rejection {
                status: r.status,
                code: r.code,
                message: r.message,
                field: r.field,
            }),
            Action::Respond(r) => Self::Respond(wit::Reply {
                status: r.status,
                headers: r.headers,
                body: r.body,
            }),
        }
    }
}

impl From<Delivery> for wit::Delivery {
    fn from(d: Delivery) -> Self {
        Self {
            sink: d.sink,
            headers: d.headers,
            body: d.body,
            priority: match d.priority {
                Priority::Normal => wit::Priority::Normal,
                Priority::High => wit::Priority::High,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_builder() {
        let d = Delivery::to("orders")
            .headers([("X-A", "1"), ("x-b", "2")])
            .header("X-C", "3")
            .set_header("x-a", "one")
            .body("hello")
            .high_priority();
        assert_eq!(d.sink.as_deref(), Some("orders"));
        let names: Vec<_> = d.headers.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(names, ["x-b=2", "x-c=3", "x-a=one"]);
        assert_eq!(d.body, b"hello");
        assert_eq!(d.priority, Priority::High);
        assert_eq!(Delivery::unrouted().sink, None);
    }

    #[test]
    fn json_body_sets_content_type() {
        let d = Delivery::unrouted()
            .header("content-type", "text/plain")
            .json(&serde_json::json!({"a": 1}))
            .unwrap();
        assert_eq!(d.body, br#"{"a":1}"#);
        assert_eq!(
            d.headers,
            [("content-type".to_string(), "application/json".to_string())]
        );
    }

    #[test]
    fn reject_with_field_and_field_on_other_actions() {
        let a = Action::reject(422, "missing_field", "`type` is required").field("/type");
        let Action::Reject(r) = &a else {
            panic!("{a:?}")
        };
        assert_eq!((r.status, r.field.as_deref()), (422, Some("/type")));
        assert_eq!(Action::drop("dup").field("/x"), Action::Drop("dup".into()));
    }

    #[test]
    fn converts_to_wit() {
        let a: wit::Action = Action::forward([Delivery::to("s").high_priority()]).into();
        let wit::Action::Forward(ds) = a else {
            panic!()
        };
        assert_eq!(ds[0].sink.as_deref(), Some("s"));
        assert_eq!(ds[0].priority, wit::Priority::High);
    }
}
