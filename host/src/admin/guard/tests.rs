use super::*;

fn names() -> Names {
    Names::new(
        "127.0.0.1:9090".parse().unwrap(),
        &["hookwall.internal:9090".into(), "ops.example".into()],
    )
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    map
}

const JSON: (&str, &str) = ("content-type", "application/json");

#[test]
fn without_a_token_only_the_listeners_names_are_served() {
    let n = names();
    for host in [
        "127.0.0.1:9090",
        "localhost:9090",
        "LOCALHOST:9090",
        "[::1]:9090",
        "hookwall.internal:9090",
        "ops.example",
        "ops.example:8443",
    ] {
        let h = headers(&[("host", host)]);
        assert_eq!(n.check(&Method::GET, &h, true), Ok(()), "{host}");
    }
    for host in [
        "evil.example:9090",
        "localhost:9091",
        "localhost",
        "hookwall.internal",
        "127.0.0.1:9090@evil.example",
        "",
    ] {
        let h = headers(&[("host", host)]);
        assert_eq!(
            n.check(&Method::GET, &h, true),
            Err(Refusal::HostNotAllowed),
            "{host}"
        );
    }
    assert_eq!(
        n.check(&Method::GET, &HeaderMap::new(), true),
        Err(Refusal::HostNotAllowed)
    );
    // With a token, any Host.
    let h = headers(&[("host", "evil.example")]);
    assert_eq!(n.check(&Method::GET, &h, false), Ok(()));
}

#[test]
fn a_state_changing_request_must_be_json() {
    let n = names();
    let host = ("host", "127.0.0.1:9090");
    for ct in ["application/json", "Application/JSON; charset=utf-8"] {
        let h = headers(&[host, ("content-type", ct)]);
        assert_eq!(n.check(&Method::POST, &h, true), Ok(()), "{ct}");
    }
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonp",
    ] {
        let h = headers(&[host, ("content-type", ct)]);
        assert_eq!(
            n.check(&Method::POST, &h, true),
            Err(Refusal::NotJson),
            "{ct}"
        );
    }
    let h = headers(&[host]);
    assert_eq!(n.check(&Method::POST, &h, true), Err(Refusal::NotJson));
    assert_eq!(n.check(&Method::DELETE, &h, false), Err(Refusal::NotJson));
    // Reads need no content type.
    assert_eq!(n.check(&Method::GET, &h, true), Ok(()));
    assert_eq!(n.check(&Method::HEAD, &h, true), Ok(()));
}

#[test]
fn a_state_changing_request_from_another_page_is_refused() {
    let n = names();
    let host = ("host", "127.0.0.1:9090");
    for origin in [
        "http://127.0.0.1:9090",
        "http://localhost:9090",
        "http://hookwall.internal:9090",
        "https://ops.example",
    ] {
        let h = headers(&[host, JSON, ("origin", origin)]);
        assert_eq!(n.check(&Method::POST, &h, true), Ok(()), "{origin}");
    }
    for origin in [
        "http://evil.example",
        "http://localhost:3000",
        "http://127.0.0.1",
        "https://127.0.0.1:9090.evil.example",
        "null",
        "file://",
        "",
    ] {
        let h = headers(&[host, JSON, ("origin", origin)]);
        assert_eq!(
            n.check(&Method::POST, &h, true),
            Err(Refusal::CrossOrigin),
            "{origin}"
        );
    }
    for site in ["cross-site", "same-site"] {
        let h = headers(&[host, JSON, ("sec-fetch-site", site)]);
        assert_eq!(n.check(&Method::POST, &h, true), Err(Refusal::CrossOrigin));
    }
    for site in ["same-origin", "none"] {
        let h = headers(&[host, JSON, ("sec-fetch-site", site)]);
        assert_eq!(n.check(&Method::POST, &h, true), Ok(()), "{site}");
    }
}

#[test]
fn with_a_token_the_request_hosts_own_origin_is_same_origin() {
    // A token-protected listener on a public address, reached as admin.example:9090.
    let n = Names::new("0.0.0.0:9090".parse().unwrap(), &[]);
    let h = headers(&[
        ("host", "admin.example:9090"),
        JSON,
        ("origin", "http://admin.example:9090"),
    ]);
    assert_eq!(n.check(&Method::POST, &h, false), Ok(()));
    let h = headers(&[
        ("host", "admin.example:9090"),
        JSON,
        ("origin", "http://evil.example"),
    ]);
    assert_eq!(n.check(&Method::POST, &h, false), Err(Refusal::CrossOrigin));
}

#[test]
fn every_refusal_is_a_json_error() {
    for (r, status) in [
        (Refusal::HostNotAllowed, 421),
        (Refusal::CrossOrigin, 403),
        (Refusal::NotJson, 415),
    ] {
        let resp = r.response();
        assert_eq!(resp.status().as_u16(), status);
        assert_eq!(resp.headers()[CONTENT_TYPE], "application/json");
    }
}
