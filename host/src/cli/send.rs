//! `hookwall send`: sign a file's contents as a source's sender would and POST it (a test
//! webhook), over http or https (`--ca-cert`, mTLS with `--client-cert`/`--client-key`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::Config;
use crate::verify::Signed;

/// `hookwall send` over https.
#[derive(clap::Args)]
pub struct SendTls {
    /// Trust the CA certificates in this PEM file [default: the system's roots].
    #[arg(long, value_name = "PEM")]
    ca_cert: Option<PathBuf>,
    /// Present this client certificate chain (PEM) when the receiver asks for one (mTLS).
    #[arg(long, value_name = "PEM", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "PEM", requires = "client_cert")]
    client_key: Option<PathBuf>,
}

/// Signs `file` as `source`'s sender and POSTs it; prints the answer.
pub async fn run(
    path: &Path,
    source: &str,
    file: &Path,
    url: Option<String>,
    id: Option<String>,
    tls: &SendTls,
) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let Some(source_config) = config.sources.get(source) else {
        let names: Vec<&String> = config.sources.keys().collect();
        bail!(
            "no source named `{source}` in {} (have: {names:?})",
            path.display()
        );
    };
    let verifier = crate::verify::Verifier::for_source(&config, source)?;
    let body = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let id = id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let url = url.unwrap_or_else(|| {
        let mut addr = config.server.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip([127, 0, 0, 1].into());
        }
        let scheme = if config.server.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{addr}{}", source_config.path)
    });
    let uri: http::Uri = url.parse().with_context(|| format!("bad --url {url}"))?;
    let content_type = if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_ok() {
        "application/json"
    } else if verifier.signs_form_params() {
        "application/x-www-form-urlencoded"
    } else {
        "application/octet-stream"
    };
    let unsigned = Signed {
        path: uri.path().to_string(),
        query: uri.query().unwrap_or_default().to_string(),
        body,
        ..Signed::default()
    };
    let signed = verifier.sign(unsigned, &id, crate::clock::now_ms());
    // The signer may add to the query (Twilio's `bodySHA256` for JSON bodies).
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    let scheme = uri.scheme_str().unwrap_or("http");
    let query = if signed.query.is_empty() {
        String::new()
    } else {
        format!("?{}", signed.query)
    };
    let url = format!("{scheme}://{authority}{}{query}", signed.path);
    let mut request = http::Request::post(&url).header("content-type", content_type);
    for (name, value) in &signed.headers {
        request = request.header(name, value);
    }
    let request = request.body(Full::new(bytes::Bytes::from(signed.body)))?;
    let response = if scheme == "https" {
        send_https(request, tls).await
    } else {
        let client = Client::builder(TokioExecutor::new()).build_http();
        client.request(request).await.map_err(anyhow::Error::from)
    }
    .with_context(|| format!("cannot reach {url} (is `hookwall serve` running?)"))?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    println!("{} {}", status.as_u16(), String::from_utf8_lossy(&body));
    if !status.is_success() {
        bail!("the receiver answered {status}");
    }
    Ok(())
}

/// One request over a new TLS connection (HTTP/1.1), trusting `tls.ca_cert` or the system.
async fn send_https(
    request: http::Request<Full<bytes::Bytes>>,
    tls: &SendTls,
) -> anyhow::Result<http::Response<hyper::body::Incoming>> {
    let identity = tls.client_cert.as_deref().zip(tls.client_key.as_deref());
    let config = crate::tls::client_config(tls.ca_cert.as_deref(), identity, b"http/1.1")?;
    let host = request
        .uri()
        .host()
        .context("the URL has no host")?
        .to_string();
    let port = request.uri().port_u16().unwrap_or(443);
    let name = rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_string())
        .with_context(|| format!("{host} is not a valid TLS server name"))?;
    let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port)).await?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .context("TLS handshake failed")?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    // A connection of our own: send origin-form with a Host header, as a client pool would.
    let (mut parts, body) = request.into_parts();
    let authority = parts.uri.authority().map(|a| a.to_string());
    parts.uri = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()?;
    if let Some(authority) = authority {
        parts.headers.insert(http::header::HOST, authority.parse()?);
    }
    Ok(sender
        .send_request(http::Request::from_parts(parts, body))
        .await?)
}
