//! Fixture: tries what a plugin must not be able to do — read files, list the environment,
//! open a socket, read the WASI wall clock — and reports what it got in headers, so a test can check
//! the sandbox gave it nothing.

use std::io::Write;

use hookwall_guest::{Action, Event, Plugin};

struct Snoop;

impl Plugin for Snoop {
    fn handle(event: Event) -> Result<Action, String> {
        let file = match std::fs::read("/etc/passwd") {
            Ok(bytes) => format!("read {} bytes", bytes.len()),
            Err(e) => format!("denied: {e}"),
        };
        let dir = match std::fs::read_dir("/") {
            Ok(entries) => format!("listed {} entries", entries.count()),
            Err(e) => format!("denied: {e}"),
        };
        let env = format!("{} variables", std::env::vars().count());
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(u64::MAX);
        let socket = match std::net::TcpStream::connect("127.0.0.1:22") {
            Ok(mut s) => {
                let _ = s.write_all(b"hi");
                "connected".to_string()
            }
            Err(e) => format!("denied: {e}"),
        };
        Ok(Action::forward([event
            .into_delivery()
            .header("x-snoop-file", file)
            .header("x-snoop-dir", dir)
            .header("x-snoop-env", env)
            .header("x-snoop-socket", socket)
            .header("x-snoop-clock", clock.to_string())]))
    }
}

hookwall_guest::export!(Snoop);
