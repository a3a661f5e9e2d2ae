//! Signing: the reverse of `check`, making a request pass an [`HmacVerifier`] with its first
//! secret — the signature header (with the timestamp entry or header and the id header the
//! scheme reads), and for some schemes the query (Twilio's `bodySHA256`) or a JSON timestamp
//! in the body (Linear's `webhookTimestamp`). Used by `hookwall send`, the http sink, tests
//! and benchmarks.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::Digest as _;

use super::super::config::{Delimiter, SignatureEncoding, TimestampUnit};
use super::super::template::url_variants;
use super::super::{IdSource, Signed, parse};
use super::check::Inputs;
use super::spec::{BODY_SHA256_PARAM, HmacVerifier, TimestampSource, TimestampSpec};

impl HmacVerifier {
    /// Headers (and, for `{url}` schemes with a JSON body, the query; for a JSON-body
    /// timestamp, the body) that make a request pass, signed with the first secret.
    pub(crate) fn sign(&self, mut signed: Signed, event_id: &str, now_ms: u64) -> Signed {
        let spec = &self.spec;
        let ts_value = match spec.timestamp.as_ref().map(|t| t.unit) {
            Some(TimestampUnit::Millis) => now_ms,
            _ => now_ms / 1000,
        };
        let timestamp = ts_value.to_string();
        let params = self.prepare_body(&mut signed, ts_value);
        let urls = spec
            .public_url
            .as_deref()
            .map(|u| url_variants(u, &signed.path, &signed.query))
            .unwrap_or_default();
        let inputs = Inputs {
            body: &signed.body,
            id: event_id.as_bytes(),
            timestamp: timestamp.as_bytes(),
            params,
            urls,
        };
        let Some(key) = self.keys.first() else {
            return signed;
        };
        let mac = inputs.mac(&spec.template, key.state.clone(), 0, inputs.body);
        let headers = self.signature_headers(mac, &timestamp, event_id);
        signed.headers.extend(headers);
        signed
    }

    /// Puts a JSON-body timestamp (`ts_value`) into the body and, for `{url}`/`{params}`
    /// schemes, a JSON body's SHA-256 into the query; returns the form parameters to sign
    /// (empty unless the scheme signs `{params}` of a non-JSON body).
    fn prepare_body(&self, signed: &mut Signed, ts_value: u64) -> Vec<u8> {
        let spec = &self.spec;
        if let Some(TimestampSpec {
            source: TimestampSource::Json(pointer),
            ..
        }) = &spec.timestamp
        {
            signed.body = set_json_number(&signed.body, pointer, ts_value);
        }
        let mut params = Vec::new();
        if spec.template.uses_url() || spec.template.uses_params() {
            if serde_json::from_slice::<serde::de::IgnoredAny>(&signed.body).is_ok() {
                let hash = hex::encode(sha2::Sha256::digest(&signed.body));
                let sep = if signed.query.is_empty() { "" } else { "&" };
                signed.query = format!("{}{sep}{BODY_SHA256_PARAM}={hash}", signed.query);
            } else if spec.template.uses_params() {
                params = parse::sorted_form_params(&signed.body);
            }
        }
        params
    }

    /// The headers a sender adds for `mac`: the signature header first (with the timestamp
    /// entry in front, for entry timestamps), then the timestamp header and the id header
    /// when the scheme reads them.
    fn signature_headers(
        &self,
        mac: Vec<u8>,
        timestamp: &str,
        event_id: &str,
    ) -> Vec<(String, String)> {
        let spec = &self.spec;
        let encoded = match spec.encoding {
            SignatureEncoding::Hex => hex::encode(mac),
            SignatureEncoding::Base64 => BASE64.encode(mac),
        };
        let mut value = format!("{}{encoded}", spec.prefix);
        let mut headers = Vec::new();
        match spec.timestamp.as_ref().map(|t| &t.source) {
            Some(TimestampSource::Headers(names)) => {
                headers.push((names[0].clone(), timestamp.to_string()));
            }
            Some(TimestampSource::Entry(prefix)) => {
                let d = spec.delimiter.map_or(',', Delimiter::char);
                value = format!("{prefix}{timestamp}{d}{value}");
            }
            _ => {}
        }
        headers.insert(0, (self.signature_header_name(), value));
        if let Some(IdSource::Headers(names)) = &spec.id {
            headers.push((names[0].clone(), event_id.to_string()));
        }
        headers
    }
}

/// `body` with the JSON number at `pointer` set to `value` (created when the parent object
/// exists); unchanged when the body is not JSON.
fn set_json_number(body: &[u8], pointer: &str, value: u64) -> Vec<u8> {
    let Ok(mut doc) = serde_json::from_slice::<serde_json::Value>(body) else {
        return body.to_vec();
    };
    if let Some(slot) = doc.pointer_mut(pointer) {
        *slot = value.into();
    } else if let Some((parent, name)) = pointer.rsplit_once('/')
        && let Some(serde_json::Value::Object(map)) = doc.pointer_mut(parent)
    {
        map.insert(name.to_string(), value.into());
    }
    serde_json::to_vec(&doc).unwrap_or_else(|_| body.to_vec())
}

#[cfg(test)]
mod tests {
    use super::set_json_number;

    #[test]
    fn set_json_number_replaces_or_creates_under_an_existing_parent() {
        assert_eq!(
            set_json_number(br#"{"a":{"t":1}}"#, "/a/t", 7),
            br#"{"a":{"t":7}}"#
        );
        assert_eq!(
            set_json_number(br#"{"a":{}}"#, "/a/t", 7),
            br#"{"a":{"t":7}}"#
        );
        assert_eq!(set_json_number(br#"{"a":1}"#, "/b/t", 7), br#"{"a":1}"#);
        assert_eq!(set_json_number(b"not json", "/t", 7), b"not json");
    }
}
