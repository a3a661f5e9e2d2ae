//! The explanation of a failed HMAC request: what key form was used and, after a mismatch,
//! the usual reasons found by re-computing the MAC over a few variants — the other secret form
//! (`whsec_` decoded vs raw) or a body that something re-encoded on the way (trailing newline,
//! JSON whitespace). These only fill the [`Diagnostic`]'s hints; the expected signature is
//! never revealed.

use subtle::ConstantTimeEq;

use super::super::Diagnostic;
use super::super::config::SecretEncoding;
use super::super::template::Part;
use super::check::Inputs;
use super::spec::{HmacVerifier, MacState};

/// Diagnosis after a failed signature recomputes the MAC over a few variants of the body and
/// key; above this body size it is skipped, so a flood of bad requests cannot make us hash
/// megabytes several times each.
const DIAGNOSE_MAX_BODY_BYTES: usize = 64 * 1024;

impl HmacVerifier {
    /// How the secrets become keys, in words, for the diagnostic.
    pub(super) fn key_form(&self) -> &'static str {
        match self.spec.secret_encoding {
            SecretEncoding::Raw => "raw: the secret's UTF-8 bytes, whole",
            SecretEncoding::Base64 => "base64: the decoded text after an optional `whsec_`",
        }
    }

    /// After a mismatch, looks for the usual reasons: the other secret form, or a body that
    /// something re-encoded on the way. Only hints; never the expected signature.
    pub(super) fn diagnose(&self, inputs: &Inputs<'_>, given: &[Vec<u8>], diag: &mut Diagnostic) {
        if inputs.body.len() > DIAGNOSE_MAX_BODY_BYTES {
            diag.body = Some(format!("{} bytes, not examined", inputs.body.len()));
            return;
        }
        diag.body = Some(describe_body(inputs.body));
        let template = &self.spec.template;
        let matches = |state: &MacState, body: &[u8]| {
            (0..inputs.urls.len().max(1)).any(|url| {
                let mac = inputs.mac(template, state.clone(), url, body);
                given.iter().any(|sig| bool::from(mac.ct_eq(sig)))
            })
        };
        if self
            .keys
            .iter()
            .filter_map(|k| k.other_form.as_ref())
            .any(|state| matches(state, inputs.body))
        {
            diag.hints
                .push(other_form_hint(self.spec.secret_encoding).into());
            return;
        }
        if !template.parts().contains(&Part::Body) {
            return;
        }
        for (name, variant) in body_variants(inputs.body) {
            if self.keys.iter().any(|k| matches(&k.state, &variant)) {
                diag.hints.push(format!(
                    "the signature matches the body {name}: something between the sender and \
                     Hookwall changed the body bytes (e.g. a proxy parsed and re-serialised \
                     JSON); the body must arrive byte for byte"
                ));
                return;
            }
        }
        if diag.signed_url.is_some() {
            diag.hints.push(
                "check that public_url is exactly the scheme and host the sender posts to".into(),
            );
        }
    }
}

/// The hint when the signature matches the secret in the form `encoding` does not use.
fn other_form_hint(encoding: SecretEncoding) -> &'static str {
    match encoding {
        SecretEncoding::Raw => {
            "the signature matches when the secret is base64-decoded \
                    after `whsec_`: this sender uses Standard Webhooks keys (scheme \
                    standard-webhooks / svix, or secret_encoding = \"base64\")"
        }
        SecretEncoding::Base64 => {
            "the signature matches when the secret is used as \
                    raw text: this sender uses the whole string as the key (e.g. Stripe; \
                    secret_encoding = \"raw\")"
        }
    }
}

/// A short description of the body's shape, for the diagnostic.
fn describe_body(body: &[u8]) -> String {
    let shape = if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
        if json_whitespace(body, false) == body {
            "JSON, compact"
        } else {
            "JSON, with whitespace between tokens"
        }
    } else if std::str::from_utf8(body)
        .is_ok_and(|s| s.contains('=') && !s.contains(char::is_whitespace))
    {
        "form-encoded"
    } else {
        "not JSON"
    };
    let newline = if body.ends_with(b"\n") {
        ", ends with a newline"
    } else {
        ""
    };
    format!("{shape}{newline}")
}

/// Bodies the sender may have signed before something re-encoded ours.
fn body_variants(body: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let mut variants = Vec::new();
    if let Some(trimmed) = body.strip_suffix(b"\n") {
        variants.push(("without its trailing newline", trimmed.to_vec()));
    } else {
        variants.push(("with a trailing newline", [body, b"\n"].concat()));
    }
    if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
        for (name, spaced) in [
            ("as compact JSON", false),
            ("as JSON with a space after `,` and `:`", true),
        ] {
            let v = json_whitespace(body, spaced);
            if v != body {
                variants.push((name, v));
            }
        }
    }
    variants
}

/// Re-writes JSON's whitespace without re-parsing (so key order and number spelling stay):
/// drops insignificant whitespace, then with `spaced` puts one space after `,` and `:` as
/// Python's `json.dumps` does.
fn json_whitespace(body: &[u8], spaced: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 8);
    let (mut in_string, mut escaped) = (false, false);
    for &b in body {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b' ' | b'\n' | b'\r' | b'\t' => {}
            b'"' => {
                in_string = true;
                out.push(b);
            }
            b',' | b':' => {
                out.push(b);
                if spaced {
                    out.push(b' ');
                }
            }
            _ => out.push(b),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_whitespace_keeps_strings_and_spells_python_spacing() {
        let body = br#"{ "a" : "x, y: \"z\"" ,
  "b":[1, 2.50] }"#;
        assert_eq!(
            json_whitespace(body, false),
            br#"{"a":"x, y: \"z\"","b":[1,2.50]}"#
        );
        assert_eq!(
            json_whitespace(body, true),
            br#"{"a": "x, y: \"z\"", "b": [1, 2.50]}"#
        );
    }

    #[test]
    fn body_variants_try_the_newline_and_both_json_spellings() {
        let names = |body: &[u8]| -> Vec<&str> {
            body_variants(body).into_iter().map(|(n, _)| n).collect()
        };
        assert_eq!(
            names(b"{\"a\": 1}\n"),
            [
                "without its trailing newline",
                "as compact JSON",
                "as JSON with a space after `,` and `:`"
            ]
        );
        assert_eq!(
            names(b"{\"a\":1}"),
            [
                "with a trailing newline",
                "as JSON with a space after `,` and `:`"
            ]
        );
        assert_eq!(names(b"a=1&b=2"), ["with a trailing newline"]);
    }

    #[test]
    fn describe_body_names_the_shape() {
        assert_eq!(describe_body(b"{\"a\":1}"), "JSON, compact");
        assert_eq!(
            describe_body(b"{\"a\": 1}\n"),
            "JSON, with whitespace between tokens, ends with a newline"
        );
        assert_eq!(describe_body(b"a=1&b=2"), "form-encoded");
        assert_eq!(describe_body(b"hello world"), "not JSON");
    }
}
