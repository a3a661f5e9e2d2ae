//! Pre-signed requests, so signing cost stays out of the measurement.
//!
//! Every request has its own event id (dedupe must not short-circuit) embedded in a JSON body
//! padded to the requested size, signed with the target source's own scheme through Hookwall's
//! verifier, so every scheme Hookwall verifies can be load-tested.

use std::path::Path;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use hookwall::config::Config;
use hookwall::verify::Signed;

/// One ready-to-send request.
pub struct Prepared {
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

/// The target of a load run, read from a Hookwall config.
pub struct Target {
    pub path: String,
    config: Config,
    source: String,
}

impl Target {
    pub fn from_config(config_path: &Path, source: &str) -> anyhow::Result<Target> {
        let config = Config::load(config_path)?;
        let Some(s) = config.sources.get(source) else {
            bail!("no source `{source}` in {}", config_path.display());
        };
        Ok(Target {
            path: s.path.clone(),
            source: source.to_string(),
            config,
        })
    }

    /// `count` requests with unique ids, each body `body_bytes` long (at least ~80).
    pub fn prepare(
        &self,
        count: usize,
        body_bytes: usize,
        run_tag: &str,
    ) -> anyhow::Result<Vec<Prepared>> {
        let verifier = hookwall::verify::Verifier::for_source(&self.config, &self.source)
            .with_context(|| format!("source `{}`", self.source))?;
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            let id = format!("lg-{run_tag}-{i}");
            let head = format!(r#"{{"id":"{id}","type":"order.created","pad":""#);
            let pad = body_bytes.saturating_sub(head.len() + 2);
            let mut body = Vec::with_capacity(body_bytes);
            body.extend_from_slice(head.as_bytes());
            body.resize(head.len() + pad, b'x');
            body.extend_from_slice(b"\"}");
            let mut headers = vec![(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )];
            let unsigned = Signed {
                path: self.path.clone(),
                body,
                ..Signed::default()
            };
            let signed = verifier.sign(unsigned, &id, hookwall::clock::now_ms());
            if !signed.query.is_empty() {
                bail!(
                    "source `{}` signs the query (Twilio's bodySHA256), which loadgen does not send",
                    self.source
                );
            }
            for (name, value) in signed.headers {
                headers.push((HeaderName::try_from(name)?, HeaderValue::try_from(value)?));
            }
            out.push(Prepared {
                headers,
                body: Bytes::from(signed.body),
            });
        }
        Ok(out)
    }
}
