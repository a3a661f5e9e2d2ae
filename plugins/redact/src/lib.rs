//! # redact: the bundled field redactor
//!
//! Removes or masks sensitive data before any sink sees it (the stored event keeps the
//! original; sinks get the redacted copy). Put it first in a source's chain.
//!
//! Config (every key optional):
//!
//! - `remove`: JSON pointers of fields to delete, e.g. `["/customer/ssn"]`.
//! - `mask`: JSON pointers of fields whose value is replaced by `mask_with`.
//! - `mask_with`: the replacement for `mask` (default `"[REDACTED]"`).
//! - `detect`: patterns found and masked in every string of the body, wherever they are:
//!   `"card"` (13–19 digits, spaces or dashes allowed, passing the Luhn check: all digits but
//!   the last four become `*`) and `"email"` (the part before `@` becomes `***`).
//! - `headers`: header names to remove (e.g. `["authorization"]`).
//!
//! A pointer that does not exist in an event is skipped. A body that is not JSON is scanned as
//! text by `detect` (when it is UTF-8); pointers do not apply to it.
//!
//! ```toml
//! remove = ["/customer/ssn"]
//! mask = ["/customer/phone"]
//! detect = ["card", "email"]
//! headers = ["authorization"]
//! ```

use hookwall_guest::{
    Action, Event, Plugin, config, config_json, metrics,
    serde_json::{self, Value},
};

const DEFAULT_MASK: &str = "[REDACTED]";

struct Redact;

/// The plugin's settings, read from the `config` import.
#[derive(Debug, Default)]
struct Settings {
    remove: Vec<String>,
    mask: Vec<String>,
    mask_with: String,
    cards: bool,
    emails: bool,
    headers: Vec<String>,
}

impl Settings {
    fn read() -> Result<Settings, String> {
        let list = |key: &str| -> Result<Vec<String>, String> {
            Ok(config_json::<Vec<String>>(key)
                .map_err(|e| format!("redact: `{key}` must be an array of strings: {e}"))?
                .unwrap_or_default())
        };
        let (remove, mask) = (list("remove")?, list("mask")?);
        for pointer in remove.iter().chain(&mask) {
            if !pointer.starts_with('/') {
                return Err(format!(
                    "redact: `{pointer}` is not a JSON pointer to a field; write it like \"/card/number\""
                ));
            }
        }
        let mut settings = Settings {
            remove,
            mask,
            mask_with: config("mask_with").unwrap_or_else(|| DEFAULT_MASK.to_owned()),
            headers: list("headers")?,
            ..Settings::default()
        };
        for pattern in list("detect")? {
            match pattern.as_str() {
                "card" => settings.cards = true,
                "email" => settings.emails = true,
                other => {
                    return Err(format!(
                        "redact: unknown `detect` pattern `{other}` (expected \"card\" or \"email\")"
                    ));
                }
            }
        }
        Ok(settings)
    }
}

impl Plugin for Redact {
    fn handle(event: Event) -> Result<Action, String> {
        let settings = Settings::read()?;
        let mut delivery = event.into_delivery();
        delivery.headers.retain(|(name, _)| {
            !settings
                .headers
                .iter()
                .any(|h| h.eq_ignore_ascii_case(name))
        });
        let mut changes = 0;
        delivery.body = match serde_json::from_slice::<Value>(&delivery.body) {
            Ok(mut body) => {
                changes += redact_json(&mut body, &settings);
                serde_json::to_vec(&body).map_err(|e| e.to_string())?
            }
            Err(_) => match String::from_utf8(delivery.body) {
                Ok(mut text) => {
                    changes += redact_text(&mut text, &settings);
                    text.into_bytes()
                }
                Err(e) => e.into_bytes(),
            },
        };
        if changes > 0 {
            metrics::counter_add("redacted_fields", changes as u64);
        }
        Ok(Action::forward([delivery]))
    }
}

hookwall_guest::export!(Redact);

/// Applies `settings` to a JSON body; returns how many values it changed.
fn redact_json(body: &mut Value, settings: &Settings) -> usize {
    let mut changes = 0;
    for pointer in &settings.remove {
        if remove(body, pointer) {
            changes += 1;
        }
    }
    for pointer in &settings.mask {
        if let Some(value) = body.pointer_mut(pointer) {
            *value = Value::String(settings.mask_with.clone());
            changes += 1;
        }
    }
    if settings.cards || settings.emails {
        changes += scan(body, settings);
    }
    changes
}

/// Deletes the field or array element at `pointer`; true when there was one.
fn remove(body: &mut Value, pointer: &str) -> bool {
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return false;
    };
    let key = last.replace("~1", "/").replace("~0", "~");
    match body.pointer_mut(parent) {
        Some(Value::Object(map)) => map.remove(&key).is_some(),
        Some(Value::Array(items)) => match key.parse::<usize>() {
            Ok(i) if i < items.len() => {
                items.remove(i);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// Masks detected patterns in every string of `value` (object keys stay as they are).
fn scan(value: &mut Value, settings: &Settings) -> usize {
    match value {
        Value::String(s) => redact_text(s, settings),
        Value::Array(items) => items.iter_mut().map(|v| scan(v, settings)).sum(),
        Value::Object(map) => map.values_mut().map(|v| scan(v, settings)).sum(),
        // A card number sent as a JSON number.
        Value::Number(n) if settings.cards => {
            let mut text = n.to_string();
            if mask_cards(&mut text) > 0 {
                *value = Value::String(text);
                1
            } else {
                0
            }
        }
        _ => 0,
    }
}

fn redact_text(text: &mut String, settings: &Settings) -> usize {
    let mut changes = 0;
    if settings.cards {
        changes += mask_cards(text);
    }
    if settings.emails {
        changes += mask_emails(text);
    }
    changes
}

/// Replaces all but the last four digits of each card number in `text` with `*`; returns how
/// many it masked. A card number is 13–19 digits, optionally grouped by single spaces or
/// dashes, not part of a longer digit run, and valid under the Luhn check.
fn mask_cards(text: &mut String) -> usize {
    let mut bytes = text.as_bytes().to_vec();
    let mut count = 0;
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() || (i > 0 && bytes[i - 1].is_ascii_digit()) {
            i += 1;
            continue;
        }
        // Extend over digits and single separators between digits.
        let mut digits = vec![i];
        let mut j = i + 1;
        while j < bytes.len() {
            if bytes[j].is_ascii_digit() {
                digits.push(j);
                j += 1;
            } else if matches!(bytes[j], b' ' | b'-')
                && bytes.get(j + 1).is_some_and(u8::is_ascii_digit)
            {
                j += 1;
            } else {
                break;
            }
        }
        if (13..=19).contains(&digits.len()) && luhn(digits.iter().map(|&k| bytes[k] - b'0')) {
            for &k in &digits[..digits.len() - 4] {
                bytes[k] = b'*';
            }
            count += 1;
        }
        i = j;
    }
    if count > 0 {
        // Only ASCII digits were replaced by ASCII `*`: still UTF-8.
        *text = String::from_utf8(bytes).expect("ASCII replacements keep UTF-8");
    }
    count
}

fn luhn(digits: impl DoubleEndedIterator<Item = u8>) -> bool {
    let sum: u32 = digits
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    sum % 10 == 0
}

/// Replaces the local part of each email address in `text` with `***`; returns how many.
fn mask_emails(text: &mut String) -> usize {
    let local = |c: char| c.is_ascii_alphanumeric() || "._%+-".contains(c);
    let domain = |c: char| c.is_ascii_alphanumeric() || ".-".contains(c);
    let mut out = String::with_capacity(text.len());
    let mut count = 0;
    let mut rest = text.as_str();
    while let Some(at) = rest.find('@') {
        let (before, after) = (&rest[..at], &rest[at + 1..]);
        let start = before
            .char_indices()
            .rev()
            .take_while(|&(_, c)| local(c))
            .last()
            .map_or(before.len(), |(i, _)| i);
        let end = after.find(|c: char| !domain(c)).unwrap_or(after.len());
        let host = after[..end].trim_end_matches('.');
        let is_email = start < before.len()
            && host.contains('.')
            && !host.starts_with('.')
            && host.rsplit('.').next().is_some_and(|tld| tld.len() >= 2);
        if is_email {
            out.push_str(&before[..start]);
            out.push_str("***@");
            count += 1;
        } else {
            out.push_str(before);
            out.push('@');
        }
        rest = after;
    }
    out.push_str(rest);
    if count > 0 {
        *text = out;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookwall_guest::serde_json::json;

    fn all() -> Settings {
        Settings {
            remove: vec!["/customer/ssn".into(), "/items/1".into()],
            mask: vec!["/customer/phone".into()],
            mask_with: DEFAULT_MASK.into(),
            cards: true,
            emails: true,
            headers: vec![],
        }
    }

    #[test]
    fn cards_are_masked_only_when_luhn_valid() {
        let mut s = "pay 4242 4242 4242 4242 or 4111-1111-1111-1111, not 1234567890123".to_owned();
        assert_eq!(mask_cards(&mut s), 2);
        assert_eq!(
            s,
            "pay **** **** **** 4242 or ****-****-****-1111, not 1234567890123"
        );
        let mut long = "ref 42424242424242420000".to_owned();
        assert_eq!(mask_cards(&mut long), 0, "a longer digit run is not a card");
    }

    #[test]
    fn emails_keep_their_domain() {
        let mut s =
            "to jane.doe+x@example.com, cc ops@corp.example.org; not @handle or a@b".to_owned();
        assert_eq!(mask_emails(&mut s), 2);
        assert_eq!(
            s,
            "to ***@example.com, cc ***@corp.example.org; not @handle or a@b"
        );
    }

    #[test]
    fn json_bodies_are_redacted_everywhere() {
        let mut body = json!({
            "customer": {"ssn": "123-45-6789", "phone": "+1 555 0100", "email": "jane@example.com"},
            "items": [{"note": "card 4242424242424242"}, {"drop": true}, 3],
            "pan": 4242424242424242u64,
        });
        assert_eq!(redact_json(&mut body, &all()), 6);
        assert_eq!(
            body,
            json!({
                "customer": {"phone": "[REDACTED]", "email": "***@example.com"},
                "items": [{"note": "card ************4242"}, 3],
                "pan": "************4242",
            })
        );
    }
}
