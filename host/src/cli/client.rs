//! A client for a running instance's admin API, used by the CLI (`hookwall plugins`, …).

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::Config;

/// An HTTP client for one instance's admin API: its base URL and bearer token, if any.
pub struct AdminClient {
    base: String,
    token: Option<String>,
}

impl AdminClient {
    /// The admin API of the instance running with `config`.
    pub fn from_config(config: &Config) -> anyhow::Result<AdminClient> {
        let Some(admin) = &config.admin else {
            bail!("the config has no [admin] section, so there is no admin API to ask");
        };
        let mut addr = admin.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip([127, 0, 0, 1].into());
        }
        let token = admin
            .token
            .as_ref()
            .map(|t| t.resolve(&config.base_dir, "admin.token"))
            .transpose()?
            .map(|s| String::from_utf8_lossy(s.expose()).into_owned());
        Ok(AdminClient {
            base: format!("http://{addr}"),
            token,
        })
    }

    /// Sends a request and returns the JSON answer; a non-2xx answer is an error with its body.
    pub async fn request(
        &self,
        method: http::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let url = format!("{}{path}", self.base);
        // The admin listener refuses a state-changing request that is not JSON, even one
        // without a body (a browser page cannot send JSON cross-origin without a preflight).
        let changes_state = method != http::Method::GET && method != http::Method::HEAD;
        let mut req = http::Request::builder().method(method).uri(&url);
        if let Some(token) = &self.token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if body.is_some() || changes_state {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        let body = body.map_or_else(Bytes::new, |v| Bytes::from(v.to_string()));
        let client = Client::builder(TokioExecutor::new()).build_http();
        let resp = client
            .request(req.body(Full::new(body))?)
            .await
            .with_context(|| {
                format!(
                    "cannot reach the admin API at {} (is `hookwall serve` running?)",
                    self.base
                )
            })?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
        });
        if !status.is_success() {
            bail!("admin API answered {status}: {value}");
        }
        Ok(value)
    }
}
