//! A private RabbitMQ broker for tests: `rabbitmq-server` on a free loopback port, with its own
//! data dir, node name and `epmd` (also on a free port: never the machine's 4369, 5672 or
//! 25672), and helpers that declare a queue and read it back with the same client crate as the
//! host's `amqp` sink.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use lapin::options::{
    BasicAckOptions, BasicGetOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties, ExchangeKind};

use crate::services::{Guard, find_binary};
use crate::{free_port, wait_for};

const INSTALL: &str =
    "`apt-get install rabbitmq-server` (Debian; `.ci/run` installs it when missing)";

/// A private RabbitMQ node; stopped (and its `epmd`) when dropped.
pub struct RabbitServer {
    pub port: u16,
    epmd_port: u16,
    dist_port: u16,
    dir: tempfile::TempDir,
    epmd: Option<Guard>,
    process: Option<Guard>,
}

/// One message read back from a queue.
#[derive(Debug, Clone)]
pub struct AmqpMessage {
    pub routing_key: String,
    pub body: Vec<u8>,
    pub message_id: Option<String>,
    pub content_type: Option<String>,
    /// 2: persistent.
    pub delivery_mode: Option<u8>,
    pub headers: Vec<(String, String)>,
}

impl AmqpMessage {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl RabbitServer {
    pub fn start() -> RabbitServer {
        let mut server = RabbitServer {
            port: free_port(),
            epmd_port: free_port(),
            dist_port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            epmd: None,
            process: None,
        };
        let epmd = find_binary("epmd", INSTALL);
        let child = Command::new(epmd)
            .args([
                "-port",
                &server.epmd_port.to_string(),
                "-address",
                "127.0.0.1",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start epmd");
        server.epmd = Some(Guard(child));
        server.spawn();
        server
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2f`
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn spawn(&mut self) {
        let server = find_binary("rabbitmq-server", INSTALL);
        // The Debian wrapper changes to /var/lib/rabbitmq and may switch users: run the
        // broker's own script directly.
        let script = PathBuf::from("/usr/lib/rabbitmq/bin/rabbitmq-server");
        let program = if script.is_file() { script } else { server };
        let child = Command::new(program)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env(
                "RABBITMQ_NODENAME",
                format!("hookwall-test-{}@localhost", self.port),
            )
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_MNESIA_BASE", self.path("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.path("log"))
            .env("RABBITMQ_PID_FILE", self.path("pid"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                self.path("enabled_plugins"),
            )
            .env("RABBITMQ_CONFIG_FILE", self.path("rabbitmq"))
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rabbitmq-server");
        self.process = Some(Guard(child));
        let url = self.url();
        let up = wait_for(Duration::from_secs(60), || {
            block_on(async { Connection::connect(&url, ConnectionProperties::default()).await })
                .is_ok()
        });
        assert!(
            up,
            "rabbitmq-server did not accept connections on port {}",
            self.port
        );
    }

    /// The broker's Erlang VM (the script's child), from its pid file.
    fn beam_pid(&self) -> Option<String> {
        std::fs::read_to_string(self.path("pid"))
            .ok()
            .map(|p| p.trim().to_string())
    }

    /// Kills the broker at once (SIGKILL to its VM: no clean shutdown); `restart` brings it
    /// back on the same port with its data (durable queues and persistent messages).
    pub fn kill(&mut self) {
        if let Some(pid) = self.beam_pid() {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
        if let Some(mut guard) = self.process.take() {
            let _ = guard.0.wait();
        }
        let _ = std::fs::remove_file(self.path("pid"));
    }

    pub fn restart(&mut self) {
        assert!(self.process.is_none(), "kill it first");
        self.spawn();
    }

    /// Declares a durable topic exchange `exchange` and a durable queue `queue` bound to it
    /// with `binding`.
    pub fn declare(&self, exchange: &str, queue: &str, binding: &str) {
        let url = self.url();
        block_on(async move {
            let connection = Connection::connect(&url, ConnectionProperties::default()).await?;
            let channel = connection.create_channel().await?;
            channel
                .exchange_declare(
                    exchange.into(),
                    ExchangeKind::Topic,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            channel
                .queue_declare(
                    queue.into(),
                    QueueDeclareOptions::durable(),
                    FieldTable::default(),
                )
                .await?;
            channel
                .queue_bind(
                    queue.into(),
                    exchange.into(),
                    binding.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            Ok(())
        })
        .unwrap_or_else(|e| panic!("declare {exchange} → {queue}: {e}"));
    }

    /// Takes every message waiting in `queue` (acking them); an error while the broker is down.
    pub fn take(&self, queue: &str) -> Result<Vec<AmqpMessage>, String> {
        let url = self.url();
        block_on(async move {
            let connection = Connection::connect(&url, ConnectionProperties::default()).await?;
            let channel = connection.create_channel().await?;
            let mut out = Vec::new();
            while let Some(m) = channel
                .basic_get(queue.into(), BasicGetOptions::default())
                .await?
            {
                let p = &m.delivery.properties;
                let headers = p
                    .headers()
                    .as_ref()
                    .map(|h| {
                        h.inner()
                            .iter()
                            .map(|(k, v)| {
                                let v = match v {
                                    AMQPValue::LongString(s) => s.to_string(),
                                    other => format!("{other:?}"),
                                };
                                (k.to_string(), v)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(AmqpMessage {
                    routing_key: m.delivery.routing_key.to_string(),
                    body: m.delivery.data.clone(),
                    message_id: p.message_id().as_ref().map(|s| s.to_string()),
                    content_type: p.content_type().as_ref().map(|s| s.to_string()),
                    delivery_mode: *p.delivery_mode(),
                    headers,
                });
                m.delivery.ack(BasicAckOptions::default()).await?;
            }
            Ok(out)
        })
    }
}

impl Drop for RabbitServer {
    fn drop(&mut self) {
        // SIGTERM to the script stops the node cleanly; a node still up after that is killed.
        if let Some(mut guard) = self.process.take() {
            let pid = guard.0.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let stopped = wait_for(Duration::from_secs(15), || {
                guard.0.try_wait().ok().flatten().is_some()
            });
            if !stopped && let Some(beam) = self.beam_pid() {
                let _ = Command::new("kill").args(["-KILL", &beam]).status();
            }
        }
        if let Some(beam) = self.beam_pid() {
            let _ = Command::new("kill").args(["-KILL", &beam]).status();
        }
        self.epmd = None;
    }
}

fn block_on<T>(
    call: impl std::future::Future<Output = Result<T, lapin::Error>>,
) -> Result<T, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the AMQP client");
    runtime.block_on(async {
        match tokio::time::timeout(Duration::from_secs(10), call).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err("the AMQP call took over 10 s".into()),
        }
    })
}
