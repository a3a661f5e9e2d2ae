//! The `hookwall` subcommands, one file each: `serve` ([`serve`], which builds the
//! [`App`](crate::app::App)), `check`, `send`, `plugin test|new`, `plugins`, `dlq`, `events`
//! (the last three talk to a running instance's admin API through [`client`]). The binary's
//! edge: errors are `anyhow` here and nowhere below.

#![allow(clippy::disallowed_types)] // anyhow is this edge's error type (clippy.toml).

pub mod check;
pub mod client;
pub mod dlq;
pub mod events;
pub mod plugin;
pub mod plugins;
pub mod send;
pub mod serve;
pub mod store;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::telemetry::LogFormat;

/// Hookwall: a webhook receiver that verifies senders, runs WebAssembly plugins on each event,
/// stores it durably, and delivers it to your app.
#[derive(Parser)]
#[command(version, about, long_about = None)]
pub struct Cli {
    /// The subcommand to run.
    #[command(subcommand)]
    pub command: Command,
}

/// A `hookwall` subcommand, with its arguments.
#[derive(Subcommand)]
pub enum Command {
    /// Run the receiver: listen for webhooks and deliver accepted events to the sinks.
    Serve {
        /// The config file (TOML).
        #[arg(short, long, default_value = "hookwall.toml")]
        config: PathBuf,
        /// Log line format on stderr.
        #[arg(long, value_enum, default_value_t = LogFormat::Human)]
        log_format: LogFormat,
    },
    /// Validate a config file and load every plugin it uses, then exit.
    Check {
        /// The config file (TOML).
        #[arg(short, long, default_value = "hookwall.toml")]
        config: PathBuf,
    },
    /// List the plugins of a running instance: version, sources, load time, last error.
    Plugins {
        /// The config file (TOML).
        #[arg(short, long, default_value = "hookwall.toml")]
        config: PathBuf,
    },
    /// The dead-letter queue of a running instance: list, show, replay, purge.
    Dlq {
        /// The config file (TOML).
        #[arg(short, long, default_value = "hookwall.toml")]
        config: PathBuf,
        /// What to do with the dead-letter queue.
        #[command(subcommand)]
        command: dlq::DlqCommand,
    },
    /// The store of a stopped instance: check every record (`store check`).
    Store {
        /// The config file (TOML): the store is its `[storage] path`.
        #[arg(short, long, default_value = "hookwall.toml")]
        config: PathBuf,
        /// What to do with the store.
        #[command(subcommand)]
        command: store::StoreCommand,
    },
    /// List a running instance's events, newest first (through its admin API).
    Events {
        /// The config file (TOML).
        #[arg(short, long, default_value = "hookwall.toml")]
        config: PathBuf,
        /// Which events to list, and how to print them.
        #[command(flatten)]
        args: events::EventsArgs,
    },
    /// Work with a plugin file outside the server.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Sign a file's contents as source SOURCE's sender would and POST it: a test webhook.
    Send {
        /// The config file (TOML).
        #[arg(short, long, default_value = "hookwall.toml")]
        config: PathBuf,
        /// Name of the source (a `[sources.NAME]` table) to send to.
        #[arg(short, long)]
        source: String,
        /// The request body to send.
        file: PathBuf,
        /// Where to send it [default: the config's listen address and the source's path].
        #[arg(long)]
        url: Option<String>,
        /// Event id for schemes that carry one [default: a new UUID].
        #[arg(long)]
        id: Option<String>,
        /// TLS options for an `https://` target.
        #[command(flatten)]
        tls: send::SendTls,
    },
}

/// A `hookwall plugin` subcommand.
#[derive(Subcommand)]
pub enum PluginCommand {
    /// Run a plugin once on an event and print what it decided, as JSON.
    Test {
        /// The plugin component (`NAME.wasm`; a `NAME.toml` manifest beside it is read too).
        file: PathBuf,
        /// The event's body.
        #[arg(long)]
        event: PathBuf,
        /// Request headers, `name:value` (repeatable).
        #[arg(long = "header", value_name = "NAME:VALUE")]
        headers: Vec<String>,
        /// Values for the plugin's `config` import, `key=value` (repeatable).
        #[arg(long = "config", value_name = "KEY=VALUE")]
        values: Vec<String>,
    },
    /// Create a plugin project to start from: source, build script, manifest, sample event.
    New {
        /// The plugin's name (it builds `NAME.wasm`).
        name: String,
        /// The plugin's source language.
        #[arg(long, value_enum)]
        lang: crate::plugin::scaffold::Lang,
        /// Where to write it (default: `./NAME`).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// Runs one subcommand to completion.
pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { config, log_format } => serve::run(&config, log_format).await,
        Command::Check { config } => check::run(&config).await,
        Command::Plugins { config } => plugins::run(&config).await,
        Command::Dlq { config, command } => {
            let config = Config::load(&config)?;
            let client = client::AdminClient::from_config(&config)?;
            dlq::run(&client, command).await
        }
        Command::Store { config, command } => store::run(&config, command),
        Command::Events { config, args } => {
            let config = Config::load(&config)?;
            let client = client::AdminClient::from_config(&config)?;
            events::run(&client, &args).await
        }
        Command::Plugin(PluginCommand::Test {
            file,
            event,
            headers,
            values,
        }) => plugin::test(&file, &event, &headers, &values).await,
        Command::Plugin(PluginCommand::New { name, lang, dir }) => {
            plugin::new(&name, lang, dir.unwrap_or_else(|| PathBuf::from(&name)))
        }
        Command::Send {
            config,
            source,
            file,
            url,
            id,
            tls,
        } => send::run(&config, &source, &file, url, id, &tls).await,
    }
}

/// Loads and validates the config, secrets included (they must resolve before anything
/// starts), and builds every sink once: each kind checks what only it understands (URL shapes,
/// subjects), so `check` and `serve` refuse a bad sink alike, as a config error (exit 64).
pub(crate) fn load_config(path: &Path) -> anyhow::Result<Config> {
    let config = Config::load(path)?;
    config.check_secrets()?;
    for (name, sink) in &config.sinks {
        crate::sink::build(name, sink, &config.base_dir)?;
    }
    Ok(config)
}
