//! The composition root: [`App::build`] does everything that can fail — open the store,
//! connect Redis, load the plugins and start watching them, build the verifiers, the sinks and
//! TLS — **before any port is bound**, so a bad config, an unreachable Redis or an unwritable
//! store fails the start with a clear error and no listener ever half-serves. [`App::serve`]
//! then binds both listeners and runs until SIGTERM / Ctrl-C, drains in-flight requests within
//! `shutdown_grace`, stops the delivery workers and closes the store (its last commit durable).

use std::net::SocketAddr;
use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::admin::Admin;
use crate::config::{Config, ConfigError, StorageBackend};
use crate::delivery::{DeliveryError, Workers};
use crate::pipeline::Pipeline;
use crate::plugin::kv::{RedisKv, StoreKv};
use crate::plugin::reload::PluginWatcher;
use crate::plugin::{PluginError, PluginHost, PluginKv};
use crate::redis::{RedisError, SharedRedis};
use crate::server::tls::{Tls, TlsError};
use crate::server::{self, edge::Edge};
use crate::store::postgres::{Shared, SharedOptions};
use crate::store::{Store, StoreError};
use crate::telemetry;

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The config is invalid, or a secret it names cannot be read.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `[storage] redis` is set and Redis could not be reached.
    #[error(transparent)]
    Redis(#[from] RedisError),
    /// A plugin the config names could not be loaded.
    #[error(transparent)]
    Plugins(#[from] PluginError),
    /// The plugins directory cannot be watched for changes.
    #[error("cannot watch {dir}: {reason}")]
    Watch {
        /// The plugins directory (`[plugins] dir`).
        dir: String,
        /// The watcher's error.
        reason: String,
    },
    /// The TLS certificate or key could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A sink could not be built.
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    /// The metrics recorder could not be installed.
    #[error("cannot install the metrics recorder: {0}")]
    Metrics(String),
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener: `"webhooks"` or `"admin"`.
        what: &'static str,
        /// The address it tried to bind.
        addr: SocketAddr,
        /// The bind error.
        source: std::io::Error,
    },
}

/// Everything `serve` runs, built and checked.
pub struct App {
    config: Config,
    store: Store,
    plugins: Arc<PluginHost>,
    _watcher: PluginWatcher,
    pipeline: Arc<Pipeline>,
    edge: Edge,
    delivery: Workers,
    metrics: Option<PrometheusHandle>,
    admin_token: Option<crate::config::Secret>,
}

impl App {
    /// Builds every part of the receiver from a validated `config`; binds nothing.
    pub async fn build(config: Config) -> Result<App, AppError> {
        // Installed before any stage runs, so no early sample is lost. Without an admin listener
        // nobody could scrape it, so it is not installed then either.
        let metrics = match (&config.admin, config.telemetry.metrics) {
            (Some(_), true) => {
                Some(telemetry::metrics::install().map_err(|e| AppError::Metrics(e.to_string()))?)
            }
            _ => None,
        };
        let admin_token = match &config.admin {
            Some(admin) => admin
                .token
                .as_ref()
                .map(|t| t.resolve(&config.base_dir, "admin.token"))
                .transpose()?,
            None => None,
        };
        let store = open_store(&config).await?;
        let redis = connect_redis(&config).await?;
        // The plugins' key-value store: shared through Redis when replicas share state (so a
        // stateful plugin sees one state whichever replica an event lands on), else embedded.
        let kv: Arc<dyn PluginKv> = match &redis {
            Some(redis) => Arc::new(RedisKv::new(redis.clone())),
            None => Arc::new(StoreKv::new(store.clone())),
        };
        let plugins = Arc::new(PluginHost::load(&config, Some(kv))?);
        let watcher =
            crate::plugin::reload::watch(plugins.clone()).map_err(|e| AppError::Watch {
                dir: config.plugins.dir.display().to_string(),
                reason: e.to_string(),
            })?;
        let pipeline = Arc::new(Pipeline::with_redis(
            &config,
            plugins.clone(),
            store.clone(),
            redis,
        )?);
        let edge = Edge {
            limits: config.server.limits.clone(),
            tls: config.server.tls.as_ref().map(Tls::load).transpose()?,
        };
        if edge.tls.is_none() && !config.server.listen.ip().is_loopback() {
            tracing::warn!(listen = %config.server.listen, "this listener is reachable from other hosts without TLS; set [server.tls] or put a TLS proxy in front");
        }
        // The sinks are built here, before any port is bound: a bad sink fails the start.
        let delivery = Workers::start(&store, &config.sinks, &config.base_dir)?;
        Ok(App {
            config,
            store,
            plugins,
            _watcher: watcher,
            pipeline,
            edge,
            delivery,
            metrics,
            admin_token,
        })
    }

    /// Binds the listeners and serves until a shutdown signal, then drains and closes.
    pub async fn serve(self) -> Result<(), AppError> {
        let bound = self.bind().await;
        let (listener, admin_listener) = match bound {
            Ok(listeners) => listeners,
            Err(e) => {
                self.delivery.stop().await;
                self.store.close().await;
                return Err(e);
            }
        };
        let maintenance = tokio::spawn(self.pipeline.clone().maintain());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let retention = Some(self.config.storage.retention).filter(|r| !r.is_zero());
        let upkeep = tokio::spawn(crate::store::upkeep::run(
            self.store.clone(),
            retention,
            stop_rx.clone(),
        ));
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        let grace = self.config.server.shutdown_grace;
        let admin_task = admin_listener.map(|listener| {
            let admin = Arc::new(self.admin(&listener));
            let handler = move |req, _remote: SocketAddr| admin.clone().handle(req);
            tokio::spawn(server::serve(listener, handler, stopped(), grace))
        });
        tracing::info!(addr = ?listener.local_addr().ok(), sources = self.config.sources.len(),
            tls = self.edge.tls.is_some(), "listening");
        let pipeline = self.pipeline.clone();
        let handler = move |req, remote| server::handle_webhook(pipeline.clone(), remote, req);
        let signal = async move {
            shutdown_signal().await;
            tracing::info!("shutting down: no new connections, finishing in-flight requests");
            let _ = stop_tx.send(true);
        };
        tokio::join!(
            server::edge::serve(listener, self.edge, handler, stopped(), grace),
            signal
        );
        if let Some(task) = admin_task {
            let _ = task.await;
        }
        maintenance.abort();
        let _ = upkeep.await;
        self.delivery.stop().await;
        self.store.close().await;
        tracing::info!("stopped");
        Ok(())
    }

    /// The webhook listener and, when configured, the admin listener.
    async fn bind(&self) -> Result<(TcpListener, Option<TcpListener>), AppError> {
        let bind = |what, addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| AppError::Bind { what, addr, source })
        };
        let listener = bind("webhooks", self.config.server.listen).await?;
        let admin = match &self.config.admin {
            Some(admin) => Some(bind("admin", admin.listen).await?),
            None => None,
        };
        Ok((listener, admin))
    }

    /// The admin API for `listener` (which knows its own names from its bound address).
    fn admin(&self, listener: &TcpListener) -> Admin {
        let config = self.config.admin.as_ref();
        let bound = listener
            .local_addr()
            .unwrap_or_else(|_| config.map_or(([127, 0, 0, 1], 0).into(), |c| c.listen));
        let mut admin = Admin::new(
            self.store.clone(),
            self.plugins.clone(),
            self.admin_token.clone(),
            &self.config.sinks,
        )
        .with_pipeline(self.pipeline.clone())
        .with_delivery(self.delivery.control());
        if let Some(c) = config {
            admin = admin
                .with_public(c.public.clone())
                .with_listener(bound, &c.allowed_hosts);
        }
        if let Some(handle) = &self.metrics {
            admin = admin.with_metrics(handle.clone());
        }
        tracing::info!(addr = %bound, "admin listening");
        admin
    }
}

/// The store `[storage]` names: embedded under `path`, or shared in PostgreSQL at `url`.
pub async fn open_store(config: &Config) -> Result<Store, AppError> {
    match config.storage.backend {
        StorageBackend::Embedded => {
            let store = Store::open_with(&config.storage.path, config.storage.fsync)?;
            if !config.storage.fsync {
                tracing::warn!("storage.fsync = false: a crash can lose acknowledged events");
            }
            Ok(store)
        }
        StorageBackend::Postgres => {
            let shared = Shared::connect(shared_options(config)?).await?;
            Ok(Store::from(shared))
        }
    }
}

/// How to reach the shared store, from `[storage]` (its URL resolved) and the sinks.
pub fn shared_options(config: &Config) -> Result<SharedOptions, AppError> {
    let url = config
        .storage
        .url
        .as_ref()
        .ok_or_else(|| ConfigError::Invalid {
            key: "storage.url".into(),
            reason: "backend = \"postgres\" needs url".into(),
        })?
        .resolve(&config.base_dir, "storage.url")?;
    let url = String::from_utf8(url.expose().to_vec()).map_err(|_| ConfigError::Invalid {
        key: "storage.url".into(),
        reason: "not UTF-8".into(),
    })?;
    Ok(SharedOptions {
        url,
        lease: config.storage.lease,
        pool_size: config.storage.pool_size,
        order_keys: crate::store::postgres::order_keys(&config.sinks),
        ca_file: config.storage.ca_file.clone(),
    })
}

/// The shared Redis connection, when `[storage] redis` is set.
async fn connect_redis(config: &Config) -> Result<Option<SharedRedis>, AppError> {
    let Some(url) = &config.storage.redis else {
        return Ok(None);
    };
    let url = url.resolve(&config.base_dir, "storage.redis")?;
    let redis = SharedRedis::connect(&url, &config.storage.redis_prefix).await?;
    tracing::info!(redis = ?redis, "dedupe, rate limits and plugin key-value state are shared through Redis");
    Ok(Some(redis))
}

/// Resolves on SIGTERM or Ctrl-C.
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
