//! `hookwall plugin new|test`: start a plugin project, and run a plugin once on an event outside
//! the server.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};

use crate::config::Config;
use crate::plugin::PluginHost;
use crate::store::Store;

/// Writes a new plugin project and says how to build and try it.
pub fn new(name: &str, lang: crate::plugin::scaffold::Lang, dir: PathBuf) -> anyhow::Result<()> {
    let files = crate::plugin::scaffold::scaffold(name, lang, &dir)?;
    for f in &files {
        println!("created {}", f.display());
    }
    let d = dir.display();
    println!(
        "\nNext: {d}/build.sh && hookwall plugin test {d}/{name}.wasm --event {d}/event.json\n\
         Then copy {name}.wasm (and {name}.toml) into your plugins directory."
    );
    Ok(())
}

/// Runs a plugin once, outside the server, in a scratch directory (its key-value store is
/// scratch too).
pub async fn test(
    file: &Path,
    event: &Path,
    headers: &[String],
    values: &[String],
) -> anyhow::Result<()> {
    let name = file
        .file_stem()
        .and_then(|s| s.to_str())
        .context("the plugin file needs a name like NAME.wasm")?;
    let scratch = tempfile::tempdir()?;
    let plugins_dir = scratch.path().join("plugins");
    std::fs::create_dir(&plugins_dir)?;
    std::fs::copy(file, plugins_dir.join(format!("{name}.wasm")))
        .with_context(|| format!("cannot read {}", file.display()))?;
    let manifest = file.with_extension("toml");
    if manifest.exists() {
        std::fs::copy(&manifest, plugins_dir.join(format!("{name}.toml")))?;
    }
    let mut config_table = toml::Table::new();
    for kv in values {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--config {kv:?}: expected KEY=VALUE"))?;
        // `KEY_file` paths are the user's, relative to where they run the command.
        let v = if k.ends_with(crate::plugin::manifest::FILE_SUFFIX) {
            std::path::absolute(v)?.to_string_lossy().into_owned()
        } else {
            v.to_string()
        };
        config_table.insert(k.to_string(), toml::Value::String(v));
    }
    let text = format!(
        "[plugins.config.{name}]\n{}\n[sources.test]\npath = \"/test\"\nverify = {{ scheme = \"none\" }}\nplugins = [\"{name}\"]\nsinks = [\"out\"]\n[sinks.out]\ntype = \"stdout\"\n",
        toml::to_string(&config_table)?
    );
    let config = Config::parse(&text, scratch.path())?;
    let store = Store::open(&config.storage.path)?;
    let kv = crate::plugin::kv::StoreKv::new(store);
    let host = PluginHost::load(&config, Some(Arc::new(kv)))?;
    let set = host.plugins();
    let plugin = set.get(name).context("the plugin did not load")?;
    let mut event_headers = vec![("content-type".to_string(), "application/json".to_string())];
    for h in headers {
        let (k, v) = h
            .split_once(':')
            .with_context(|| format!("--header {h:?}: expected NAME:VALUE"))?;
        event_headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let event = crate::plugin::Event {
        id: uuid::Uuid::now_v7().to_string(),
        source: "test".into(),
        received_at_ms: crate::clock::now_ms(),
        method: "POST".into(),
        path: "/test".into(),
        query: String::new(),
        headers: event_headers,
        body: std::fs::read(event).with_context(|| format!("cannot read {}", event.display()))?,
    };
    let started = std::time::Instant::now();
    let result = host.call(plugin, &event).await;
    let elapsed_us = started.elapsed().as_micros();
    let output = match &result {
        Ok(action) => crate::plugin::action_json(action),
        Err(failure) => serde_json::json!({ "failure": failure.to_string() }),
    };
    let mut output = output;
    output["elapsed_us"] = serde_json::json!(elapsed_us);
    println!("{}", serde_json::to_string_pretty(&output)?);
    if result.is_err() {
        bail!("the plugin failed");
    }
    Ok(())
}
