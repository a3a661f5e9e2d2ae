//! `loadgen shared`: the full path on the embedded store beside the same path on one
//! PostgreSQL (`[storage] backend = "postgres"`) with one and with two replicas, alternating the
//! scenarios for several rounds, then each backend at half its own maximum (open loop) with
//! delivery to an `http` sink for the ack and event-to-delivery latencies (issue #19).
//!
//! The database is a private PostgreSQL started here (the test kit's, on a free port, default
//! settings but `synchronous_commit = on` as shipped); its schema is dropped before every run,
//! so each run starts empty as the embedded scenario's new directory does. Everything runs on
//! this machine: the load generator, the replicas and the database share its cores, which the
//! machine CPU column counts.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hookwall_testkit::PostgresServer;
use serde::Serialize;

use crate::client::{self, Report, Spec};
use crate::compare::{
    DeliveryLatency, Options, Server, Stages, drain, hookwall_config, median, process_cpu,
};
use crate::pool::{Prepared, Target};
use crate::sink::{self, SendTimes};

#[derive(Clone, Copy)]
enum Backend {
    Embedded,
    Postgres { replicas: usize },
}

impl Backend {
    fn name(self) -> String {
        match self {
            Backend::Embedded => "embedded store".into(),
            Backend::Postgres { replicas: 1 } => "PostgreSQL, 1 replica".into(),
            Backend::Postgres { replicas } => format!("PostgreSQL, {replicas} replicas"),
        }
    }
}

/// One backend's closed-loop results over the rounds.
#[derive(Serialize)]
pub struct Row {
    pub scenario: String,
    pub rps: Vec<f64>,
    pub median_rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Hookwall's CPU (every replica) per acknowledged event, µs.
    pub hookwall_cpu_us: f64,
    /// The whole machine's busy CPU per acknowledged event (load generator, replicas, database).
    pub machine_cpu_us: f64,
    pub non_2xx: u64,
}

/// One backend at half its own maximum, open loop, delivering to an `http` sink.
#[derive(Serialize)]
pub struct HalfLoad {
    pub scenario: String,
    pub offered_rps: f64,
    pub achieved_rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// With delivery to the http sink; `None`: the sink paused.
    pub delivery: Option<DeliveryLatency>,
}

#[derive(Serialize)]
pub struct Comparison {
    pub rows: Vec<Row>,
    pub half_load: Vec<HalfLoad>,
}

/// The config of `backend`'s replicas: issue #18's full path (rate limit, dedupe, the router
/// plugin, durable commits), the sink paused or (`deliver`) an `http` sink.
fn config(repo: &Path, backend: Backend, deliver: bool) -> String {
    let stages = Stages {
        intake: true,
        plugin: true,
        fsync: true,
        deliver,
        write_file: false,
        traces: false,
    };
    let text = hookwall_config(&repo.join("plugins"), stages);
    match backend {
        Backend::Embedded => text,
        Backend::Postgres { .. } => text.replace(
            "[storage]\n",
            "[storage]\nbackend = \"postgres\"\nurl = \"env:DATABASE_URL\"\n",
        ),
    }
}

/// Busy CPU time of the whole machine so far (all cores), from `/proc/stat`.
fn machine_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().next() else {
        return Duration::ZERO;
    };
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal …: busy is all but idle and iowait.
    let busy: u64 = ticks
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    Duration::from_secs_f64(busy as f64 / 100.0)
}

/// One run of `backend`: its replicas started on an empty store, loaded (closed loop when
/// `rate` is `None`), measured.
struct Run {
    report: Report,
    hookwall_cpu_us: f64,
    machine_cpu_us: f64,
    delivery: Option<DeliveryLatency>,
}

#[allow(clippy::too_many_arguments)]
async fn run_one(
    repo: &Path,
    hookwall: &Path,
    pg: &PostgresServer,
    backend: Backend,
    pools: &[Arc<Vec<Prepared>>],
    path: &str,
    options: &Options,
    rate: Option<f64>,
    times: Option<&Arc<SendTimes>>,
) -> anyhow::Result<Run> {
    pg.psql("DROP SCHEMA IF EXISTS hookwall CASCADE; DROP TABLE IF EXISTS hookwall_schema_history");
    let sink = match times {
        Some(t) => {
            t.clear();
            Some(sink::start(t.clone()).await?)
        }
        None => None,
    };
    let text = config(repo, backend, times.is_some());
    let replicas = match backend {
        Backend::Embedded => 1,
        Backend::Postgres { replicas } => replicas,
    };
    let env = [("DATABASE_URL", pg.url())];
    let mut servers = Vec::new();
    for i in 0..replicas {
        servers.push(Server::launch(
            &format!("{} #{i}", backend.name()),
            Some(&text),
            hookwall,
            sink.as_ref().map(|s| s.addr),
            &env,
        )?);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pids: Vec<u32> = servers.iter().map(|s| s.child.id()).collect();
    let warmup = options.warmup;
    let at_start = tokio::spawn({
        let pids = pids.clone();
        async move {
            tokio::time::sleep(warmup).await;
            let hw: Duration = pids.iter().map(|p| process_cpu(*p)).sum();
            (hw, machine_cpu())
        }
    });
    // The connections are split over the replicas, each replica with its own requests.
    let loads = servers.iter().zip(pools).map(|(server, pool)| {
        let spec = Spec {
            addr: server.addr,
            path: path.to_string(),
            connections: (options.connections / replicas).max(1),
            duration: options.duration,
            warmup: options.warmup,
            rate: rate.map(|r| r / replicas as f64),
            http2: false,
            sent: times.cloned(),
        };
        client::run(spec, pool.clone())
    });
    let reports = futures_join(loads).await?;
    let hw_end: Duration = pids.iter().map(|p| process_cpu(*p)).sum();
    let machine_end = machine_cpu();
    let (hw_start, machine_start) = at_start.await?;
    let report = merge(reports);
    let events = report.requests.max(1) as f64;
    let delivery = match (&sink, times) {
        (Some(sink), Some(times)) => Some(drain(sink, times).await),
        _ => None,
    };
    Ok(Run {
        hookwall_cpu_us: hw_end.saturating_sub(hw_start).as_secs_f64() * 1e6 / events,
        machine_cpu_us: machine_end.saturating_sub(machine_start).as_secs_f64() * 1e6 / events,
        report,
        delivery,
    })
}

/// Runs the loads together.
async fn futures_join<F>(loads: impl Iterator<Item = F>) -> anyhow::Result<Vec<Report>>
where
    F: std::future::Future<Output = anyhow::Result<Report>> + Send + 'static,
{
    let tasks: Vec<_> = loads.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await??);
    }
    Ok(out)
}

/// The replicas' reports as one: requests and rates add up, latency is the worst replica's.
fn merge(reports: Vec<Report>) -> Report {
    let mut it = reports.into_iter();
    let mut total = it.next().expect("one replica at least");
    for r in it {
        total.requests += r.requests;
        total.requests_per_sec += r.requests_per_sec;
        total.errors += r.errors;
        for (status, n) in r.statuses {
            *total.statuses.entry(status).or_default() += n;
        }
        total.latency_us.p50 = total.latency_us.p50.max(r.latency_us.p50);
        total.latency_us.p90 = total.latency_us.p90.max(r.latency_us.p90);
        total.latency_us.p99 = total.latency_us.p99.max(r.latency_us.p99);
        total.latency_us.p999 = total.latency_us.p999.max(r.latency_us.p999);
        total.latency_us.max = total.latency_us.max.max(r.latency_us.max);
        total.pool_exhausted |= r.pool_exhausted;
    }
    total
}

pub async fn run(options: Options, repo: &Path, hookwall: &Path) -> anyhow::Result<Comparison> {
    eprintln!("starting a private PostgreSQL…");
    let pg = PostgresServer::start();
    let backends = [
        Backend::Embedded,
        Backend::Postgres { replicas: 1 },
        Backend::Postgres { replicas: 2 },
    ];
    let pool_config = tempfile::tempdir()?;
    let config_path = pool_config.path().join("hookwall.toml");
    std::fs::write(
        &config_path,
        config(repo, Backend::Embedded, false).replace("{listen}", "127.0.0.1:1"),
    )?;
    let target = Target::from_config(&config_path, "bench")?;
    eprintln!(
        "preparing 2 × {} signed requests of {} bytes…",
        options.pool / 2,
        options.body_bytes
    );
    let pools = [
        Arc::new(target.prepare(options.pool / 2, options.body_bytes, "a")?),
        Arc::new(target.prepare(options.pool / 2, options.body_bytes, "b")?),
    ];

    let mut results: Vec<Vec<Run>> = backends.iter().map(|_| Vec::new()).collect();
    for round in 1..=options.rounds {
        for (i, backend) in backends.iter().enumerate() {
            let run = run_one(
                repo,
                hookwall,
                &pg,
                *backend,
                &pools,
                &target.path,
                &options,
                None,
                None,
            )
            .await?;
            eprintln!(
                "round {round}/{}: {:<24} {:>8.0} events/s  ack p50 {:>6.2} ms  p99 {:>7.2} ms  \
                 hookwall {:>6.1} µs/event  machine {:>6.1} µs/event",
                options.rounds,
                backend.name(),
                run.report.requests_per_sec,
                run.report.latency_us.p50 as f64 / 1000.0,
                run.report.latency_us.p99 as f64 / 1000.0,
                run.hookwall_cpu_us,
                run.machine_cpu_us,
            );
            results[i].push(run);
        }
    }
    let mut rows = Vec::new();
    for (backend, runs) in backends.iter().zip(&results) {
        let of = |f: &dyn Fn(&Run) -> f64| median(&mut runs.iter().map(f).collect::<Vec<_>>());
        let rps: Vec<f64> = runs.iter().map(|r| r.report.requests_per_sec).collect();
        rows.push(Row {
            scenario: backend.name(),
            median_rps: median(&mut rps.clone()),
            rps,
            p50_ms: of(&|r| r.report.latency_us.p50 as f64 / 1000.0),
            p99_ms: of(&|r| r.report.latency_us.p99 as f64 / 1000.0),
            hookwall_cpu_us: of(&|r| r.hookwall_cpu_us),
            machine_cpu_us: of(&|r| r.machine_cpu_us),
            non_2xx: runs
                .iter()
                .map(|r| {
                    r.report.errors
                        + r.report
                            .statuses
                            .iter()
                            .filter(|(s, _)| !(200..300).contains(*s))
                            .map(|(_, n)| n)
                            .sum::<u64>()
                })
                .sum(),
        });
    }

    // Each backend at half its own maximum: the sink paused (the ack latency of intake alone),
    // then delivering to an http sink (ack and event-to-delivery latency together).
    let times = Arc::new(SendTimes::new(pools[0].len()));
    let mut half_load = Vec::new();
    for (backend, row) in backends.iter().zip(&rows).take(2) {
        for deliver in [false, true] {
            let offered = row.median_rps * 0.5;
            let run = run_one(
                repo,
                hookwall,
                &pg,
                *backend,
                &pools,
                &target.path,
                &options,
                Some(offered),
                deliver.then_some(&times),
            )
            .await?;
            eprintln!(
                "half load: {:<24} {} {:.0} offered, {:.0} achieved, ack p99 {:.2} ms",
                backend.name(),
                if deliver { "delivering" } else { "sink paused" },
                offered,
                run.report.requests_per_sec,
                run.report.latency_us.p99 as f64 / 1000.0,
            );
            half_load.push(HalfLoad {
                scenario: backend.name(),
                offered_rps: offered,
                achieved_rps: run.report.requests_per_sec,
                p50_ms: run.report.latency_us.p50 as f64 / 1000.0,
                p99_ms: run.report.latency_us.p99 as f64 / 1000.0,
                delivery: run.delivery,
            });
        }
    }
    Ok(Comparison { rows, half_load })
}

/// The Markdown table printed at the end.
pub fn table(c: &Comparison, options: &Options) -> String {
    let mut out = format!(
        "{} rounds × {:?} per backend, {} connections (split over the replicas), {}-byte bodies; \
         the full path (rate limit, dedupe, router plugin, durable commit), sink paused\n\n",
        options.rounds, options.duration, options.connections, options.body_bytes
    );
    out.push_str("| backend | median events/s | ack p50 ms | ack p99 ms | Hookwall CPU µs/event | machine CPU µs/event | non-2xx |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|\n");
    for r in &c.rows {
        out.push_str(&format!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.1} | {:.1} | {} |\n",
            r.scenario,
            r.median_rps,
            r.p50_ms,
            r.p99_ms,
            r.hookwall_cpu_us,
            r.machine_cpu_us,
            r.non_2xx
        ));
    }
    for h in &c.half_load {
        match &h.delivery {
            None => out.push_str(&format!(
                "\n{} at half its maximum, sink paused (open loop, {:.0} events/s offered, {:.0} \
                 achieved): ack p50 {:.2} ms, p99 {:.2} ms\n",
                h.scenario, h.offered_rps, h.achieved_rps, h.p50_ms, h.p99_ms
            )),
            Some(d) => out.push_str(&format!(
                "\n{} at half its maximum with delivery to an http sink (open loop, {:.0} events/s \
                 offered, {:.0} achieved): ack p50 {:.2} ms, p99 {:.2} ms; event-to-delivery p50 \
                 {:.2} ms, p99 {:.2} ms ({:.2} deliveries per event)\n",
                h.scenario,
                h.offered_rps,
                h.achieved_rps,
                h.p50_ms,
                h.p99_ms,
                d.p50_ms,
                d.p99_ms,
                d.delivered_ratio
            )),
        }
    }
    out
}
