//! # cloudevents: the bundled CloudEvents 1.0 wrapper
//!
//! Wraps each event as a CloudEvents 1.0 envelope in structured JSON mode
//! (`content-type: application/cloudevents+json`), so downstream consumers get one format
//! whatever the provider. The envelope:
//!
//! - `specversion`: `"1.0"`;
//! - `id`: from `id_from` if set and found, else Hookwall's event id (the provider's id when the
//!   verify scheme has one), so a redelivered webhook keeps its CloudEvents id;
//! - `source`: the `source` setting, default `/hookwall/<source name>`;
//! - `type`: `type_prefix` + the value `type_from` selects; if it selects nothing, the `type`
//!   setting; with neither the event is rejected with 422 `missing_type`, naming the field;
//! - `subject`: from `subject_from`, when set and found;
//! - `time`: when Hookwall received the event (RFC 3339, UTC);
//! - `datacontenttype` and `data` (a JSON body, as JSON) or `data_base64` (any other body).
//!
//! Selectors (`type_from`, `id_from`, `subject_from`) are `{ header = "name" }` or
//! `{ json = "/pointer" }`, as in the `router`'s rules.
//!
//! ```toml
//! source = "https://api.github.com"
//! type_from = { header = "x-github-event" }
//! type_prefix = "com.github."
//! subject_from = { json = "/repository/full_name" }
//! ```

use hookwall_guest::{
    Action, Event, Plugin, config, config_json,
    serde_json::{Map, Value, json},
};
use hookwall_rules::{Selector, SelectorSpec, Subject};

const CONTENT_TYPE: &str = "application/cloudevents+json";

struct CloudEvents;

impl Plugin for CloudEvents {
    fn handle(event: Event) -> Result<Action, String> {
        let settings = Settings::read()?;
        match envelope(&event, &settings) {
            Ok(envelope) => {
                let body =
                    hookwall_guest::serde_json::to_vec(&envelope).map_err(|e| e.to_string())?;
                let delivery = event
                    .into_delivery()
                    .set_header("content-type", CONTENT_TYPE)
                    .body(body);
                Ok(Action::forward([delivery]))
            }
            Err(rejection) => Ok(rejection),
        }
    }
}

hookwall_guest::export!(CloudEvents);

struct Settings {
    source: Option<String>,
    type_from: Option<Selector>,
    type_prefix: String,
    fixed_type: Option<String>,
    id_from: Option<Selector>,
    subject_from: Option<Selector>,
}

impl Settings {
    fn read() -> Result<Settings, String> {
        let selector = |key: &str| -> Result<Option<Selector>, String> {
            config_json::<SelectorSpec>(key)
                .map_err(|e| format!("cloudevents: `{key}` must be {{ header = \"...\" }} or {{ json = \"/...\" }}: {e}"))?
                .map(SelectorSpec::validate)
                .transpose()
                .map_err(|e| format!("cloudevents: `{key}`: {e}"))
        };
        Ok(Settings {
            source: config("source"),
            type_from: selector("type_from")?,
            type_prefix: config("type_prefix").unwrap_or_default(),
            fixed_type: config("type"),
            id_from: selector("id_from")?,
            subject_from: selector("subject_from")?,
        })
    }
}

/// The envelope for `event`, or the rejection when it has no type.
fn envelope(event: &Event, settings: &Settings) -> Result<Value, Action> {
    let subject = Subject::new(event);
    let pick = |selector: &Option<Selector>| {
        selector
            .as_ref()
            .and_then(|s| subject.find(s).text().map(str::to_owned))
            .filter(|v| !v.is_empty())
    };
    let kind = match (pick(&settings.type_from), &settings.fixed_type) {
        (Some(kind), _) => format!("{}{kind}", settings.type_prefix),
        (None, Some(fixed)) => fixed.clone(),
        (None, None) => {
            let (field, message) = match &settings.type_from {
                Some(Selector::Header(h)) => (
                    h.clone(),
                    format!("the event has no `{h}` header to take its CloudEvents type from"),
                ),
                Some(Selector::Json(p)) => (
                    p.clone(),
                    format!("the body has no string at `{p}` to take its CloudEvents type from"),
                ),
                None => (
                    String::new(),
                    "cloudevents needs `type_from` or `type` in its config".to_owned(),
                ),
            };
            let rejection = Action::reject(422, "missing_type", message);
            return Err(if field.is_empty() {
                rejection
            } else {
                rejection.field(field)
            });
        }
    };
    let mut envelope = Map::new();
    envelope.insert("specversion".into(), json!("1.0"));
    envelope.insert(
        "id".into(),
        json!(pick(&settings.id_from).unwrap_or_else(|| event.id.clone())),
    );
    envelope.insert(
        "source".into(),
        json!(
            settings
                .source
                .clone()
                .unwrap_or_else(|| format!("/hookwall/{}", event.source))
        ),
    );
    envelope.insert("type".into(), json!(kind));
    if let Some(s) = pick(&settings.subject_from) {
        envelope.insert("subject".into(), json!(s));
    }
    envelope.insert("time".into(), json!(rfc3339(event.received_at_ms)));
    match subject.json() {
        Some(data) => {
            envelope.insert("datacontenttype".into(), json!("application/json"));
            envelope.insert("data".into(), data.clone());
        }
        None => {
            let content_type = event
                .header("content-type")
                .unwrap_or("application/octet-stream");
            envelope.insert("datacontenttype".into(), json!(content_type));
            envelope.insert("data_base64".into(), json!(base64(&event.body)));
        }
    }
    Ok(Value::Object(envelope))
}

/// `ms` since the Unix epoch as RFC 3339 UTC with milliseconds, e.g. `2026-11-23T21:24:45.123Z`.
fn rfc3339(ms: u64) -> String {
    let (secs, millis) = (ms / 1000, ms % 1000);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookwall_rules::test_event;

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_469_085_123), "2026-11-23T21:24:45.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn envelope_takes_type_from_the_selector_then_the_fallback() {
        let settings = Settings {
            source: None,
            type_from: Some(Selector::Json("/type".into())),
            type_prefix: "com.acme.".into(),
            fixed_type: None,
            id_from: None,
            subject_from: Some(Selector::Header("x-subject".into())),
        };
        let e = envelope(
            &test_event(&[("x-subject", "o-1")], r#"{"type":"order.paid"}"#),
            &settings,
        )
        .unwrap();
        assert_eq!(e["type"], "com.acme.order.paid");
        assert_eq!(e["source"], "/hookwall/src");
        assert_eq!(e["subject"], "o-1");
        assert_eq!(e["data"]["type"], "order.paid");
        assert!(envelope(&test_event(&[], "{}"), &settings).is_err());
        let e = envelope(
            &test_event(&[], "raw"),
            &Settings {
                fixed_type: Some("t".into()),
                ..settings
            },
        )
        .unwrap();
        assert_eq!(e["type"], "t");
        assert_eq!(e["data_base64"], "cmF3");
    }
}
