//! `hookwall plugins`: a running instance's plugins (version, mode, sources, last error),
//! through its admin API.

use std::path::Path;

use crate::config::Config;

/// Prints the plugin table of the instance the config at `path` describes.
pub async fn run(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let client = super::client::AdminClient::from_config(&config)?;
    let answer = client
        .request(http::Method::GET, "/api/v1/plugins", None)
        .await?;
    let plugins = answer["plugins"].as_array().cloned().unwrap_or_default();
    println!(
        "{:<20} {:<14} {:<8} {:<24} LAST ERROR",
        "NAME", "VERSION", "MODE", "SOURCES"
    );
    for p in plugins {
        let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
        let sources: Vec<String> = p["sources"]
            .as_array()
            .map(|a| a.iter().map(text).collect())
            .unwrap_or_default();
        println!(
            "{:<20} {:<14} {:<8} {:<24} {}",
            text(&p["name"]),
            text(&p["version"]),
            text(&p["instances"]),
            if sources.is_empty() {
                "-".into()
            } else {
                sources.join(",")
            },
            text(&p["last_error"]),
        );
    }
    Ok(())
}
