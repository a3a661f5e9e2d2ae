//! `verify` tables that must be refused at load, naming the key.

use super::*;

fn refused(line: &str) -> String {
    match try_verifier(line) {
        Ok(_) => panic!("accepted: {line}"),
        Err(e) => e,
    }
}

#[test]
fn knobs_that_mean_nothing_for_a_scheme_are_named() {
    let e = refused("scheme = \"stripe\"\nsecrets = [\"s\"]\nencoding = \"base64\"");
    assert!(
        e.contains("verify.encoding") && e.contains("fixed by scheme `stripe`"),
        "{e}"
    );
    let e = refused("scheme = \"github\"\nsecrets = [\"s\"]\ntolerance = \"1m\"");
    assert!(
        e.contains("verify.tolerance") && e.contains("not used"),
        "{e}"
    );
    let e = refused("scheme = \"bearer\"\nsecrets = [\"s\"]\nusername = \"u\"");
    assert!(e.contains("verify.username"), "{e}");
    let e = refused("scheme = \"none\"\nsecrets = [\"s\"]");
    assert!(e.contains("verify.secrets"), "{e}");
    let e = refused("scheme = \"stripe\"\nsecrets = []");
    assert!(e.contains("verify.secrets"), "{e}");
    assert!(refused("scheme = \"stripe\"\nsecret = [\"s\"]").contains("secret"));
}

#[test]
fn scheme_requirements_are_checked() {
    let e = refused("scheme = \"twilio\"\nsecrets = [\"s\"]");
    assert!(e.contains("verify.public_url"), "{e}");
    let e = refused("scheme = \"twilio\"\nsecrets = [\"s\"]\npublic_url = \"example.com\"");
    assert!(e.contains("verify.public_url"), "{e}");
    let e = refused("scheme = \"basic\"\nsecrets = [\"s\"]");
    assert!(e.contains("verify.username"), "{e}");
    let e = refused("scheme = \"api-key\"\nsecrets = [\"s\"]");
    assert!(e.contains("verify.header"), "{e}");
    let e = refused("scheme = \"hmac\"\nsecrets = [\"s\"]");
    assert!(e.contains("verify.header"), "{e}");
    let e =
        refused("scheme = \"hmac\"\nheader = \"X\"\nsecrets = [\"s\"]\nsigned = \"{time}.{body}\"");
    assert!(e.contains("verify.signed") && e.contains("{time}"), "{e}");
    let e = refused(
        "scheme = \"hmac\"\nheader = \"X\"\nsecrets = [\"s\"]\nsigned = \"{timestamp}.{body}\"",
    );
    assert!(e.contains("verify.signed"), "{e}");
    let e =
        refused("scheme = \"hmac\"\nheader = \"X\"\nsecrets = [\"s\"]\ntimestamp_header = \"T\"");
    assert!(e.contains("verify.signed") && e.contains("replay"), "{e}");
    let e = refused("scheme = \"hmac\"\nheader = \"X\"\nsecrets = [\"s\"]\ntolerance = \"5m\"");
    assert!(e.contains("verify.tolerance"), "{e}");
    let e =
        refused("scheme = \"hmac\"\nheader = \"X\"\nsecrets = [\"s\"]\ntimestamp_prefix = \"t=\"");
    assert!(e.contains("verify.timestamp_prefix"), "{e}");
    let e = refused("scheme = \"hmac\"\nheader = \"X Y\"\nsecrets = [\"s\"]");
    assert!(e.contains("verify.header"), "{e}");
    let e = refused("scheme = \"stripe\"\nsecrets = [\"s\"]\nid_json = \"id\"");
    assert!(e.contains("verify.id_json"), "{e}");
    let e = refused("scheme = \"stripe\"\nsecrets = [\"s\"]\ntolerance = \"0s\"");
    assert!(e.contains("verify.tolerance"), "{e}");
}

#[test]
fn base64_secrets_must_decode_and_are_not_echoed() {
    let e = refused("scheme = \"standard-webhooks\"\nsecrets = [\"whsec_not*base64!\"]");
    assert!(e.contains("verify.secrets") && e.contains("base64"), "{e}");
    assert!(!e.contains("not*base64"), "{e}");
}
