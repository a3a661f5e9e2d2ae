//! Delivery guarantees of the sinks (issue #24, items 2 and 6), through the real binary: a
//! batch's id names exactly its items, also when a retry regroups them with new events; and a
//! sink whose writes hang (a stdout pipe nobody reads) fails its attempts at its `timeout`
//! instead of holding its unit, the other sinks, the admin API or shutdown.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use hookwall_testkit::upstream::{Answer, Received, Upstream, standard_webhooks_valid};
use hookwall_testkit::{Hookwall, Reply, free_port, http, read_jsonl, wait_for};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{BIN, base_config, file_sink, hmac_source, post_signed, workdir};

/// The `app` sink's signing key (Standard Webhooks form).
const SINK_SECRET: &str = "whsec_aG9va3dhbGwtc2luay10ZXN0LWtleS0zMi1ieXRlcyE=";

// Batch ids.

/// Hookwall delivering the HMAC source `shop` to the http sink `app` at `up`, in batches of two
/// held up to 3 s to fill, retried after exactly 1 s (the first retry has no jitter), without a
/// circuit breaker, one unit at a time, with `retry_extra` in its `retry` table.
fn start_batching(up: &Upstream, retry_extra: &str) -> (tempfile::TempDir, Hookwall) {
    let dir = workdir(&[]);
    let config = format!(
        r#"{}
[sinks.app]
type = "http"
url = "{}"
secret = "{SINK_SECRET}"
batch = {{ max_events = 2, max_wait = "3s" }}
retry = {{ initial = "1s", max_delay = "1s"{retry_extra} }}
circuit = {{ failures = 0 }}
concurrency = 1
{}"#,
        base_config("", "", None, ""),
        up.url(),
        hmac_source("shop", "", "app")
    );
    let hw = Hookwall::start(BIN, dir.path(), &config);
    (dir, hw)
}

/// The stable delivery id of event `id` of the `shop` source to the `app` sink.
fn delivery_id(event: &str) -> String {
    format!("shop:{event}:app:0")
}

/// The delivery ids a request carried, in order: a batch's items, or the single delivery's id
/// (its `webhook-id`).
fn items(r: &Received) -> Vec<String> {
    match serde_json::from_slice::<Value>(&r.body)
        .ok()
        .and_then(|b| b["batch"].as_array().cloned())
    {
        Some(batch) => batch
            .iter()
            .map(|i| i["delivery_id"].as_str().expect("delivery_id").to_string())
            .collect(),
        None => vec![r.header("webhook-id").unwrap_or_default().to_string()],
    }
}

/// The documented batch id, computed here from the spec: `batch:` and the hex SHA-256 over each
/// delivery id as its byte length (8 bytes, big-endian) followed by its bytes.
fn expected_batch_id(ids: &[String]) -> String {
    let mut digest = Sha256::new();
    for id in ids {
        digest.update((id.len() as u64).to_be_bytes());
        digest.update(id.as_bytes());
    }
    format!("batch:{}", hex::encode(digest.finalize()))
}

/// Every request's id is the documented one for its items (a single delivery: its own id),
/// carried as both `webhook-id` and `Idempotency-Key` and signed; and two requests share an id
/// exactly when they carry the same items.
fn assert_ids_name_their_items(requests: &[Received]) {
    for r in requests {
        let items = items(r);
        let id = r.header("webhook-id").expect("a webhook-id");
        if items.len() > 1 {
            assert_eq!(id, expected_batch_id(&items), "batch of {items:?}");
        }
        assert_eq!(r.header("idempotency-key"), Some(id));
        assert!(standard_webhooks_valid(SINK_SECRET, r), "signed: {id}");
    }
    for (i, a) in requests.iter().enumerate() {
        for b in &requests[i + 1..] {
            let same_items = items(a) == items(b);
            let same_id = a.header("webhook-id") == b.header("webhook-id");
            assert_eq!(
                same_id,
                same_items,
                "{:?} carried {:?}, {:?} carried {:?}",
                a.header("webhook-id"),
                items(a),
                b.header("webhook-id"),
                items(b)
            );
        }
    }
}

/// Waits up to 20 s for the upstream to have received `n` requests; they, in order.
fn await_requests(up: &Upstream, n: usize) -> Vec<Received> {
    assert!(
        wait_for(Duration::from_secs(20), || up.count() >= n),
        "{} requests, want {n}: {:?}",
        up.count(),
        up.received().iter().map(items).collect::<Vec<_>>()
    );
    up.received()
}

fn post_ok(hw: &Hookwall, id: &str) {
    assert_eq!(post_signed(hw, "shop", id, &json!({"id": id})).status, 200);
}

/// A retry that regroups a failed batch's item with a new event: with `batch:FIRST+N` the
/// regrouped batch `[x, z]` carried the id of the failed `[x, y]` (same first item, same
/// count), and a receiver that processed that id (deduping, as Standard Webhooks tells it to)
/// would silently drop `z`. The batch id names exactly its items, so it differs.
#[test]
fn a_regrouped_retry_never_carries_the_id_of_another_batch() {
    let up = Upstream::start();
    // y alone, then [x, y], fail; everything after is accepted.
    up.script([Answer::Status(500, None), Answer::Status(500, None)]);
    // Two attempts: y's second fails for good (dead letter), x is retried alone.
    let (_dir, hw) = start_batching(&up, ", max_attempts = 2");

    // y waits 3 s for a partner, goes alone, fails; it is due again 1 s later.
    post_ok(&hw, "y");
    await_requests(&up, 1);
    // x arrives before y's retry is due, so it comes first in the batch they make.
    post_ok(&hw, "x");
    let failed = await_requests(&up, 2);
    // [x, y] failed: y is dead-lettered (its last attempt), x is due again in exactly 1 s and
    // then waits up to 3 s for a partner. z arrives in that window: [x, z].
    std::thread::sleep(Duration::from_millis(1700));
    let sent_z = failed[1].at.elapsed();
    post_ok(&hw, "z");
    let requests = await_requests(&up, 3);
    assert!(
        wait_for(Duration::from_secs(5), || up.accepted().len() == 1),
        "one accepted request"
    );

    let seen: Vec<Vec<String>> = requests.iter().map(items).collect();
    let (x, y, z) = (delivery_id("x"), delivery_id("y"), delivery_id("z"));
    assert_eq!(
        seen,
        [vec![y.clone()], vec![x.clone(), y], vec![x, z]],
        "the regrouping this test needs (z sent {sent_z:?} after [x, y] failed)"
    );
    // A single delivery keeps its stable delivery id.
    assert_eq!(
        requests[0].header("webhook-id"),
        Some(delivery_id("y").as_str())
    );
    assert_eq!(requests.len(), 3, "{seen:?}");
    assert_ids_name_their_items(&requests);
}

/// A batch retried with the same items carries the same id, so a receiver that got it (and
/// whose answer was lost) recognises it.
#[test]
fn a_batch_retried_whole_keeps_its_id() {
    let up = Upstream::start();
    up.script([Answer::Status(500, None)]);
    let (_dir, hw) = start_batching(&up, "");
    // p and q fill a batch, which fails; both are due again at the same time: the same batch.
    post_ok(&hw, "p");
    post_ok(&hw, "q");
    let requests = await_requests(&up, 2);
    let seen: Vec<Vec<String>> = requests.iter().map(items).collect();
    let pq = vec![delivery_id("p"), delivery_id("q")];
    assert_eq!(seen, [pq.clone(), pq.clone()]);
    assert_eq!((requests[0].status, requests[1].status), (500, 200));
    assert_eq!(
        requests[0].header("webhook-id"),
        Some(expected_batch_id(&pq).as_str())
    );
    // The host's public helper computes the same (for tests that name a batch's id).
    assert_eq!(hookwall::sink::batch_id(&pq), expected_batch_id(&pq));
    assert_ids_name_their_items(&requests);
}

// A stalled sink.

/// `hookwall serve` with its stdout a pipe the test holds and never reads (the harness sends
/// stdout to the log file, which never blocks). Logs go to `hookwall.log`; killed on drop.
struct Unread {
    child: Option<Child>,
    /// Held open and never read: once its buffer is full, writes to the server's stdout block.
    _stdout: ChildStdout,
    addr: SocketAddr,
    admin: SocketAddr,
    log_path: PathBuf,
}

impl Unread {
    fn start(dir: &Path, config: &str) -> Unread {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config_path = dir.join("hookwall.toml");
        let text = config
            .replace("{listen}", &addr.to_string())
            .replace("{admin}", &admin.to_string());
        std::fs::write(&config_path, text).unwrap();
        let log_path = dir.join("hookwall.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start hookwall");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut server = Unread {
            child: Some(child),
            _stdout: stdout,
            addr,
            admin,
            log_path,
        };
        let up = wait_for(Duration::from_secs(60), || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
        assert!(up, "hookwall did not start:\n{}", server.log());
        assert!(server.running(), "hookwall exited:\n{}", server.log());
        server
    }

    fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().expect("wait").is_none())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn post(&self, id: &str, body: &[u8]) -> Reply {
        let headers = [("X-Event-Id", id), ("Content-Type", "application/json")];
        http(self.addr, "POST", "/hooks/shop", &headers, body).expect("request to hookwall")
    }

    /// An admin GET and how long it took to answer.
    fn admin_get(&self, path: &str) -> (Reply, Duration) {
        let started = Instant::now();
        let reply = http(self.admin, "GET", path, &[], b"").expect("request to the admin API");
        (reply, started.elapsed())
    }

    /// SIGTERM, then waits up to `within` for the exit.
    fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().expect("wait") {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Unread {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The delivery of event `id` to `sink`, as the admin API shows it.
fn delivery(server: &Unread, id: &str, sink: &str) -> Value {
    let (reply, _) = server.admin_get(&format!("/api/v1/events/shop/{id}"));
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.json()["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["sink"] == sink)
        .cloned()
        .unwrap_or_else(|| panic!("event {id} has no delivery to {sink}"))
}

/// A `stdout` sink whose pipe nobody reads: its write blocks for good once the pipe's buffer
/// (64 KiB) is full. Before the sink `timeout`, that unit stayed in flight forever: no attempt
/// was ever recorded and SIGTERM waited for it, so shutdown hung. Now each attempt fails at the
/// timeout (retried), the file sink next to it delivers everything, the admin API answers, and
/// shutdown completes, abandoning the stuck write with a warning.
#[test]
fn a_stdout_nobody_reads_stalls_only_its_sink_and_not_shutdown() {
    let dir = workdir(&[]);
    let disk = dir.path().join("disk.jsonl");
    let config = format!(
        "{}\n[sinks.out]\ntype = \"stdout\"\ntimeout = \"1s\"\n\
         retry = {{ max_attempts = 1000, initial = \"200ms\", max_delay = \"500ms\" }}\n\
         circuit = {{ failures = 0 }}\n{}\n[sources.shop]\npath = \"/hooks/shop\"\n\
         verify = {{ scheme = \"none\", id_header = \"X-Event-Id\" }}\nplugins = []\n\
         sinks = [\"out\", \"disk\"]\n",
        base_config("max_body_bytes = 1048576", "", None, ""),
        file_sink("disk", &disk.display().to_string(), "")
    );
    let mut server = Unread::start(dir.path(), &config);

    // 40 lines of ~16 KiB: ten times what the pipe holds.
    let n = 40;
    let pad = "x".repeat(16 * 1024);
    let ids: Vec<String> = (0..n).map(|i| format!("stall-{i}")).collect();
    for id in &ids {
        let body = serde_json::to_vec(&json!({"id": id, "pad": pad})).unwrap();
        let reply = server.post(id, &body);
        assert_eq!(reply.status, 200, "{id}: {reply:?}");
    }

    // The other sink delivers everything.
    assert!(
        wait_for(Duration::from_secs(30), || read_jsonl(&disk).len() == n),
        "{} of {n} lines in the file sink:\n{}",
        read_jsonl(&disk).len(),
        server.log()
    );
    // The stuck sink's attempts fail at its timeout and are retried: the last event's delivery
    // to it has failed attempts recorded, and is still pending.
    let last = ids.last().unwrap();
    let timed_out = wait_for(Duration::from_secs(20), || {
        let d = delivery(&server, last, "out");
        d["state"] == "pending"
            && d["attempts"]
                .as_array()
                .is_some_and(|a| a.iter().any(|a| a["error"].as_str().is_some()))
    });
    let stuck = delivery(&server, last, "out");
    assert!(
        timed_out,
        "no failed attempt recorded for the stuck stdout sink: {} {}\n{}",
        stuck["state"],
        stuck["attempts"],
        server.log()
    );
    let errors = stuck["attempts"].to_string();
    assert!(errors.contains("stdout"), "{errors}");

    // The admin API and intake still answer, promptly.
    for path in ["/healthz", "/readyz", "/api/v1/sinks"] {
        let (reply, took) = server.admin_get(path);
        assert_eq!(reply.status, 200, "{path}: {reply:?}");
        assert!(took < Duration::from_secs(2), "{path} took {took:?}");
    }
    assert_eq!(server.post("stall-late", b"{}").status, 200);
    assert!(wait_for(Duration::from_secs(10), || {
        read_jsonl(&disk).len() == n + 1
    }));

    // SIGTERM: shutdown completes, abandoning the write that never returns.
    let started = Instant::now();
    let status = server.terminate(Duration::from_secs(15));
    let log = server.log();
    let Some(status) = status else {
        panic!("hookwall did not stop within 15 s of SIGTERM:\n{log}");
    };
    println!("stopped in {:?} ({status})", started.elapsed());
    assert!(status.success(), "{status}\n{log}");
    assert!(log.contains("abandoned a blocked sink write"), "{log}");
    // The file sink's lines are whole, each event once.
    let lines = read_jsonl(&disk);
    let mut delivered: Vec<&str> = lines.iter().map(|l| l["id"].as_str().unwrap()).collect();
    delivered.sort_unstable();
    delivered.dedup();
    assert_eq!(delivered.len(), n + 1);
}
