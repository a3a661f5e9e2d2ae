//! The `hookwall` command: `serve`, `check` and `send`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;

use hookwall::admin::Admin;
use hookwall::config::Config;
use hookwall::delivery::Delivery;
use hookwall::pipeline::{Pipeline, build_verifier};
use hookwall::plugin::{PluginHost, PluginKv};
use hookwall::store::Store;
use hookwall::store::redis::SharedRedis;
use hookwall::store::redis_kv::RedisKv;
use hookwall::telemetry::{self, LogFormat};
use hookwall::verify::Signed;
use hookwall::{clock, server};

/// Exit code for a bad config or command line (sysexits' EX_USAGE).
const EXIT_USAGE: u8 = 64;

/// Hookwall: a webhook receiver that verifies senders, runs WebAssembly plugins on each event,
/// stores it durably, and delivers it to your app.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
        #[arg(short, long, default_value = "hookwall.toml")]
        config: PathBuf,
    },
    /// List the plugins of a running instance: version, sources, load time, last error.
    Plugins {
        #[arg(short, long, default_value = "hookwall.toml")]
        config: PathBuf,
    },
    /// The dead-letter queue of a running instance: list, show, replay, purge.
    Dlq {
        #[arg(short, long, default_value = "hookwall.toml")]
        config: PathBuf,
        #[command(subcommand)]
        command: hookwall::admin::dlq_cli::DlqCommand,
    },
    /// List a running instance's events, newest first (through its admin API).
    Events {
        #[arg(short, long, default_value = "hookwall.toml")]
        config: PathBuf,
        #[command(flatten)]
        args: hookwall::admin::events_cli::EventsArgs,
    },
    /// Work with a plugin file outside the server.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Sign a file's contents as source SOURCE's sender would and POST it: a test webhook.
    Send {
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
        #[command(flatten)]
        tls: SendTls,
    },
}

/// `hookwall send` over https.
#[derive(clap::Args)]
struct SendTls {
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

#[derive(Subcommand)]
enum PluginCommand {
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
        #[arg(long, value_enum)]
        lang: hookwall::plugin::scaffold::Lang,
        /// Where to write it (default: `./NAME`).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve { config, log_format } => serve(&config, log_format).await,
            Command::Check { config } => check(&config),
            Command::Plugins { config } => list_plugins(&config).await,
            Command::Dlq { config, command } => {
                let config = Config::load(&config)?;
                let client = hookwall::admin::client::AdminClient::from_config(&config)?;
                hookwall::admin::dlq_cli::run(&client, command).await
            }
            Command::Events { config, args } => {
                let config = Config::load(&config)?;
                let client = hookwall::admin::client::AdminClient::from_config(&config)?;
                hookwall::admin::events_cli::run(&client, &args).await
            }
            Command::Plugin(PluginCommand::Test {
                file,
                event,
                headers,
                values,
            }) => {
                // Host calls block (a key-value write waits for its commit), which tokio
                // forbids on this thread: run the plugin on the blocking pool, as `serve` does.
                tokio::task::spawn_blocking(move || plugin_test(&file, &event, &headers, &values))
                    .await
                    .context("the plugin test task failed")?
            }
            Command::Plugin(PluginCommand::New { name, lang, dir }) => {
                plugin_new(&name, lang, dir.unwrap_or_else(|| PathBuf::from(&name)))
            }
            Command::Send {
                config,
                source,
                file,
                url,
                id,
                tls,
            } => send(&config, &source, &file, url, id, &tls).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<hookwall::config::ConfigError>().is_some() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn load_config(path: &Path) -> anyhow::Result<Config> {
    let config = Config::load(path)?;
    config.check_secrets()?;
    Ok(config)
}

fn check(path: &Path) -> anyhow::Result<()> {
    let config = load_config(path)?;
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

async fn serve(path: &Path, log_format: LogFormat) -> anyhow::Result<()> {
    // Config first: a bad config must fail before anything is opened or bound.
    let config = load_config(path)?;
    telemetry::init(log_format);
    // Installed before any stage runs, so no early sample is lost. Without an admin listener
    // nobody could scrape it, so it is not installed then either.
    let metrics = match (&config.admin, config.telemetry.metrics) {
        (Some(_), true) => {
            Some(telemetry::metrics::install().context("cannot install the metrics recorder")?)
        }
        _ => None,
    };

    let store = Store::open_with(&config.storage.path, config.storage.fsync)?;
    if !config.storage.fsync {
        tracing::warn!("storage.fsync = false: a crash can lose acknowledged events");
    }
    let redis = match &config.storage.redis {
        Some(url) => {
            let url = url.resolve(&config.base_dir, "storage.redis")?;
            let redis = SharedRedis::connect(&url, &config.storage.redis_prefix).await?;
            tracing::info!(redis = ?redis, "dedupe, rate limits and plugin key-value state are shared through Redis");
            Some(redis)
        }
        None => None,
    };
    // The plugins' key-value store: shared through Redis when replicas share state (so a
    // stateful plugin sees one state whichever replica an event lands on), else embedded.
    let kv: Arc<dyn PluginKv> = match &redis {
        Some(redis) => Arc::new(RedisKv::new(
            redis.clone(),
            tokio::runtime::Handle::current(),
        )),
        None => Arc::new(store.clone()),
    };
    let plugins = Arc::new(PluginHost::load(&config, Some(kv))?);
    let _watcher = hookwall::plugin::reload::watch(plugins.clone())
        .with_context(|| format!("cannot watch {}", config.plugins.dir.display()))?;
    let pipeline = Arc::new(Pipeline::with_redis(
        &config,
        plugins.clone(),
        store.clone(),
        redis,
    )?);
    let maintenance = tokio::spawn(pipeline.clone().maintain());

    let edge = server::edge::Edge {
        limits: config.server.limits.clone(),
        tls: config
            .server
            .tls
            .as_ref()
            .map(server::tls::Tls::load)
            .transpose()?,
    };
    if edge.tls.is_none() && !config.server.listen.ip().is_loopback() {
        tracing::warn!(listen = %config.server.listen, "this listener is reachable from other hosts without TLS; set [server.tls] or put a TLS proxy in front");
    }
    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let admin_listener = match &config.admin {
        Some(admin) => Some(
            TcpListener::bind(admin.listen)
                .await
                .with_context(|| format!("cannot listen on {} (admin)", admin.listen))?,
        ),
        None => None,
    };

    let retention = Some(config.storage.retention).filter(|r| !r.is_zero());
    let delivery = Delivery::start(&store, &config.sinks, &config.base_dir, retention)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let admin_task = match (admin_listener, &config.admin) {
        (Some(listener), Some(admin_config)) => {
            let token = admin_config
                .token
                .as_ref()
                .map(|t| t.resolve(&config.base_dir, "admin.token"))
                .transpose()?;
            let mut admin = Admin::new(store.clone(), plugins.clone(), token, &config.sinks)
                .with_pipeline(pipeline.clone())
                .with_delivery(delivery.control())
                .with_public(admin_config.public.clone())
                .with_listener(listener.local_addr()?, &admin_config.allowed_hosts);
            if let Some(handle) = metrics {
                admin = admin.with_metrics(handle);
            }
            let admin = Arc::new(admin);
            tracing::info!(addr = %listener.local_addr()?, "admin listening");
            let handler = move |req, _remote: SocketAddr| admin.clone().handle(req);
            Some(tokio::spawn(server::serve(
                listener,
                handler,
                stopped(),
                config.server.shutdown_grace,
            )))
        }
        _ => None,
    };

    tracing::info!(addr = %listener.local_addr()?, sources = config.sources.len(), tls = edge.tls.is_some(), "listening");
    let handler = move |req, remote| server::handle_webhook(pipeline.clone(), remote, req);
    let signal = async move {
        shutdown_signal().await;
        tracing::info!("shutting down: no new connections, finishing in-flight requests");
        let _ = stop_tx.send(true);
    };
    tokio::join!(
        server::edge::serve(
            listener,
            edge,
            handler,
            stopped(),
            config.server.shutdown_grace
        ),
        signal
    );
    if let Some(task) = admin_task {
        let _ = task.await;
    }
    maintenance.abort();
    delivery.stop().await;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn list_plugins(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let client = hookwall::admin::client::AdminClient::from_config(&config)?;
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

/// Writes a new plugin project and says how to build and try it.
fn plugin_new(
    name: &str,
    lang: hookwall::plugin::scaffold::Lang,
    dir: PathBuf,
) -> anyhow::Result<()> {
    let files = hookwall::plugin::scaffold::scaffold(name, lang, &dir)?;
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
fn plugin_test(
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
        let v = if k.ends_with(hookwall::plugin::manifest::FILE_SUFFIX) {
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
    let host = PluginHost::load(&config, Some(Arc::new(store)))?;
    let set = host.plugins();
    let plugin = set.get(name).context("the plugin did not load")?;
    let mut event_headers = vec![("content-type".to_string(), "application/json".to_string())];
    for h in headers {
        let (k, v) = h
            .split_once(':')
            .with_context(|| format!("--header {h:?}: expected NAME:VALUE"))?;
        event_headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let event = hookwall::plugin::Event {
        id: uuid::Uuid::now_v7().to_string(),
        source: "test".into(),
        received_at_ms: clock::now_ms(),
        method: "POST".into(),
        path: "/test".into(),
        query: String::new(),
        headers: event_headers,
        body: std::fs::read(event).with_context(|| format!("cannot read {}", event.display()))?,
    };
    let started = std::time::Instant::now();
    let result = host.call(plugin, &event);
    let elapsed_us = started.elapsed().as_micros();
    let output = match &result {
        Ok(action) => hookwall::plugin::action_json(action),
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

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn send(
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
    let verifier = build_verifier(&config, source)?;
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
    let signed = verifier.sign(unsigned, &id, clock::now_ms());
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
    let config = server::tls::client_config(tls.ca_cert.as_deref(), identity)?;
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
