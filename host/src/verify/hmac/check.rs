//! Verification of one request against an [`HmacVerifier`]: find and decode the signatures,
//! gather the signed inputs (id, timestamp, URL forms, form parameters), MAC them under every
//! key in constant time, then check the timestamp's tolerance. A verified Slack or Zoom
//! challenge is answered here too ([`HmacVerifier::handshake`]).
//!
//! Order matters and is kept: a request is refused for its signature before its timestamp is
//! judged, so a stale timestamp is reported only on an authentic request.

use sha2::Digest as _;
use subtle::ConstantTimeEq;

use super::super::config::{Handshake, HmacAlgorithm, TimestampUnit};
use super::super::template::{Part, Template, url_variants};
use super::super::{BodyJson, ChallengeReply, Diagnostic, IdSource, VerifyError, parse};
use super::spec::{BODY_SHA256_PARAM, HmacVerifier, MacState, TimestampSource, mac};
use crate::event::InboundRequest;

/// Everything the template needs from one request.
pub(super) struct Inputs<'a> {
    /// The body the sender signed (as received, or as `sign` will send it).
    pub(super) body: &'a [u8],
    /// The event id, when the template signs `{id}`; else empty.
    pub(super) id: &'a [u8],
    /// The timestamp exactly as sent; empty when the scheme has none in a header.
    pub(super) timestamp: &'a [u8],
    /// The body's sorted form parameters (`{params}`), or empty.
    pub(super) params: Vec<u8>,
    /// The public URL forms to try (`{url}`), or none.
    pub(super) urls: Vec<String>,
}

impl Inputs<'_> {
    /// The MAC of the template over these inputs, for URL form `url` (an index into `urls`),
    /// with `body` in place of the request body.
    pub(super) fn mac(
        &self,
        template: &Template,
        mut state: MacState,
        url: usize,
        body: &[u8],
    ) -> Vec<u8> {
        for part in template.parts() {
            match part {
                Part::Literal(l) => state.update(l),
                Part::Body => state.update(body),
                Part::Id => state.update(self.id),
                Part::Timestamp => state.update(self.timestamp),
                Part::Url => state.update(self.urls.get(url).map_or(&[][..], |u| u.as_bytes())),
                Part::Params => state.update(&self.params),
            }
        }
        state.finalize()
    }

    fn signed_len(&self, template: &Template) -> usize {
        template
            .parts()
            .iter()
            .map(|part| match part {
                Part::Literal(l) => l.len(),
                Part::Body => self.body.len(),
                Part::Id => self.id.len(),
                Part::Timestamp => self.timestamp.len(),
                Part::Url => self.urls.first().map_or(0, String::len),
                Part::Params => self.params.len(),
            })
            .sum()
    }
}

/// The secret that verified a request (its index in config order).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Matched(usize);

/// The first of `names` present in `request`: (name, value).
fn first_header<'r, 'n>(
    request: &'r InboundRequest,
    names: &'n [String],
) -> Option<(&'n str, &'r str)> {
    names
        .iter()
        .find_map(|n| request.header(n).map(|v| (n.as_str(), v)))
}

impl HmacVerifier {
    /// Checks the signature and the timestamp's tolerance.
    pub(crate) fn check(
        &self,
        request: &InboundRequest,
        now_ms: u64,
        json: &mut BodyJson<'_>,
        diag: &mut Diagnostic,
    ) -> Result<Matched, VerifyError> {
        let spec = &self.spec;
        diag.signed = Some(spec.template.as_str().to_string());
        diag.key_form = Some(self.key_form());
        let (header, value) =
            first_header(request, &spec.headers).ok_or_else(|| VerifyError::SignatureMissing {
                header: self.signature_header_name(),
            })?;
        diag.header = Some(header.to_string());
        diag.header_bytes = Some(value.len());
        let given = self.given_signatures(header, value)?;
        diag.signatures = Some(given.len());

        let timestamp = self.timestamp_text(request, value)?;
        let id = self.signed_id(request)?;
        let (params, urls) = self.url_inputs(request, header, diag)?;
        let inputs = Inputs {
            body: request.body.as_ref(),
            id: id.as_bytes(),
            timestamp: timestamp.map_or(&[][..], |(t, _)| t.as_bytes()),
            params,
            urls,
        };
        diag.signed_bytes = Some(inputs.signed_len(&spec.template));
        let Some(matched) = self.find_key(&inputs, &given) else {
            self.diagnose(&inputs, &given, diag);
            return Err(VerifyError::SignatureInvalid {
                header: header.to_string(),
                signed_bytes: diag.signed_bytes.unwrap_or(0),
            });
        };
        self.check_tolerance(timestamp.map(|(_, v)| v), now_ms, json, diag)?;
        Ok(matched)
    }

    /// The signatures in `value` (the header `header`), decoded. Undecodable entries are
    /// skipped while one decodes; with none, the first entry's error is the refusal.
    fn given_signatures(&self, header: &str, value: &str) -> Result<Vec<Vec<u8>>, VerifyError> {
        let spec = &self.spec;
        let malformed = |reason: String| VerifyError::SignatureMalformed {
            header: header.to_string(),
            reason,
        };
        let encoded = parse::signatures(value, spec.delimiter, &spec.prefix)
            .map_err(|m| malformed(m.to_string()))?;
        let mut given = Vec::with_capacity(encoded.len());
        let mut first_error = None;
        for text in encoded {
            match parse::decode_signature(text, spec.encoding, spec.algorithm.output_len()) {
                Ok(sig) => given.push(sig),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if given.is_empty() {
            return Err(malformed(first_error.unwrap_or_default()));
        }
        Ok(given)
    }

    /// The id header's value when the template signs `{id}` (a missing one is a missing
    /// signed header); else empty.
    fn signed_id<'r>(&self, request: &'r InboundRequest) -> Result<&'r str, VerifyError> {
        match (&self.spec.id, self.spec.template.uses_id()) {
            (Some(IdSource::Headers(names)), true) => first_header(request, names)
                .map(|(_, v)| v)
                .ok_or_else(|| VerifyError::SignatureMissing {
                    header: names.first().cloned().unwrap_or_default(),
                }),
            _ => Ok(""),
        }
    }

    /// For `{url}`/`{params}` schemes: the form parameters and the public URL forms to sign.
    /// A JSON body is signed through its SHA-256 in the query (`bodySHA256`), which must match
    /// the body; its parameters are then empty.
    fn url_inputs(
        &self,
        request: &InboundRequest,
        header: &str,
        diag: &mut Diagnostic,
    ) -> Result<(Vec<u8>, Vec<String>), VerifyError> {
        let spec = &self.spec;
        let (mut params, mut urls) = (Vec::new(), Vec::new());
        if !spec.template.uses_url() && !spec.template.uses_params() {
            return Ok((params, urls));
        }
        let body = request.body.as_ref();
        match parse::query_param(&request.query, BODY_SHA256_PARAM) {
            // A JSON body is signed through its hash in the URL; the hash must match.
            Some(expected) => {
                let actual = hex::encode(sha2::Sha256::digest(body));
                if !bool::from(
                    actual
                        .as_bytes()
                        .ct_eq(expected.to_ascii_lowercase().as_bytes()),
                ) {
                    diag.hints.push(format!(
                        "the body's SHA-256 differs from the URL's {BODY_SHA256_PARAM}"
                    ));
                    return Err(VerifyError::SignatureInvalid {
                        header: header.to_string(),
                        signed_bytes: body.len(),
                    });
                }
            }
            None if spec.template.uses_params() => params = parse::sorted_form_params(body),
            None => {}
        }
        if let Some(public) = &spec.public_url {
            urls = url_variants(public, &request.path, &request.query);
            diag.signed_url = urls.first().cloned();
        }
        Ok((params, urls))
    }

    /// The first key (in config order) whose MAC of `inputs` equals one of `given`, for any
    /// URL form. Every key, form and signature is compared, in constant time, whatever matched.
    fn find_key(&self, inputs: &Inputs<'_>, given: &[Vec<u8>]) -> Option<Matched> {
        let url_forms = inputs.urls.len().max(1);
        let mut matched = None;
        for (i, key) in self.keys.iter().enumerate() {
            for url in 0..url_forms {
                let mac = inputs.mac(&self.spec.template, key.state.clone(), url, inputs.body);
                let mut hit = subtle::Choice::from(0);
                for sig in given {
                    hit |= mac.ct_eq(sig);
                }
                if bool::from(hit) && matched.is_none() {
                    matched = Some(Matched(i));
                }
            }
        }
        matched
    }

    /// The timestamp as sent (it is signed byte for byte) and its value, when it comes from a
    /// header or the signature header; JSON timestamps are read after the signature passes.
    fn timestamp_text<'r>(
        &self,
        request: &'r InboundRequest,
        signature_value: &'r str,
    ) -> Result<Option<(&'r str, i64)>, VerifyError> {
        let Some(ts) = &self.spec.timestamp else {
            return Ok(None);
        };
        let (place, text) = match &ts.source {
            TimestampSource::Json(_) => return Ok(None),
            TimestampSource::Headers(names) => (
                format!("header {}", names.first().map_or("", String::as_str)),
                first_header(request, names).map(|(_, v)| v),
            ),
            TimestampSource::Entry(prefix) => (
                format!(
                    "the `{prefix}` entry of header {}",
                    self.signature_header_name()
                ),
                self.spec
                    .delimiter
                    .and_then(|d| parse::entry(signature_value, d, prefix)),
            ),
        };
        let text = text.ok_or_else(|| VerifyError::TimestampMissing {
            place: place.clone(),
            reason: "absent".into(),
        })?;
        let value = parse::unix_time(text).ok_or_else(|| VerifyError::TimestampMissing {
            place,
            reason: "not a Unix time in decimal digits".into(),
        })?;
        Ok(Some((text, value)))
    }

    /// Checks that the sent time (`header_value`, or the body's JSON timestamp) is within the
    /// tolerance of `now_ms`, and records the skew in the diagnostic.
    fn check_tolerance(
        &self,
        header_value: Option<i64>,
        now_ms: u64,
        json: &mut BodyJson<'_>,
        diag: &mut Diagnostic,
    ) -> Result<(), VerifyError> {
        let Some(ts) = &self.spec.timestamp else {
            return Ok(());
        };
        let value = match (&ts.source, header_value) {
            (_, Some(v)) => v,
            (TimestampSource::Json(pointer), None) => json
                .pointer(pointer)
                .and_then(|v| match v {
                    serde_json::Value::Number(n) => n.as_i64(),
                    serde_json::Value::String(s) => parse::unix_time(s),
                    _ => None,
                })
                .filter(|v| *v >= 0)
                .ok_or_else(|| VerifyError::TimestampMissing {
                    place: format!("JSON field {pointer} of the body"),
                    reason: "absent or not a Unix time".into(),
                })?,
            (_, None) => return Ok(()),
        };
        let sent_ms = match ts.unit {
            TimestampUnit::Seconds => i128::from(value) * 1000,
            TimestampUnit::Millis => i128::from(value),
        };
        let skew_ms = i128::from(now_ms) - sent_ms;
        let skew_secs = i64::try_from(skew_ms / 1000).unwrap_or(i64::MAX);
        diag.timestamp_skew_secs = Some(skew_secs);
        if skew_ms.unsigned_abs() > ts.tolerance.as_millis() {
            return Err(VerifyError::TimestampOutOfTolerance {
                skew_secs,
                tolerance_secs: ts.tolerance.as_secs(),
            });
        }
        Ok(())
    }

    /// The Zoom/Slack handshake reply, when the verified body is that provider's challenge.
    pub(crate) fn handshake(
        &self,
        matched: Matched,
        json: &mut BodyJson<'_>,
    ) -> Option<ChallengeReply> {
        let kind = self.spec.handshake?;
        let value = json.get()?;
        let body = match kind {
            Handshake::Slack => {
                if value.get("type")?.as_str()? != "url_verification" {
                    return None;
                }
                serde_json::json!({ "challenge": value.get("challenge")?.as_str()? })
            }
            Handshake::Zoom => {
                if value.get("event")?.as_str()? != "endpoint.url_validation" {
                    return None;
                }
                let token = value.pointer("/payload/plainToken")?.as_str()?;
                let key = self.keys.get(matched.0)?;
                let encrypted = hex::encode(mac(
                    HmacAlgorithm::Sha256,
                    key.bytes.expose(),
                    token.as_bytes(),
                ));
                serde_json::json!({ "plainToken": token, "encryptedToken": encrypted })
            }
        };
        Some(ChallengeReply {
            status: 200,
            content_type: "application/json",
            body: body.to_string().into_bytes(),
        })
    }
}
