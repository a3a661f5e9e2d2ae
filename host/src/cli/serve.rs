//! `hookwall serve`: load the config, start logging, build the [`App`] (everything that can fail,
//! before any port is bound), then serve until SIGTERM or Ctrl-C.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::app::App;
use crate::telemetry::trace::Traces;
use crate::telemetry::{self, LogFormat};

/// Runs the receiver described by the config at `path`.
pub async fn run(path: &Path, log_format: LogFormat) -> anyhow::Result<()> {
    // Config first: a bad config must fail before anything is opened or bound.
    let config = super::load_config(path)?;
    let traces = match &config.telemetry.otlp {
        Some(otlp) => Some(Traces::build(otlp, &config.base_dir)?),
        None => None,
    };
    let (traces, layer) = traces.unzip();
    telemetry::init(log_format, layer);
    if let Some(traces) = &traces {
        traces.start();
        tracing::info!(endpoint = %config.telemetry.otlp.as_ref().map(|o| o.traces_url()).unwrap_or_default(),
            "exporting traces over OTLP");
    }
    precompile(path);
    let served: anyhow::Result<()> = async {
        App::build(config).await?.serve().await?;
        Ok(())
    }
    .await;
    // Last: the spans of the final deliveries and of the shutdown itself.
    if let Some(traces) = traces {
        traces.shutdown().await;
    }
    served
}

/// Compiles the plugins the config at `path` uses in a child process (`hookwall check`, which
/// fills the compile cache under `[storage] path`), so that this process loads them from the
/// cache and never holds the compiler's memory: glibc keeps what Cranelift freed in its arenas,
/// and a server that compiled the five bundled plugins itself idled at ~53 MiB against ~28 MiB
/// from the cache (docs/performance.md). Whatever goes wrong here is left for [`App::build`]
/// to find and report; at worst this process compiles as before.
fn precompile(path: &Path) {
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let started = std::time::Instant::now();
    let status = Command::new(exe)
        .arg("check")
        .arg("--config")
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match status {
        Ok(s) => tracing::debug!(success = s.success(), took = ?started.elapsed(),
            "plugins compiled in a child process"),
        Err(e) => tracing::debug!(error = %e, "cannot compile the plugins in a child process"),
    }
}
