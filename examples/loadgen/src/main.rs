//! `loadgen`: load generator and benchmark runner for Hookwall.
//!
//! - `loadgen run`: load any running Hookwall source with pre-signed requests.
//! - `loadgen baseline`: a bare hyper server, the HTTP stack's limit.
//! - `loadgen compare`: start each server itself and compare them in one run.

#![allow(clippy::disallowed_types)] // A tool at the edge: anyhow is its error type (clippy.toml).

mod baseline;
mod client;
mod compare;
mod pool;
mod shared;
mod sink;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Load generator and benchmark runner for Hookwall")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Send signed webhooks to a running Hookwall and report throughput and latency.
    Run {
        /// The target's config file: the source's path and signing scheme come from it.
        #[arg(long)]
        config: PathBuf,
        /// The source to load.
        #[arg(long)]
        source: String,
        /// Address to connect to [default: the config's listen address].
        #[arg(long)]
        addr: Option<String>,
        /// Concurrent connections (streams with --http2).
        #[arg(short, long, default_value_t = 32)]
        connections: usize,
        /// How long to measure.
        #[arg(short, long, value_parser = humantime::parse_duration, default_value = "10s")]
        duration: Duration,
        /// Load before measuring, not recorded.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
        warmup: Duration,
        /// Fixed total request rate (open loop); default: as fast as answered (closed loop).
        #[arg(long)]
        rate: Option<f64>,
        /// One HTTP/2 connection with N streams instead of N HTTP/1.1 connections.
        #[arg(long)]
        http2: bool,
        #[arg(long, default_value_t = 1024)]
        body_bytes: usize,
        /// Pre-signed requests to build; each is sent once (unique event ids).
        #[arg(long, default_value_t = 300_000)]
        pool: usize,
        /// Send exactly N requests, then stop (a fixed count instead of a duration: no warm-up;
        /// --duration, --warmup and --pool do not apply). All N are signed in advance and held
        /// in memory (about N × the body size).
        #[arg(short = 'n', long, conflicts_with_all = ["duration", "warmup", "pool"])]
        requests: Option<usize>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write COUNT live dedupe marks (`SOURCE`, `fill-N`, expiring in 48 h) into the stopped
    /// store in DIR (created if missing): the set-up of the ten-million-marks memory
    /// measurement (docs/performance.md).
    FillMarks {
        /// The store's directory (`[storage] path`).
        #[arg(long)]
        store: PathBuf,
        #[arg(long)]
        source: String,
        #[arg(long, default_value_t = 10_000_000)]
        count: u64,
    },
    /// The full path on the embedded store beside one PostgreSQL with one and two replicas
    /// (`[storage] backend = "postgres"`; a private server is started), alternating rounds, then
    /// each at half its maximum with delivery (docs/performance.md, issue #19).
    Shared {
        #[command(flatten)]
        bench: Bench,
    },
    /// Serve as the bare hyper baseline.
    Baseline {
        #[arg(long, default_value = "127.0.0.1:9999")]
        listen: SocketAddr,
    },
    /// Start the baseline and each Hookwall scenario, measure them alternately, print a table.
    Compare {
        #[command(flatten)]
        bench: Bench,
        /// Run only the scenarios whose names contain one of these (comma-separated); the
        /// baseline always runs.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Also run the full path with delivery on this `hookwall` binary (another build, e.g.
        /// the commit before a change), in the same rounds.
        #[arg(long)]
        other_binary: Option<PathBuf>,
    },
}

/// The options of `compare` and `shared`.
#[derive(clap::Args)]
struct Bench {
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[arg(short, long, value_parser = humantime::parse_duration, default_value = "5s")]
    duration: Duration,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    warmup: Duration,
    #[arg(short, long, default_value_t = 32)]
    connections: usize,
    #[arg(long, default_value_t = 1024)]
    body_bytes: usize,
    /// Pre-signed requests (`shared` makes two pools of half as many, one per replica); a run
    /// that uses them all stops early (raise it on a fast machine).
    #[arg(long, default_value_t = 600_000)]
    pool: usize,
    #[arg(long)]
    json: bool,
}

impl Bench {
    fn options(&self) -> compare::Options {
        compare::Options {
            rounds: self.rounds,
            duration: self.duration,
            warmup: self.warmup,
            connections: self.connections,
            body_bytes: self.body_bytes,
            pool: self.pool,
        }
    }
}

/// The repository and the release `hookwall` binary the benchmarks start.
fn bench_target() -> anyhow::Result<(PathBuf, PathBuf)> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let repo = std::fs::canonicalize(&repo).unwrap_or(repo);
    let hookwall = compare::hookwall_binary(&repo)?;
    Ok((repo, hookwall))
}

/// Prints a benchmark's result as JSON or as its table.
fn print_result<R: serde::Serialize>(
    result: &R,
    json: bool,
    table: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(result)?);
    } else {
        println!("{}", table());
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Baseline { listen } => multi_thread()?.block_on(baseline::serve(listen)),
        Cmd::FillMarks {
            store,
            source,
            count,
        } => {
            let expires = hookwall::clock::now_ms() + 48 * 3600 * 1000;
            let started = std::time::Instant::now();
            hookwall::store::marks::preload(&store, &source, "fill", count, expires)?;
            eprintln!(
                "{count} marks written to {} in {:.1} s",
                store.display(),
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Cmd::Run {
            config,
            source,
            addr,
            connections,
            duration,
            warmup,
            rate,
            http2,
            body_bytes,
            pool,
            requests,
            json,
        } => {
            // A fixed count is a pool of exactly that many requests, sent until it runs out.
            let (pool, duration, warmup) = match requests {
                Some(n) => (n, FIXED_COUNT_TIME_LIMIT, Duration::ZERO),
                None => (pool, duration, warmup),
            };
            let target = pool::Target::from_config(&config, &source)?;
            let addr = match addr {
                Some(a) => a,
                None => hookwall::config::Config::load(&config)?
                    .server
                    .listen
                    .to_string(),
            };
            let addr = addr
                .to_socket_addrs()?
                .next()
                .context("the address resolves to nothing")?;
            eprintln!("preparing {pool} signed requests…");
            let tag = uuid::Uuid::new_v4().simple().to_string();
            let prepared = Arc::new(target.prepare(pool, body_bytes, &tag[..8])?);
            let spec = client::Spec {
                addr,
                path: target.path.clone(),
                connections,
                duration,
                warmup,
                rate,
                http2,
                sent: None,
            };
            let report = client_runtime()?.block_on(client::run(spec, prepared))?;
            match requests {
                // Broken connections end their workers: fewer than N sent is a failed run.
                Some(n) if report.requests + report.errors < n as u64 => anyhow::bail!(
                    "only {} of {n} requests were sent ({} connection errors)",
                    report.requests + report.errors,
                    report.errors
                ),
                None if report.pool_exhausted => eprintln!(
                    "warning: the request pool ran out before the duration ended; raise --pool"
                ),
                _ => {}
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "{:.0} req/s over {:.1} s ({} requests, {} errors)\nstatus: {:?}\nlatency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
                    report.requests_per_sec,
                    report.seconds,
                    report.requests,
                    report.errors,
                    report.statuses,
                    report.latency_us.p50 as f64 / 1000.0,
                    report.latency_us.p90 as f64 / 1000.0,
                    report.latency_us.p99 as f64 / 1000.0,
                    report.latency_us.p999 as f64 / 1000.0,
                    report.latency_us.max as f64 / 1000.0,
                );
            }
            Ok(())
        }
        Cmd::Compare {
            bench,
            only,
            other_binary,
        } => {
            let (repo, hookwall) = bench_target()?;
            let options = bench.options();
            let selection = compare::Selection { only, other_binary };
            let result =
                client_runtime()?.block_on(compare::run(options, &selection, &repo, &hookwall))?;
            print_result(&result, bench.json, || compare::table(&result, &options))
        }
        Cmd::Shared { bench } => {
            let (repo, hookwall) = bench_target()?;
            let options = bench.options();
            let result = client_runtime()?.block_on(shared::run(options, &repo, &hookwall))?;
            print_result(&result, bench.json, || shared::table(&result, &options))
        }
    }
}

/// With `--requests`, the run ends when they are all answered; this only bounds a stuck target.
const FIXED_COUNT_TIME_LIMIT: Duration = Duration::from_secs(24 * 3600);

fn multi_thread() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// The client runs on one thread, so on a 2-core machine the server under test gets the other.
fn client_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A quick run of the load generator against the in-process baseline: it must send, get
    /// 200s and measure latencies.
    #[test]
    fn smoke_run_against_the_baseline() {
        let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smoke.toml");
        let target = pool::Target::from_config(&config, "s").unwrap();
        let requests = Arc::new(target.prepare(5_000, 512, "smoke").unwrap());
        assert_eq!(requests[0].body.len(), 512);
        assert!(requests[0].headers.iter().any(|(k, _)| k == "x-signature"));

        let rt = multi_thread().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        rt.spawn(baseline::serve(addr));
        std::thread::sleep(Duration::from_millis(200));
        let spec = client::Spec {
            addr,
            path: target.path.clone(),
            connections: 4,
            duration: Duration::from_millis(300),
            warmup: Duration::from_millis(50),
            rate: None,
            http2: false,
            sent: None,
        };
        let report = rt.block_on(client::run(spec, requests)).unwrap();
        assert!(report.requests > 0, "{report:?}");
        assert_eq!(report.errors, 0);
        assert_eq!(
            report.statuses.keys().copied().collect::<Vec<_>>(),
            vec![200]
        );
        assert!(report.latency_us.p50 > 0 && report.latency_us.p50 <= report.latency_us.max);
    }
}
