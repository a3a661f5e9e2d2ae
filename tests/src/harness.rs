//! A small harness for end-to-end tests: start the real `hookwall` binary on free ports in a
//! temp dir, talk HTTP/1.1 to it over loopback, and stop it (always: `Drop` kills it).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::Value;

/// How long a freshly started server may take to accept connections (a debug build compiles
/// its plugins at start-up).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A free TCP port on 127.0.0.1 (bound and released; the OS will not reuse it immediately).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// `sha256=<hex>` of HMAC-SHA256(secret, body): the demo scheme's signature.
pub fn sign_sha256_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Polls `check` until it is true or `timeout` passes; returns whether it became true.
pub fn wait_for(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Runs `work(i)` for each `i` in `0..n`, each on its own (scoped) thread, all at once: the
/// results, in the order of `i`.
pub fn on_threads<T: Send>(n: usize, work: impl Fn(usize) -> T + Sync) -> Vec<T> {
    std::thread::scope(|s| {
        let work = &work;
        let handles: Vec<_> = (0..n).map(|i| s.spawn(move || work(i))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Runs `cmd` to completion and asserts it exited successfully (the failure message is its
/// stdout and stderr); returns its output.
pub fn run_ok(cmd: &mut Command) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("run {:?}: {e}", cmd.get_program()));
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `BIN plugin test WASM --event EVENT_FILE --config C…`, asserted to succeed: the action the
/// plugin returned, as JSON.
pub fn plugin_test(bin: &str, wasm: &Path, event_file: &Path, config: &[&str]) -> Value {
    let mut cmd = Command::new(bin);
    cmd.args(["plugin", "test"])
        .arg(wasm)
        .arg("--event")
        .arg(event_file);
    for c in config {
        cmd.args(["--config", c]);
    }
    let out = run_ok(&mut cmd);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The JSON lines of a file sink (empty when the file does not exist yet). A last line without
/// its newline is still being written by the sink: it is left for the next read.
pub fn read_jsonl(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// Polls the file sink at `path` until it holds exactly `n` complete lines or `timeout`
/// passes; returns whether it did.
pub fn wait_for_lines(path: &Path, n: usize, timeout: Duration) -> bool {
    wait_for(timeout, || read_jsonl(path).len() == n)
}

/// An HTTP response as the tests need it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one HTTP/1.1 request (`Connection: close`) and reads the whole response. The `Host` is
/// `addr` unless `headers` has one.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Reply> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    // A server may answer (413) and close before reading a large body; that is not our error.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> std::io::Result<Reply> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    }
    Ok(Reply {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..line_end]).ok()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// A running `hookwall serve`.
pub struct Hookwall {
    child: Option<Child>,
    bin: PathBuf,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub log_path: PathBuf,
    /// Extra environment for the process (after the default `RUST_LOG=info`).
    env: Vec<(String, String)>,
}

impl Hookwall {
    /// Writes `config` to `dir/hookwall.toml` and starts the server. `{listen}` and
    /// `{admin}` in the text are replaced by free loopback addresses.
    pub fn start(bin: &str, dir: &Path, config: &str) -> Hookwall {
        Hookwall::start_with_env(bin, dir, config, &[])
    }

    /// [`Hookwall::start`] with extra environment variables (e.g. `RUST_LOG=debug`).
    pub fn start_with_env(bin: &str, dir: &Path, config: &str, env: &[(&str, &str)]) -> Hookwall {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let text = config
            .replace("{listen}", &addr.to_string())
            .replace("{admin}", &admin.to_string());
        let config_path = dir.join("hookwall.toml");
        std::fs::write(&config_path, text).expect("write config");
        let mut hw = Hookwall {
            child: None,
            bin: PathBuf::from(bin),
            dir: dir.to_path_buf(),
            config_path,
            addr,
            admin,
            log_path: dir.join("hookwall.log"),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        hw.spawn();
        hw
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open log");
        let child = Command::new(&self.bin)
            .args(["serve", "--config"])
            .arg(&self.config_path)
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("start hookwall");
        self.child = Some(child);
        let addr = self.addr;
        let up = wait_for(START_TIMEOUT, || {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("hookwall exited early ({status}):\n{}", self.log());
            }
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
        assert!(up, "hookwall did not start listening:\n{}", self.log());
    }

    /// Starts the same config again after `kill` or `stop`.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill it first");
        self.spawn();
    }

    /// SIGKILL: a crash, with no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits up to `timeout` for the process to exit by itself; its status if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut().expect("running");
            if let Some(status) = child.try_wait().expect("wait") {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and wait for a graceful exit.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("hookwall did not stop on SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// POSTs `body` to `path` with `headers`.
    pub fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        http(self.addr, "POST", path, headers, body).expect("request to hookwall")
    }

    /// Sends any request to the admin listener, with exactly these headers (a token, a
    /// foreign `Origin` or `Host`, …).
    pub fn admin_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        http(self.admin, method, path, headers, body).expect("request to hookwall admin")
    }

    /// GETs an admin API path (no token).
    pub fn admin_get(&self, path: &str) -> Reply {
        self.admin_request("GET", path, &[], b"")
    }

    /// POSTs JSON to an admin API path (no token).
    pub fn admin_post(&self, path: &str, body: &Value) -> Reply {
        let body = serde_json::to_vec(body).unwrap();
        self.admin_request("POST", path, &[("Content-Type", "application/json")], &body)
    }

    /// `GET /api/v1/events/{id}` (no token), whatever it answers.
    pub fn event(&self, id: &str) -> Reply {
        self.admin_get(&format!("/api/v1/events/{id}"))
    }

    /// The child's resident set size in KiB (Linux `/proc/PID/status`), if it is running.
    pub fn rss_kib(&self) -> Option<u64> {
        self.proc_status_kib("VmRSS:")
    }

    /// The child's peak resident set size so far in KiB (`VmHWM`), if it is running: catches
    /// a spike that was freed again before anyone sampled `rss_kib`.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        self.proc_status_kib("VmHWM:")
    }

    fn proc_status_kib(&self, field: &str) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Runs `hookwall COMMAND --config <this config> REST…` to completion: (exit ok, stdout,
    /// stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(&self.bin)
            .args(&args[..1])
            .arg("--config")
            .arg(&self.config_path)
            .args(&args[1..])
            .output()
            .expect("run hookwall");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Hookwall {
    fn drop(&mut self) {
        self.kill();
    }
}
