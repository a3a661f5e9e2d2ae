//! The dashboard: one static page, its script and style, embedded in the binary (no build
//! step). The page holds no data: its script fetches `/metrics` and the JSON API with the
//! bearer token the operator types in (or passes as `#token=…`), so serving the page itself
//! needs no token. It refreshes every 2 s (`?refresh=MS` changes that).

use bytes::Bytes;
use http::{HeaderValue, Response, header};
use http_body_util::Full;

const PAGE: &str = include_str!("assets/dashboard.html");
const SCRIPT: &str = include_str!("assets/dashboard.js");
const STYLE: &str = include_str!("assets/dashboard.css");

/// Only our own script and style, no inline code, no framing: the page shows event data.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// The page and its assets, if `path` is one of them.
/// A one-colour square, so the browser's automatic icon request is answered.
const ICON: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" fill="#2b6cb0"/></svg>"##;

pub fn serve(path: &str) -> Option<Response<Full<Bytes>>> {
    let (body, content_type) = match path {
        "/" | "/dashboard" => (PAGE, "text/html; charset=utf-8"),
        "/dashboard.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "/dashboard.css" => (STYLE, "text/css; charset=utf-8"),
        // Browsers ask for it unprompted; a 404 would show as a console error.
        "/favicon.ico" => (ICON, "image/svg+xml"),
        _ => return None,
    };
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Some(resp)
}
