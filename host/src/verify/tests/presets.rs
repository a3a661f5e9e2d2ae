//! The same checks for every HMAC preset: round trip, tampering, replay windows, rotation,
//! several signatures, malformed headers; and each preset equals its documented `hmac` line.

use super::*;

/// A fixed "now" (2023-11-14T22:13:20Z).
const NOW: u64 = 1_700_000_000_000;
const BODY: &[u8] = br#"{"id":"evt_42","event_id":"evt_42","type":"order.created","n":1}"#;

struct Case {
    scheme: &'static str,
    /// Extra config for the preset (Twilio's public URL).
    extra: &'static str,
    /// A secret in the form the provider hands out.
    secret: &'static str,
    other_secret: &'static str,
    /// The equivalent generic `hmac` line's knobs (docs/providers.md).
    generic: &'static str,
}

const CASES: &[Case] = &[
    Case::new(
        "standard-webhooks",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24=",
        r#"header = "webhook-signature"
delimiter = "space"
prefix = "v1,"
encoding = "base64"
secret_encoding = "base64"
signed = "{id}.{timestamp}.{body}"
timestamp_header = "webhook-timestamp"
id_header = "webhook-id""#,
    ),
    Case::new(
        "svix",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24=",
        r#"header = "svix-signature"
delimiter = "space"
prefix = "v1,"
encoding = "base64"
secret_encoding = "base64"
signed = "{id}.{timestamp}.{body}"
timestamp_header = "svix-timestamp"
id_header = "svix-id""#,
    ),
    Case::new(
        "github",
        "gh-secret",
        "gh-secret-2",
        r#"header = "X-Hub-Signature-256"
prefix = "sha256="
id_header = "X-GitHub-Delivery""#,
    ),
    Case::new(
        "stripe",
        "whsec_zXu1vG6cS0pJkF0cQ1X8m2Vd3dY7hL4T",
        "whsec_second",
        r#"header = "Stripe-Signature"
delimiter = "comma"
prefix = "v1="
signed = "{timestamp}.{body}"
timestamp_prefix = "t="
id_json = "/id""#,
    ),
    Case::new(
        "slack",
        "8f742231b10e8888abcd99yyyzzz85a5",
        "slack-2",
        r#"header = "X-Slack-Signature"
prefix = "v0="
signed = "v0:{timestamp}:{body}"
timestamp_header = "X-Slack-Request-Timestamp"
id_json = "/event_id"
handshake = "slack""#,
    ),
    Case::new(
        "shopify",
        "shpss_x",
        "shpss_y",
        r#"header = "X-Shopify-Hmac-Sha256"
encoding = "base64"
id_header = "X-Shopify-Webhook-Id""#,
    ),
    Case {
        scheme: "twilio",
        extra: "public_url = \"https://hooks.example.com\"",
        secret: "12345",
        other_secret: "67890",
        generic: r#"header = "X-Twilio-Signature"
algorithm = "sha1"
encoding = "base64"
signed = "{url}{params}"
id_header = "I-Twilio-Idempotency-Token""#,
    },
    Case::new(
        "paddle",
        "pdl_ntfset_1",
        "pdl_ntfset_2",
        r#"header = "Paddle-Signature"
delimiter = "semicolon"
prefix = "h1="
signed = "{timestamp}:{body}"
timestamp_prefix = "ts="
tolerance = "5s"
id_json = "/event_id""#,
    ),
    Case::new(
        "linear",
        "lin_wh_1",
        "lin_wh_2",
        r#"header = "Linear-Signature"
timestamp_json = "/webhookTimestamp"
timestamp_unit = "ms"
tolerance = "1m"
id_header = "Linear-Delivery""#,
    ),
    Case::new(
        "zoom",
        "zoom-token",
        "zoom-token-2",
        r#"header = "x-zm-signature"
prefix = "v0="
signed = "v0:{timestamp}:{body}"
timestamp_header = "x-zm-request-timestamp"
handshake = "zoom""#,
    ),
];

impl Case {
    /// A preset that needs no extra config.
    const fn new(
        scheme: &'static str,
        secret: &'static str,
        other_secret: &'static str,
        generic: &'static str,
    ) -> Case {
        Case {
            scheme,
            extra: "",
            secret,
            other_secret,
            generic,
        }
    }

    fn verifier(&self, secrets: &[&str]) -> Verifier {
        let list: Vec<String> = secrets.iter().map(|s| format!("{s:?}")).collect();
        verifier(&format!(
            "scheme = \"{}\"\nsecrets = [{}]\n{}",
            self.scheme,
            list.join(", "),
            self.extra
        ))
    }

    fn timestamped(&self) -> bool {
        !matches!(self.scheme, "github" | "shopify" | "twilio")
    }

    fn tolerance_secs(&self) -> u64 {
        match self.scheme {
            "paddle" => 5,
            "linear" => 60,
            _ => 300,
        }
    }

    /// The header holding the signature, in `request`.
    fn signature_header(&self, r: &InboundRequest) -> String {
        let name = match self.scheme {
            "standard-webhooks" => "webhook-signature",
            "svix" => "svix-signature",
            "github" => "x-hub-signature-256",
            "stripe" => "stripe-signature",
            "slack" => "x-slack-signature",
            "shopify" => "x-shopify-hmac-sha256",
            "twilio" => "x-twilio-signature",
            "paddle" => "paddle-signature",
            "linear" => "linear-signature",
            "zoom" => "x-zm-signature",
            other => panic!("no case for {other}"),
        };
        assert!(
            r.header(name).is_some(),
            "{}: {name} not signed",
            self.scheme
        );
        name.to_string()
    }
}

fn set_header(r: &mut InboundRequest, name: &str, value: &str) {
    r.headers.retain(|(k, _)| k != name);
    r.headers.push((name.to_string(), value.to_string()));
}

#[test]
fn every_preset_round_trips_and_carries_its_event_id() {
    for case in CASES {
        let v = case.verifier(&[case.secret]);
        let e = event(&v, signed(&v, BODY, "evt_42", NOW), NOW);
        let expected = (case.scheme != "zoom").then_some("evt_42");
        assert_eq!(e.event_id(), expected, "{}", case.scheme);
    }
}

#[test]
fn tampering_with_body_signature_or_timestamp_is_signature_invalid() {
    for case in CASES {
        let v = case.verifier(&[case.secret]);
        let good = signed(&v, BODY, "evt_42", NOW);
        let scheme = case.scheme;

        let mut r = good.clone();
        let mut body = r.body.to_vec();
        body[2] ^= 0x01;
        r.body = body.into();
        assert_eq!(code(&v, r, NOW), "signature_invalid", "{scheme}: body byte");

        let mut r = good.clone();
        let name = case.signature_header(&r);
        let value = r.header(&name).unwrap().to_string();
        // Flip the first character of the (last) signature: still valid hex/base64.
        let sig = value
            .rsplit([',', '=', ' ', ';'])
            .find(|s| s.len() >= 20)
            .unwrap();
        let start = value.rfind(sig).unwrap();
        let mut chars: Vec<char> = value.chars().collect();
        chars[start] = if chars[start] == 'a' { 'b' } else { 'a' };
        set_header(&mut r, &name, &chars.into_iter().collect::<String>());
        assert_eq!(
            code(&v, r, NOW),
            "signature_invalid",
            "{scheme}: signature char"
        );

        if case.timestamped() && scheme != "linear" {
            let ts = (NOW / 1000).to_string();
            let later = (NOW / 1000 + 1).to_string();
            let mut r = good.clone();
            for (_, value) in r.headers.iter_mut() {
                *value = value.replace(&ts, &later);
            }
            assert_eq!(code(&v, r, NOW), "signature_invalid", "{scheme}: timestamp");
        }
    }
}

#[test]
fn timestamps_outside_the_tolerance_are_refused_both_ways() {
    for case in CASES.iter().filter(|c| c.timestamped()) {
        let v = case.verifier(&[case.secret]);
        let r = signed(&v, BODY, "evt_42", NOW);
        let tol = case.tolerance_secs() * 1000;
        event(&v, r.clone(), NOW + tol);
        event(&v, r.clone(), NOW - tol);
        for (when, label) in [(NOW + tol + 1000, "expired"), (NOW - tol - 1000, "future")] {
            let f = failure(&v, r.clone(), when);
            assert_eq!(
                f.code(),
                "timestamp_out_of_tolerance",
                "{} {label}",
                case.scheme
            );
            assert!(f.error.to_string().contains(if label == "expired" {
                "past"
            } else {
                "future"
            }));
        }
    }
}

#[test]
fn tolerance_can_be_overridden_per_source() {
    let v = verifier("scheme = \"stripe\"\nsecrets = [\"whsec_x\"]\ntolerance = \"10m\"");
    let r = signed(&v, BODY, "", NOW);
    event(&v, r.clone(), NOW + 9 * 60 * 1000);
    assert_eq!(
        code(&v, r, NOW + 11 * 60 * 1000),
        "timestamp_out_of_tolerance"
    );
}

#[test]
fn missing_timestamps_are_timestamp_missing() {
    for case in CASES.iter().filter(|c| c.timestamped()) {
        let v = case.verifier(&[case.secret]);
        let mut r = signed(&v, BODY, "evt_42", NOW);
        let ts = (NOW / 1000).to_string();
        match case.scheme {
            "stripe" => {
                let value = r
                    .header("stripe-signature")
                    .unwrap()
                    .replace(&format!("t={ts},"), "");
                set_header(&mut r, "stripe-signature", &value);
            }
            "paddle" => {
                let value = r
                    .header("paddle-signature")
                    .unwrap()
                    .replace(&format!("ts={ts};"), "");
                set_header(&mut r, "paddle-signature", &value);
            }
            "linear" => {
                // Re-sign a body without `webhookTimestamp` (the signer would add one).
                let body = br#"{"type":"Issue"}"#;
                let mac = mac(HmacAlgorithm::Sha256, case.secret.as_bytes(), body);
                r = request(&[("linear-signature", &hex::encode(mac))], body);
            }
            _ => r.headers.retain(|(_, v)| v != &ts),
        }
        assert_eq!(code(&v, r, NOW), "timestamp_missing", "{}", case.scheme);
    }
}

#[test]
fn rotated_secrets_all_verify() {
    for case in CASES {
        let both = case.verifier(&[case.other_secret, case.secret]);
        let old = case.verifier(&[case.secret]);
        let new = case.verifier(&[case.other_secret]);
        event(&both, signed(&old, BODY, "evt_42", NOW), NOW);
        event(&both, signed(&new, BODY, "evt_42", NOW), NOW);
        assert_eq!(
            code(&old, signed(&new, BODY, "evt_42", NOW), NOW),
            "signature_invalid",
            "{}",
            case.scheme
        );
    }
}

/// A well-formed signature that matches nothing, base64 (32 bytes) and hex (32 bytes).
const B64_BOGUS: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
const HEX_BOGUS: &str = "00000000000000000000000000000000000000000000000000000000000000ff";

#[test]
fn a_header_with_several_signatures_passes_when_any_matches() {
    for (scheme, delimiter, prefix, bogus) in [
        ("standard-webhooks", " ", "v1,", B64_BOGUS),
        ("svix", " ", "v1,", B64_BOGUS),
        ("stripe", ",", "v1=", HEX_BOGUS),
        ("paddle", ";", "h1=", HEX_BOGUS),
    ] {
        let case = CASES.iter().find(|c| c.scheme == scheme).unwrap();
        let v = case.verifier(&[case.secret]);
        for before in [true, false] {
            let mut r = signed(&v, BODY, "evt_42", NOW);
            let name = case.signature_header(&r);
            let value = r.header(&name).unwrap().to_string();
            let value = if before {
                value.replacen(prefix, &format!("{prefix}{bogus}{delimiter}{prefix}"), 1)
            } else {
                format!("{value}{delimiter}{prefix}{bogus}")
            };
            set_header(&mut r, &name, &value);
            event(&v, r, NOW);
        }
    }
}

#[test]
fn malformed_signature_headers_are_signature_malformed() {
    for case in CASES {
        let v = case.verifier(&[case.secret]);
        let good = signed(&v, BODY, "evt_42", NOW);
        let name = case.signature_header(&good);
        let huge = format!("v1=v1,sha256={}", "a".repeat(100_000));
        for bad in [
            "",
            "   ",
            "no-equals-sign-here",
            "v1,!!!! t=1,v1=zz ts=1;h1=qq",
            "sha256=zz",
            "v0=not-hex",
            "v1=",
            huge.as_str(),
        ] {
            let mut r = good.clone();
            set_header(&mut r, &name, bad);
            let f = failure(&v, r, NOW);
            assert_eq!(
                f.code(),
                "signature_malformed",
                "{} with {:?}: {}",
                case.scheme,
                &bad[..bad.len().min(40)],
                f.error
            );
        }
        let mut r = good.clone();
        r.headers.retain(|(k, _)| *k != name);
        assert_eq!(code(&v, r, NOW), "signature_missing", "{}", case.scheme);
    }
}

#[test]
fn each_preset_equals_its_documented_hmac_line() {
    for case in CASES {
        let preset = case.verifier(&[case.secret]);
        let generic = verifier(&format!(
            "scheme = \"hmac\"\nsecrets = [{:?}]\n{}\n{}",
            case.secret, case.generic, case.extra
        ));
        let r = signed(&preset, BODY, "evt_42", NOW);
        let a = event(&generic, r.clone(), NOW);
        let b = event(&preset, r, NOW);
        assert_eq!(a.event_id(), b.event_id(), "{}", case.scheme);
        event(&preset, signed(&generic, BODY, "evt_42", NOW), NOW);
    }
}
