//! Real backing services for tests: a private `redis-server` or `nats-server` (JetStream) on a
//! free loopback port with its own temp dir. Never the machine's shared instances. Each stops
//! when dropped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, wait_for};

/// Finds `name` on PATH or in the sbin dirs where Debian puts servers.
fn find_binary(name: &str, install_hint: &str) -> PathBuf {
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
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
        let bin = find_binary(
            "redis-server",
            "`apt-get install redis-server` (Debian) or your platform's package",
        );
        let child = Command::new(bin)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.process = Some(Guard(child));
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
        let bin = find_binary(
            "nats-server",
            "`apt-get install nats-server` (Debian) or your platform's package",
        );
        let child = Command::new(bin)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.process = Some(Guard(child));
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
