//! A private PostgreSQL server for tests, on a free loopback port with its own temp dir.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::services::{Guard, find_binary};
use crate::{free_port, wait_for};

/// A private PostgreSQL server: `initdb` into a temp dir, then `postgres` on a free loopback
/// port (never the machine's 5432), trust authentication, user and database `postgres`.
/// `initdb` refuses to run as root, so as root (CI) both run as the `postgres` user through
/// `setpriv` (which execs: the child is the server itself, stopped when dropped).
pub struct PostgresServer {
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    process: Option<Guard>,
    /// Serving TLS with `server.crt` / `server.key` in the data dir.
    ssl: bool,
}

/// Where Debian's PostgreSQL binaries are: the newest `/usr/lib/postgresql/N/bin`.
fn postgres_bin() -> PathBuf {
    let hint = "`apt-get install postgresql` (Debian; `.ci/run` installs it when missing)";
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    versions.retain(|p| p.join("initdb").is_file() && p.join("postgres").is_file());
    versions.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions.pop().unwrap_or_else(|| {
        find_binary("initdb", hint)
            .parent()
            .expect("a directory")
            .to_path_buf()
    })
}

/// The uid and gid of user `name` (from `/etc/passwd`).
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.first() == Some(&name))
            .then(|| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))?
    })
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

impl PostgresServer {
    pub fn start() -> PostgresServer {
        PostgresServer::start_with_tls(None)
    }

    /// [`PostgresServer::start`], serving TLS (`ssl = on`) with the PEM certificate chain and
    /// key `tls` when given.
    pub fn start_with_tls(tls: Option<(&str, &str)>) -> PostgresServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = PostgresServer {
            port: free_port(),
            bin: postgres_bin(),
            dir,
            process: None,
            ssl: tls.is_some(),
        };
        if is_root() {
            let (uid, gid) = user_ids("postgres").expect(
                "running as root, the PostgreSQL test server runs as the `postgres` user, which \
                 is missing: `apt-get install postgresql` creates it",
            );
            std::os::unix::fs::chown(server.dir.path(), Some(uid), Some(gid)).expect("chown");
        }
        let out = server
            .command("initdb")
            .args([
                "--auth=trust",
                "--username=postgres",
                "--encoding=UTF8",
                "--no-sync",
            ])
            .arg("-D")
            .arg(server.data())
            .stdout(Stdio::null())
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some((cert, key)) = tls {
            use std::os::unix::fs::PermissionsExt;
            for (name, pem) in [("server.crt", cert), ("server.key", key)] {
                let path = server.data().join(name);
                std::fs::write(&path, pem).expect("write the TLS files");
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .expect("chmod");
                if is_root() {
                    let (uid, gid) = user_ids("postgres").expect("the postgres user");
                    std::os::unix::fs::chown(&path, Some(uid), Some(gid)).expect("chown");
                }
            }
        }
        let mut server = server;
        server.spawn();
        server
    }

    /// `bin/NAME`, as the `postgres` user when running as root.
    fn command(&self, name: &str) -> Command {
        let program = self.bin.join(name);
        if is_root() {
            let mut cmd = Command::new("setpriv");
            cmd.args([
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
            ])
            .arg(program);
            cmd
        } else {
            Command::new(program)
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn spawn(&mut self) {
        let mut cmd = self.command("postgres");
        cmd.arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.path().display()
            ))
            .args(["-c", "max_connections=200", "-c", "shared_buffers=64MB"]);
        if self.ssl {
            cmd.args(["-c", "ssl=on"]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start postgres");
        self.process = Some(Guard(child));
        let up = wait_for(Duration::from_secs(30), || {
            self.command("pg_isready")
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .is_ok_and(|s| s.success())
        });
        assert!(up, "postgres did not get ready on port {}", self.port);
    }

    /// Stops the server at once, as a crash would (SIGQUIT: no checkpoint; the restart
    /// recovers from the WAL); `restart` brings it back on the same port with its data.
    pub fn crash(&mut self) {
        if let Some(mut guard) = self.process.take() {
            let pid = guard.0.id().to_string();
            let _ = Command::new("kill").args(["-QUIT", &pid]).status();
            let _ = guard.0.wait();
        }
    }

    pub fn restart(&mut self) {
        assert!(self.process.is_none(), "crash it first");
        self.spawn();
    }

    /// Runs `sql` with `psql` and returns its unaligned, tuples-only output.
    pub fn psql(&self, sql: &str) -> String {
        let out = self
            .command("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        // A fast shutdown ends the backends too (SIGKILL would leave them to notice).
        if let Some(mut guard) = self.process.take() {
            let pid = guard.0.id().to_string();
            let _ = Command::new("kill").args(["-INT", &pid]).status();
            let _ = guard.0.wait();
        }
    }
}
