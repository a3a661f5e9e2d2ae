//! Secrets never reach the logs or the CLI's output, and the admin API cannot be opened to the
//! network without a token. One full run at `RUST_LOG=debug`: every verify scheme family with
//! its secret (literal, `env:` and `file:`), the admin token, a Redis URL with a password, and a
//! TLS private key; good and bad requests, admin calls with good and bad tokens; then the logs
//! are searched for every secret.

use std::process::Command;

use hookwall_testkit::{Hookwall, RedisServer};

use super::edge_tls::{TestCa, tls_post};
use super::{BIN, base_config, file_sink, open_source, run_config, source, workdir};

const HMAC: &str = "sec-hmac-7c1d9e3a4b5f";
const GITHUB: &str = "sec-github-55aa21bb";
const STRIPE: &str = "whsec_sec-stripe-9f0e1d2c";
/// Standard Webhooks' key form: base64 of `sec-stdwh-deadbeef1234` after `whsec_`.
const STDWH: &str = "whsec_c2VjLXN0ZHdoLWRlYWRiZWVmMTIzNA==";
const STDWH_DECODED: &str = "sec-stdwh-deadbeef1234";
const BEARER: &str = "sec-bearer-0a0b0c0d0e";
const BASIC: &str = "sec-basic-pw-11223344";
const API_KEY: &str = "sec-apikey-33445566";
const ADMIN: &str = "sec-admin-token-88997766";
const REDIS_PW: &str = "sec-redis-pw-77881122";

/// Every verify scheme family with its secret (literal, `env:` and `file:`), into the file sink
/// `out`; TLS from `cert.pem` and `key.pem`, Redis from `env:`, the admin token from `file:`.
fn secrets_config() -> String {
    let base = base_config(
        "[server.tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"",
        "redis = \"env:SECRETS_TEST_REDIS_URL\"",
        None,
        "token = \"file:admin.token\"",
    );
    // One source a line: its name, then its `verify` table.
    let table = format!(
        r#"hmac {{ scheme = "hmac", header = "X-Signature", prefix = "sha256=", secrets = ["{HMAC}"], id_header = "X-Event-Id", explain = true }}
github {{ scheme = "github", secrets = ["file:github.secret"], explain = true }}
stripe {{ scheme = "stripe", secrets = ["env:SECRETS_TEST_STRIPE"], explain = true }}
stdwh {{ scheme = "standard-webhooks", secrets = ["{STDWH}"], explain = true }}
bearer {{ scheme = "bearer", secrets = ["{BEARER}"] }}
basic {{ scheme = "basic", username = "hooks", secrets = ["{BASIC}"] }}
apikey {{ scheme = "api-key", header = "X-Api-Key", secrets = ["{API_KEY}"] }}"#
    );
    let sources: String = table
        .lines()
        .map(|line| {
            let (name, verify) = line.split_once(' ').unwrap();
            source(name, verify, "", "out", "")
        })
        .collect();
    format!("{base}{}{sources}", file_sink("out", "out.jsonl", ""))
}

#[test]
fn no_configured_secret_appears_in_debug_logs_or_cli_output() {
    let dir = workdir(&[]);
    let d = dir.path();
    let redis = RedisServer::start();
    redis
        .command(&["CONFIG", "SET", "requirepass", REDIS_PW])
        .unwrap();
    let ca = TestCa::new("secrets CA");
    let leaf = ca.leaf("server");
    std::fs::write(d.join("cert.pem"), &leaf.cert_pem).unwrap();
    std::fs::write(d.join("key.pem"), &leaf.key_pem).unwrap();
    std::fs::write(d.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(d.join("github.secret"), format!("{GITHUB}\n")).unwrap();
    std::fs::write(d.join("admin.token"), ADMIN).unwrap();
    let config = secrets_config();
    let redis_url = format!("redis://:{REDIS_PW}@127.0.0.1:{}", redis.port);
    let env = [
        ("RUST_LOG", "debug"),
        ("SECRETS_TEST_STRIPE", STRIPE),
        ("SECRETS_TEST_REDIS_URL", redis_url.as_str()),
    ];
    let mut hw = Hookwall::start_with_env(BIN, d, &config, &env);
    let body = br#"{"id":"evt_1","event_id":"e1","type":"order.created"}"#;
    std::fs::write(d.join("event.json"), body).unwrap();

    // Every source, signed properly by the CLI (which reads the same secrets).
    let mut cli_output = String::new();
    for source in [
        "hmac", "github", "stripe", "stdwh", "bearer", "basic", "apikey",
    ] {
        let out = Command::new(BIN)
            .args(["send", "--source", source, "--config"])
            .arg(&hw.config_path)
            .arg("--ca-cert")
            .arg(d.join("ca.pem"))
            .arg(d.join("event.json"))
            .envs(env)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{source}: {text}");
        cli_output.push_str(&text);
    }
    // Wrong signatures, with `explain` diagnostics (logged and returned).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for source in ["hmac", "github", "stripe", "stdwh", "bearer", "basic"] {
        let reply = rt
            .block_on(tls_post(
                hw.addr,
                ca.client(b"http/1.1", None),
                &format!("/hooks/{source}"),
                "forged",
                body,
            ))
            .unwrap();
        assert_eq!(reply.status, 401, "{source}");
        cli_output.push_str(&String::from_utf8_lossy(&reply.body));
    }
    // Admin: a wrong token, then the right one.
    let wrong = hw.admin_request(
        "GET",
        "/api/v1/intake",
        &[("Authorization", "Bearer nope")],
        b"",
    );
    assert_eq!(wrong.status, 401);
    let auth = format!("Bearer {ADMIN}");
    for path in ["/api/v1/intake", "/api/v1/plugins", "/api/v1/sinks"] {
        let r = hw.admin_request("GET", path, &[("Authorization", &auth)], b"");
        assert_eq!(r.status, 200, "{path}");
        cli_output.push_str(&String::from_utf8_lossy(&r.body));
    }
    assert!(hw.stop().success());

    let log = hw.log();
    assert!(log.contains("DEBUG"), "the run logged at debug level");
    assert!(log.contains("diagnostic"), "verify diagnostics were logged");
    let key_line = leaf
        .key_pem
        .lines()
        .find(|l| l.len() > 40)
        .expect("a base64 line of the key");
    for secret in [
        HMAC,
        GITHUB,
        STRIPE,
        "sec-stripe-9f0e1d2c",
        STDWH,
        STDWH_DECODED,
        BEARER,
        BASIC,
        API_KEY,
        ADMIN,
        REDIS_PW,
        key_line,
    ] {
        assert!(!log.contains(secret), "the log contains {secret}");
        assert!(
            !cli_output.contains(secret),
            "CLI or API output contains {secret}"
        );
    }
}

/// `hookwall serve` on `config` (which names its own addresses): its exit code and stderr.
fn check_exit(config: &str) -> (Option<i32>, String) {
    let dir = workdir(&[]);
    let path = dir.path().join("hookwall.toml");
    std::fs::write(&path, config).unwrap();
    let out = run_config("serve", &path);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn admin_listener_refuses_a_public_address_without_a_token() {
    let source = format!(
        "{}[sinks.out]\ntype = \"stdout\"\n",
        open_source("demo", "", "out", "")
    );
    let port = hookwall_testkit::free_port();
    let (code, stderr) = check_exit(&format!(
        "[server]\nlisten = \"127.0.0.1:{}\"\n[admin]\nlisten = \"0.0.0.0:{port}\"\n{source}",
        hookwall_testkit::free_port()
    ));
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("admin.token"), "{stderr}");
    assert!(stderr.contains("not a loopback address"), "{stderr}");
    // Nothing was bound.
    assert!(std::net::TcpListener::bind(("0.0.0.0", port)).is_ok());
}

/// Everything that can fail is built before any port is bound (`App::build`): with the webhook
/// port already taken and a sink that cannot be built, the sink is what `serve` refuses (a
/// config error naming its key, exit 64), not the port.
#[test]
fn serve_refuses_a_bad_sink_before_binding_any_port() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let source = open_source("demo", "", "app", "");
    let (code, stderr) = check_exit(&format!(
        "[server]\nlisten = \"{}\"\n{source}[sinks.app]\ntype = \"http\"\nurl = \"ftp://example.invalid/hook\"\n",
        taken.local_addr().unwrap()
    ));
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("sinks.app.url"), "{stderr}");
    assert!(!stderr.contains("cannot listen"), "{stderr}");
}
