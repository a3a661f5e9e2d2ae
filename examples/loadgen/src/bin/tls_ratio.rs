//! `tls_ratio`: what TLS costs per connection. Every request opens a new connection (TCP, then
//! for TLS a handshake) and sends one signed-less webhook over HTTP/1.1 to the same in-process
//! Hookwall edge and pipeline (`hookwall::server::edge::serve` + `handle_webhook`, store without
//! fsync so the disk does not dominate). Three modes in one run, same duration and concurrency:
//! plain HTTP, TLS with a full handshake per request, and TLS with session resumption. Prints
//! requests per second for each and the ratios to plain HTTP.
//!
//! `cargo run --release -p loadgen --bin tls_ratio -- --duration 5s --connections 8`
//!
//! Client and server share the machine, so each number includes the client's side of the
//! handshake too.

#![allow(clippy::disallowed_types)] // A tool at the edge: anyhow is its error type (clippy.toml).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::io::{AsyncRead, AsyncWrite};

use hookwall::config::Config;
use hookwall::pipeline::Pipeline;
use hookwall::plugin::PluginHost;
use hookwall::server::edge::{Edge, serve};
use hookwall::server::tls::Tls;
use hookwall::store::Store;

#[derive(Parser)]
#[command(about = "New-connection-per-request throughput: TLS vs plain HTTP")]
struct Args {
    /// How long to measure each mode.
    #[arg(short, long, value_parser = humantime::parse_duration, default_value = "5s")]
    duration: Duration,
    /// Concurrent clients, each opening one connection per request.
    #[arg(short, long, default_value_t = 8)]
    connections: usize,
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Plain,
    TlsFull,
    TlsResumed,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Plain => "plain HTTP",
            Mode::TlsFull => "TLS, full handshake",
            Mode::TlsResumed => "TLS, resumed session",
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    std::fs::create_dir(d.join("plugins"))?;

    // A CA and a server certificate made for this run.
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec!["localhost".to_string()])?.signed_by(&key, &*ca)?;
    std::fs::write(d.join("cert.pem"), cert.pem())?;
    std::fs::write(d.join("key.pem"), key.serialize_pem())?;

    let text = r#"
[storage]
path = "data"
fsync = false
[server.tls]
cert = "cert.pem"
key = "key.pem"
[sources.bench]
path = "/hooks/bench"
verify = { scheme = "none" }
sinks = ["out"]
[sinks.out]
type = "stdout"
"#;
    let config = Config::parse(text, d)?;
    let store = Store::open_with(&config.storage.path, false)?;
    let plugins = Arc::new(PluginHost::load(&config, None)?);
    let pipeline = Arc::new(Pipeline::new(&config, plugins, store)?);
    let tls = Tls::load(config.server.tls.as_ref().context("tls")?)?;

    let plain_addr = start(
        Edge {
            limits: config.server.limits.clone(),
            tls: None,
        },
        pipeline.clone(),
    )
    .await?;
    let tls_addr = start(
        Edge {
            limits: config.server.limits.clone(),
            tls: Some(tls),
        },
        pipeline.clone(),
    )
    .await?;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone())?;
    let client = |resume: bool| {
        let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
        if !resume {
            c.resumption = rustls::client::Resumption::disabled();
        }
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(c)
    };
    let full = client(false);
    let resumed = client(true);

    println!(
        "new connection per request, HTTP/1.1, {} clients, {:?} per mode",
        args.connections, args.duration
    );
    let mut results = Vec::new();
    for mode in [Mode::Plain, Mode::TlsFull, Mode::TlsResumed] {
        let (addr, tls) = match mode {
            Mode::Plain => (plain_addr, None),
            Mode::TlsFull => (tls_addr, Some(full.clone())),
            Mode::TlsResumed => (tls_addr, Some(resumed.clone())),
        };
        // Warm up (and, for resumption, fill the session cache).
        measure(
            addr,
            tls.clone(),
            args.connections,
            Duration::from_millis(500),
        )
        .await?;
        let rate = measure(addr, tls, args.connections, args.duration).await?;
        println!("{:<22} {:>9.0} req/s", mode.name(), rate);
        results.push((mode, rate));
    }
    let plain = results[0].1;
    for (mode, rate) in &results[1..] {
        println!("{:<22} {:>9.2} × plain HTTP", mode.name(), rate / plain);
    }
    Ok(())
}

async fn start(edge: Edge, pipeline: Arc<Pipeline>) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let handler =
        move |req, remote| hookwall::server::handle_webhook(pipeline.clone(), remote, req);
    tokio::spawn(serve(
        listener,
        edge,
        handler,
        std::future::pending(),
        Duration::from_secs(1),
    ));
    Ok(addr)
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Requests per second over `duration` with `clients` concurrent clients.
async fn measure(
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let done = done.clone();
        let tls = tls.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                one_request(addr, tls.clone()).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

async fn one_request(
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> anyhow::Result<()> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    match tls {
        None => exchange(tcp).await,
        Some(config) => {
            let name = rustls::pki_types::ServerName::try_from("localhost")?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            exchange(stream).await
        }
    }
}

async fn exchange<S>(stream: S) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let body = format!(r#"{{"type":"bench","n":{id}}}"#);
    let request = http::Request::post("/hooks/bench")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .header("connection", "close")
        .body(Full::new(Bytes::from(body)))?;
    let response = sender.send_request(request).await?;
    anyhow::ensure!(
        response.status().is_success(),
        "status {}",
        response.status()
    );
    response.into_body().collect().await?;
    Ok(())
}
