//! Real backing services for tests: a private `redis-server` or `nats-server` (JetStream) on a
//! free loopback port with its own temp dir (PostgreSQL: [`crate::postgres`]). Never the machine's shared instances. Each stops
//! when dropped. The NATS helpers (create a stream, read it back) use the same client crate as
//! the host's `nats` sink.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, wait_for};

/// Finds `name` on PATH or in the sbin dirs where Debian puts servers.
pub(crate) fn find_binary(name: &str, install_hint: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{name}` is not installed; this test needs it: {install_hint}"))
}

/// A process that is killed when dropped.
pub(crate) struct Guard(pub(crate) Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the server binary `name` (found by [`find_binary`]) with the arguments `args` adds,
/// its output discarded; it is killed when the guard drops.
fn spawn_server(name: &str, args: impl FnOnce(&mut Command)) -> Guard {
    let hint = format!("`apt-get install {name}` (Debian) or your platform's package");
    let mut cmd = Command::new(find_binary(name, &hint));
    args(&mut cmd);
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    Guard(child)
}

/// A private Redis server.
pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    process: Option<Guard>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let mut server = RedisServer {
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            process: None,
        };
        server.spawn();
        server
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn spawn(&mut self) {
        self.process = Some(spawn_server("redis-server", |cmd| {
            cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
                .arg("--dir")
                .arg(self.dir.path());
        }));
        let up = wait_for(Duration::from_secs(10), || {
            self.command(&["PING"])
                .is_ok_and(|r| r.starts_with("+PONG"))
        });
        assert!(up, "redis-server did not answer PING on port {}", self.port);
    }

    /// Stops the server abruptly (an outage); `restart` brings it back on the same port, empty.
    pub fn kill(&mut self) {
        self.process = None;
    }

    pub fn restart(&mut self) {
        assert!(self.process.is_none(), "kill it first");
        self.spawn();
    }

    /// Sends one command (RESP) and returns the raw reply, for assertions in tests.
    pub fn command(&self, args: &[&str]) -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&self.addr(), Duration::from_secs(1))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut request = format!("*{}\r\n", args.len());
        for a in args {
            request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        stream.write_all(request.as_bytes())?;
        let mut buf = vec![0u8; 1 << 20];
        let n = stream.read(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

/// A private NATS server with JetStream enabled.
pub struct NatsServer {
    pub port: u16,
    dir: tempfile::TempDir,
    process: Option<Guard>,
}

impl NatsServer {
    pub fn start() -> NatsServer {
        let mut server = NatsServer {
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            process: None,
        };
        server.spawn();
        server
    }

    /// `nats://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        self.process = Some(spawn_server("nats-server", |cmd| {
            cmd.args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.path());
        }));
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let up = wait_for(Duration::from_secs(10), || {
            // The server greets every client with an INFO line once it is ready.
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok_and(|mut s| {
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let mut buf = [0u8; 4];
                s.read_exact(&mut buf).is_ok() && &buf == b"INFO"
            })
        });
        assert!(up, "nats-server did not start on port {}", self.port);
    }

    /// Stops the server abruptly; `restart` brings it back on the same port and store dir.
    pub fn kill(&mut self) {
        self.process = None;
    }

    pub fn restart(&mut self) {
        assert!(self.process.is_none(), "kill it first");
        self.spawn();
    }

    /// Creates a file-backed JetStream stream `name` capturing `subjects`, with the default
    /// two-minute duplicate window (publishes with a seen `Nats-Msg-Id` are dropped).
    pub fn create_stream(&self, name: &str, subjects: &[&str]) {
        let config = async_nats::jetstream::stream::Config {
            name: name.to_string(),
            subjects: subjects.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let url = self.url();
        block_on(async move {
            let client = async_nats::connect(url).await?;
            async_nats::jetstream::new(client)
                .create_stream(config)
                .await?;
            Ok::<_, async_nats::Error>(())
        })
        .unwrap_or_else(|e| panic!("create stream {name}: {e}"));
    }

    /// Every message of stream `name`, oldest first; an error while NATS is down.
    pub fn stream_messages(&self, name: &str) -> Result<Vec<StreamEntry>, String> {
        let url = self.url();
        let name = name.to_string();
        block_on(async move {
            let client = async_nats::connect(url).await?;
            let stream = async_nats::jetstream::new(client).get_stream(&name).await?;
            let state = stream.get_info().await?.state;
            let mut entries = Vec::new();
            if state.messages == 0 {
                return Ok(entries);
            }
            for seq in state.first_sequence..=state.last_sequence {
                let m = stream.get_raw_message(seq).await?;
                entries.push(StreamEntry {
                    subject: m.subject.to_string(),
                    headers: m
                        .headers
                        .iter()
                        .flat_map(|(k, vs)| {
                            vs.iter()
                                .map(move |v| (k.to_string(), v.as_str().to_string()))
                        })
                        .collect(),
                    payload: m.payload.to_vec(),
                });
            }
            Ok::<_, async_nats::Error>(entries)
        })
        .map_err(|e| e.to_string())
    }
}

/// One message read back from a JetStream stream.
#[derive(Debug, Clone)]
pub struct StreamEntry {
    pub subject: String,
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

impl StreamEntry {
    /// The first value of header `name` (NATS header names are case-sensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Runs a NATS client call on a private runtime, bounded so a wedged server fails the test
/// instead of hanging it.
fn block_on<T>(
    call: impl std::future::Future<Output = Result<T, async_nats::Error>>,
) -> Result<T, async_nats::Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the NATS client");
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .unwrap_or_else(|_| Err("the NATS call took over 10 s".into()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_starts_answers_and_comes_back_after_a_kill() {
        let mut redis = RedisServer::start();
        assert!(
            redis
                .command(&["SET", "k", "v"])
                .unwrap()
                .starts_with("+OK")
        );
        redis.kill();
        assert!(redis.command(&["PING"]).is_err());
        redis.restart();
        assert!(redis.command(&["GET", "k"]).unwrap().starts_with("$-1"));
    }

    #[test]
    fn nats_starts_with_jetstream() {
        let nats = NatsServer::start();
        let mut s = TcpStream::connect(("127.0.0.1", nats.port)).unwrap();
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).unwrap();
        let info = String::from_utf8_lossy(&buf[..n]);
        assert!(info.contains("\"jetstream\":true"), "{info}");
    }
}
