//! `hookwall serve`: load the config, start logging, build the [`App`] (everything that can fail,
//! before any port is bound), then serve until SIGTERM or Ctrl-C.

use std::path::Path;

use crate::app::App;
use crate::telemetry::{self, LogFormat};

/// Runs the receiver described by the config at `path`.
pub async fn run(path: &Path, log_format: LogFormat) -> anyhow::Result<()> {
    // Config first: a bad config must fail before anything is opened or bound.
    let config = super::load_config(path)?;
    telemetry::init(log_format);
    let app = App::build(config).await?;
    app.serve().await?;
    Ok(())
}
