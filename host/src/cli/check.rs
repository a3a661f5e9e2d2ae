//! `hookwall check`: validate a config file and load every plugin it uses, then exit.

use std::path::Path;

use crate::plugin::PluginHost;

/// Checks the config at `path` and prints what it would run.
pub fn run(path: &Path) -> anyhow::Result<()> {
    let config = super::load_config(path)?;
    let plugins = PluginHost::load(&config, None)?;
    let loaded = plugins.plugins();
    println!(
        "{}: OK ({} sources, {} sinks, {} plugins)",
        path.display(),
        config.sources.len(),
        config.sinks.len(),
        loaded.iter().count()
    );
    for p in loaded.iter() {
        println!("  plugin {} {} ({})", p.name, p.version, p.path.display());
    }
    Ok(())
}
