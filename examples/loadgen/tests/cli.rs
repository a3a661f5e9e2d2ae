//! The `loadgen` binary end to end: its bare hyper baseline as the target, `run` against it.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LOADGEN: &str = env!("CARGO_BIN_EXE_loadgen");

/// A child process killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn baseline() -> (Killed, SocketAddr) {
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let child = Command::new(LOADGEN)
        .args(["baseline", "--listen", &addr.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let child = Killed(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "the baseline did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, addr)
}

#[test]
fn a_fixed_count_run_sends_exactly_that_many_requests() {
    let (_server, addr) = baseline();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smoke.toml");
    let out = Command::new(LOADGEN)
        .args(["run", "--source", "s", "-c", "4", "-n", "777", "--json"])
        .arg("--config")
        .arg(&config)
        .args(["--addr", &addr.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["requests"], 777, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["statuses"]["200"], 777, "{report}");

    // A count and a duration contradict each other.
    let out = Command::new(LOADGEN)
        .args(["run", "--source", "s", "-n", "10", "-d", "1s"])
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot be used with"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
