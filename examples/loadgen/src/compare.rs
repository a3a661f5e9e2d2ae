//! `loadgen compare`: every scenario against its own fresh server, alternating A B C … for
//! several rounds so that machine drift hits all alike, then one table.
//!
//! Scenarios build up the full path one stage at a time; each Hookwall scenario gets its own
//! temp dir, config and process. In scenarios 2–5 the sink is paused (deliveries are stored,
//! not sent) so the numbers are about ingest; scenario 6 delivers every event to the file sink
//! while the load runs (issue #18's "full path"), and scenario 7 to an `http` sink on loopback
//! ([`crate::sink`]), reporting the event-to-delivery latency too.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use crate::client::{self, Report, Spec};
use crate::pool::{Prepared, Target};
use crate::sink::{self, SendTimes};

/// The demo secret of the generated configs (benchmark only).
const SECRET: &str = "loadgen-bench-secret";
/// Scenario 5, repeated at half load.
const FULL_PATH: &str = "full path (+ durable commit)";
/// The trace export of the OTLP scenarios, to the sink server (sampling 1.0 unless a line
/// follows).
const TRACES: &str = "[telemetry.otlp]\nendpoint = \"http://{sink}\"";
/// After the load of the http-sink scenario stops, wait this long at most for deliveries to drain.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy)]
pub struct Options {
    pub rounds: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub connections: usize,
    pub body_bytes: usize,
    pub pool: usize,
}

struct Scenario {
    name: String,
    /// `None`: the bare hyper baseline.
    config: Option<String>,
    stages: Stages,
    /// Another `hookwall` binary than the one under test (`--other-binary`).
    binary: Option<PathBuf>,
}

/// Which scenarios run: `--only` (substrings of names; the baseline always runs) and
/// `--other-binary` (the full path with delivery again, on another build, e.g. the commit
/// before a change, so both are measured in one run).
#[derive(Default)]
pub struct Selection {
    pub only: Vec<String>,
    pub other_binary: Option<PathBuf>,
}

/// Which stages a Hookwall scenario turns on; each scenario adds one to the previous.
#[derive(Clone, Copy, Default)]
pub(crate) struct Stages {
    /// A per-client-IP rate limit (high enough never to refuse) and dedupe by event id.
    pub(crate) intake: bool,
    /// The bundled router plugin.
    pub(crate) plugin: bool,
    /// Durable commits (fsync), the default configuration.
    pub(crate) fsync: bool,
    /// Deliver to an `http` sink (at `{sink}`) instead of a paused file sink.
    pub(crate) deliver: bool,
    /// Deliver to the file sink (running, not paused): issue #18's "full path".
    pub(crate) write_file: bool,
    /// Export traces over OTLP (sampling 1.0) to the sink server, which answers `/v1/traces`
    /// as a collector does (issue #21).
    pub(crate) traces: bool,
}

/// The Hookwall config of a scenario.
pub(crate) fn hookwall_config(plugins_dir: &Path, stages: Stages) -> String {
    let plugins = if stages.plugin { "[\"router\"]" } else { "[]" };
    let intake = if stages.intake {
        "rate_limit = { rate = \"1000000/s\", burst = 100000, by = \"client_ip\" }\ndedupe = { key = \"scheme\" }"
    } else {
        // A source whose scheme carries ids dedupes on them by default: off for `verify`.
        "dedupe = { key = \"none\" }"
    };
    format!(
        r#"
[server]
listen = "{{listen}}"
# The paused sink's backlog must not trip overload shedding (default 100000 pending) mid-run.
overload = {{ max_pending = 1000000000 }}

[storage]
path = "data"
fsync = {fsync}

[plugins]
dir = "{plugins_dir}"

{router_config}

[sources.bench]
path = "/hooks/bench"
verify = {{ scheme = "hmac", header = "X-Signature", prefix = "sha256=", secrets = ["{SECRET}"], id_header = "X-Event-Id" }}
plugins = {plugins}
sinks = ["bench"]
{intake}

{sink}
{traces}
"#,
        fsync = stages.fsync,
        traces = if stages.traces { TRACES } else { "" },
        sink = if stages.deliver {
            // 64 units in flight (the default is 16): at 16, one delivery per request to a
            // loopback app is bound by the round trip and falls behind from ~8k events/s on
            // the 2-core VM (docs/performance.md).
            "[sinks.bench]\ntype = \"http\"\nurl = \"http://{sink}/deliveries\"\nsecret = \"whsec_bG9hZGdlbi1iZW5jaC1zaW5rLWtleQ==\"\nconcurrency = 64"
        } else if stages.write_file {
            "[sinks.bench]\ntype = \"file\"\npath = \"events.jsonl\""
        } else {
            "[sinks.bench]\ntype = \"file\"\npath = \"events.jsonl\"\npaused = true"
        },
        plugins_dir = plugins_dir.display(),
        router_config = if stages.plugin {
            "[plugins.config.router]\ndefault = \"bench\"\nrules = [{ name = \"orders\", json = \"/type\", prefix = \"order.\", sink = \"bench\" }]"
        } else {
            ""
        },
    )
}

fn scenarios(repo: &Path, selection: &Selection) -> Vec<Scenario> {
    let plugins = repo.join("plugins");
    let verify = Stages::default();
    let intake = Stages {
        intake: true,
        ..verify
    };
    let plugin = Stages {
        plugin: true,
        ..intake
    };
    let full = Stages {
        fsync: true,
        ..plugin
    };
    let deliver = Stages {
        deliver: true,
        ..full
    };
    let write_file = Stages {
        write_file: true,
        ..full
    };
    let traces = Stages {
        traces: true,
        ..deliver
    };
    let hookwall = |name: &str, stages| Scenario {
        name: name.to_string(),
        config: Some(hookwall_config(&plugins, stages)),
        stages,
        binary: None,
    };
    let mut all = vec![
        Scenario {
            name: "baseline (bare hyper)".into(),
            config: None,
            stages: Stages::default(),
            binary: None,
        },
        hookwall("verify", verify),
        hookwall("+ rate limit + dedupe", intake),
        hookwall("+ router plugin", plugin),
        hookwall(FULL_PATH, full),
        hookwall("full path + delivery to file sink", write_file),
        hookwall("full path + delivery to http sink", deliver),
        hookwall("full path + http sink + OTLP traces", traces),
        Scenario {
            config: Some(
                hookwall_config(&plugins, traces)
                    .replace(TRACES, &format!("{TRACES}\nsampling = 0.1")),
            ),
            ..hookwall("full path + http sink + OTLP traces, 10% sampled", traces)
        },
    ];
    if let Some(other) = &selection.other_binary {
        all.push(Scenario {
            binary: Some(other.clone()),
            ..hookwall("full path + http sink, other binary", deliver)
        });
    }
    all.retain(|s| {
        s.config.is_none()
            || selection.only.is_empty()
            || selection.only.iter().any(|o| s.name.contains(o.as_str()))
    });
    all
}

/// A server process of one run; killed on drop.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// `sink`: where the http-sink scenario's `http` sink delivers.
    fn start(
        scenario: &Scenario,
        hookwall: &Path,
        sink: Option<SocketAddr>,
    ) -> anyhow::Result<Server> {
        Server::launch(
            &scenario.name,
            scenario.config.as_deref(),
            scenario.binary.as_deref().unwrap_or(hookwall),
            sink,
            &[],
        )
    }

    /// Starts Hookwall on `config` (`{listen}` and `{sink}` filled in) with `env` added, or the
    /// bare baseline when `config` is `None`, and waits until it listens.
    pub(crate) fn launch(
        name: &str,
        config: Option<&str>,
        hookwall: &Path,
        sink: Option<SocketAddr>,
        env: &[(&str, String)],
    ) -> anyhow::Result<Server> {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut cmd = match config {
            None => {
                let mut c = Command::new(std::env::current_exe()?);
                c.args(["baseline", "--listen", &addr.to_string()]);
                c
            }
            Some(config) => {
                let path = dir.path().join("hookwall.toml");
                let sink = sink.map(|a| a.to_string()).unwrap_or_default();
                std::fs::write(
                    &path,
                    config
                        .replace("{listen}", &addr.to_string())
                        .replace("{sink}", &sink),
                )?;
                let mut c = Command::new(hookwall);
                c.arg("serve")
                    .arg("--config")
                    .arg(&path)
                    .env("RUST_LOG", "warn")
                    .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
                c
            }
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start server")?;
        let server = Server {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                bail!("{name} did not start listening");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    /// (current RSS, peak RSS) in KiB, from /proc.
    pub(crate) fn rss_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

/// One scenario's results over all rounds.
#[derive(Serialize)]
pub struct Row {
    pub scenario: String,
    pub rps: Vec<f64>,
    pub median_rps: f64,
    pub ratio_to_baseline: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub idle_rss_mib: f64,
    pub peak_rss_mib: f64,
    /// The server process's CPU time (user + system) per response over the measured window,
    /// in microseconds (median over rounds).
    pub cpu_us_per_request: f64,
    pub non_2xx: u64,
    /// The http-sink scenario only: event-to-delivery latency (request sent → delivery received).
    pub delivery: Option<DeliveryLatency>,
}

/// Event-to-delivery numbers of the http-sink scenario (medians over rounds).
#[derive(Serialize, Clone, Copy)]
pub struct DeliveryLatency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Deliveries received per request sent (1.0: every event delivered by the end).
    pub delivered_ratio: f64,
    /// How long after the load stopped the last delivery arrived.
    pub drain_s: f64,
}

#[derive(Serialize)]
pub struct Comparison {
    pub rows: Vec<Row>,
    pub half_load: Vec<HalfLoad>,
}

/// A scenario at half the full path's measured maximum, open loop.
#[derive(Serialize)]
pub struct HalfLoad {
    pub scenario: String,
    /// The offered rate as a share of the full path's maximum (0.5, or 0.8 for delivery).
    pub share: f64,
    pub offered_rps: f64,
    pub achieved_rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// The http-sink scenario: event-to-delivery latency at that load.
    pub delivery: Option<DeliveryLatency>,
}

/// One scenario's measurement in one round.
struct Run {
    report: Report,
    /// The server's CPU µs per response over the measured window.
    cpu_us_per_request: f64,
    /// (idle, peak) RSS of the server.
    rss_kib: (u64, u64),
    delivery: Option<DeliveryLatency>,
}

/// Starts `scenario`'s server (and, for the http-sink scenario, the sink it delivers to), loads it at
/// `rate` (closed loop if `None`), and measures.
async fn run_one(
    scenario: &Scenario,
    hookwall: &Path,
    times: &Arc<SendTimes>,
    path: &str,
    pool: &Arc<Vec<Prepared>>,
    options: &Options,
    rate: Option<f64>,
) -> anyhow::Result<Run> {
    let sink = match scenario.stages.deliver {
        true => {
            times.clear();
            Some(sink::start(times.clone()).await?)
        }
        false => None,
    };
    let server = Server::start(scenario, hookwall, sink.as_ref().map(|s| s.addr))?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = server.rss_kib().0;
    let sent = sink.as_ref().map(|_| times.clone());
    // The server's CPU from the end of the warm-up to the end of the run.
    let pid = server.child.id();
    let warmup = options.warmup;
    let cpu_at_start = tokio::spawn(async move {
        tokio::time::sleep(warmup).await;
        process_cpu(pid)
    });
    let report = measure(&server, path, pool, options, rate, sent).await?;
    let cpu = process_cpu(pid).saturating_sub(cpu_at_start.await?);
    let cpu_us_per_request = cpu.as_secs_f64() * 1e6 / report.requests.max(1) as f64;
    let delivery = match &sink {
        Some(sink) => Some(drain(sink, times).await),
        None => None,
    };
    let peak = server.rss_kib().1;
    Ok(Run {
        report,
        cpu_us_per_request,
        rss_kib: (idle, peak),
        delivery,
    })
}

/// CPU time (user + system) process `pid` has used so far, from `/proc/PID/stat`; zero if it
/// cannot be read.
pub(crate) fn process_cpu(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // Fields after the command name, which is in parentheses and may hold spaces: state is
    // the first, utime the 12th and stime the 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_secs_f64((ticks(11) + ticks(12)) as f64 / clock_ticks_per_second() as f64)
}

/// `sysconf(_SC_CLK_TCK)`, as `getconf` reports it (100 on Linux unless told otherwise).
fn clock_ticks_per_second() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100)
    })
}

/// Waits until the sink has one delivery per request sent, warm-up included (or they stop
/// coming for a second, or [`DRAIN_LIMIT`]), then reads the sink's latency histogram.
pub(crate) async fn drain(sink: &sink::SinkServer, times: &SendTimes) -> DeliveryLatency {
    use std::sync::atomic::Ordering;
    let accepted = times.sent_count();
    let stopped = Instant::now();
    let (mut last_count, mut last_change) = (0, stopped);
    loop {
        let count = sink.received.deliveries.load(Ordering::Relaxed);
        let now = Instant::now();
        if count != last_count {
            (last_count, last_change) = (count, now);
        }
        if count >= accepted
            || now.duration_since(last_change) > Duration::from_secs(1)
            || now.duration_since(stopped) > DRAIN_LIMIT
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let hist = sink
        .received
        .latency_us
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    DeliveryLatency {
        p50_ms: hist.value_at_quantile(0.50) as f64 / 1000.0,
        p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
        delivered_ratio: if accepted > 0 {
            last_count as f64 / accepted as f64
        } else {
            0.0
        },
        drain_s: last_change.saturating_duration_since(stopped).as_secs_f64(),
    }
}

fn median_delivery(runs: &[Run]) -> Option<DeliveryLatency> {
    let all: Vec<DeliveryLatency> = runs.iter().filter_map(|r| r.delivery).collect();
    if all.is_empty() {
        return None;
    }
    let of = |f: fn(&DeliveryLatency) -> f64| median(&mut all.iter().map(f).collect::<Vec<_>>());
    Some(DeliveryLatency {
        p50_ms: of(|d| d.p50_ms),
        p99_ms: of(|d| d.p99_ms),
        delivered_ratio: of(|d| d.delivered_ratio),
        drain_s: of(|d| d.drain_s),
    })
}

pub(crate) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

async fn measure(
    server: &Server,
    path: &str,
    pool: &Arc<Vec<Prepared>>,
    options: &Options,
    rate: Option<f64>,
    sent: Option<Arc<SendTimes>>,
) -> anyhow::Result<Report> {
    let spec = Spec {
        addr: server.addr,
        path: path.to_string(),
        connections: options.connections,
        duration: options.duration,
        warmup: options.warmup,
        rate,
        http2: false,
        sent,
    };
    let report = client::run(spec, pool.clone()).await?;
    if report.pool_exhausted {
        eprintln!("warning: the request pool ran out; raise --pool for longer runs");
    }
    Ok(report)
}

pub async fn run(
    options: Options,
    selection: &Selection,
    repo: &Path,
    hookwall: &Path,
) -> anyhow::Result<Comparison> {
    let scenarios = scenarios(repo, selection);
    // One pool serves every run: each server starts with an empty store, so ids never repeat
    // within a server's life.
    let pool_config = tempfile::tempdir()?;
    let config_path = pool_config.path().join("hookwall.toml");
    std::fs::write(
        &config_path,
        hookwall_config(&repo.join("plugins"), Stages::default())
            .replace("{listen}", "127.0.0.1:1"),
    )?;
    let target = Target::from_config(&config_path, "bench")?;
    eprintln!(
        "preparing {} signed requests of {} bytes…",
        options.pool, options.body_bytes
    );
    let pool = Arc::new(target.prepare(options.pool, options.body_bytes, "cmp")?);

    let times = Arc::new(SendTimes::new(pool.len()));
    let mut results: Vec<Vec<Run>> = scenarios.iter().map(|_| Vec::new()).collect();
    for round in 1..=options.rounds {
        for (i, scenario) in scenarios.iter().enumerate() {
            let run = run_one(
                scenario,
                hookwall,
                &times,
                &target.path,
                &pool,
                &options,
                None,
            )
            .await?;
            let (report, delivery) = (&run.report, run.delivery);
            eprintln!(
                "round {round}/{}: {:<34} {:>9.0} req/s  {:>6.1} CPU µs/req  p99 {:>7.2} ms{}",
                options.rounds,
                scenario.name,
                report.requests_per_sec,
                run.cpu_us_per_request,
                report.latency_us.p99 as f64 / 1000.0,
                delivery.map_or(String::new(), |d| format!(
                    "  delivery p50 {:.2} ms p99 {:.2} ms, drained in {:.1} s",
                    d.p50_ms, d.p99_ms, d.drain_s
                )),
            );
            results[i].push(run);
        }
    }

    let mut rows = Vec::new();
    let mut baseline_rps = 0.0;
    for (scenario, runs) in scenarios.iter().zip(&results) {
        let rps: Vec<f64> = runs.iter().map(|r| r.report.requests_per_sec).collect();
        let median_rps = median(&mut rps.clone());
        if scenario.config.is_none() {
            baseline_rps = median_rps;
        }
        let ms = |f: &dyn Fn(&Report) -> u64| {
            median(
                &mut runs
                    .iter()
                    .map(|r| f(&r.report) as f64 / 1000.0)
                    .collect::<Vec<_>>(),
            )
        };
        rows.push(Row {
            scenario: scenario.name.clone(),
            median_rps,
            ratio_to_baseline: if baseline_rps > 0.0 {
                median_rps / baseline_rps
            } else {
                0.0
            },
            p50_ms: ms(&|r| r.latency_us.p50),
            p99_ms: ms(&|r| r.latency_us.p99),
            cpu_us_per_request: median(
                &mut runs
                    .iter()
                    .map(|r| r.cpu_us_per_request)
                    .collect::<Vec<_>>(),
            ),
            idle_rss_mib: runs.iter().map(|r| r.rss_kib.0).max().unwrap_or(0) as f64 / 1024.0,
            peak_rss_mib: runs.iter().map(|r| r.rss_kib.1).max().unwrap_or(0) as f64 / 1024.0,
            delivery: median_delivery(runs),
            non_2xx: runs
                .iter()
                .map(|Run { report: r, .. }| {
                    r.errors
                        + r.statuses
                            .iter()
                            .filter(|(s, _)| !(200..300).contains(*s))
                            .map(|(_, n)| n)
                            .sum::<u64>()
                })
                .sum(),
            rps,
        });
    }

    // The full path again at half its own maximum, open loop, for the latency at a sane load.
    // (Not when `--only` left the full path out.)
    let Some(full) = scenarios.iter().position(|s| s.name == FULL_PATH) else {
        return Ok(Comparison {
            rows,
            half_load: Vec::new(),
        });
    };
    let max = rows[full].median_rps;
    let mut half_load = Vec::new();
    // The full path, and the full path with delivery, at half the full path's maximum: ack
    // latency, and event-to-delivery latency, at a load the server keeps up with; then the
    // http sink at 80 % (issue #18: does delivery keep up there).
    let runs = scenarios
        .iter()
        .filter(|s| s.stages.fsync)
        .map(|s| (s, 0.5))
        .chain(
            scenarios
                .iter()
                .filter(|s| s.stages.deliver)
                .map(|s| (s, 0.8)),
        );
    for (scenario, share) in runs {
        let offered = max * share;
        if offered <= 0.0 {
            break;
        }
        let Run {
            report, delivery, ..
        } = run_one(
            scenario,
            hookwall,
            &times,
            &target.path,
            &pool,
            &options,
            Some(offered),
        )
        .await?;
        half_load.push(HalfLoad {
            scenario: scenario.name.clone(),
            share,
            offered_rps: offered,
            achieved_rps: report.requests_per_sec,
            p50_ms: report.latency_us.p50 as f64 / 1000.0,
            p99_ms: report.latency_us.p99 as f64 / 1000.0,
            p999_ms: report.latency_us.p999 as f64 / 1000.0,
            delivery,
        });
    }
    Ok(Comparison { rows, half_load })
}

/// The Markdown table printed at the end (also what the README shows).
pub fn table(c: &Comparison, options: &Options) -> String {
    let mut out = format!(
        "{} rounds × {:?} per scenario, {} connections, {}-byte bodies, HTTP/1.1 keep-alive\n\n",
        options.rounds, options.duration, options.connections, options.body_bytes
    );
    out.push_str("| scenario | median req/s | ratio to baseline | server CPU µs/req | p50 ack ms | p99 ack ms | idle RSS MiB | peak RSS MiB | non-2xx |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in &c.rows {
        out.push_str(&format!(
            "| {} | {:.0} | {:.2} | {:.1} | {:.2} | {:.2} | {:.1} | {:.1} | {} |\n",
            r.scenario,
            r.median_rps,
            r.ratio_to_baseline,
            r.cpu_us_per_request,
            r.p50_ms,
            r.p99_ms,
            r.idle_rss_mib,
            r.peak_rss_mib,
            r.non_2xx
        ));
    }
    for r in &c.rows {
        if let Some(d) = &r.delivery {
            out.push_str(&format!(
                "\n{}: event-to-delivery (request sent → delivery received by the app) p50 {:.2} ms, p99 {:.2} ms; {:.2} deliveries per request sent, last one {:.1} s after the load stopped\n",
                r.scenario, d.p50_ms, d.p99_ms, d.delivered_ratio, d.drain_s
            ));
        }
    }
    for h in &c.half_load {
        out.push_str(&format!(
            "\n{} at {:.0} % of the full path's max (open loop, {:.0} req/s offered, {:.0} achieved): ack p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms",
            h.scenario,
            h.share * 100.0,
            h.offered_rps,
            h.achieved_rps,
            h.p50_ms,
            h.p99_ms,
            h.p999_ms
        ));
        if let Some(d) = &h.delivery {
            out.push_str(&format!(
                "; event-to-delivery p50 {:.2} ms, p99 {:.2} ms ({:.2} deliveries per request sent)",
                d.p50_ms, d.p99_ms, d.delivered_ratio
            ));
        }
        out.push('\n');
    }
    out
}

/// The `hookwall` binary next to this one, built (release) if missing.
pub fn hookwall_binary(repo: &Path) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("hookwall");
    if !bin.exists() {
        eprintln!("building the hookwall binary…");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(repo)
            .args(["build", "-p", "hookwall", "--bin", "hookwall"]);
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        if !cmd.status()?.success() {
            bail!("cannot build hookwall");
        }
    }
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this is a debug build; run with `cargo run --release -p loadgen` for real numbers"
        );
    }
    Ok(bin)
}
