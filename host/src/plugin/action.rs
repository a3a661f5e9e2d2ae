//! What goes into a plugin and what comes out, in host types: the [`Event`] it is given, the
//! [`Action`] it decides, the [`ChainOutcome`] of a whole chain, and the [`OutputLimits`]
//! every action is checked against before the host acts on it.
//!
//! These are plain data: the WIT side of each lives in [`super::wit`], the chain that turns
//! actions into an outcome in [`super::chain`].

use crate::event::Priority;
pub use crate::event::{Event, Rejection, Reply, Routed};

use super::CallFailure;

/// The result of running a source's chain.
#[derive(Debug)]
pub enum ChainOutcome {
    /// Messages for the sinks (routed by a plugin, or unrouted to the source's sinks).
    Forward(Vec<Routed>),
    /// Every branch dropped the event; the last drop's reason.
    Dropped(String),
    /// A plugin refused the event.
    Rejected(Rejection),
    /// A plugin answered the sender itself.
    Responded(Reply),
    /// A plugin failed on the event: it becomes a dead letter.
    Failed {
        /// The plugin that failed.
        plugin: String,
        /// How it failed.
        failure: CallFailure,
    },
}

/// A plugin's decision, in host types.
#[derive(Debug)]
pub enum Action {
    /// Deliveries: routed ones are final, unrouted ones go on down the chain.
    Forward(Vec<Delivery>),
    /// Nothing to deliver, with a reason.
    Drop(String),
    /// Refuse the event.
    Reject(Rejection),
    /// Answer the sender directly.
    Respond(Reply),
}

/// One delivery as a plugin emitted it.
#[derive(Debug)]
pub struct Delivery {
    /// The sink it is routed to; `None` goes to the next plugin, or after the last one to the
    /// source's sinks.
    pub sink: Option<String>,
    /// Its headers.
    pub headers: Vec<(String, String)>,
    /// Its body.
    pub body: Vec<u8>,
    /// Its dispatch priority within the sink.
    pub priority: Priority,
}

/// Bounds on what one plugin call may return, enforced by the host after each call.
#[derive(Debug, Clone, Copy)]
pub struct OutputLimits {
    /// Deliveries one action may hold.
    pub max_deliveries: usize,
    /// Bytes of bodies and headers one action may hold.
    pub max_bytes: usize,
    /// Headers per delivery or reply.
    pub max_headers: usize,
    /// Bytes of one header (name and value).
    pub max_header_bytes: usize,
}

impl OutputLimits {
    /// Checks one call's action; the error names the bound that was crossed.
    pub(super) fn check(&self, action: &Action) -> Result<(), CallFailure> {
        match action {
            Action::Forward(ds) => self.check_deliveries(ds),
            Action::Respond(r) => {
                if r.body.len() > self.max_bytes || !self.headers_ok(&r.headers) {
                    return over("reply over the output limits".into());
                }
                Ok(())
            }
            Action::Drop(_) | Action::Reject(_) => Ok(()),
        }
    }

    fn check_deliveries(&self, ds: &[Delivery]) -> Result<(), CallFailure> {
        if ds.len() > self.max_deliveries {
            let limit = self.max_deliveries;
            return over(format!("{} deliveries (limit {limit})", ds.len()));
        }
        let bytes: usize = ds
            .iter()
            .map(|d| {
                d.body.len()
                    + d.headers
                        .iter()
                        .map(|(k, v)| k.len() + v.len())
                        .sum::<usize>()
            })
            .sum();
        if bytes > self.max_bytes {
            return over(format!(
                "{bytes} bytes of output (limit {})",
                self.max_bytes
            ));
        }
        if !ds.iter().all(|d| self.headers_ok(&d.headers)) {
            return over(format!(
                "headers over the limits ({} per delivery, {} bytes each)",
                self.max_headers, self.max_header_bytes
            ));
        }
        Ok(())
    }

    fn headers_ok(&self, headers: &[(String, String)]) -> bool {
        headers.len() <= self.max_headers
            && headers
                .iter()
                .all(|(k, v)| k.len() + v.len() <= self.max_header_bytes)
    }
}

fn over(what: String) -> Result<(), CallFailure> {
    Err(CallFailure::InvalidOutput(what))
}

/// An action as JSON, for `hookwall plugin test`. Bodies are embedded as JSON when they parse,
/// else as base64.
pub fn action_json(action: &Action) -> serde_json::Value {
    use base64::Engine as _;
    use serde_json::json;
    let body = |b: &[u8]| {
        serde_json::from_slice::<serde_json::Value>(b).unwrap_or_else(
            |_| json!({ "base64": base64::engine::general_purpose::STANDARD.encode(b) }),
        )
    };
    match action {
        Action::Forward(ds) => json!({
            "action": "forward",
            "deliveries": ds.iter().map(|d| json!({
                "sink": d.sink,
                "headers": d.headers,
                "body": body(&d.body),
                "priority": if d.priority == Priority::High { "high" } else { "normal" },
            })).collect::<Vec<_>>(),
        }),
        Action::Drop(reason) => json!({ "action": "drop", "reason": reason }),
        Action::Reject(r) => json!({
            "action": "reject", "status": r.status, "code": r.code,
            "message": r.message, "field": r.field,
        }),
        Action::Respond(r) => json!({
            "action": "respond", "status": r.status, "headers": r.headers, "body": body(&r.body),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: OutputLimits = OutputLimits {
        max_deliveries: 2,
        max_bytes: 100,
        max_headers: 2,
        max_header_bytes: 10,
    };

    fn delivery(headers: &[(&str, &str)], body: &[u8]) -> Delivery {
        Delivery {
            sink: None,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.to_vec(),
            priority: Priority::Normal,
        }
    }

    fn refusal(action: Action) -> String {
        match LIMITS.check(&action) {
            Err(CallFailure::InvalidOutput(what)) => what,
            other => panic!("expected invalid output, got {other:?}"),
        }
    }

    #[test]
    fn output_within_the_limits_passes() {
        let ds = vec![delivery(&[("a", "b")], &[0; 40]), delivery(&[], &[0; 50])];
        assert!(LIMITS.check(&Action::Forward(ds)).is_ok());
        assert!(LIMITS.check(&Action::Drop("x".repeat(1000))).is_ok());
    }

    #[test]
    fn each_crossed_bound_is_named() {
        let three = (0..3).map(|_| delivery(&[], b"")).collect();
        assert_eq!(refusal(Action::Forward(three)), "3 deliveries (limit 2)");
        let big = vec![delivery(&[("k", "v")], &[0; 99])];
        assert_eq!(
            refusal(Action::Forward(big)),
            "101 bytes of output (limit 100)"
        );
        let long_header = vec![delivery(&[("key", "12345678")], b"")];
        assert!(refusal(Action::Forward(long_header)).starts_with("headers over the limits"));
        let reply = Reply {
            status: 200,
            headers: vec![("a".into(), "b".into()); 3],
            body: Vec::new(),
        };
        assert_eq!(
            refusal(Action::Respond(reply)),
            "reply over the output limits"
        );
    }
}
