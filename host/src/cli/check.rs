//! `hookwall check`: validate a config file and load every plugin it uses, then exit.

use std::path::Path;

use crate::config::StorageBackend;
use crate::plugin::PluginHost;
use crate::telemetry::trace::Traces;

/// Checks the config at `path` and prints what it would run.
pub async fn run(path: &Path) -> anyhow::Result<()> {
    let config = super::load_config(path)?;
    // The shared store's database: reachable, and a schema this binary can use.
    let database = match config.storage.backend {
        StorageBackend::Embedded => None,
        StorageBackend::Postgres => {
            let options = crate::app::shared_options(&config)?;
            Some(crate::store::postgres::inspect(&options.url, options.ca_file.as_deref()).await?)
        }
    };
    // The trace exporter: its header secrets and CA file resolve (nothing is sent).
    if let Some(otlp) = &config.telemetry.otlp {
        let (traces, _) = Traces::build(otlp, &config.base_dir)?;
        traces.shutdown().await;
    }
    let plugins = PluginHost::load(&config, None)?;
    let loaded = plugins.plugins();
    println!(
        "{}: OK ({} sources, {} sinks, {} plugins)",
        path.display(),
        config.sources.len(),
        config.sinks.len(),
        loaded.iter().count()
    );
    if let Some(otlp) = &config.telemetry.otlp {
        println!(
            "  traces: OTLP to {} (sampling {})",
            otlp.traces_url(),
            otlp.sampling
        );
    }
    if let Some(database) = database {
        println!("  storage postgres: {database}");
    }
    for p in loaded.iter() {
        println!("  plugin {} {} ({})", p.name, p.version, p.path.display());
    }
    Ok(())
}
